"""Fuse trained adapters into the base model and save an MLX model directory.

The result opens with `mlx_lm.load` (tokenizer and chat template included). Loading
adapters goes through mlx-lm's own `load_adapters`, so what is fused is exactly what
`mlx_lm.load(model, adapter_path=...)` computes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlx.nn as nn
from mlx.utils import tree_unflatten

from ..adapters import (
    load_adapters_checked,
    read_adapter_config,
)


def resolve_model(model: str | Path | None, adapter_config: dict | None = None) -> Path:
    """The local folder of `model` (a folder or a model in the local HF cache; never downloads).

    Without `model`, the `model` field of the adapter config (mlx-lm and clo-mlx save it).
    """
    from ..models import resolve_model_path

    if model is None:
        model = (adapter_config or {}).get("model")
        if not model:
            raise ValueError("no --model given and the adapter config names no 'model'")
    return resolve_model_path(str(model))


def fuse_modules(model: nn.Module, dequantize: bool = False) -> nn.Module:
    """Replace every adapter layer (LoRA/DoRA) by a plain layer with the update merged in."""
    fused = [
        (n, m.fuse(dequantize=dequantize)) for n, m in model.named_modules() if hasattr(m, "fuse")
    ]
    if fused:
        model.update_modules(tree_unflatten(fused))
    return model


def _is_inside(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


@contextmanager
def atomic_output_dir(
    dest: str | Path, overwrite: bool = False, protect: tuple[Path, ...] = ()
) -> Iterator[Path]:
    """Yield a temp directory next to `dest`; on success it replaces `dest` by renames.

    An existing non-empty `dest` is only replaced with `overwrite`. `dest` may not be one
    of the `protect` paths (inputs) nor contain them.
    """
    dest = Path(dest)
    for p in protect:
        if _is_inside(p, dest):
            raise ValueError(f"output {dest} would overwrite the input {p}; choose another path")
    if dest.exists():
        if not dest.is_dir():
            raise FileExistsError(f"output {dest} exists and is not a directory")
        if any(dest.iterdir()) and not overwrite:
            raise FileExistsError(f"output {dest} exists and is not empty (use --overwrite)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old / "d")
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def fuse(
    model_path: str | Path | None,
    adapter_path: str | Path,
    save_path: str | Path,
    dequantize: bool = False,
    overwrite: bool = False,
) -> Path:
    """Merge the adapters at `adapter_path` into `model_path`; save an MLX model at `save_path`.

    `model_path` None: the model named in the adapter config. A quantized base stays quantized (the merged weight is re-quantized, which rounds it)
    unless `dequantize`, which saves full-precision weights and drops the quantization config.
    """
    from mlx_lm.utils import dequantize_model, save

    from ..models import hf_rope_config, load_mlx_model, load_tokenizer_checked, read_config

    model_path = resolve_model(model_path, read_adapter_config(adapter_path))
    model, config = load_mlx_model(model_path, lazy=True)
    tokenizer = load_tokenizer_checked(model_path)
    # Both RoPE config styles, so transformers 4.x/5.x and mlx-lm read the same model.
    config.update(hf_rope_config(read_config(model_path), model_path / "config.json"))
    load_adapters_checked(model, adapter_path)
    fuse_modules(model, dequantize=dequantize)
    if dequantize:
        dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    save_path = Path(save_path)
    with atomic_output_dir(save_path, overwrite, protect=(model_path, Path(adapter_path))) as tmp:
        save(tmp, str(model_path), model, tokenizer, config, donate_model=False)
    return save_path
