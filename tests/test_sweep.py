"""Sweep: nested row subsets, resumable cells, two-stage methods, several target languages."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from conftest import np_pair_logps, parallel_rows, write_jsonl
from mlx_lm import load

import clo_mlx.eval.sweep as sweep
from clo_mlx.config import ConfigError
from clo_mlx.data import load_pairs
from clo_mlx.eval.sweep import (
    SweepSpec,
    load_spec,
    nested_subsets,
    resolve_sizes,
    run_sweep,
    subset_pairs,
)

DE = [
    ("Wie viele Beine hat eine Spinne?", "Eine Spinne hat acht Beine."),
    ("Schreibe drei Farben.", "Rot, grün und blau."),
    ("Was ist zwei plus zwei?", "Zwei plus zwei ist vier."),
    ("Sag hallo zu einem Freund.", "Hallo, mein Freund!"),
]


def de_rows(n: int) -> list[dict]:
    rows = parallel_rows(n, lang="de")
    for i, r in enumerate(rows):
        r["prompt_tgt"], r["response_tgt"] = DE[i % 4]
    return rows


@pytest.fixture
def mixed_data(tmp_path):
    d = tmp_path / "data"
    write_jsonl(d / "train.jsonl", parallel_rows(4) + de_rows(4))
    write_jsonl(d / "test.jsonl", parallel_rows(2) + de_rows(2))
    return d


def test_nested_subsets_are_nested_sorted_and_fixed_by_seed():
    counts = resolve_sizes([0.125, 0.25, 0.5, 1.0], 80)
    assert counts == [10, 20, 40, 80]
    subsets = nested_subsets(80, counts, seed=3)
    for small, large in zip(counts, counts[1:], strict=False):
        assert set(subsets[small]) < set(subsets[large])
    assert subsets[80] == list(range(80))
    assert all(s == sorted(s) and len(s) == k for k, s in subsets.items())
    assert nested_subsets(80, counts, seed=3) == subsets  # fixed by the seed
    assert nested_subsets(80, [10], seed=4)[10] != subsets[10]
    # Each size alone gives the same rows as within the full list.
    assert nested_subsets(80, [20], seed=3)[20] == subsets[20]
    assert resolve_sizes([3, 0.5, 6], 6) == [3, 6]  # counts and fractions, deduplicated
    with pytest.raises(ConfigError, match="asks for 9 rows"):
        resolve_sizes([9], 6)


def test_subset_pairs_keeps_both_pairs_of_each_row():
    from clo_mlx.data import rows_to_pairs

    pairs = rows_to_pairs("parallel", parallel_rows(5))
    sub = subset_pairs(pairs, [1, 3])
    assert [(p.row, p.kind) for p in sub] == [(1, "en"), (1, "tgt"), (3, "en"), (3, "tgt")]


def test_spec_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown sweep key 'method'.*'methods'"):
        load_spec(overrides={"model": "m", "data": "d", "out": "o", "method": ["clo"]})
    with pytest.raises(ConfigError, match="unknown method 'cloo'"):
        load_spec(overrides={"model": "m", "data": "d", "out": "o", "methods": ["cloo"]})
    with pytest.raises(ConfigError, match="`model` is required"):
        load_spec(overrides={"data": "d", "out": "o"})
    (tmp_path / "s.yaml").write_text("model: m\ndata: d\nout: o\neval: {fidelity: 3}\n")
    with pytest.raises(ConfigError, match="s.yaml: unknown eval option 'fidelity'"):
        load_spec(tmp_path / "s.yaml")


def _spec(model, data, out, **kw) -> SweepSpec:
    train = {
        "iters": 2,
        "batch_size": 4,
        "learning_rate": 1e-2,
        "max_seq_length": 128,
        "steps_per_report": 1,
        "cache_dir": str(out / "cache"),
        "lora_parameters": {"rank": 4},
    }
    base = dict(
        model=str(model),
        data=str(data),
        out=str(out),
        train=train,
        eval={"batch_size": 4, "max_seq_length": 128, "fidelity_prompts": 1, "max_tokens": 3},
    )
    base.update(kw)
    return load_spec(overrides=base)


def test_sweep_mixed_languages_resume_and_rerun(tiny_llama, mixed_data, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    spec = _spec(
        tiny_llama,
        mixed_data,
        out,
        methods=["sft", "clo"],
        sizes=[0.5, 1.0],
        plot_metrics=["rewards/accuracies", "ppl/de"],
    )
    records = run_sweep(spec)
    assert [(r["method"], r["rows"]) for r in records] == [
        ("sft", 4),
        ("sft", 8),
        ("clo", 4),
        ("clo", 8),
    ]
    assert [r["stages"][0]["items"] for r in records] == [4, 8, 8, 16]  # sequences / pairs
    for name in ("results.json", "results.md", "results.png"):
        assert (out / name).is_file()
    table = (out / "results.md").read_text()
    assert "| clo |" in table and "| base |" in table and "8 rows" in table

    # Several target languages: per-language metrics, checked against an independent computation.
    clo = records[3]["metrics"]
    for key in ("ppl/sw", "ppl/de", "ppl/en", "fidelity/sw", "fidelity/de", "fidelity/en"):
        assert key in clo, key
    pairs = load_pairs(mixed_data / "test.jsonl")
    rows = [json.loads(line) for line in (mixed_data / "test.jsonl").read_text().splitlines()]
    base_model, tok = load(str(tiny_llama))
    ref = np_pair_logps(base_model, tok, pairs)[0]
    adapted, _ = load(
        str(tiny_llama), adapter_path=str(sweep.cell_dir(out, "clo", 8, 0) / "adapters")
    )
    pol = np_pair_logps(adapted, tok, pairs)[0]
    h = (pol[:, 0] - ref[:, 0]) - (pol[:, 1] - ref[:, 1])
    row_lang = np.array([rows[p.row]["lang"] for p in pairs])
    assert np.abs(h).max() > 1e-4  # training moved the policy away from the reference
    for lang in ("sw", "de"):
        assert clo[f"{lang}:rewards/accuracies"] == pytest.approx(np.mean(h[row_lang == lang] > 0))
        assert clo[f"{lang}:rewards/margins"] == pytest.approx(
            0.1 * h[row_lang == lang].mean(), rel=2e-3, abs=2e-4
        )
    assert clo["rewards/accuracies"] == pytest.approx(np.mean(h > 0))
    # English retention against the base: the held-out English answers' log-prob change.
    en = np.array([p.kind == "en" for p in pairs])
    want = (pol[en, 0] - ref[en, 0]).mean()
    assert clo["logp_change/en"] == pytest.approx(want, rel=2e-3, abs=2e-4)
    assert 0.0 <= clo["same_as_base/en"] <= 1.0
    assert (out / "results_tradeoff.png").stat().st_size > 1000  # target gained vs English kept

    # Re-run: every cell is skipped and the same results come back.
    def must_not_train(*a, **k):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(sweep, "train_cell", must_not_train)
    again = run_sweep(spec)
    assert [r["metrics"] for r in again] == [r["metrics"] for r in records]

    # A changed method definition re-runs exactly its cells.
    ran = []
    monkeypatch.setattr(sweep, "train_cell", lambda m, t, s, meth, *a, **k: ran.append(meth) or [])
    changed = _spec(
        tiny_llama,
        mixed_data,
        out,
        methods=["sft", "clo"],
        sizes=[0.5, 1.0],
        custom_methods={"clo": [{"loss": "clo", "clo": {"beta": 0.2}}]},
        plot_metrics=["rewards/accuracies"],
    )
    run_sweep(changed)
    assert ran == ["clo", "clo"]


def test_two_stage_method_continues_from_the_first_stage(tiny_llama, parallel_data, tmp_path):
    """sft -> dpo with a zero learning rate in stage 2 must end exactly at stage 1's weights."""
    from clo_mlx.models import load_model

    out = tmp_path / "two"
    spec = _spec(
        tiny_llama,
        parallel_data,
        out,
        methods=["sft_then_frozen_dpo"],
        custom_methods={
            "sft_then_frozen_dpo": [
                {"loss": "sft"},
                {"loss": "dpo", "learning_rate": 0.0, "iters": 1},
            ]
        },
    )
    model, tok = load_model(str(tiny_llama))
    pairs = load_pairs(parallel_data / "train.jsonl")
    stages = sweep.train_cell(model, tok, spec, "sft_then_frozen_dpo", pairs, 0, out, None)
    assert [s["loss"] for s in stages] == ["sft", "dpo"]
    w1 = mx.load(stages[0]["adapter_file"])
    w2 = mx.load(stages[1]["adapter_file"])
    assert set(w1) == set(w2) and any(k.endswith("lora_b") for k in w1)
    assert max(float(mx.abs(w1[k]).max()) for k in w1 if k.endswith("lora_b")) > 0
    for k in w1:
        np.testing.assert_array_equal(np.array(w1[k]), np.array(w2[k]))


@pytest.mark.reference_blas  # zero rewards: the reference pass and the step agree bit for bit
def test_sft_reference_stage_uses_the_first_stage_model(tiny_llama, parallel_data, tmp_path):
    """`reference: previous`: stage 2's reference log-probs are the SFT model's (checked per
    sequence), so with a zero learning rate its rewards stay at zero."""
    from clo_mlx.models import load_model

    out = tmp_path / "ref"
    method = [{"loss": "sft"}, {"loss": "dpo", "learning_rate": 0.0, "iters": 1, "reference": "previous"}]  # fmt: skip
    spec = _spec(tiny_llama, parallel_data, out, methods=["m"], custom_methods={"m": method})
    model, tok = load_model(str(tiny_llama))
    pairs = load_pairs(parallel_data / "train.jsonl")
    stages = sweep.train_cell(model, tok, spec, "m", pairs, 0, out, None)
    assert abs(stages[1]["final_train"]["rewards/margins"]) < 1e-4
    assert stages[1]["final_train"]["rewards/accuracies"] == 0.0

    (cached,) = (out / "stage2" / "reference_cache" / "reference").glob("*.safetensors")
    ref = mx.load(str(cached))
    sft_model, _ = load(str(tiny_llama), adapter_path=str(out / "stage1"))
    want = np_pair_logps(sft_model, tok, pairs)[0]
    np.testing.assert_allclose(np.array(ref["chosen_logp"]), want[:, 0], rtol=1e-4, atol=2e-3)
    np.testing.assert_allclose(np.array(ref["rejected_logp"]), want[:, 1], rtol=1e-4, atol=2e-3)
    base_model, _ = load(str(tiny_llama))
    assert np.abs(np_pair_logps(base_model, tok, pairs[:2])[0][:, 0] - want[:2, 0]).max() > 1e-2

    with pytest.raises(ConfigError, match="stage 1: reference must be 'base' in the first stage"):
        _spec(tiny_llama, parallel_data, out, methods=["bad"],
              custom_methods={"bad": [{"loss": "dpo", "reference": "previous"}]})  # fmt: skip
