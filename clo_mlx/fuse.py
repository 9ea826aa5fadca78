"""Fuse trained adapters into the base model and save an MLX model directory.

The result opens with `mlx_lm.load` (tokenizer and chat template included). Loading
adapters goes through mlx-lm's own `load_adapters`, so what is fused is exactly what
`mlx_lm.load(model, adapter_path=...)` computes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapters.safetensors"


class AdapterError(ValueError):
    """Adapters that cannot be read, do not fit the model, or cannot be converted."""


def read_adapter_config(adapter_path: str | Path) -> dict:
    """Read and check an mlx-lm `adapter_config.json`; errors name the file and field."""
    adapter_path = Path(adapter_path)
    if not adapter_path.is_dir():
        raise FileNotFoundError(f"adapter directory not found: {adapter_path}")
    path = adapter_path / ADAPTER_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (an mlx-lm adapter directory has one)")
    if not (adapter_path / ADAPTER_WEIGHTS).is_file():
        raise FileNotFoundError(f"{adapter_path / ADAPTER_WEIGHTS}: not found")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AdapterError(f"{path}, line {e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{path}: expected a JSON object")
    kind = config.get("fine_tune_type", "lora")
    if kind not in ("lora", "dora", "full"):
        raise AdapterError(
            f"{path}: field 'fine_tune_type' must be 'lora', 'dora' or 'full', got {kind!r}"
        )
    if kind != "full":
        if not isinstance(config.get("num_layers"), int):
            raise AdapterError(f"{path}: field 'num_layers' missing or not an integer")
        params = config.get("lora_parameters")
        if not isinstance(params, dict):
            raise AdapterError(f"{path}: field 'lora_parameters' missing or not an object")
        for field in ("rank", "scale"):
            if not isinstance(params.get(field), (int, float)):
                raise AdapterError(
                    f"{path}: field 'lora_parameters.{field}' missing or not a number"
                )
        params.setdefault("dropout", 0.0)
    return config


def resolve_model(model: str | Path | None, adapter_config: dict | None = None) -> Path:
    """The local folder of `model` (a folder or a model in the local HF cache; never downloads).

    Without `model`, the `model` field of the adapter config (mlx-lm and clo-mlx save it).
    """
    from clo_mlx.models import resolve_model_path

    if model is None:
        model = (adapter_config or {}).get("model")
        if not model:
            raise ValueError("no --model given and the adapter config names no 'model'")
    return resolve_model_path(str(model))


def apply_adapters(model: nn.Module, adapter_path: str | Path) -> dict:
    """Load mlx-lm adapters onto `model` (in place) and check they fit; return their config.

    Every adapter module the config creates must get its tensors from the file, and every
    tensor in the file must match a model parameter in name and shape.
    """
    from mlx_lm.tuner.utils import load_adapters

    adapter_path = Path(adapter_path)
    config = read_adapter_config(adapter_path)
    weights_file = adapter_path / ADAPTER_WEIGHTS
    try:
        load_adapters(model, str(adapter_path))
    except ValueError as e:
        raise AdapterError(f"adapters do not fit this model: {e}") from None
    saved = mx.load(str(weights_file))
    if config.get("fine_tune_type", "lora") != "full":
        leaves = ("lora_a", "lora_b", "m")
        expected = [
            k for k, _ in tree_flatten(model.parameters()) if k.rsplit(".", 1)[-1] in leaves
        ]
        missing = [k for k in expected if k not in saved]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise AdapterError(
                f"{weights_file}: lacks {len(missing)} adapter tensor(s) that "
                f"{adapter_path / ADAPTER_CONFIG} implies for this model: {shown}"
            )
    return config


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
    from mlx_lm.utils import dequantize_model, load_model, load_tokenizer, save

    model_path = resolve_model(model_path, read_adapter_config(adapter_path))
    model, config = load_model(model_path, lazy=True)
    apply_adapters(model, adapter_path)
    fuse_modules(model, dequantize=dequantize)
    if dequantize:
        dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    tokenizer = load_tokenizer(model_path, eos_token_ids=config.get("eos_token_id"))
    save_path = Path(save_path)
    with atomic_output_dir(save_path, overwrite, protect=(model_path, Path(adapter_path))) as tmp:
        save(tmp, str(model_path), model, tokenizer, config, donate_model=False)
    return save_path
