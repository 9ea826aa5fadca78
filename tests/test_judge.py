"""`clo-mlx eval --judge`: verdict parsing, both orders, ties, the interval, and the pipeline
with tiny models (whose verdicts mean nothing: only the plumbing is checked)."""

from __future__ import annotations

import json

import pytest
from conftest import parallel_rows, write_jsonl, write_random_adapters

from clo_mlx.eval.judge import (
    JUDGE_TEMPLATE,
    judge_answers,
    pair_score,
    parse_verdict,
    read_cache,
    summarize,
    win_rate,
)


@pytest.mark.parametrize(
    "reply,verdict",
    [("A", "A"), ("B.", "B"), ("Answer B is better", "B"), ("**tie**", "tie"), ("Tie", "tie"),
     ("  b", None), ("About both", None), ("", None), ("A or B? B", "A")],
)  # fmt: skip
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_pair_score_cancels_position_bias():
    # (A = model, B = base), then (A = base, B = model)
    assert pair_score("A", "B") == 1.0  # model preferred in both orders
    assert pair_score("B", "A") == 0.0
    assert pair_score("A", "A") == 0.5  # a judge that always says "A": a tie
    assert pair_score("tie", "B") == 0.75
    assert pair_score(None, None) == 0.5  # unreadable verdicts count as ties


def test_win_rate_interval_by_hand():
    r = win_rate([1.0, 0.5, 0.0, 1.0])
    # mean 0.625; sd (ddof 1) = sqrt(0.6875 / 3) = 0.478714; half width 1.96 * sd / 2 = 0.469140
    assert r["win_rate"] == pytest.approx(0.625)
    assert r["ci_low"] == pytest.approx(0.625 - 0.469140, abs=1e-5)
    assert r["ci_high"] == 1.0  # clipped
    assert (r["wins"], r["ties"], r["losses"], r["n"]) == (2, 1, 1, 4)


ITEMS = [
    {"lang": "sw", "prompt": "q1", "answer": "good one", "base_answer": "bad one"},
    {"lang": "sw", "prompt": "q2", "answer": "bad two", "base_answer": "good two"},
    {"lang": "en", "prompt": "q3", "answer": "same", "base_answer": "same"},
]


def fake_judge(asked: list):
    """Prefers the answer containing 'good'; records what it was asked."""

    def ask(texts):
        asked.extend(texts)
        return ["A" if "Answer A:\ngood" in t else "B" for t in texts]

    return ask


def test_both_orders_ties_and_resume(tmp_path):
    asked = []
    judged = judge_answers(fake_judge(asked), ITEMS, "j")
    assert len(asked) == 4  # two pairs x two orders; identical answers are not asked
    assert JUDGE_TEMPLATE.format(question="q1", a="good one", b="bad one") in asked
    assert JUDGE_TEMPLATE.format(question="q1", a="bad one", b="good one") in asked
    assert [j["score"] for j in judged] == [1.0, 0.0, 0.5]
    assert judged[2]["identical"]
    s = summarize(judged)
    assert s["sw"]["win_rate"] == 0.5 and s["en"]["win_rate"] == 0.5 and s["all"]["n"] == 3
    assert s["en"]["identical"] == 1 and s["sw"]["invalid"] == 0

    biased = judge_answers(lambda texts: ["A"] * len(texts), ITEMS, "j2")
    assert [j["score"] for j in biased] == [0.5, 0.5, 0.5]
    garbled = summarize(judge_answers(lambda texts: ["hmm"] * len(texts), ITEMS, "j3"))
    assert garbled["sw"]["invalid"] == 4 and garbled["sw"]["win_rate"] == 0.5

    path = tmp_path / "v.jsonl"
    write_jsonl(path, judged)
    again = []
    judge_answers(fake_judge(again), ITEMS, "j", read_cache(path))
    assert again == []  # every reply reused
    judge_answers(fake_judge(again), ITEMS, "other-judge", read_cache(path))
    assert len(again) == 4  # another judge is asked again


def test_eval_with_a_tiny_judge(tiny_llama, tmp_path):

    from clo_mlx.config import build_config
    from clo_mlx.eval.compare import EvalOptions, compare_models

    cfg = build_config(overrides={"lora_parameters": {"rank": 4, "scale": 10.0}})
    write_random_adapters(tiny_llama, tmp_path / "lora", cfg, seed=3)
    write_jsonl(tmp_path / "test.jsonl", parallel_rows(4))
    opts = EvalOptions(max_seq_length=256, fidelity_prompts=2, max_tokens=6,
                       cache_dir=str(tmp_path / "cache"))  # fmt: skip
    results = compare_models(str(tiny_llama), [tmp_path / "lora"], data=tmp_path / "test.jsonl",
                             out_dir=tmp_path / "out", opts=opts, names=["a"],
                             judge=str(tiny_llama))  # fmt: skip
    m = results[1]["metrics"]
    for lang in ("sw", "en", "all"):
        assert 0.0 <= m[f"judge/{lang}/ci_low"] <= m[f"judge/{lang}/win_rate"] <= m[f"judge/{lang}/ci_high"] <= 1.0  # fmt: skip
    assert not any(k.startswith("judge/") for k in results[0]["metrics"])
    lines = [json.loads(x) for x in (tmp_path / "out" / "judge" / "a.jsonl").read_text().splitlines()]  # fmt: skip
    assert len(lines) == 4 and {x["lang"] for x in lines} == {"sw", "en"}
    base = {s["prompt"]: s["response"] for f in results[0]["details"]["fidelity"].values() for s in f["samples"]}  # fmt: skip
    for x in lines:
        assert x["base_answer"] == base[x["prompt"]]
        if not x["identical"]:
            assert x["model_first"]["key"] != x["base_first"]["key"]
            assert x["score"] == pair_score(x["model_first"]["verdict"], x["base_first"]["verdict"])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report[1]["metrics"]["judge/sw/win_rate"] == m["judge/sw/win_rate"]


def test_judge_needs_answers(tiny_llama, tmp_path):
    from clo_mlx.errors import CloError
    from clo_mlx.eval.compare import EvalOptions, compare_models

    write_jsonl(tmp_path / "test.jsonl", parallel_rows(2))
    with pytest.raises(CloError, match="fidelity-prompts"):
        compare_models(str(tiny_llama), [], data=tmp_path / "test.jsonl",
                       opts=EvalOptions(fidelity_prompts=0), judge=str(tiny_llama))  # fmt: skip
