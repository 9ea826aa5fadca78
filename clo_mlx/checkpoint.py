"""Resumable checkpoints: trainable weights, optimizer state, step and the config that made them.

Layout under the adapter folder:
    checkpoints/step-0000050/{adapters.safetensors, optimizer.safetensors, state.json}
    checkpoints/latest.json      -> {"step": 50, "dir": "step-0000050"}   (written last, atomically)
A checkpoint folder is filled under a temporary name and renamed into place, so a crash while
saving leaves the previous checkpoint in force. `--resume` takes the newest intact checkpoint
(the one `latest.json` names, else the newest readable step folder) and says which it skipped. The data order and the RNG are functions of (seed, step), so the step
number is all that is needed to continue exactly where the run stopped.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

from .adapters import load_arrays_into, trainable_weights
from .config import TrainConfig
from .errors import CloError
from .io import TMP_MARK, WriteError, atomic_save_safetensors, atomic_write_json, ensure_folder

KEEP = 2  # checkpoints kept on disk
# Keys that may change between a run and its resumption: more steps, other reporting, and the
# memory knobs, which change how a step is computed but not its result (e.g. a smaller
# micro_batch_size after running out of memory).
RESUMABLE_CHANGES = {
    "micro_batch_size",
    "memory_budget_gb",
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
    """Write checkpoints/step-XXXXXXX/ whole or not at all: it is filled under a temporary name
    and renamed into place; `latest.json` moves to it last. A failed write leaves nothing partial."""
    root = ensure_folder(checkpoint_root(adapter_path))
    folder = root / f"step-{step:07d}"
    tmp = root / f".{folder.name}{TMP_MARK}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        ensure_folder(tmp)
        atomic_save_safetensors(tmp / "adapters.safetensors", trainable_weights(model))
        atomic_save_safetensors(tmp / "optimizer.safetensors", dict(tree_flatten(optimizer.state)))
        atomic_write_json(tmp / "state.json", {"step": step, "config": cfg.to_dict()})
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except OSError as e:
        raise WriteError(f"{folder}: cannot write ({e.strerror or e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_json(root / "latest.json", {"step": step, "dir": folder.name})
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[:-KEEP]:
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


@dataclass
class Checkpoint:
    step: int
    folder: Path
    config: dict
    adapters: dict  # name -> mx.array
    optimizer: dict  # flattened optimizer state
    skipped: list[str] = field(default_factory=list)  # newer checkpoints that were unreadable


def _read_checkpoint(folder: Path) -> Checkpoint:
    """A checkpoint folder's contents; CheckpointError naming the file when one is unreadable."""
    path = folder / "state.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{path}: field 'step' missing or not an integer")
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"{path}: field 'config' missing or not an object")
    arrays = {}
    for name in ("adapters", "optimizer"):
        path = folder / f"{name}.safetensors"
        try:
            arrays[name] = mx.load(str(path))
        except (OSError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{path}: unreadable ({e})") from None
    return Checkpoint(
        state["step"], folder, state["config"], arrays["adapters"], arrays["optimizer"]
    )


def _candidates(root: Path) -> list[Path]:
    """Checkpoint folders, the one latest.json names first, then the others newest first."""
    folders = sorted((p for p in root.glob("step-*") if p.is_dir()), reverse=True)
    try:
        latest = json.loads((root / "latest.json").read_text())
        named = root / latest["dir"]
        if named in folders:
            folders.remove(named)
            folders.insert(0, named)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return folders


def find_checkpoint(adapter_path: str | Path) -> tuple[Checkpoint | None, list[str]]:
    """The newest intact checkpoint (None if there is none) and why newer ones were skipped."""
    skipped = []
    for folder in _candidates(checkpoint_root(adapter_path)):
        try:
            ckpt = _read_checkpoint(folder)
        except CheckpointError as e:
            skipped.append(str(e))
            continue
        ckpt.skipped = skipped
        return ckpt, skipped
    return None, skipped


def _with_defaults(saved: dict) -> dict:
    """`saved` with the keys that a checkpoint of an older clo-mlx lacks set to today's defaults:
    an option that did not exist yet trained as its default does (e.g. `clo.dpop_en: 0.0`)."""
    filled = TrainConfig().to_dict()
    for key, value in saved.items():
        if isinstance(value, dict) and isinstance(filled.get(key), dict):
            filled[key] = {**filled[key], **value}
        else:
            filled[key] = value
    return filled


def config_differences(saved: dict, cfg: TrainConfig) -> list[str]:
    now = cfg.to_dict()
    saved = _with_defaults(saved)
    return [
        f"{k}: {saved.get(k)!r} -> {now[k]!r}"
        for k in now
        if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]
    ]


def resumable_checkpoint(cfg: TrainConfig) -> Checkpoint:
    """The checkpoint `--resume` continues from, after checking it fits `cfg` (no model needed).

    Unreadable newer checkpoints are skipped (listed in `skipped`); a changed config or no intact
    checkpoint at all is a CheckpointError.
    """
    adapter_path = Path(cfg.adapter_path)
    ckpt, skipped = find_checkpoint(adapter_path)
    if ckpt is None:
        why = "".join(f"\n  skipped {s}" for s in skipped)
        snapshots = sorted(adapter_path.glob("[0-9]" * 7 + "_adapters.safetensors"))
        hint = (
            f"\n{snapshots[-1]} holds adapters of an earlier step: pass it as "
            "--resume-adapter-file (without --resume) to start from them; the optimizer state "
            "and the position in the data are not restored."
            if snapshots
            else "\nThe run stopped before its first checkpoint (save_every="
            f"{cfg.save_every}): run it again without --resume (with --overwrite)."
        )
        raise CheckpointError(
            f"{checkpoint_root(adapter_path)}: no complete checkpoint to resume from{why}{hint}"
        )
    if diffs := config_differences(ckpt.config, cfg):
        raise CheckpointError(
            f"{ckpt.folder}: cannot resume, the config changed in ways that alter training:\n  "
            + "\n  ".join(diffs)
        )
    if ckpt.step > cfg.iters:
        raise CheckpointError(
            f"{ckpt.folder}: checkpoint is at step {ckpt.step}, beyond iters={cfg.iters}"
        )
    return ckpt


def load_checkpoint(
    adapter_path: str | Path,
    model: nn.Module,
    optimizer: optim.Optimizer,
    cfg: TrainConfig,
    ckpt: Checkpoint | None = None,
) -> int:
    """Restore weights and optimizer state from the newest intact checkpoint; return its step."""
    if ckpt is None:
        import dataclasses

        ckpt = resumable_checkpoint(dataclasses.replace(cfg, adapter_path=str(adapter_path)))
    load_arrays_into(model, ckpt.adapters, ckpt.folder / "adapters.safetensors")
    optimizer.state = tree_unflatten(list(ckpt.optimizer.items()))
    optimizer.init(model.trainable_parameters())
    return ckpt.step
