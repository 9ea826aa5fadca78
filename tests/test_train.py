"""Training runs on a tiny model: CLO learns the preferences; config values change what they should."""

import json

import numpy as np
import pytest
from conftest import parallel_rows, train_config, write_jsonl

from clo_mlx.batching import PairData, SequenceData
from clo_mlx.run import attach_adapters, prepare, run_training


def cfg_for(model, data, tmp_path, **over):
    base = {
        "batch_size": 8,
        "iters": 16,
        "learning_rate": 3e-3,
        "clo": {"beta": 1.0},
        "steps_per_report": 4,
        "steps_per_eval": 16,
        "save_every": 8,
        "lora_parameters": {"rank": 4, "scale": 10.0},
    }
    return train_config(model, data, tmp_path, **{**base, **over})


def test_clo_run_lowers_loss_and_raises_reward_accuracy(learnable_llama, parallel_data, tmp_path):
    cfg = cfg_for(learnable_llama, parallel_data, tmp_path)
    _, result = run_training(cfg)
    first, last = result.evals[0], result.evals[-1]
    assert first["step"] == 0 and last["step"] == cfg.iters
    assert last["val/loss"] < first["val/loss"]
    assert last["val/rewards/accuracies"] > 0.5 >= first["val/rewards/accuracies"]
    assert last["val/rewards/margins"] > 0
    assert last["val/nll/target"] < first["val/nll/target"]
    lines = [json.loads(x) for x in (tmp_path / "ad" / "metrics.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if x["type"] == "train"]
    assert [x["step"] for x in train_lines] == [4, 8, 12, 16]
    for key in (
        "loss",
        "loss/dpo",
        "nll/target",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "learning_rate",
        "tokens_per_second",
        "peak_memory_gb",
    ):
        assert key in train_lines[-1]
    files = sorted(p.name for p in (tmp_path / "ad").iterdir())
    assert files == [
        "0000008_adapters.safetensors",
        "adapter_config.json",
        "adapters.safetensors",
        "checkpoints",
        "metrics.jsonl",
    ]


def test_reference_cache_is_reused_and_keyed_by_tokens(tiny_llama, parallel_data, tmp_path, capsys):
    cfg = cfg_for(tiny_llama, parallel_data, tmp_path)
    first = prepare(cfg)
    second = prepare(cfg)
    np.testing.assert_array_equal(first.train.ref_chosen, second.train.ref_chosen)
    err = capsys.readouterr().err
    assert "computed and cached" in err and "from cache" in err
    entries = list((tmp_path / "cache" / "reference").glob("*.safetensors"))
    prepare(cfg_for(tiny_llama, parallel_data, tmp_path, max_seq_length=30))
    assert len(list((tmp_path / "cache" / "reference").glob("*.safetensors"))) > len(entries)


def test_loss_and_language_options_select_what_trains(tiny_llama, parallel_data, tmp_path):
    target = prepare(cfg_for(tiny_llama, parallel_data, tmp_path, loss="sft")).train
    assert isinstance(target, SequenceData) and len(target) == 8
    sw_answers = {r["response_tgt"] for r in parallel_rows(8)}
    prep = prepare(
        cfg_for(tiny_llama, parallel_data, tmp_path, loss="sft", sft={"languages": "en"})
    )
    decoded = {
        prep.tokenizer.decode(ids[s:]).replace("<|im_end|>\n", "") for ids, s in prep.train.seqs
    }
    assert decoded.isdisjoint(sw_answers) and len(prep.train) == 8
    both = prepare(
        cfg_for(tiny_llama, parallel_data, tmp_path, loss="sft", sft={"languages": "both"})
    )
    assert len(both.train) == 16

    clo = prepare(cfg_for(tiny_llama, parallel_data, tmp_path)).train
    assert isinstance(clo, PairData)
    kinds = [e.pair.kind for e in clo.encoded]
    assert list(clo.nll_weight) == [float(k == "tgt") for k in kinds]
    clo_both = prepare(cfg_for(tiny_llama, parallel_data, tmp_path, clo={"nll_languages": "both"}))
    assert clo_both.train.nll_weight.tolist() == [1.0] * 16


def test_sft_and_dpo_baselines_train(learnable_llama, parallel_data, tmp_path):
    _, sft = run_training(
        cfg_for(learnable_llama, parallel_data, tmp_path, loss="sft", iters=8, steps_per_eval=8)
    )
    assert sft.reports[-1]["nll/train"] < sft.reports[0]["nll/train"]
    assert "rewards/margins" not in sft.reports[-1]  # SFT reports its NLL only
    _, dpo = run_training(
        cfg_for(
            learnable_llama, parallel_data, tmp_path / "d", loss="dpo", iters=8, steps_per_eval=8
        )
    )
    # With lambda = 0 the loss is the DPO term alone.
    assert dpo.reports[-1]["loss"] == pytest.approx(dpo.reports[-1]["loss/dpo"], rel=1e-5)


def test_batches_keep_both_pairs_of_a_row_together(tiny_llama, parallel_data, tmp_path):
    from clo_mlx.batching import unit_batches

    prep = prepare(cfg_for(tiny_llama, parallel_data, tmp_path))
    batches = unit_batches(prep.train, 4, full=True)
    assert sorted(i for b in batches for i in b) == list(range(16))
    for batch in batches:
        pairs = [prep.train.encoded[i].pair for i in batch]
        assert len(batch) == 4
        for row in {p.row for p in pairs}:
            assert sorted(p.kind for p in pairs if p.row == row) == ["en", "tgt"]


def test_cli_train_with_config_then_score(tiny_llama, parallel_data, tmp_path, cli_run):
    config = tmp_path / "c.yaml"
    config.write_text(
        f"model: {tiny_llama}\ndata: {parallel_data}\nadapter_path: {tmp_path / 'ad'}\n"
        f"cache_dir: {tmp_path / 'cache'}\niters: 4\nbatch_size: 2\nsteps_per_report: 2\n"
        "learning_rate: 1e-3\nlora_parameters: {rank: 2, scale: 4.0}\n"
    )
    run = cli_run("train", "-c", config)
    assert run.returncode == 0, run.stderr[-2000:]
    saved = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert saved["iters"] == 4 and saved["lora_parameters"]["rank"] == 2

    out = tmp_path / "scores.jsonl"
    run = cli_run(
        "score",
        "--model",
        tiny_llama,
        "--data",
        parallel_data / "valid.jsonl",
        "--output",
        out,
        "--adapter-path",
        tmp_path / "ad",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["row"], x["kind"]) for x in lines] == [
        (i, k) for i in range(4) for k in ("en", "tgt")
    ]
    for x in lines:
        assert set(x) == {
            "row",
            "kind",
            "chosen_logp",
            "rejected_logp",
            "chosen_tokens",
            "rejected_tokens",
        }
        assert x["chosen_logp"] < 0 and x["chosen_tokens"] > 0

    # The same pairs scored in-process with the adapters give the same numbers.
    from clo_mlx.data import load_pairs
    from clo_mlx.models import load_model
    from clo_mlx.reference import score_pairs
    from clo_mlx.tokens import encode_pairs

    model, tok = load_model(str(tiny_llama), adapter_path=str(tmp_path / "ad"))
    encoded, _ = encode_pairs(tok, load_pairs(parallel_data / "valid.jsonl"), 2048)
    scores = score_pairs(model, encoded, 3, 2048)
    np.testing.assert_allclose([x["chosen_logp"] for x in lines], scores["chosen_logp"], rtol=1e-5)


def test_multiple_target_languages_in_one_run(tiny_llama, tmp_path):
    rows = parallel_rows(4, "sw") + [{**r, "lang": "de"} for r in parallel_rows(4)]
    data = write_jsonl(tmp_path / "mixed.jsonl", rows)
    prep = prepare(cfg_for(tiny_llama, data, tmp_path))
    langs = {e.pair.lang for e in prep.train.encoded}
    assert langs == {"en", "sw", "de"}
    attach_adapters(prep.model, cfg_for(tiny_llama, data, tmp_path))


def test_reference_adapters_give_the_reference_and_training_starts_from_the_base(
    learnable_llama, parallel_data, tmp_path
):
    """SFT -> DPO with the SFT model as reference: reference log-probs come from base + SFT
    adapters; the model that then trains is the plain base."""
    import mlx.core as mx

    from clo_mlx.data import load_pairs
    from clo_mlx.models import load_model
    from clo_mlx.reference import score_pairs
    from clo_mlx.tokens import encode_pairs

    run_training(cfg_for(learnable_llama, parallel_data, tmp_path / "sft", loss="sft", iters=4))
    sft_path = str(tmp_path / "sft" / "ad")
    cfg = cfg_for(
        learnable_llama, parallel_data, tmp_path, loss="dpo", reference_adapter_path=sft_path
    )
    prep = prepare(cfg)
    model, tok = load_model(str(learnable_llama), adapter_path=sft_path)
    encoded, _ = encode_pairs(tok, load_pairs(parallel_data / "train.jsonl"), 2048)
    want = score_pairs(model, encoded, 4, 2048)["chosen_logp"]
    np.testing.assert_allclose(prep.train.ref_chosen, want, rtol=1e-5)
    base, _ = load_model(str(learnable_llama))
    x = mx.array([[1, 2, 3, 4]])
    np.testing.assert_allclose(np.array(prep.model(x)), np.array(base(x)), atol=1e-6)
    assert not np.allclose(np.array(model(x)), np.array(base(x)), atol=1e-3)


@pytest.mark.parametrize("loss", ["clo", "sft"])
def test_micro_batches_add_up_to_the_whole_batch(tiny_llama, parallel_data, tmp_path, loss):
    """Splitting each batch (1 or 3 pairs per pass, unequal parts) changes memory, not the math:
    same reported metrics and the same adapters as one pass over the whole batch. (SGD: Adam's
    normalisation would amplify float noise in near-zero gradients.)"""
    import mlx.core as mx

    results = {}
    for micro in (8, 1, 3):  # 8 pairs = the whole batch
        cfg = cfg_for(
            tiny_llama,
            parallel_data,
            tmp_path / f"m{micro}",
            loss=loss,
            iters=4,
            steps_per_report=1,
            optimizer="sgd",
            learning_rate=0.5,
            micro_batch_size=micro,
        )
        _, result = run_training(cfg)
        adapters = mx.load(str(tmp_path / f"m{micro}" / "ad" / "adapters.safetensors"))
        results[micro] = (result.reports, adapters)
    whole_reports, whole_weights = results[8]
    for micro in (1, 3):
        reports, weights = results[micro]
        for a, b in zip(whole_reports, reports, strict=True):
            for key in ("loss", "rewards/margins", "rewards/accuracies", "nll/target", "nll/train"):
                if key in a:
                    assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (micro, key)
        for name, w in whole_weights.items():
            w = np.array(w)
            assert np.abs(w).max() > 0
            np.testing.assert_allclose(np.array(weights[name]), w, atol=1e-4 * np.abs(w).max())


def test_automatic_micro_batch_fits_the_token_budget():
    """Hand-made lengths: the longest of 8 pairs has 71 tokens, the model sees 70, whose bucket
    (steps of 8 below 128) is 72; 1,024 tokens / (2 sequences x 72) = 7 pairs per pass."""
    from clo_mlx.batching import AUTO_MICRO_BATCH_TOKENS, micro_batch_pairs, micro_batches
    from clo_mlx.config import build_config
    from clo_mlx.data import Pair
    from clo_mlx.tokens import EncodedPair

    # (chosen length, chosen start, rejected length, rejected start) for rows 0-3, kinds en, tgt
    shapes = [
        (18, 10, 16, 10), (20, 12, 19, 12),
        (28, 20, 27, 20), (30, 25, 33, 25),
        (50, 40, 71, 40), (71, 60, 66, 60),
        (12, 5, 11, 5), (15, 5, 14, 5),
    ]  # fmt: skip
    encoded = [
        EncodedPair(
            Pair(i // 2, ("en", "tgt")[i % 2], "sw", "p", "c", "r"),
            list(range(1, cl + 1)),
            cs,
            list(range(1, rl + 1)),
            rs,
        )  # fmt: skip
        for i, (cl, cs, rl, rs) in enumerate(shapes)
    ]
    nll = np.array([0, 1] * 4, np.float32)  # the NLL term covers the target-language pairs
    data = PairData(encoded, np.zeros(8, np.float32), np.zeros(8, np.float32), nll)
    idx = list(range(8))
    assert AUTO_MICRO_BATCH_TOKENS == 1024
    assert micro_batch_pairs(data, idx, build_config()) == 7
    parts, totals = micro_batches(data, idx, build_config(overrides={"micro_batch_size": 3}))
    assert [len(p[3]) for p in parts] == [3, 3, 2]  # as even as possible, none above 3
    assert totals[0].item() == 8
    # response tokens of the tgt pairs' chosen sequences: 8 + 5 + 11 + 10
    assert totals[1].item() == 34
