"""Sentence splitters on English SFT-like text: hand-labelled cases and NTREX-128 paragraphs.

    python bench/split_quality.py [--data ../shared/data]

Compares the old punctuation rule, pysbd, sentencex and clo-mlx's `sentences` (sentencex plus
a veto on titles before names). Cases: each a list of the sentences it should give. NTREX: five
consecutive English lines joined by spaces; a boundary counts as expected after a line that ends
with sentence-final punctuation (lines that hold two sentences count against precision, so
precision is a lower bound). Also checks that every splitter's pieces can be found in the text.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

CASES = [
    ["U.S. Sen. Elizabeth Warren says she will run."],
    ["The U.S. Navy said it was ready.", "It left."],
    ["First sentence.", "Second one?", "Dr. Who stays."],
    ["Dr. Smith arrived at 3 p.m. on Friday.", "He left."],
    ["Call Mr. Brown and Mrs. Jones now."],
    ["See fig. 3 and e.g. this list.", "Next."],
    ["Prof. Lee said no.", "Gov. Brown agreed."],
    ["It costs $2.50 per item, i.e. cheap.", "Buy one."],
    ["Add 3.5 cups of flour.", "Stir well!", "Bake for 20 min. at 180 degrees."],
    ['He said "Stop!" and left.', "Then it rained."],
    ["Is it true?", "Yes.", "No..."],
    ["Lt. Col. James Smith, Jr. spoke.", "Nobody listened."],
    ["Use numpy.array() here.", "Then call np.sum."],
    ["The meeting is at 10 a.m. tomorrow.", "Be on time."],
    ["St. Louis is in Missouri.", "It is big."],
    ["Visit example.com for details.", "Thanks."],
    ["The company, Acme Inc., grew.", "Profits rose."],
    ["Step 1. Mix the eggs.", "Step 2. Add sugar."],
]


def regex_split(text: str) -> list[str]:
    from clo_mlx.translate.pipeline import _regex_sentences

    return _regex_sentences(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")  # fmt: skip
    args = ap.parse_args()
    import pysbd
    from sentencex import segment

    from clo_mlx.translate.pipeline import sentences

    seg = pysbd.Segmenter(language="en", clean=False)
    splitters = {
        "old rule": regex_split,
        "pysbd": seg.segment,
        "sentencex": lambda t: list(segment("en", t)),
        "clo-mlx sentences": sentences,
    }
    ntrex = args.data / "ntrex128_parallel_7lang.jsonl"
    en = [json.loads(x)["en"].strip() for x in ntrex.open()] if ntrex.exists() else []
    print("| splitter | hand cases right | NTREX boundary precision | recall | pieces not in text | ms per paragraph |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, split in splitters.items():
        right = sum([p.strip() for p in split(" ".join(c)) if p.strip()] == c for c in CASES)
        tp = fp = fn = lost = 0
        t0 = time.perf_counter()
        for i in range(0, len(en), 5):
            group = en[i : i + 5]
            text = " ".join(group)
            gold, pos = set(), 0
            for g in group[:-1]:
                pos += len(g) + 1
                if re.search(r"[.!?][\"”’')]*$", g):
                    gold.add(pos)
            found, pos = set(), 0
            for piece in [p.strip() for p in split(text) if p.strip()]:
                k = text.find(piece, pos)
                if k < 0:
                    lost += 1
                    break
                if k > 0:
                    found.add(k)
                pos = k + len(piece)
            tp, fp, fn = tp + len(found & gold), fp + len(found - gold), fn + len(gold - found)
        ms = (time.perf_counter() - t0) * 1000 / max(1, len(en) // 5)
        prec = f"{tp / (tp + fp):.3f}" if en else "-"
        rec = f"{tp / (tp + fn):.3f}" if en else "-"
        print(f"| {name} | {right}/{len(CASES)} | {prec} | {rec} | {lost} | {ms:.2f} |")


if __name__ == "__main__":
    main()
