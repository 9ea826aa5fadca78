"""bench/bench_real_scale.py: both tools train the same batches in the same order, and the ratios.

mlx-lm-lora 5.10.2 builds a fresh batch iterator every DPO step and trains that iterator's first
batch (mlx_lm_lora/trainer/dpo_trainer.py: `batch = next(iterate_dpo_batches(...))`); an identity
permutation therefore trains the shortest batch at every step. `peer_steps` below is that loop,
reduced to what decides the order; the real one runs too when mlx-lm-lora is installed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import bench_real_scale as rs  # noqa: E402

LENGTHS = [30, 10, 50, 20, 60, 40, 80, 70]  # chosen lengths; sorted: rows 1, 3, 0, 5, 2, 4, 7, 6
SORTED_BATCHES = [[1, 3], [0, 5], [2, 4], [6, 7]]


def peer_steps(permutation, lengths: list[int], batch: int, steps: int) -> list[list[int]]:
    """The rows mlx-lm-lora 5.10.2's DPO loop trains at each step, under `permutation`."""
    out = []
    for _ in range(steps):
        idx = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batch_idx = [idx[i : i + batch] for i in range(0, len(idx) - batch + 1, batch)]
        first = permutation(len(batch_idx))[0]  # a fresh iterator per step: its first batch
        out.append(sorted(batch_idx[first]))
    return out


def test_rotating_permutation_walks_the_sorted_batches_one_per_step():
    rotated = rs.rotating_permutation(np.random.permutation)
    got = peer_steps(rotated, LENGTHS, 2, 6)
    assert got == SORTED_BATCHES + SORTED_BATCHES[:2]


def test_identity_permutation_repeats_the_first_batch():
    # The order the benchmark used before: the same (shortest) batch at every step.
    assert peer_steps(np.arange, LENGTHS, 2, 3) == [[1, 3]] * 3


def test_rotating_permutation_leaves_array_arguments_to_numpy():
    seen = []
    rotated = rs.rotating_permutation(lambda x: seen.append(x) or "numpy")
    assert rotated([3, 1, 2]) == "numpy" and seen == [[3, 1, 2]]
    assert rotated(3).tolist() == [0, 1, 2]  # array calls do not advance the step count
    assert rotated(3).tolist() == [1, 2, 0]


def test_real_peer_loop_trains_the_sorted_batches(capsys):
    dpo = pytest.importorskip(
        "mlx_lm_lora.trainer.dpo_trainer", reason="mlx-lm-lora is not installed here"
    )
    saved_perm, saved_batches = np.random.permutation, dpo.iterate_dpo_batches
    try:
        rs._sorted_order_peer()
        data = [
            {"chosen": [1] * n, "rejected": [1] * (n - 5)}
            | dict.fromkeys(("chosen_prompt_length", "rejected_prompt_length"), 2)
            for n in LENGTHS
        ]
        for _ in range(5):
            next(dpo.iterate_dpo_batches(data, 2, 512, train=True))
    finally:
        np.random.permutation, dpo.iterate_dpo_batches = saved_perm, saved_batches
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("STEP_ROWS")]
    assert rows == [f"STEP_ROWS {b}" for b in SORTED_BATCHES + SORTED_BATCHES[:1]]


def test_recorded_rows_keep_the_reads():
    rows = rs._RecordedRows(["a", "b", "c"])
    assert (len(rows), rows[2], rows[0], rows.seen) == (3, "c", "a", [2, 0])


def test_same_steps_compares_the_steps_both_ran():
    assert rs.same_steps([[1, 3], [0, 5]], [[3, 1], [5, 0], [2, 4]]) is True
    assert rs.same_steps([[1, 3], [0, 5]], [[1, 3], [1, 3]]) is False
    assert rs.same_steps([[1, 3]], []) is None  # an OOM before the first batch
    assert rs.same_steps(None, [[1, 3]]) is None


def test_ratios_from_hand_numbers():
    out = {
        "stats": {"batches": [[0, 1], [2, 3]]},
        "clo-mlx": {"step_s": [10.0, 20.0], "prepare_s": 30.0, "rss_mb": 1000.0},
        "mlx-lm-lora": {"step_s": [30.0, 60.0], "rss_mb": 4000.0},
    }
    # tokens/s: 90 s / 30 s; RSS 1000 / 4000; first epoch 90 / (30 + 30); reference 15 s / 15 s.
    assert rs.ratios(out) == (
        "tokens/s 3.00x; peak RSS 0.25x; first epoch incl. reference 1.50x as fast; "
        "reference pass per batch / clo-mlx step 1.00"
    )
    del out["mlx-lm-lora"]["step_s"]  # the peer ran out of memory
    assert rs.ratios(out) == "reference pass per batch / clo-mlx step 1.00"


@pytest.mark.parametrize(("pairs", "batch"), [(6, 4), (8, 0), (2, 4)])
def test_pairs_must_be_a_multiple_of_batch(pairs, batch):
    cmd = [sys.executable, str(REPO / "bench" / "bench_real_scale.py")]
    proc = subprocess.run(
        [*cmd, "--pairs", str(pairs), "--batch", str(batch)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert f"--pairs ({pairs}) must be a positive multiple of --batch ({batch})" in proc.stderr
    assert "Traceback" not in proc.stderr
