"""Offline model loading: a local folder or a model already in the Hugging Face cache.

Never downloads. Weights come only from safetensors; `trust_remote_code` is off unless asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map

from .errors import CloError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


class ModelError(CloError):
    """A model that cannot be used; the message names the path and what is missing."""


def resolve_model_path(path_or_repo: str) -> Path:
    """A local model folder for `path_or_repo`: the folder itself, or the local HF cache copy."""
    path = Path(path_or_repo).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(
                f"{path}: a model must be a folder (config.json, *.safetensors, tokenizer)"
            )
    else:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

        try:
            path = Path(snapshot_download(path_or_repo, local_files_only=True))
        except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError) as e:
            raise ModelError(
                f"{path_or_repo}: no such local folder, and not in the local Hugging Face cache. "
                "clo-mlx works offline: download the model once on a connected machine "
                f"(e.g. `huggingface-cli download {path_or_repo}`) or pass a local path."
            ) from e
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: no config.json in the model folder")
    if not list(path.glob("*.safetensors")):
        hint = (
            " (found PyTorch .bin weights; convert them to safetensors)"
            if list(path.glob("*.bin"))
            else ""
        )
        raise ModelError(f"{path}: no *.safetensors weights in the model folder{hint}")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelError(
            f"{path}: no tokenizer files (tokenizer.json / tokenizer.model) in the model folder"
        )
    return path


def is_cpu_only() -> bool:
    """True when MLX computes on the CPU (no Metal, no CUDA)."""
    return mx.default_device() == mx.cpu


def cast_floats(model: nn.Module, dtype: mx.Dtype) -> None:
    """Cast the model's floating-point parameters (not quantized integers) to `dtype`."""
    model.update(
        tree_map(
            lambda p: p.astype(dtype) if mx.issubdtype(p.dtype, mx.floating) else p,
            model.parameters(),
        )
    )


def load_model(
    path_or_repo: str,
    adapter_path: str | None = None,
    dtype: str = "auto",
    trust_remote_code: bool = False,
):
    """(model, tokenizer) from a local folder; `dtype="auto"` means float32 on a CPU-only backend."""
    from mlx_lm.utils import load_model as _load_model
    from mlx_lm.utils import load_tokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = resolve_model_path(path_or_repo)
    model, config = _load_model(path, trust_remote_code=trust_remote_code)
    target = {
        "auto": mx.float32 if is_cpu_only() else None,
        "float32": mx.float32,
        "bfloat16": mx.bfloat16,
        "float16": mx.float16,
    }[dtype]
    if target is not None:
        cast_floats(model, target)
    if adapter_path is not None:
        from .adapters import load_adapters_checked

        load_adapters_checked(model, adapter_path)
        model.eval()
    tokenizer = load_tokenizer(
        path,
        {"trust_remote_code": True} if trust_remote_code else None,
        eos_token_ids=config.get("eos_token_id", None),
    )
    return model, tokenizer


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes (first 16 hex digits)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def model_fingerprint(path_or_repo: str) -> str:
    """A stable id of a model's weights and config (names, sizes and mtimes of its files)."""
    path = resolve_model_path(path_or_repo)
    h = hashlib.sha256()
    h.update((path / "config.json").read_bytes())
    for f in sorted(path.glob("*.safetensors")):
        st = f.stat()
        h.update(json.dumps([f.name, st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()[:16]
