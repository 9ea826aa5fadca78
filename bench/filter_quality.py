"""Calibrate and measure `clo_mlx.translate.filters` on human translations in ../shared/data.

    python bench/filter_quality.py --calibrate   # rewrite clo_mlx/assets/length_bands.json
    python bench/filter_quality.py               # measure on the held-out part
    python bench/filter_quality.py --split cal --examples 20 --missed 20   # read the misses

The human reference is treated as the "translation" of its English source. Calibration uses
NTREX-128 lines 0-999, MGSM items 0-124 and the XCOPA val split; every number reported is on the
held-out part: NTREX lines 1000-1499 (less the document that straddles line 1000), MGSM items
125-249 and the XCOPA test split. Corrupted copies of the held-out references measure what the
filters catch: truncated to 40% of the characters (at a word boundary where there are spaces),
the English source left untranslated, a phrase repeated 6 times, a number changed, a number
(> 10) dropped.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from clo_mlx.translate.filters import BANDS_FILE, Filters, _ends_sentence, check_pair, text_length

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
LANGS = ("de", "zh", "ko", "id", "sw", "yo")
BINS = (30, 80, 160, None)  # upper edges of the source-length bins (text_length units)
LOW_Q, HIGH_Q, MARGIN = 0.005, 0.995, 0.15
SOFT_QS = (0, 0.02, 0.05, 0.10, 0.20)


def load_pairs(data: Path) -> dict[str, dict[str, list[tuple[str, str, str]]]]:
    """{split: {lang: [(source, reference, origin)]}} with split in cal / held."""
    out: dict = {"cal": defaultdict(list), "held": defaultdict(list)}
    ntrex = [json.loads(x) for x in (data / "ntrex128_parallel_7lang.jsonl").open()]
    straddle = ntrex[999]["doc_id"]
    for r in ntrex:
        split = "cal" if r["line"] < 1000 else ("held" if r["doc_id"] != straddle else None)
        if split:
            for lang in LANGS:
                out[split][lang].append((r["en"], r[lang], "ntrex"))
    for r in map(json.loads, (data / "mgsm_parallel_en_de_zh_sw.jsonl").open()):
        split = "cal" if r["idx"] < 125 else "held"
        for lang in ("de", "zh", "sw"):
            out[split][lang].append((r["en"], r[lang], "mgsm"))
    for r in map(json.loads, (data / "xcopa_mc_id_sw_zh.jsonl").open()):
        split = "cal" if r["split"] == "val" else "held"
        for key in ("premise", "choice1", "choice2"):
            out[split][r["lang"]].append((r["en_mt"][key], r[key], "xcopa"))
    return out


def calibrate(pairs: dict) -> dict:
    """Per language and source-length bin: the hard band [low, high] from the ratio quantiles
    with a margin, and the soft edge (`soft_edge`) from the calibration references truncated
    to 40%."""
    bands = {}
    for lang in LANGS:
        rows = [
            (text_length(s), text_length(t), text_length(truncate(t)), _ends_sentence(s))
            for s, t, _ in pairs[lang]
            if text_length(s)
        ]
        lo_edge, entries = 0, []
        for edge in BINS:
            part = [r for r in rows if r[0] >= lo_edge and (edge is None or r[0] < edge)]
            ratio = np.array([t / s for s, t, _, _ in part])
            low, high = np.quantile(ratio, [LOW_Q, HIGH_Q]) * [1 - MARGIN, 1 + MARGIN]
            trunc = [(c / s, ends) for s, _, c, ends in part if s >= 20]
            soft = soft_edge(ratio, trunc, float(low))
            entries.append(
                {"max_src": edge, "low": round(float(low), 3), "soft": round(float(soft), 3),
                 "high": round(float(high), 3), "n": len(part)}
            )  # fmt: skip
            lo_edge = edge
        bands[lang] = entries
    return bands


def soft_edge(ratio: np.ndarray, trunc: list[tuple[float, bool]], low: float) -> float:
    """The lowest ratio quantile in SOFT_QS below which `low` plus the truncated rule (ratio
    below the edge and the source's final punctuation gone) catches >= 97% of `trunc` (ratio of
    a truncated reference, whether its source ends a sentence); where none does (truncations
    of sources without final punctuation stay uncaught), the lowest that catches the most: a
    wider edge would reject more complete references and catch nothing more."""
    soft, best = low, -1.0
    for q in SOFT_QS:
        cand = max(low, float(np.quantile(ratio, q))) if q else low
        caught = float(np.mean([r < low or (r < cand and ends) for r, ends in trunc]))
        if caught > best + 1e-9:
            soft, best = cand, caught
        if caught >= 0.97:
            break
    return soft


def truncate(text: str, frac: float = 0.4) -> str:
    k = int(len(text) * frac)
    cut = text[:k]
    space = cut.rfind(" ")
    return (cut[:space] if space > k // 2 else cut).rstrip()


def repeat_phrase(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    if len(words) >= 6:
        i = rng.randrange(len(words) - 3)
        phrase = " ".join(words[i : i + 3])
        return " ".join(words[:i] + [phrase] * 6 + words[i + 3 :])
    i = rng.randrange(max(1, len(text) - 4))
    return text[:i] + text[i : i + 4] * 6 + text[i + 4 :]


_DIGITS = re.compile(r"\d+")


def change_number(text: str, rng: random.Random) -> str | None:
    runs = list(_DIGITS.finditer(text))
    if not runs:
        return None
    m = rng.choice(runs)
    d = (int(m.group(0)[-1]) + rng.randrange(1, 10)) % 10
    return text[: m.end() - 1] + str(d) + text[m.end() :]


def drop_number(text: str, rng: random.Random) -> str | None:
    runs = [m for m in _DIGITS.finditer(text) if int(m.group(0)) > 10]
    if not runs:
        return None
    m = rng.choice(runs)
    return (text[: m.start()] + text[m.end() :]).replace("  ", " ")


def evaluate(pairs: dict, verbose: int = 0, missed: int = 0) -> dict:
    filters, rng, report = Filters(), random.Random(0), {}
    for lang in LANGS:
        rows = pairs[lang]
        by_reason: Counter = Counter()
        rejected_ntrex = n_ntrex = 0
        examples, misses = [], []
        caught: dict[str, list[int]] = {k: [0, 0] for k in ("truncated", "untranslated", "repeated", "changed_number", "dropped_number")}  # fmt: skip
        for src, ref, origin in rows:
            v = check_pair(src, ref, lang, filters)
            n_ntrex += origin == "ntrex"
            if v is not None:
                by_reason[v[0]] += 1
                rejected_ntrex += origin == "ntrex"
                examples.append((v, src, ref))
            if origin != "ntrex":
                continue
            bad = {
                "truncated": truncate(ref) if len(src) >= 20 else None,
                "untranslated": src,
                "repeated": repeat_phrase(ref, rng),
                "changed_number": change_number(ref, rng),
                "dropped_number": drop_number(ref, rng),
            }
            for kind, text in bad.items():
                if text is not None:
                    hit = check_pair(src, text, lang, filters) is not None
                    caught[kind][0] += hit
                    caught[kind][1] += 1
                    if not hit:
                        misses.append((kind, src, text))
        report[lang] = {
            "good_rejected": sum(by_reason.values()) / len(rows),
            "good_rejected_ntrex": rejected_ntrex / n_ntrex,
            "n": len(rows),
            "by_reason": dict(by_reason),
            "caught": {k: (c / n if n else None, n) for k, (c, n) in caught.items()},
        }
        for v, src, ref in examples[:verbose]:
            print(f"[{lang}] {v[0]}: {v[1]}\n   en: {src}\n   {lang}: {ref}")
        for kind, src, text in [m for m in misses if m[0].endswith("number")][:missed]:
            print(f"[{lang}] missed {kind}\n   en: {src}\n   {lang}: {text}")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--calibrate", action="store_true", help="rewrite the shipped band table")
    ap.add_argument("--split", choices=("held", "cal"), default="held", help="part to measure on")
    ap.add_argument(
        "--examples", type=int, default=0, help="print N rejected references per language"
    )
    ap.add_argument(
        "--missed", type=int, default=0, help="print N uncaught number corruptions per language"
    )
    args = ap.parse_args()
    pairs = load_pairs(args.data)
    if args.calibrate:
        table = {
            "about": "target/source text_length ratio bands per source-length bin, from "
            "bench/filter_quality.py --calibrate (NTREX-128 lines 0-999, MGSM 0-124, XCOPA val): "
            f"low = q{LOW_Q} x {1 - MARGIN:.2f}, high = q{HIGH_Q} x {1 + MARGIN:.2f}; below soft a "
            "translation that lost the final punctuation is rejected as truncated",
            "bands": calibrate(pairs["cal"]),
        }
        BANDS_FILE.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {BANDS_FILE}")
        from clo_mlx.translate.filters import length_bands

        length_bands.cache_clear()
    report = evaluate(pairs[args.split], args.examples, args.missed)
    kinds = ("truncated", "untranslated", "repeated", "changed_number", "dropped_number")
    print(
        "| lang | good rejected (all held-out) | NTREX only | by reason | "
        + " | ".join(kinds)
        + " |"
    )
    print("|---|---|---|---|" + "---|" * len(kinds))
    for lang, r in report.items():
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["by_reason"].items()))
        cells = [
            f"{c:.1%} (n={n})" if c is not None else "-" for c, n in (r["caught"][k] for k in kinds)
        ]
        print(
            f"| {lang} | {r['good_rejected']:.1%} (n={r['n']}) | {r['good_rejected_ntrex']:.1%} | "
            f"{reasons} | " + " | ".join(cells) + " |"
        )


if __name__ == "__main__":
    main()
