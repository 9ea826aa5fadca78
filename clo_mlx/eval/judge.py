"""Pairwise win rate judged by a local mlx-lm model (AlpacaEval-style, offline).

Each model's greedy answer is compared with the base model's answer to the same prompt. The judge
sees every pair twice, once in each order (A = model, B = base; then A = base, B = model), so a
judge that prefers a position gives a tie instead of a win. Per pair, the score is the mean of the
two orders' outcomes (model preferred 1, tie 0.5, base preferred 0); an unreadable verdict counts
as a tie and is counted under `invalid`. Identical answers are a tie without asking the judge.

    win_rate = mean(score) over the prompts of a language
    interval = win_rate +- 1.96 * sd(score) / sqrt(n)   (normal approximation, clipped to [0, 1])

With a tiny judge the numbers mean nothing (the tests only check the pipeline); a real judge, e.g.
a 7-8B instruct model in 4-bit, is needed for meaning.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from ..io import atomic_write_text

JUDGE_TEMPLATE = """Two assistants answered the same question. A good answer is correct and \
helpful, and it is written in the language of the question.

Question:
{question}

Answer A:
{a}

Answer B:
{b}

Which answer is better? Reply with one word: A, B or tie."""

# "A", "B" or "tie" as a word of its own (first one wins): "A", "Answer B.", "**tie**", "B is better"
_VERDICT = re.compile(r"(?<![A-Za-z])(A|B|tie|Tie|TIE)(?![A-Za-z])")
Z95 = 1.959964


def parse_verdict(text: str) -> str | None:
    """ "A", "B" or "tie" from the judge's reply (the first one named); None when none is."""
    m = _VERDICT.search(text)
    if m is None:
        return None
    v = m.group(1)
    return "tie" if v.lower() == "tie" else v


def pair_score(model_first: str | None, base_first: str | None) -> float:
    """Score of the model's answer from the verdicts of both orders: (A = model, B = base) and
    (A = base, B = model). 1: preferred in both, 0.5: tie, 0: the base's preferred in both."""
    first = {"A": 1.0, "B": 0.0}.get(model_first or "", 0.5)
    second = {"B": 1.0, "A": 0.0}.get(base_first or "", 0.5)
    return (first + second) / 2


def win_rate(scores: Sequence[float]) -> dict:
    """Mean score with a 95% normal-approximation interval, and the win / tie / loss counts."""
    n = len(scores)
    if n == 0:
        return {"win_rate": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    mean = sum(scores) / n
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1)) if n > 1 else 0.0
    half = Z95 * sd / math.sqrt(n)
    return {
        "win_rate": mean,
        "ci_low": max(0.0, mean - half),
        "ci_high": min(1.0, mean + half),
        "n": n,
        "wins": sum(s > 0.5 for s in scores),
        "ties": sum(s == 0.5 for s in scores),
        "losses": sum(s < 0.5 for s in scores),
    }


def generate_judge(judge_model, judge_tokenizer, max_tokens: int = 8, batch_size: int = 16):
    """A `ask(texts) -> replies` function: greedy replies of a local mlx-lm chat model."""
    from .fidelity import generate_responses

    def ask(texts: Sequence[str]) -> list[str]:
        return generate_responses(judge_model, judge_tokenizer, texts, max_tokens, batch_size)

    return ask


def _key(judge_id: str, question: str, a: str, b: str) -> str:
    return hashlib.sha256(json.dumps([judge_id, question, a, b]).encode()).hexdigest()[:20]


def judge_answers(
    ask: Callable[[Sequence[str]], list[str]],
    items: Sequence[dict],
    judge_id: str = "",
    cache: dict[str, str] | None = None,
) -> list[dict]:
    """Judge `items` (`{"lang", "prompt", "answer", "base_answer"}`) in both orders.

    Returns the items with `model_first` / `base_first` (`{"reply", "verdict"}`) and `score`.
    `cache` maps a (judge, question, A, B) key to an earlier reply (resuming a run)."""
    cache = {} if cache is None else cache
    asks: list[tuple[str, str]] = []  # (key, judge prompt) not in the cache
    keys = []
    for it in items:
        if it["answer"] == it["base_answer"]:
            keys.append(None)
            continue
        pair_keys = []
        for a, b in ((it["answer"], it["base_answer"]), (it["base_answer"], it["answer"])):
            k = _key(judge_id, it["prompt"], a, b)
            pair_keys.append(k)
            if k not in cache and all(k != x for x, _ in asks):
                asks.append((k, JUDGE_TEMPLATE.format(question=it["prompt"], a=a, b=b)))
        keys.append(pair_keys)
    if asks:
        replies = ask([p for _, p in asks])
        cache.update({k: r for (k, _), r in zip(asks, replies, strict=True)})
    out = []
    for it, ks in zip(items, keys, strict=True):
        if ks is None:
            out.append({**it, "model_first": None, "base_first": None, "score": 0.5,
                        "identical": True})  # fmt: skip
            continue
        v1, v2 = ({"reply": cache[k], "verdict": parse_verdict(cache[k]), "key": k} for k in ks)
        out.append({**it, "model_first": v1, "base_first": v2,
                    "score": pair_score(v1["verdict"], v2["verdict"]), "identical": False})  # fmt: skip
    return out


def summarize(judged: Sequence[dict]) -> dict:
    """`{lang: win_rate(...) + {"invalid": verdicts not read}}`, plus `all`."""
    groups: dict[str, list[dict]] = {}
    for j in judged:
        for key in (j["lang"], "all"):
            groups.setdefault(key, []).append(j)
    out = {}
    for lang, js in sorted(groups.items()):
        r = win_rate([j["score"] for j in js])
        r["invalid"] = sum(
            (v is not None and v["verdict"] is None)
            for j in js
            for v in (j["model_first"], j["base_first"])
        )
        r["identical"] = sum(j["identical"] for j in js)
        out[lang] = r
    return out


def read_cache(path: Path) -> dict[str, str]:
    """Judge replies of an earlier run's verdict file (`judge/<name>.jsonl`), by key."""
    cache: dict[str, str] = {}
    if not path.is_file():
        return cache
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            j = json.loads(line)
        except json.JSONDecodeError:
            continue
        for v in (j.get("model_first"), j.get("base_first")):
            if v and "key" in v:
                cache[v["key"]] = v["reply"]
    return cache


def judge_results(
    results: Sequence[dict],
    base_fidelity: dict,
    ask: Callable[[Sequence[str]], list[str]],
    judge_id: str,
    out_dir: str | Path | None = None,
    console=None,
) -> None:
    """Add `judge/<lang>/win_rate`, `judge/<lang>/ci_low`, `judge/<lang>/ci_high` (vs the base
    model's answers) to each non-base result of `compare_models`, from the answers its fidelity
    evaluation generated; verdicts go to `<out_dir>/judge/<name>.jsonl` (written atomically per
    model; a re-run reuses the replies it finds there)."""
    base = {
        lang: {s["prompt"]: s["response"] for s in r["samples"]}
        for lang, r in base_fidelity.items()
    }
    for res in results:
        if res["adapter_path"] is None or "fidelity" not in res["details"]:
            continue
        items = [
            {"lang": lang, "prompt": s["prompt"], "answer": s["response"],
             "base_answer": base[lang][s["prompt"]]}
            for lang, r in res["details"]["fidelity"].items()
            for s in r["samples"]
            if s["prompt"] in base.get(lang, {})
        ]  # fmt: skip
        path = Path(out_dir) / "judge" / f"{res['name']}.jsonl" if out_dir is not None else None
        if console is not None:
            console.print(
                f"[bold]judging {res['name']}[/] vs base: {len(items)} prompts, both orders"
            )
        judged = judge_answers(ask, items, judge_id, read_cache(path) if path else None)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                path, "".join(json.dumps(j, ensure_ascii=False) + "\n" for j in judged)
            )
        summary = summarize(judged)
        res["details"]["judge"] = {"judge": judge_id, "summary": summary}
        for lang, r in summary.items():
            if lang == "all" and len(summary) == 2:
                continue  # one language: `all` repeats it
            for k in ("win_rate", "ci_low", "ci_high"):
                res["metrics"][f"judge/{lang}/{k}"] = r[k]
