"""Issue 16 (speed at real scale): the faster paths keep the numbers they had before."""

import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import REPO, np_response_logp, parallel_rows, train_config, write_jsonl

from clo_mlx.run import run_training

# Reports of the fixed-seed run below, logged by the code before the training step kept its
# metrics as arrays (one host read per step instead of ~10 per micro-batch).
GOLDEN_REPORTS = [
    {
        "step": 2,
        "loss": 3.7565670013427734,
        "loss/dpo": 0.6931471824645996,
        "nll/target": 6.819986701011658,
        "rewards/chosen": 0.0,
        "rewards/rejected": 0.0,
        "rewards/margins": 0.0,
        "rewards/accuracies": 0.0,
        "logps/chosen": -56.80308961868286,
        "logps/rejected": -57.038118839263916,
        "learning_rate": 0.009999999776482582,
        "trained_tokens": 484,
    },
    {
        "step": 4,
        "loss": 4.00147495046258,
        "loss/dpo": 1.9302168010058267,
        "nll/target": 6.072733044624329,
        "rewards/chosen": 3.7516589164733887,
        "rewards/rejected": 2.156466484069824,
        "rewards/margins": 1.5951924324035645,
        "rewards/accuracies": 0.625,
        "logps/chosen": -57.56812858581543,
        "logps/rejected": -59.534316539764404,
        "learning_rate": 0.009999999776482582,
        "trained_tokens": 988,
    },
]


# The golden values were recorded with mlx-cpu's own reference BLAS, in the test process. The
# test process now runs with OpenBLAS (conftest.py), whose float rounding differs: they are
# computed again in one child process on the reference BLAS.
CHILD = "import json, sys, test_perf; print(json.dumps(test_perf.golden_values(*sys.argv[1:])))"


def golden_values(learnable_llama: str, tiny_llama: str, tiny_qwen2: str, tmp: str) -> dict:
    """What the golden tests compare: the fixed-seed run's reports, the reference caches."""
    tmp = Path(tmp)
    _, result = run_training(golden_run(Path(learnable_llama), tmp / "run"))
    models = {"tiny_llama": tiny_llama, "tiny_qwen2": tiny_qwen2}
    return {
        "reports": result.reports,
        **{name: cache_digest(path, tmp / name) for name, path in models.items()},
    }


@pytest.fixture(scope="module")
def on_reference_blas(learnable_llama, tiny_llama, tiny_qwen2, tmp_path_factory) -> dict:
    from clo_mlx import blas

    env = blas.reference_blas_env(os.environ)
    tests = str(Path(__file__).parent)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), tests, env.get("PYTHONPATH", "")])
    paths = [str(p) for p in (learnable_llama, tiny_llama, tiny_qwen2)]
    tmp = str(tmp_path_factory.mktemp("golden"))
    run = subprocess.run(
        [sys.executable, "-c", CHILD, *paths, tmp], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


def golden_run(learnable_llama: Path, tmp_path: Path):
    write_jsonl(tmp_path / "data" / "train.jsonl", parallel_rows(8))
    return train_config(
        learnable_llama,
        tmp_path / "data",
        tmp_path,
        batch_size=4,
        iters=4,
        micro_batch_size=1,  # 4 passes per step: metrics are summed over the parts
        grad_accumulation_steps=2,
        steps_per_report=2,
        steps_per_eval=100,
        save_every=100,
        learning_rate=1e-2,
        clo={"beta": 1.0},
        lora_parameters={"rank": 4, "scale": 10.0},
    )


def test_step_metrics_are_those_logged_before_the_change(on_reference_blas):
    reports = on_reference_blas["reports"]
    assert len(reports) == len(GOLDEN_REPORTS)
    for got, want in zip(reports, GOLDEN_REPORTS, strict=True):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (want["step"], key)
        assert got["tokens_per_second"] > 0 and got["peak_memory_gb"] > 0
    # Hand-derived: the first update is at step 2 (accumulation 2), so steps 1-2 run the base
    # = the reference: rewards 0, DPO loss ln 2, loss = 0.5 * NLL + 0.5 * ln 2 (lambda 0.5).
    first = reports[0]
    assert first["loss/dpo"] == pytest.approx(math.log(2), rel=1e-6)
    assert first["loss"] == pytest.approx(0.5 * first["nll/target"] + 0.5 * math.log(2), rel=1e-6)
    assert first["rewards/margins"] == 0.0


# ----------------------------------------------------------------------------- reference pass


def varied_pairs(tokenizer) -> list:
    """12 parallel rows (24 pairs) whose responses are 1-6 sentences long: several length buckets."""
    from conftest import EN_ANSWERS, EN_PROMPTS, SW_ANSWERS, SW_PROMPTS

    from clo_mlx.data import Pair
    from clo_mlx.tokens import encode_pairs

    pairs = []
    for i in range(12):
        en = " ".join([EN_ANSWERS[i % 4]] * (1 + i % 6))
        sw = " ".join([SW_ANSWERS[i % 4]] * (1 + (i * 5) % 6))
        pairs.append(Pair(i, "en", "en", EN_PROMPTS[i % 4], en, sw, f"t.jsonl:{i + 1}"))
        pairs.append(Pair(i, "tgt", "sw", SW_PROMPTS[i % 4], sw, en, f"t.jsonl:{i + 1}"))
    encoded, _ = encode_pairs(tokenizer, pairs, 512, "truncate_prompt")
    return encoded


def cache_digest(model_path, cache_dir) -> tuple[str, str]:
    """(cache file name, sha256 of its chosen and rejected log-prob bytes) of a reference pass."""
    import hashlib

    import mlx.core as mx

    from clo_mlx.models import load_model
    from clo_mlx.reference import reference_logps

    model, tokenizer = load_model(str(model_path))
    encoded = varied_pairs(tokenizer)
    reference_logps(model, encoded, "tiny", "float32", 2, 512, cache_dir)
    (path,) = (Path(cache_dir) / "reference").glob("*.safetensors")
    arrays = mx.load(str(path))
    h = hashlib.sha256()
    for k in ("chosen_logp", "rejected_logp"):
        h.update(np.asarray(arrays[k]).tobytes())
    return path.name, h.hexdigest()[:16]


# Recorded with the reference pass as it was before issue 16 (one host sync per batch of
# batch_size pairs), on Linux x86-64, mlx CPU backend: the cache key and the exact bytes.
GOLDEN_CACHE = {
    "tiny_llama": ("248ff01537be8836c25141fc.safetensors", "8103b862c0c24904"),
    "tiny_qwen2": ("248ff01537be8836c25141fc.safetensors", "566bc4e2e0e0f3f3"),
}


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.machine() == "x86_64")
    or mx.default_device() != mx.cpu,
    reason="the golden bytes were recorded on the Linux x86-64 CPU backend",
)
@pytest.mark.parametrize("fixture", sorted(GOLDEN_CACHE))
def test_reference_cache_is_byte_identical_to_before(fixture, on_reference_blas):
    assert tuple(on_reference_blas[fixture]) == GOLDEN_CACHE[fixture]


def test_reference_logps_match_a_plain_forward_per_sequence(tiny_qwen2, tmp_path):
    """Independent of the batching: each sequence alone, uncompiled, numpy log-softmax."""
    from clo_mlx.models import load_model
    from clo_mlx.reference import reference_logps

    model, tokenizer = load_model(str(tiny_qwen2))
    encoded = varied_pairs(tokenizer)
    chosen, rejected, cached = reference_logps(model, encoded, "t", "float32", 2, 512, tmp_path)
    assert not cached
    for e, c, r in zip(encoded, chosen, rejected, strict=True):
        for ids, start, got in ((e.chosen, e.chosen_start, c), (e.rejected, e.rejected_start, r)):
            want = np_response_logp(model, ids, max(start, 1))[0]
            assert got == pytest.approx(want, rel=1e-5, abs=1e-4)


# ----------------------------------------------------------------------------- train --dry-run


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_llama, parallel_data, tmp_path, cli_run):
    from clo_mlx.data import load_splits
    from clo_mlx.models import load_model
    from clo_mlx.plan import dry_run
    from clo_mlx.tokens import encode_pairs

    cfg = train_config(tiny_llama, parallel_data, tmp_path, batch_size=4, iters=50)
    plan = dry_run(cfg)
    # 8 train rows and 4 valid rows, two pairs (en, tgt) each; 16 pairs / 4 = 4 batches.
    assert plan["pairs"] == {"train": 16, "valid": 8}
    _, tokenizer = load_model(str(tiny_llama))
    encoded, _ = encode_pairs(tokenizer, load_splits(str(parallel_data))["train"], 2048)
    assert plan["tokens"] == sum(len(e.chosen) + len(e.rejected) for e in encoded)
    assert sum(plan["buckets"].values()) == 4
    assert plan["reference_batch_seconds"] > 0 and plan["reference_estimate_seconds"] > 0
    assert len(plan["step_seconds"]) == 2 and plan["training_estimate_seconds"] > 0
    assert plan["peak_memory_gb"] > 0
    # No budget given: the machine's; a tiny model fits it.
    assert plan["memory_budget_gb"] == plan["machine_memory_gb"] and plan["memory_fits"]
    assert not (tmp_path / "ad").exists() and not (tmp_path / "cache").exists()

    cli = ["train", "--model", str(tiny_llama)]
    cli += ["--data", str(parallel_data), "--adapter-path", str(tmp_path / "ad2")]
    cli += ["--cache-dir", str(tmp_path / "c2"), "--batch-size", "3", "--dry-run"]
    bad = cli_run(*cli)
    assert bad.returncode == 2 and "batch_size=3" in bad.stderr
    assert "Traceback" not in bad.stderr
    budget = ["--memory-budget-gb", "0.000001"]  # fits nothing: the smallest settings, flagged
    good = cli_run(*cli[:-2], "4", "--dry-run", *budget)
    assert good.returncode == 0, good.stderr
    assert "dry run: pairs train 16, valid 8" in good.stderr
    assert "nothing was written" in good.stderr
    assert (
        "memory plan for the longest batch: micro_batch_size 1, grad_checkpoint on" in good.stderr
    )
    assert "does NOT fit the memory budget of 0.0 GB" in good.stderr
    assert not (tmp_path / "ad2").exists() and not (tmp_path / "c2").exists()
