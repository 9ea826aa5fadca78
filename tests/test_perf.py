"""Issue 16 (speed at real scale): the faster paths keep the numbers they had before."""

import math

import pytest
from conftest import parallel_rows, train_config, write_jsonl

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


@pytest.fixture
def golden_run(learnable_llama, tmp_path):
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


def test_step_metrics_are_those_logged_before_the_change(golden_run):
    _, result = run_training(golden_run)
    assert len(result.reports) == len(GOLDEN_REPORTS)
    for got, want in zip(result.reports, GOLDEN_REPORTS, strict=True):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (want["step"], key)
        assert got["tokens_per_second"] > 0 and got["peak_memory_gb"] > 0
    # Hand-derived: the first update is at step 2 (accumulation 2), so steps 1-2 run the base
    # = the reference: rewards 0, DPO loss ln 2, loss = 0.5 * NLL + 0.5 * ln 2 (lambda 0.5).
    first = result.reports[0]
    assert first["loss/dpo"] == pytest.approx(math.log(2), rel=1e-6)
    assert first["loss"] == pytest.approx(0.5 * first["nll/target"] + 0.5 * math.log(2), rel=1e-6)
    assert first["rewards/margins"] == 0.0
