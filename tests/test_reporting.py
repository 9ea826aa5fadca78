"""Readable logs and experiment trackers (clo_mlx/reporting.py): report_to wandb / tensorboard."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, parallel_rows, train_config, write_jsonl

from clo_mlx import reporting
from clo_mlx.config import ConfigError, build_config
from clo_mlx.errors import CloError

CLI = [sys.executable, "-c", "from cli.main import main; main()"]

REPORT = {
    "step": 20,
    "loss": 0.69314,
    "loss/dpo": 0.7,
    "nll/target": 2.3456,
    "rewards/margins": 0.0123,
    "rewards/accuracies": 0.5,
    "learning_rate": 1e-5,
    "tokens_per_second": 1234.4,
    "steps_per_second": 2.0,
    "trained_tokens": 5000,
    "peak_memory_gb": 1.234,
}
EVAL = {
    "step": 40,
    "val/loss": 0.6,
    "val/rewards/accuracies": 0.625,
    "val/rewards/accuracies/en": 0.5,
    "val/rewards/accuracies/tgt": 0.75,
    "val/rewards/margins": 0.02,
    "val/rewards/margins/en": 0.01,
    "val/rewards/margins/tgt": 0.03,
    "val/logps/chosen/en": -12.0,
    "val/nll/target": 2.0,
    "fidelity/sw": 0.4,
    "val_time": 3.21,
}


def test_train_line_is_one_line_with_the_watched_numbers():
    line = reporting.train_line(REPORT)
    assert line == (
        "step 20 | loss 0.693 | margin 0.012 | acc 0.50 | nll/tgt 2.346 | lr 1.00e-05 | "
        "1234 tok/s | 1.23 GB"
    )
    full = reporting.train_line(REPORT, verbose=True)
    assert full.startswith(line + "\n") and "loss/dpo 0.7" in full and "trained_tokens 5000" in full


def test_eval_line_is_short_with_metrics_per_pair_kind():
    line = reporting.eval_line(EVAL)
    assert line == (
        "eval step 40: loss 0.600 | acc en 0.50 tgt 0.75 | margin en 0.010 tgt 0.030 | "
        "nll/tgt 2.000 | fidelity/sw 0.4 | 3.2 s"
    )
    assert "\n" not in line and "logps" not in line
    assert "val/logps/chosen/en -12.000" in reporting.eval_line(EVAL, verbose=True)
    # One pair kind only (preference rows): the overall numbers.
    single = {"step": 0, "test/loss": 0.5, "test/rewards/accuracies": 1.0}
    assert reporting.eval_line(single, split="test") == "test step 0: loss 0.500 | acc 1.00"


def test_report_to_names_are_checked_before_training(monkeypatch):
    assert reporting.parse_report_to("tensorboard, TensorBoard") == ["tensorboard"]
    assert reporting.parse_report_to(None) == [] and reporting.parse_report_to("") == []
    with pytest.raises(
        ConfigError, match="unknown tracker 'tensorbord'.*Did you mean 'tensorboard'"
    ):
        build_config(overrides={"report_to": "tensorbord"})
    real = reporting.importlib.util.find_spec
    monkeypatch.setattr(
        reporting.importlib.util, "find_spec", lambda n: None if n == "wandb" else real(n)
    )
    with pytest.raises(CloError, match=r"wandb is not installed; pip install 'clo-mlx\[wandb\]'"):
        reporting.parse_report_to("tensorboard,wandb")


@pytest.mark.skipif(
    reporting.importlib.util.find_spec("swanlab") is not None, reason="swanlab is installed"
)
def test_cli_missing_tracker_package_is_a_clear_error_before_training(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", parallel_rows(4))
    run = subprocess.run(
        [*CLI, "train", "--model", str(tiny_llama), "--data", str(data)]
        + ["--adapter-path", str(tmp_path / "a"), "--report-to", "swanlab"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "report_to: swanlab is not installed; pip install 'clo-mlx[swanlab]'" in run.stderr
    assert not (tmp_path / "a").exists()


def _run(tiny_llama, tmp_path, report_to: str):
    from clo_mlx.run import run_training

    write_jsonl(tmp_path / "data" / "train.jsonl", parallel_rows(4))
    write_jsonl(tmp_path / "data" / "valid.jsonl", parallel_rows(2))
    write_jsonl(tmp_path / "data" / "test.jsonl", parallel_rows(2))
    cfg = train_config(
        tiny_llama, tmp_path / "data", tmp_path, batch_size=4, iters=4, steps_per_report=2,
        steps_per_eval=4, save_every=4, learning_rate=1e-3, report_to=report_to,
        project_name="clo-test", test=True,
    )  # fmt: skip
    run_training(cfg)
    lines = (tmp_path / "ad" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


def test_tensorboard_event_files_read_back(tiny_llama, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = _run(tiny_llama, tmp_path, "tensorboard")
    (run,) = (tmp_path / "ad" / "tensorboard").iterdir()  # one folder per training run
    acc = EventAccumulator(str(run))
    acc.Reload()
    train = [m for m in metrics if m["type"] == "train"]
    evals = [m for m in metrics if m["type"] == "eval"]
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [2, 4]
    assert [e.value for e in loss] == pytest.approx([m["loss"] for m in train], rel=1e-6)
    lr = acc.Scalars("learning_rate")
    assert [e.value for e in lr] == pytest.approx([1e-3, 1e-3])
    val = acc.Scalars("val/rewards/accuracies/tgt")
    assert [e.step for e in val] == [0, 4]
    assert [e.value for e in val] == pytest.approx([m["val/rewards/accuracies/tgt"] for m in evals])
    assert [e.step for e in acc.Scalars("test/loss")] == [4]
    assert "step" not in acc.Tags()["scalars"]  # the step is the x axis, not a metric
    config = acc.Tensors("config")[0].tensor_proto.string_val[0].decode()
    assert '"project_name": "clo-test"' in config and '"learning_rate": 0.001' in config
    final = acc.Tensors("final_eval")[0].tensor_proto.string_val[0].decode()
    assert "| test/loss |" in final and "| val/loss |" in final


def _wandb_records(path: Path) -> list:
    """Records of a .wandb file: W&B's 7-byte header, then LevelDB's log format (32 KiB blocks
    of chunks: crc32c u32, length u16, type u8 1=full 2=first 3=middle 4=last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, records, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left  # zero padding to the end of the block
            continue
        if pos + 7 + length > len(data):
            break  # still being written
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            records.append(rec)
    return records


def _items(items) -> dict:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def test_wandb_offline_run_files_read_back(tiny_llama, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb not installed (pip install wandb)")
    # Offline: nothing leaves the machine; the run is written under the adapter folder.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    metrics = _run(tiny_llama, tmp_path, "wandb")
    runs = list((tmp_path / "ad" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    # wandb-core may still be writing the file when finish() returns (seen on a loaded machine):
    # the run file is complete once its exit record is in it.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        records = _wandb_records(runs[0])
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        time.sleep(0.5)
    history, config, summary = [], {}, {}
    for rec in records:
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history.append(_items(rec.history.item))
        elif kind in ("config", "run"):
            config.update(_items((rec.run if kind == "run" else rec).config.update))
        elif kind == "summary":
            summary.update(_items(rec.summary.update))
    train = [m for m in metrics if m["type"] == "train"]
    logged = [h for h in history if "train/loss" in h]
    assert [h["_step"] for h in logged] == [2, 4]
    assert [h["train/loss"] for h in logged] == pytest.approx([m["loss"] for m in train])
    val = [h for h in history if "val/loss" in h]
    assert [h["_step"] for h in val] == [0, 4]
    (test,) = [h for h in history if "test/loss" in h]
    assert config["loss"] == "clo" and config["project_name"] == "clo-test"
    assert summary["final/test/loss"] == pytest.approx(test["test/loss"])
    assert summary["final/val/loss"] == pytest.approx(val[-1]["val/loss"])


def test_cli_flags_reach_the_trainer(tiny_llama, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install tensorboard)")
    from typer.testing import CliRunner

    from cli.main import app

    data = write_jsonl(tmp_path / "d" / "train.jsonl", parallel_rows(4))
    write_jsonl(data.parent / "valid.jsonl", parallel_rows(2))
    args = ["train", "--model", str(tiny_llama), "--data", str(data.parent), "--iters", "2"]
    args += ["--batch-size", "4", "--steps-per-report", "2", "--adapter-path", str(tmp_path / "a")]
    args += [
        "--cache-dir",
        str(tmp_path / "c"),
        "--report-to",
        "tensorboard",
        "--project-name",
        "p",
    ]
    quiet = CliRunner().invoke(app, args)
    assert quiet.exit_code == 0, quiet.output
    assert "eval step 2: loss" in quiet.output and "logps/chosen" not in quiet.output
    assert len(list((tmp_path / "a" / "tensorboard").iterdir())) == 1
    loud = CliRunner().invoke(app, [*args, "--verbose", "--overwrite"])
    assert loud.exit_code == 0, loud.output
    assert "val/logps/chosen/tgt" in loud.output and "steps_per_second" in loud.output
