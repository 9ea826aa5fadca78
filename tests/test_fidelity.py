"""Language fidelity: judging real sentences, aggregation, and batched greedy generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clo_mlx.eval import fidelity
from clo_mlx.eval.fidelity import judge, language_fidelity

NTREX = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ntrex128_parallel_7lang.jsonl"
)

# Hand-written sentences (not from any data set).
HAND = {
    "en": [
        "The children walked to school in the morning rain.",
        "Please close the window, it is cold.",
    ],
    "sw": [
        "Watoto walitembea kwenda shuleni asubuhi mvua ikinyesha.",
        "Tafadhali funga dirisha, kuna baridi.",
    ],
    "de": [
        "Die Kinder gingen im Morgenregen zur Schule.",
        "Bitte schließ das Fenster, es ist kalt.",
    ],
    "id": [
        "Anak-anak berjalan ke sekolah di bawah hujan pagi.",
        "Tolong tutup jendelanya, dingin sekali.",
    ],
}


def test_judge_hand_written_sentences():
    cands = sorted(HAND)
    for lang, texts in HAND.items():
        assert judge(texts, lang, cands) == [lang] * len(texts)
    assert judge(["", "   "], "en", cands) == [None, None]


def test_judge_ntrex_sentences():
    if not NTREX.is_file():
        pytest.skip(f"shared NTREX data not present at {NTREX}")
    rows = [json.loads(line) for line in NTREX.open(encoding="utf-8")][:60]
    langs = ["en", "de", "sw", "id"]
    for lang in langs:
        got = judge([r[lang] for r in rows], lang, langs)
        share = sum(g == lang for g in got) / len(got)
        assert share >= 0.95, (lang, share)


def test_language_fidelity_counts_share_in_prompt_language(monkeypatch):
    answers = {
        "sw prompt 0": HAND["sw"][0],
        "sw prompt 1": HAND["sw"][1],
        "sw prompt 2": HAND["en"][0],  # answered in English: not faithful
        "sw prompt 3": "",  # empty: not faithful
        "en prompt 0": HAND["en"][1],
        "en prompt 1": HAND["sw"][0],
    }
    monkeypatch.setattr(
        fidelity, "generate_responses", lambda m, t, prompts, *a, **k: [answers[p] for p in prompts]
    )
    prompts = {"sw": [f"sw prompt {i}" for i in range(4)], "en": ["en prompt 0", "en prompt 1"]}
    res = language_fidelity(None, None, prompts, ["en", "sw"])
    assert res["sw"]["fidelity"] == pytest.approx(0.5)
    assert res["en"]["fidelity"] == pytest.approx(0.5)
    assert res["sw"]["n"] == 4
    assert [s["detected"] for s in res["sw"]["samples"]] == ["sw", "sw", "en", None]
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        language_fidelity(None, None, {"xx": ["a"]}, ["en"])


def test_batched_greedy_matches_mlx_lm_sequential(tmp_path):
    """Batched generation (left padding, KV cache) gives the same greedy text as one-by-one."""
    from mlx_lm import load
    from mlx_lm.generate import generate

    from clo_mlx.tiny import build_tiny_model

    path = build_tiny_model(tmp_path / "m", vocab_size=300, hidden_size=32, num_layers=2, seed=3)
    model, tok = load(str(path))
    prompts = ["How many legs?", "Buibui ana miguu mingapi? Niambie sasa.", "Hi"]
    batched = fidelity.generate_responses(model, tok, prompts, max_tokens=12, batch_size=3)
    for p, b in zip(prompts, batched, strict=True):
        ids = fidelity.chat_prompt_ids(tok, p)
        ref = generate(model, tok, ids, max_tokens=12)
        assert b == ref.strip()
