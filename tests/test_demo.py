"""The built-in demo: corpus generator, pretraining mix/resume, shipped model, end-to-end CLO."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clo_mlx.demo import DEMO_MODEL
from clo_mlx.demo.corpus import read_jsonl, write_demo_data
from clo_mlx.translate.langid import detect_language

SMALL = {"test": 12, "valid": 8, "train": 30}


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    """A private cache for the demo corpus and reference log-probs (not the user's ~/.cache)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("cache")
    mp.setenv("XDG_CACHE_HOME", str(root))
    mp.delenv("CLO_MLX_CACHE", raising=False)
    yield root
    mp.undo()


def test_corpus_deterministic_and_seed_dependent(tmp_path):
    a = write_demo_data(tmp_path / "a", seed=1, sizes=SMALL, n_pretrain=40)
    b = write_demo_data(tmp_path / "b", seed=1, sizes=SMALL, n_pretrain=40)
    c = write_demo_data(tmp_path / "c", seed=2, sizes=SMALL, n_pretrain=40)
    assert set(a) == {"train", "valid", "test", "pretrain"}
    for split in a:
        assert a[split].read_bytes() == b[split].read_bytes()
    assert any(a[s].read_bytes() != c[s].read_bytes() for s in a)


def test_corpus_rows_languages_and_splits(tmp_path):
    from clo_mlx.data import load_splits

    paths = write_demo_data(tmp_path, seed=0, sizes=SMALL, n_pretrain=40)
    rows = {s: read_jsonl(p) for s, p in paths.items()}
    for split, n in {**SMALL, "pretrain": 40}.items():
        assert len(rows[split]) == n
    held = [r["prompt_en"] for s in ("test", "valid", "train") for r in rows[s]]
    assert len(held) == len(set(held)), "test/valid/train must not share prompts"
    evals = {r["prompt_en"] for s in ("test", "valid") for r in rows[s]}
    assert not evals & {r["prompt_en"] for r in rows["pretrain"]}, "eval prompts in pretraining"
    for rs in rows.values():
        for r in rs:
            assert set(r) == {
                "id",
                "lang",
                "prompt_en",
                "response_en",
                "prompt_tgt",
                "response_tgt",
            }
            assert r["lang"] == "sw"
            assert detect_language(r["response_tgt"], ["en", "sw"])[0] == "sw", r
            assert detect_language(r["response_en"], ["en", "sw"])[0] == "en", r
            assert r["response_en"] != r["response_tgt"]
    splits = load_splits(tmp_path)  # the core's validating loader accepts the folder
    assert {s: len(p) for s, p in splits.items()} == {s: 2 * n for s, n in SMALL.items()}


def test_pretrain_mix_is_english_centric():
    from clo_mlx.demo.pretrain import P_TARGET_ANSWER, pretrain_texts

    rows = [
        {
            "prompt_en": f"q{i}",
            "response_en": f"a{i}",
            "prompt_tgt": f"sq{i}",
            "response_tgt": f"sa{i}",
        }
        for i in range(2000)
    ]
    texts = pretrain_texts(rows, seed=0)
    sw_chats = [t for t in texts if t.startswith("<|im_start|>user\nsq")]
    in_sw = sum("<|im_start|>assistant\nsa" in t for t in sw_chats) / len(sw_chats)
    assert len(sw_chats) == 2000
    assert abs(in_sw - P_TARGET_ANSWER) < 0.03
    assert sum(t.startswith("<|im_start|>user\nq") for t in texts) == 2000
    assert sum(t.startswith("<|endoftext|>sq") for t in texts) == 2000  # plain Swahili text


def test_shipped_tokenizer_is_reproduced_from_the_corpus(tmp_path):
    """The corpus generator still produces the text the shipped model was pretrained on."""
    from clo_mlx.demo.corpus import split_rows
    from clo_mlx.demo.pretrain import VOCAB_SIZE, pretrain_texts, tokenizer_texts
    from clo_mlx.tiny import train_tokenizer

    texts = tokenizer_texts(pretrain_texts(split_rows(seed=0)["pretrain"], seed=0))
    train_tokenizer(texts, VOCAB_SIZE, tmp_path)
    shipped = json.loads((DEMO_MODEL / "tokenizer.json").read_text())
    assert json.loads((tmp_path / "tokenizer.json").read_text()) == shipped


def test_pretrain_resumes_to_the_same_weights(tmp_path):
    import mlx.core as mx

    from clo_mlx.demo.pretrain import pretrain

    tiny = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    kw = dict(
        steps=4, batch_size=4, warmup=1, save_every=2, n_pretrain=40, vocab_size=300, sizes=SMALL
    )
    pretrain(tmp_path / "a", model_config=tiny, **kw)
    pretrain(tmp_path / "b", model_config=tiny, stop_at=2, **kw)
    assert (tmp_path / "b" / "checkpoint" / "state.json").is_file()
    pretrain(tmp_path / "b", model_config=tiny, **kw)
    assert not (tmp_path / "b" / "checkpoint").exists()
    wa = mx.load(str(tmp_path / "a" / "model.safetensors"))
    wb = mx.load(str(tmp_path / "b" / "model.safetensors"))
    assert set(wa) == set(wb)
    for k in wa:
        np.testing.assert_allclose(np.array(wa[k]), np.array(wb[k]), atol=1e-5, err_msg=k)


def test_shipped_demo_model_is_english_centric(demo_cache):
    """The shipped weights load in mlx-lm and answer Swahili prompts mostly in English."""
    from mlx_lm import generate, load

    from clo_mlx.demo.run import prepare_demo_data
    from clo_mlx.eval.fidelity import chat_prompt_ids, language_fidelity

    size = sum(p.stat().st_size for p in DEMO_MODEL.iterdir())
    assert size <= 20 * 2**20
    config = json.loads((DEMO_MODEL / "config.json").read_text())
    assert config["model_type"] == "llama"
    model, tok = load(str(DEMO_MODEL))
    assert "<|im_start|>" in tok.chat_template
    text = generate(model, tok, chat_prompt_ids(tok, "What is 2 plus 3?"), max_tokens=20)
    assert detect_language(text, ["en", "sw"])[0] == "en", text

    test = read_jsonl(prepare_demo_data(train_rows=80) / "test.jsonl")[:16]
    prompts = {"en": [r["prompt_en"] for r in test], "sw": [r["prompt_tgt"] for r in test]}
    res = language_fidelity(model, tok, prompts, ["en", "sw"], max_tokens=24)
    assert res["en"]["fidelity"] >= 0.9
    assert res["sw"]["fidelity"] <= 0.3


def test_demo_end_to_end_moves_fidelity_and_margin(tmp_path, demo_cache):
    from clo_mlx.demo.run import run_demo

    r = run_demo(adapter_path=tmp_path / "ad", quick=True)
    assert r["after"]["sw"] > r["before"]["sw"]
    assert r["after"]["en"] >= 0.8
    assert r["val_margins"]["last"] > r["val_margins"]["first"]
    assert (tmp_path / "ad" / "adapters.safetensors").is_file()
    assert (tmp_path / "ad" / "demo_curves.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "ad" / "demo_summary.json").read_text())
    assert summary["after"] == r["after"]
    # Keys kept, new ones added; held-out English retention from an independent computation.
    for key in ("after", "en_same_as_base", "valid_logps", "retention", "train_seconds"):
        assert key in summary, key
    ret = summary["retention"]
    assert ret["n_heldout"] == summary["n_eval"] == 16 and ret["n_answer_mc"] == 16
    import mlx.core as mx
    from mlx_lm import load

    from clo_mlx.demo.run import prepare_demo_data
    from clo_mlx.tokens import encode_pair

    test = read_jsonl(prepare_demo_data(train_rows=80) / "test.jsonl")[:16]
    for adapters, when in ((None, "before"), (str(tmp_path / "ad"), "after")):
        model, tok = load(str(DEMO_MODEL), adapter_path=adapters)
        total = 0.0
        for row in test:  # one unbatched forward pass per answer, log-softmax in float64
            ids, start = encode_pair(tok, row["prompt_en"], row["response_en"])
            logits = np.array(model(mx.array(ids)[None]), np.float64)[0]
            lp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
            total += sum(lp[t - 1, ids[t]] for t in range(start, len(ids)))
        assert ret["logp_en"][when] == pytest.approx(total / 16, rel=1e-3)
    assert ret["logp_change_en"] == pytest.approx(
        ret["logp_en"]["after"] - ret["logp_en"]["before"], abs=1e-4
    )
    assert 0.0 <= ret["answer_mc_en"]["before"] <= 1.0
