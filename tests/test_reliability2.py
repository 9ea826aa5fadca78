"""Reliability, part 2 (issue 13): faults while saving, checkpoints that are damaged, earlier runs
and concurrent runs in one adapter folder, checks before the reference pass, and core defects
(gradient accumulation, reference cache key, validation sampling, token convention edge cases)."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import subprocess
import sys

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from conftest import parallel_rows, train_config, write_jsonl
from rich.console import Console

from clo_mlx.adapters import AdapterError, load_adapters_checked
from clo_mlx.checkpoint import CheckpointError
from clo_mlx.config import ConfigError, build_config
from clo_mlx.errors import CloError
from clo_mlx.io import LockedError, WriteError, atomic_write_text, lock_folder
from clo_mlx.run import attach_adapters, prepare, run_training
from clo_mlx.trainer import NonFiniteLoss

CLI = [sys.executable, "-c", "from cli.main import main; main()"]


def quiet() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200), out


def cfg_for(model, data, tmp_path, **over):
    base = {
        "batch_size": 4,
        "iters": 4,
        "save_every": 2,
        "steps_per_report": 1,
        "steps_per_eval": 1000,
        "learning_rate": 1e-3,
        "lora_parameters": {"rank": 4, "scale": 10.0},
    }
    return train_config(model, data, tmp_path, **{**base, **over})


def replace(cfg, **over):
    return build_config(overrides={**cfg.to_dict(), **over})


# ----------------------------------------------------------------------------- non-finite steps


def test_non_finite_first_update_is_rolled_back_and_says_nothing_was_saved(
    tiny_llama, parallel_data, tmp_path
):
    # The config refuses a NaN learning rate (test_config); set it behind the check's back to
    # get a non-finite first update.
    cfg = dataclasses.replace(cfg_for(tiny_llama, parallel_data, tmp_path), learning_rate=math.nan)
    console, _ = quiet()
    # Before: KeyError 'model' (the rollback snapshot had no optimizer state yet).
    with pytest.raises(NonFiniteLoss, match=r"at step 1 .*Nothing was saved yet") as e:
        run_training(cfg, console=console)
    assert "last good adapters" not in str(e.value)

    skip = dataclasses.replace(cfg, skip_nonfinite=True, adapter_path=str(tmp_path / "skip"))
    _, result = run_training(skip, console=console)
    assert [r["step"] for r in result.reports] == [1, 2, 3, 4]
    assert all("loss" not in r for r in result.reports)  # every step was skipped
    weights = mx.load(str(tmp_path / "skip" / "adapters.safetensors"))
    assert all(bool(mx.isfinite(v).all()) for v in weights.values())


def test_report_averages_leave_out_skipped_steps(tiny_llama, parallel_data, tmp_path, monkeypatch):
    import clo_mlx.trainer as trainer

    console, _ = quiet()
    cfg = cfg_for(tiny_llama, parallel_data, tmp_path, iters=2, steps_per_report=1)
    _, every_step = run_training(cfg, console=console)
    step1 = every_step.reports[0]["loss"]

    real, calls = trainer.micro_batches, []

    def nan_at_step_2(data, idx, c):
        parts, totals = real(data, idx, c)
        calls.append(1)
        return parts, totals * (float("nan") if len(calls) == 2 else 1.0)

    monkeypatch.setattr(trainer, "micro_batches", nan_at_step_2)
    skip = replace(
        cfg, steps_per_report=2, skip_nonfinite=True, adapter_path=str(tmp_path / "skip")
    )
    _, result = run_training(skip, console=console)
    # One report over steps 1-2, step 2 skipped: the mean of step 1 alone (before: half of it).
    assert [r["step"] for r in result.reports] == [2]
    assert result.reports[0]["loss"] == pytest.approx(step1, rel=1e-6)


# ----------------------------------------------------------------------------- writing and saving


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_of_a_plain_write(tmp_path, umask):
    old = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        atomic_write_text(tmp_path / "atomic.txt", "x")
    finally:
        os.umask(old)
    mode = (tmp_path / "atomic.txt").stat().st_mode & 0o777
    assert mode == plain.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_names_the_path_and_keeps_the_previous_version(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(WriteError, match=rf"{target}: cannot write \(No space left on device"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]  # no temporary file left


def test_full_disk_while_checkpointing_leaves_nothing_partial(
    tiny_llama, parallel_data, tmp_path, monkeypatch
):
    real = mx.save_safetensors

    def fail_second_checkpoint(path, arrays, metadata=None):
        if "step-0000004" in path and "optimizer" in path:
            raise RuntimeError("[write] Unable to write 8 bytes to file.")  # what mlx raises
        return real(path, arrays, metadata=metadata)

    monkeypatch.setattr(mx, "save_safetensors", fail_second_checkpoint)
    console, _ = quiet()
    with pytest.raises(WriteError, match=r"step-0000004.*cannot write"):
        run_training(cfg_for(tiny_llama, parallel_data, tmp_path), console=console)
    ckpts = tmp_path / "ad" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest.json", "step-0000002"]
    assert json.loads((ckpts / "latest.json").read_text())["step"] == 2
    saved = mx.load(str(tmp_path / "ad" / "adapters.safetensors"))  # step 2's, intact
    ckpt = mx.load(str(ckpts / "step-0000002" / "adapters.safetensors"))
    assert all(bool(mx.array_equal(saved[k], ckpt[k])) for k in ckpt)


# ----------------------------------------------------------------------------- damaged checkpoints


def _two_checkpoints(model, data, tmp_path):
    cfg = cfg_for(model, data, tmp_path)
    run_training(cfg, console=quiet()[0])
    return cfg, tmp_path / "ad" / "checkpoints"


@pytest.mark.parametrize(
    "damage",
    [
        lambda c: (c / "step-0000004" / "optimizer.safetensors").write_bytes(b"\0" * 20),
        lambda c: (c / "step-0000004" / "state.json").write_text('{"step": 4}'),
    ],
    ids=["truncated-optimizer", "state-without-config"],
)
def test_resume_falls_back_to_the_newest_intact_checkpoint(
    tiny_llama, parallel_data, tmp_path, damage
):
    cfg, ckpts = _two_checkpoints(tiny_llama, parallel_data, tmp_path)
    damage(ckpts)
    console, out = quiet()
    _, result = run_training(replace(cfg, iters=6, resume=True), console=console)
    text = " ".join(out.getvalue().split())
    assert "skipped an unreadable checkpoint" in text and "step-0000004" in text
    assert "resuming from the checkpoint at step 2" in text
    assert [r["step"] for r in result.reports] == [3, 4, 5, 6]


def test_resume_finds_checkpoints_when_latest_json_is_garbage(tiny_llama, parallel_data, tmp_path):
    cfg, ckpts = _two_checkpoints(tiny_llama, parallel_data, tmp_path)
    (ckpts / "latest.json").write_text("garbage{")
    console, out = quiet()
    run_training(replace(cfg, iters=5, resume=True), console=console)
    assert "resuming from the checkpoint at step 4" in " ".join(out.getvalue().split())


def test_resume_after_a_kill_before_the_first_checkpoint_explains(
    tiny_llama, parallel_data, tmp_path
):
    cfg = cfg_for(tiny_llama, parallel_data, tmp_path)
    folder = tmp_path / "ad"
    # What a run killed while writing its first checkpoint leaves (temporary files included).
    (folder / "checkpoints" / ".step-0000002.tmp").mkdir(parents=True)
    (folder / "checkpoints" / ".step-0000002.tmp" / "adapters.safetensors").write_bytes(b"\0")
    (folder / ".adapters.x1y2.tmp.safetensors").write_bytes(b"\0")
    (folder / "metrics.jsonl").write_text('{"type": "train", "step": 1}\n')
    with pytest.raises(
        CheckpointError, match="(?s)no complete checkpoint.*before its first checkpoint"
    ):
        run_training(replace(cfg, resume=True), console=quiet()[0])
    # An adapter snapshot of an older layout: the message says how to start from it.
    mx.save_safetensors(str(folder / "0000002_adapters.safetensors"), {"x": mx.zeros(1)})
    with pytest.raises(
        CheckpointError, match="(?s)0000002_adapters.safetensors.*--resume-adapter-file"
    ):
        run_training(replace(cfg, resume=True), console=quiet()[0])
    (folder / "0000002_adapters.safetensors").unlink()
    # Starting over cleans up the temporary files of the killed run.
    run_training(cfg, console=quiet()[0], overwrite=True)
    leftovers = [p.name for p in folder.rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_truncated_adapter_file_is_a_clear_error(tiny_llama, parallel_data, tmp_path):
    from clo_mlx.models import load_model

    run_training(cfg_for(tiny_llama, parallel_data, tmp_path, iters=1), console=quiet()[0])
    weights = tmp_path / "ad" / "adapters.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    model, _ = load_model(str(tiny_llama))
    with pytest.raises(AdapterError, match=rf"{weights}: unreadable safetensors file"):
        load_adapters_checked(model, tmp_path / "ad")


# ----------------------------------------------------------------------------- one run per folder


def test_an_earlier_run_is_refused_without_overwrite(tiny_llama, parallel_data, tmp_path):
    cfg = cfg_for(tiny_llama, parallel_data, tmp_path)
    run_training(cfg, console=quiet()[0])
    folder = tmp_path / "ad"
    before = (folder / "adapters.safetensors").read_bytes()
    with pytest.raises(ConfigError, match=rf"{folder}: holds an earlier run.*--overwrite"):
        run_training(cfg, console=quiet()[0])
    assert (folder / "adapters.safetensors").read_bytes() == before
    # --overwrite replaces the whole earlier run: no snapshot or checkpoint of it stays.
    run_training(replace(cfg, iters=1), console=quiet()[0], overwrite=True)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["adapter_config.json", "adapters.safetensors", "checkpoints", "metrics.jsonl"]
    assert [p.name for p in (folder / "checkpoints").iterdir() if p.is_dir()] == ["step-0000001"]
    steps = [json.loads(x)["step"] for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 1


def test_a_second_run_on_a_locked_folder_names_the_holder(tiny_llama, parallel_data, tmp_path):
    folder = tmp_path / "ad"
    with lock_folder(folder):
        with pytest.raises(LockedError, match=rf"in use by another clo-mlx \(pid {os.getpid()}\)"):
            with lock_folder(folder):
                pass
        run = subprocess.run(
            [
                *CLI,
                "train",
                "--model",
                str(tiny_llama),
                "--data",
                str(parallel_data),
                "--adapter-path",
                str(folder),
                "--iters",
                "1",
                "--cache-dir",
                str(tmp_path / "cache"),
            ],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
        assert f"in use by another clo-mlx train (pid {os.getpid()})" in " ".join(
            run.stderr.split()
        )
        assert not (tmp_path / "cache").exists()  # refused before the reference pass
    assert list(folder.iterdir()) == []  # the lock file goes with the lock
    with lock_folder(folder):  # free again
        pass


# ----------------------------------------------------------------------------- checks come first


def _bad(tmp_path, kind):
    ad = tmp_path / "ad"
    if kind == "adapter_path is a file":
        ad.write_text("x")
        return {}
    if kind == "adapter_path cannot be created":
        return {"adapter_path": os.devnull + "/ad"}  # under a file: no folder can be made there
    if kind == "num_layers too large":
        return {"num_layers": 99}
    if kind == "unknown key":
        return {"lora_parameters": {"keys": ["self_attn.q_prj"]}}
    if kind == "resume without checkpoint":
        return {"resume": True}
    if kind == "resume with changed config":
        ckpt = ad / "checkpoints" / "step-0000002"
        ckpt.mkdir(parents=True)
        config = build_config(overrides={"learning_rate": 5.0}).to_dict()
        (ckpt / "state.json").write_text(json.dumps({"step": 2, "config": config}))
        for name in ("adapters", "optimizer"):
            mx.save_safetensors(str(ckpt / f"{name}.safetensors"), {"x": mx.zeros(1)})
        return {"resume": True}
    if kind == "resume_adapter_file does not fit":
        f = tmp_path / "other.safetensors"
        mx.save_safetensors(str(f), {"model.layers.0.self_attn.q_proj.lora_a": mx.zeros((3, 3))})
        return {"resume_adapter_file": str(f)}
    if kind == "odd batch_size":
        return {"batch_size": 3}
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind,message",
    [
        ("adapter_path is a file", "exists and is not a folder"),
        ("adapter_path cannot be created", "/ad: cannot write"),
        ("num_layers too large", "num_layers=99 but the model has only 2 layers"),
        ("unknown key", "match no module"),
        ("resume without checkpoint", "no complete checkpoint"),
        ("resume with changed config", "learning_rate"),
        ("resume_adapter_file does not fit", "does not fit this model"),
        ("odd batch_size", "batch_size=3 is not a multiple of 2.*use 2 or 4"),
    ],
)
def test_errors_come_before_the_reference_pass(tiny_llama, parallel_data, tmp_path, kind, message):
    cfg = cfg_for(tiny_llama, parallel_data, tmp_path, **_bad(tmp_path, kind))
    with pytest.raises(CloError, match=message):
        run_training(cfg, console=quiet()[0])
    assert not (tmp_path / "cache").exists(), "the reference pass ran before the error"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_adapter_folder_fails_before_the_reference_pass(
    tiny_llama, parallel_data, tmp_path
):
    folder = tmp_path / "ad"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(WriteError, match=rf"{folder}.*cannot write"):
            run_training(cfg_for(tiny_llama, parallel_data, tmp_path), console=quiet()[0])
    finally:
        folder.chmod(0o755)
    assert not (tmp_path / "cache").exists()


# ----------------------------------------------------------------------------- accumulation


def test_iters_not_a_multiple_of_accumulation_still_applies_and_saves(
    tiny_llama, parallel_data, tmp_path
):
    console, out = quiet()
    cfg = cfg_for(tiny_llama, parallel_data, tmp_path, iters=3, grad_accumulation_steps=2)
    _, result = run_training(cfg, console=console)
    final = tmp_path / "ad" / "adapters.safetensors"
    assert result.adapter_file == final and final.is_file()
    ckpts = tmp_path / "ad" / "checkpoints"
    assert json.loads((ckpts / "latest.json").read_text())["step"] == 3
    # Step 3's gradient was applied: the final weights are not the step-2 ones.
    two = mx.load(str(ckpts / "step-0000002" / "adapters.safetensors"))
    three = mx.load(str(final))
    assert any(not bool(mx.array_equal(two[k], three[k])) for k in two)


def test_accumulated_update_is_the_mean_gradient_of_its_steps(tiny_llama, parallel_data, tmp_path):
    """Two accumulated steps of SGD = one step along the mean of the two batches' gradients,
    computed here directly with nn.value_and_grad at the initial weights."""
    from mlx.utils import tree_flatten

    from clo_mlx.batching import batch_stream, micro_batches
    from clo_mlx.models import load_model
    from clo_mlx.trainer import make_loss_fn

    lr = 0.5
    over = {"optimizer": "sgd", "learning_rate": lr, "grad_accumulation_steps": 2, "iters": 2}
    cfg = cfg_for(tiny_llama, parallel_data, tmp_path, **over)
    run_training(cfg, console=quiet()[0])
    trained = mx.load(str(tmp_path / "ad" / "adapters.safetensors"))

    model, tok = load_model(str(tiny_llama))
    prep = prepare(cfg, model=model, tokenizer=tok, console=quiet()[0])
    attach_adapters(model, cfg, quiet()[0])
    w0 = dict(tree_flatten(model.trainable_parameters()))
    model.train()
    vg = nn.value_and_grad(model, make_loss_fn(cfg))
    stream = batch_stream(prep.train, cfg.batch_size, cfg.seed)
    total = {k: mx.zeros_like(v) for k, v in w0.items()}
    for _ in range(2):
        idx = next(stream)
        parts, totals = micro_batches(prep.train, idx, cfg)
        for part in parts:
            _, g = vg(model, *part, totals)
            for k, v in tree_flatten(g):
                total[k] = total[k] + v
    for k, w in w0.items():
        expected = np.array(w) - lr * np.array(total[k]) / 2
        np.testing.assert_allclose(np.array(trained[k]), expected, rtol=1e-4, atol=1e-6)
    assert any(float(mx.abs(total[k]).max()) > 0 for k in total)


# ----------------------------------------------------------------------------- reference cache


def test_reference_cache_keys_on_the_weights_and_their_dtype(tiny_llama, parallel_data, tmp_path):
    from clo_mlx.models import cast_floats, load_model
    from clo_mlx.reference import score_pairs
    from clo_mlx.run import pair_data

    cfg = cfg_for(tiny_llama, parallel_data, tmp_path)  # dtype "auto"
    console = quiet()[0]
    model, tok = load_model(str(tiny_llama))
    first = prepare(cfg, model=model, tokenizer=tok, console=console).train
    # Other in-memory weights with the same cfg.model (as in a sweep or the demo): not the cache.
    w = model.layers[0].self_attn.q_proj.weight
    model.layers[0].self_attn.q_proj.weight = w + 0.05
    second = prepare(cfg, model=model, tokenizer=tok, console=console).train
    scores = score_pairs(model, second.encoded, 4, cfg.max_seq_length)
    np.testing.assert_allclose(second.ref_chosen, scores["chosen_logp"], rtol=1e-5)
    assert not np.allclose(first.ref_chosen, second.ref_chosen)

    # Same model id, other dtype (what "auto" becomes differs between CPU and Metal).
    cache = tmp_path / "cache" / "reference"
    pair_data(model, first.encoded, cfg, "same-id", console, "a")
    n = len(list(cache.glob("*.safetensors")))
    cast_floats(model, mx.bfloat16)
    pair_data(model, first.encoded, cfg, "same-id", console, "b")  # before: "from cache"
    assert len(list(cache.glob("*.safetensors"))) == n + 1


def test_simpo_skips_the_reference_pass(tiny_llama, parallel_data, tmp_path, monkeypatch):
    import clo_mlx.run as run

    def no(*a, **k):
        raise AssertionError("reference log-probs computed for SimPO")

    monkeypatch.setattr(run, "reference_logps", no)
    cfg = cfg_for(tiny_llama, parallel_data, tmp_path, iters=2, clo={"preference": "simpo"})
    _, result = run_training(cfg, console=quiet()[0])
    assert result.reports[-1]["step"] == 2 and np.isfinite(result.reports[-1]["loss"])


# ----------------------------------------------------------------------------- validation


def test_partial_validation_spreads_over_lengths():
    from clo_mlx.batching import spread_batches

    for seed in range(5):
        picked = spread_batches(10, 2, seed)
        assert len(picked) == 2 and picked[0] < 5 <= picked[1]
    assert spread_batches(4, -1, 0) == spread_batches(4, 9, 0) == [0, 1, 2, 3]
    assert spread_batches(10, 3, 7) == spread_batches(10, 3, 7)  # fixed by the seed


def test_val_loss_is_the_objective_of_the_configured_loss(tiny_llama, parallel_data, tmp_path):
    from clo_mlx.models import load_model
    from clo_mlx.trainer import evaluate_pairs

    model, tok = load_model(str(tiny_llama))
    cfg = cfg_for(tiny_llama, parallel_data, tmp_path)
    valid = prepare(cfg, model=model, tokenizer=tok, console=quiet()[0]).valid
    clo = evaluate_pairs(model, valid, cfg)
    assert clo["loss"] == pytest.approx(0.5 * clo["nll/target"] + 0.5 * clo["loss/dpo"])
    dpo = evaluate_pairs(model, valid, replace(cfg, loss="dpo"))
    assert dpo["loss"] == pytest.approx(dpo["loss/dpo"])  # before: lambda 0.5 of the NLL in it
    sft = evaluate_pairs(model, valid, replace(cfg, loss="sft"))
    assert sft["loss"] == pytest.approx(sft["nll/target"])  # sft.languages: target


def test_partial_validation_includes_long_rows(tiny_llama, tmp_path):
    from clo_mlx.batching import unit_batches
    from clo_mlx.models import load_model
    from clo_mlx.reference import score_pairs
    from clo_mlx.trainer import evaluate_pairs

    rows = parallel_rows(8)
    for r in rows[4:]:  # four long rows: two of the four batches of 2 rows
        r["prompt_en"] = r["prompt_en"] + " Please answer in one short sentence, and be kind."
        r["prompt_tgt"] = r["prompt_tgt"] + " Tafadhali jibu kwa sentensi moja fupi."
    write_jsonl(tmp_path / "d" / "train.jsonl", rows)
    write_jsonl(tmp_path / "d" / "valid.jsonl", rows)
    model, tok = load_model(str(tiny_llama))
    cfg = cfg_for(tiny_llama, tmp_path / "d", tmp_path)
    valid = prepare(cfg, model=model, tokenizer=tok, console=quiet()[0]).valid
    chosen = score_pairs(model, valid.encoded, 4, cfg.max_seq_length)["chosen_logp"]
    batches = unit_batches(valid, cfg.batch_size, full=False)  # 4 batches of 2 rows, by length
    rows_of = [{valid.encoded[i].pair.row for i in b} for b in batches]
    assert all(r <= {4, 5, 6, 7} for r in rows_of[2:]) and all(
        r <= {0, 1, 2, 3} for r in rows_of[:2]
    )
    got = evaluate_pairs(model, valid, cfg, num_batches=2)["logps/chosen"]
    shortest = chosen[batches[0] + batches[1]].mean()  # before: the two shortest batches
    assert got != pytest.approx(shortest, rel=1e-4)
    one_from_each_half = [chosen[batches[a] + batches[b]].mean() for a in (0, 1) for b in (2, 3)]
    assert any(got == pytest.approx(m, rel=1e-4) for m in one_from_each_half)


# ----------------------------------------------------------------------------- token convention


class TemplateTokenizer:
    """A chat template whose user turn renders differently once an answer follows."""

    chat_template = "fake"

    def __init__(self, prompt_ids, full_ids):
        self.prompt_ids, self.full_ids = prompt_ids, full_ids

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=True):
        return list(self.prompt_ids if len(messages) == 1 else self.full_ids)


def test_prompt_tokens_that_are_not_a_prefix_are_reported():
    from clo_mlx.data import Pair
    from clo_mlx.tokens import encode_pairs

    tok = TemplateTokenizer([1, 5, 6, 7], [1, 5, 9, 7, 20, 21, 2])
    pairs = [Pair(3, "en", "en", "Hi", "a", "b")]
    encoded, report = encode_pairs(tok, pairs, 64)
    assert encoded[0].chosen_start == 2  # the first differing token
    assert report.not_prefix == [3]
    assert "1 pairs (rows 4): the prompt's tokens are not a prefix" in report.message()
    _, clean = encode_pairs(TemplateTokenizer([1, 5], [1, 5, 20, 2]), pairs, 64)
    assert clean.not_prefix == [] and clean.message() is None


def test_a_response_starting_at_token_0_still_has_response_tokens():
    from clo_mlx.batching import collate
    from clo_mlx.tokens import encode_pair

    ids, start = encode_pair(TemplateTokenizer([5], [6, 7, 8, 2]), "Hi", "a")
    assert (ids, start) == ([6, 7, 8, 2], 1)  # nothing predicts token 0
    _, targets, mask = collate([([6, 7, 8, 2], 0)], 8)  # before: an empty mask
    assert mask[0].tolist()[:4] == [1, 1, 1, 0] and targets[0].tolist()[:3] == [7, 8, 2]


def test_the_fit_check_leaves_the_model_untouched(tiny_llama, parallel_data, tmp_path):
    """check_trainable tries resume_adapter_file on a copy sharing the weights: the model the
    reference pass then uses is still the plain base."""
    from mlx.utils import tree_flatten

    from clo_mlx.models import load_model
    from clo_mlx.run import check_trainable

    cfg = cfg_for(tiny_llama, parallel_data, tmp_path, iters=1)
    run_training(cfg, console=quiet()[0])
    model, _ = load_model(str(tiny_llama))
    before = dict(tree_flatten(model.parameters()))
    resume = replace(cfg, resume_adapter_file=str(tmp_path / "ad" / "adapters.safetensors"))
    check_trainable(model, resume, None, None)
    after = dict(tree_flatten(model.parameters()))
    assert after.keys() == before.keys() and not any("lora" in k for k in after)
    assert all(after[k] is before[k] for k in before)  # the same arrays, none replaced
