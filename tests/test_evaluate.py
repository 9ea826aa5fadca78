"""`clo-mlx eval` metrics against an independent per-sequence computation on a tiny model."""

from __future__ import annotations

import json
import math

import mlx.core as mx
import numpy as np
import pytest
from conftest import (
    np_pair_logps,
    np_response_logp,
    parallel_rows,
    set_random_trainable,
    write_jsonl,
    write_random_adapters,
)
from mlx.utils import tree_flatten
from mlx_lm import load

from clo_mlx.data import load_pairs
from clo_mlx.eval.compare import (
    EvalOptions,
    compare_models,
    fidelity_metrics,
    fidelity_prompts,
    markdown_table,
    strip_adapters,
)
from clo_mlx.tokens import encode_pair
from clo_mlx.translate.langid import detect_language

BETA = 0.2


@pytest.fixture(scope="module")
def adapter_dir(tiny_llama, tmp_path_factory):
    """LoRA adapters (mlx-lm format) with random non-zero weights."""
    from clo_mlx.config import build_config

    out = tmp_path_factory.mktemp("adapters") / "lora"
    cfg = build_config(overrides={"lora_parameters": {"rank": 4, "scale": 10.0}})
    write_random_adapters(tiny_llama, out, cfg, seed=3)
    return out


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    d = tmp_path_factory.mktemp("heldout")
    rows = parallel_rows(4)
    write_jsonl(d / "test.jsonl", rows)
    mc = [
        {"lang": "sw", "question": "Buibui ana miguu mingapi?", "choices": ["Minane.", "Nne."],
         "label": 0},
        {"lang": "en", "question": "Name three colours.",
         "choices": ["Hello, my friend!", "Red, green and blue."], "label": 1},
        {"lang": "en", "question": "What is two plus two?",
         "choices": ["Two plus two is four.", "A spider has eight legs.", "Blue."], "label": 0},
    ]  # fmt: skip
    write_jsonl(d / "mc.jsonl", mc)
    return d


def test_compare_models_against_independent_computation(tiny_llama, adapter_dir, heldout, tmp_path):
    opts = EvalOptions(
        batch_size=4,
        max_seq_length=256,
        fidelity_prompts=2,
        max_tokens=6,
        beta=BETA,
        cache_dir=str(tmp_path / "cache"),
        answer_mc=2,
        answer_mc_choices=2,
    )
    results = compare_models(
        str(tiny_llama),
        [adapter_dir, adapter_dir],
        data=heldout,
        mc_path=heldout / "mc.jsonl",
        out_dir=tmp_path / "report",
        opts=opts,
        names=["a", "a-again"],
    )
    assert [r["name"] for r in results] == ["base", "a", "a-again"]

    pairs = load_pairs(heldout / "test.jsonl")
    kinds = np.array([p.kind for p in pairs])
    base_model, tok = load(str(tiny_llama))
    ref, ntok = np_pair_logps(base_model, tok, pairs)
    lora_model, _ = load(str(tiny_llama), adapter_path=str(adapter_dir))
    pol, _ = np_pair_logps(lora_model, tok, pairs)

    m = results[1]["metrics"]
    assert not any("rewards/" in k for k in results[0]["metrics"])  # base = reference: no rewards
    h = (pol[:, 0] - ref[:, 0]) - (pol[:, 1] - ref[:, 1])
    assert np.abs(h).min() > 1e-3  # the adapters really change the scores
    assert m["rewards/accuracies"] == pytest.approx(np.mean(h > 0))
    assert m["rewards/margins"] == pytest.approx(BETA * h.mean(), rel=1e-3, abs=1e-4)
    for kind in ("en", "tgt"):
        assert m[f"rewards/accuracies/{kind}"] == pytest.approx(np.mean(h[kinds == kind] > 0))
        assert m[f"rewards/margins/{kind}"] == pytest.approx(
            BETA * h[kinds == kind].mean(), rel=1e-3, abs=1e-4
        )
    # Perplexity of the chosen responses per language, token-weighted.
    for lang, kind in (("en", "en"), ("sw", "tgt")):
        sel = kinds == kind
        want = math.exp(-pol[sel, 0].sum() / ntok[sel, 0].sum())
        assert m[f"ppl/{lang}"] == pytest.approx(want, rel=1e-4)
        base_want = math.exp(-ref[sel, 0].sum() / ntok[sel, 0].sum())
        assert results[0]["metrics"][f"ppl/{lang}"] == pytest.approx(base_want, rel=1e-4)
        # Retention against the base: log-prob change per answer and perplexity ratio.
        change = (pol[sel, 0] - ref[sel, 0]).mean()
        assert abs(change) > 1e-3
        assert m[f"logp_change/{lang}"] == pytest.approx(change, rel=1e-3, abs=1e-4)
        assert m[f"ppl_ratio/{lang}"] == pytest.approx(want / base_want, rel=1e-3)
        assert f"logp_change/{lang}" not in results[0]["metrics"]

    # answer_mc: hand-built items (2 choices: the answer and the most similar prompt's answer).
    amc = {
        "en": [("How many legs does a spider have?", ("A spider has eight legs.", "Hello, my friend!"), 0),
               ("Name three colours.", ("A spider has eight legs.", "Red, green and blue."), 1)],
        "sw": [("Buibui ana miguu mingapi?", ("Buibui ana miguu minane.", "Nyekundu, kijani na bluu."), 0),
               ("Taja rangi tatu.", ("Buibui ana miguu minane.", "Nyekundu, kijani na bluu."), 1)],
    }  # fmt: skip
    for model_, metrics in ((base_model, results[0]["metrics"]), (lora_model, m)):
        for lang, items in amc.items():
            hits = []
            for prompt, choices, label in items:
                s = [np_response_logp(model_, *encode_pair(tok, prompt, c))[0] for c in choices]
                hits.append(int(np.argmax(s) == label))
            assert metrics[f"answer_mc/{lang}/acc"] == pytest.approx(np.mean(hits))

    # Multiple choice with the adapted model.
    mc = [json.loads(line) for line in (heldout / "mc.jsonl").read_text().splitlines()]
    correct = {"en": [], "sw": []}
    for item in mc:
        scores = [np_response_logp(lora_model, *encode_pair(tok, item["question"], c)) for c in item["choices"]]  # fmt: skip
        s = np.array([x[0] for x in scores])
        correct[item["lang"]].append(int(np.argmax(s) == item["label"]))
    for lang, c in correct.items():
        assert m[f"mc/{lang}/acc"] == pytest.approx(np.mean(c))

    # Adapters are removed after each model: loading the same adapters again gives the same numbers.
    again = results[2]["metrics"]
    for k, v in m.items():
        assert again[k] == pytest.approx(v, rel=1e-4, abs=1e-5), k

    # Fidelity: the share of samples judged to be in the prompt's language.
    for r in results:
        fid = r["details"]["fidelity"]
        assert set(fid) == {"sw", "en"} and all(f["n"] == 2 for f in fid.values())
        for lang, f in fid.items():
            judged = [
                detect_language(s["response"], ["en", "sw"])[0] if s["response"].strip() else None
                for s in f["samples"]
            ]
            assert r["metrics"][f"fidelity/{lang}"] == pytest.approx(np.mean([j == lang for j in judged]))  # fmt: skip
    # Greedy answers identical to the base model's, per language.
    for r in results[1:]:
        for lang in ("sw", "en"):
            pairs_ = zip(r["details"]["fidelity"][lang]["samples"],
                         results[0]["details"]["fidelity"][lang]["samples"], strict=True)  # fmt: skip
            same = [a["response"] == b["response"] for a, b in pairs_]
            assert r["metrics"][f"same_as_base/{lang}"] == pytest.approx(np.mean(same))
    assert "same_as_base/en" not in results[0]["metrics"]

    # The report files hold the same numbers.
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [r["name"] for r in report] == ["base", "a", "a-again"]
    assert report[1]["metrics"]["rewards/accuracies"] == m["rewards/accuracies"]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| a-again |" in md and "fidelity/sw" in md and "rewards/accuracies" in md
    assert (tmp_path / "report" / "report.png").stat().st_size > 1000


def test_answer_mc_items_by_hand():
    from clo_mlx.data import rows_to_pairs
    from clo_mlx.eval.compare import answer_mc_items

    pairs = rows_to_pairs("parallel", parallel_rows(4))
    items = answer_mc_items(pairs, n=3, n_choices=2, langs=["en"])
    # "How many legs does a spider have?" shares only "a" with "Say hello to a friend.";
    # "Name three colours." shares no word with any: the first other prompt (file order) wins.
    assert [(i.prompt, i.choices, i.label) for i in items] == [
        ("How many legs does a spider have?", ("A spider has eight legs.", "Hello, my friend!"), 0),
        ("Name three colours.", ("A spider has eight legs.", "Red, green and blue."), 1),
        ("What is two plus two?", ("Two plus two is four.", "A spider has eight legs."), 0),
    ]
    assert {i.lang for i in answer_mc_items(pairs, n=1)} == {"en", "sw"}


def test_strip_adapters_restores_the_base_outputs(tiny_llama, adapter_dir):
    from mlx_lm.tuner.utils import load_adapters

    model, tok = load(str(tiny_llama))
    ids, start = encode_pair(tok, "Name three colours.", "Red, green and blue.")
    before = np_response_logp(model, ids, start)[0]
    load_adapters(model, str(adapter_dir))
    assert abs(np_response_logp(model, ids, start)[0] - before) > 1e-3
    strip_adapters(model)
    assert np_response_logp(model, ids, start)[0] == pytest.approx(before, abs=1e-5)
    assert all("lora" not in k for k, _ in tree_flatten(model.parameters()))


def test_fidelity_aggregation_and_prompts():
    result = {
        "sw": {"fidelity": 0.75, "n": 4, "samples": []},
        "en": {"fidelity": 1.0, "n": 2, "samples": []},
    }
    assert fidelity_metrics(result) == {
        "fidelity/sw": 0.75,
        "fidelity/en": 1.0,
        "fidelity/mean": 0.875,
    }
    assert fidelity_metrics({}) == {}

    from clo_mlx.data import rows_to_pairs

    rows = parallel_rows(8) + parallel_rows(2, lang="de")
    prompts = fidelity_prompts(rows_to_pairs("parallel", rows), 3)
    assert list(prompts) == ["de", "sw", "en"]  # target languages first, English last
    assert prompts["sw"] == [
        "Buibui ana miguu mingapi?",
        "Taja rangi tatu.",
        "Mbili jumlisha mbili ni ngapi?",
    ]  # distinct, in order
    assert len(prompts["en"]) == 3 and len(prompts["de"]) == 2


def test_markdown_table_lists_headline_metrics():
    results = [
        {"name": "base", "metrics": {"fidelity/sw": 0.1, "rewards/accuracies": 0.0, "loss": 1.0}},
        {"name": "clo", "metrics": {"fidelity/sw": 0.9, "rewards/accuracies": 0.8, "ppl/sw": 5.0}},
    ]
    md = markdown_table(results)
    lines = md.strip().splitlines()
    assert lines[0] == "| model | fidelity/sw | rewards/accuracies | ppl/sw |"
    assert lines[2] == "| base | 0.100 | 0.000 | – |"
    assert lines[3] == "| clo | 0.900 | 0.800 | 5.000 |"


def test_eval_cli_writes_the_report(tiny_llama, adapter_dir, heldout, tmp_path):
    from typer.testing import CliRunner

    import cli.main

    out = tmp_path / "cli_report"
    args = ["eval", "--model", str(tiny_llama), "-a", str(adapter_dir), "--name", "mine",
            "--data", str(heldout / "test.jsonl"), "--fidelity-prompts", "0",
            "--out", str(out), "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    r = CliRunner().invoke(cli.main.app, args)
    assert r.exit_code == 0, r.output
    assert "| mine |" in r.output and "rewards/accuracies" in r.output
    report = json.loads((out / "report.json").read_text())
    assert [x["name"] for x in report] == ["base", "mine"]
    assert "fidelity/sw" not in report[1]["metrics"]  # --fidelity-prompts 0 skips generation

    bad = CliRunner().invoke(cli.main.app, [*args[:4], str(tmp_path / "nope"), *args[5:]])
    assert bad.exit_code != 0 and "no such adapter folder" in str(bad.exception)


def test_sweep_cli_merges_yaml_and_flags(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import cli.main
    import clo_mlx.eval.sweep

    seen = {}

    def fake_run(spec):
        seen["spec"] = spec
        (tmp_path / "o").mkdir(exist_ok=True)
        (tmp_path / "o" / "results.md").write_text("# table\n")
        return []

    monkeypatch.setattr(clo_mlx.eval.sweep, "run_sweep", fake_run)
    (tmp_path / "s.yaml").write_text(
        "model: m\ndata: d\nout: " + str(tmp_path / "o") + "\nmethods: [clo]\n"
        "train: {learning_rate: 1.0e-4, batch_size: 2}\neval: {max_tokens: 9}\n"
    )
    args = ["sweep", "-c", str(tmp_path / "s.yaml"), "--methods", "clo,sft+dpo",
            "--sizes", "0.25,100", "--seeds", "0,1", "--batch-size", "8", "--fidelity-prompts", "5"]  # fmt: skip
    r = CliRunner().invoke(cli.main.app, args)
    assert r.exit_code == 0, r.output
    spec = seen["spec"]
    assert spec.methods == ["clo", "sft+dpo"] and spec.sizes == [0.25, 100] and spec.seeds == [0, 1]
    assert spec.train == {"learning_rate": 1.0e-4, "batch_size": 8}
    assert spec.eval == {"max_tokens": 9, "fidelity_prompts": 5}
    assert "# table" in r.output


def test_strip_adapters_removes_dora_layers(tiny_llama, tmp_path):
    from mlx_lm.tuner.utils import load_adapters

    from clo_mlx.adapters import apply_trainable, save_adapters
    from clo_mlx.config import build_config

    model, tok = load(str(tiny_llama))
    ids, start = encode_pair(tok, "Taja rangi tatu.", "Nyekundu, kijani na bluu.")
    before = np_response_logp(model, ids, start)[0]
    cfg = build_config(overrides={"fine_tune_type": "dora", "lora_parameters": {"rank": 2}})
    mx.random.seed(0)  # DoRA's lora_a init draws from MLX's global RNG: fixed, whatever ran before
    apply_trainable(model, cfg)
    set_random_trainable(model, seed=0, suffix="lora_b")
    save_adapters(model, tmp_path / "dora", cfg)
    fresh, _ = load(str(tiny_llama))
    load_adapters(fresh, str(tmp_path / "dora"))
    assert abs(np_response_logp(fresh, ids, start)[0] - before) > 1e-3
    strip_adapters(fresh)
    assert np_response_logp(fresh, ids, start)[0] == pytest.approx(before, abs=1e-5)
