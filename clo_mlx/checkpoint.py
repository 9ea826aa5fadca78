"""Resumable checkpoints: trainable weights, optimizer state, step and the config that made them.

Layout under the adapter folder:
    checkpoints/step-0000050/{adapters.safetensors, optimizer.safetensors, state.json}
    checkpoints/latest.json      -> {"step": 50, "dir": "step-0000050"}   (written last, atomically)
A checkpoint folder counts only once `latest.json` points at it, so a crash while saving leaves the
previous checkpoint in force. The data order and the RNG are functions of (seed, step), so the step
number is all that is needed to continue exactly where the run stopped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

from .adapters import load_weights_into, trainable_weights
from .config import TrainConfig
from .errors import CloError
from .io import atomic_save_safetensors, atomic_write_json

KEEP = 2  # checkpoints kept on disk
# Keys that may change between a run and its resumption: more steps, other reporting, and the
# memory knobs, which change how a step is computed but not its result (e.g. a smaller
# micro_batch_size after running out of memory).
RESUMABLE_CHANGES = {
    "micro_batch_size",
    "grad_checkpoint",
    "logprob_chunk_size",
    "iters",
    "steps_per_report",
    "steps_per_eval",
    "save_every",
    "val_batches",
    "test",
    "test_batches",
    "clear_cache_threshold",
    "cache_dir",
    "resume",
    "adapter_path",
    "report_to",
    "project_name",
}


class CheckpointError(CloError):
    pass


def checkpoint_root(adapter_path: str | Path) -> Path:
    return Path(adapter_path) / "checkpoints"


def save_checkpoint(
    adapter_path: str | Path,
    step: int,
    model: nn.Module,
    optimizer: optim.Optimizer,
    cfg: TrainConfig,
) -> Path:
    root = checkpoint_root(adapter_path)
    folder = root / f"step-{step:07d}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    atomic_save_safetensors(folder / "adapters.safetensors", trainable_weights(model))
    atomic_save_safetensors(folder / "optimizer.safetensors", dict(tree_flatten(optimizer.state)))
    atomic_write_json(folder / "state.json", {"step": step, "config": cfg.to_dict()})
    atomic_write_json(root / "latest.json", {"step": step, "dir": folder.name})
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[:-KEEP]:
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def latest_checkpoint(adapter_path: str | Path) -> tuple[int, Path] | None:
    root = checkpoint_root(adapter_path)
    try:
        latest = json.loads((root / "latest.json").read_text())
        return int(latest["step"]), root / latest["dir"]
    except (OSError, ValueError, KeyError):
        return None


def config_differences(saved: dict, cfg: TrainConfig) -> list[str]:
    now = cfg.to_dict()
    return [
        f"{k}: {saved.get(k)!r} -> {now[k]!r}"
        for k in now
        if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]
    ]


def load_checkpoint(
    adapter_path: str | Path, model: nn.Module, optimizer: optim.Optimizer, cfg: TrainConfig
) -> int:
    """Restore weights and optimizer state from the latest checkpoint; return its step."""
    found = latest_checkpoint(adapter_path)
    if found is None:
        raise CheckpointError(f"{checkpoint_root(adapter_path)}: no checkpoint to resume from")
    step, folder = found
    state = json.loads((folder / "state.json").read_text())
    if diffs := config_differences(state["config"], cfg):
        raise CheckpointError(
            f"{folder}: cannot resume, the config changed in ways that alter training:\n  "
            + "\n  ".join(diffs)
        )
    if step > cfg.iters:
        raise CheckpointError(f"{folder}: checkpoint is at step {step}, beyond iters={cfg.iters}")
    load_weights_into(model, folder / "adapters.safetensors")
    flat = mx.load(str(folder / "optimizer.safetensors"))
    optimizer.state = tree_unflatten(list(flat.items()))
    optimizer.init(model.trainable_parameters())
    return step
