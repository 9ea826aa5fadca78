"""Trainable parameters and adapter files, in mlx-lm's format.

`adapters.safetensors` + `adapter_config.json` (`fine_tune_type`, `num_layers`,
`lora_parameters: {rank, scale, dropout, keys}`), so `mlx_lm.load(model, adapter_path=...)`,
`mlx_lm.generate --adapter-path` and `mlx_lm.fuse` accept what clo-mlx trains.
Default: LoRA on self_attn.q_proj/k_proj/v_proj/o_proj of every layer (the paper trains attention only).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .config import TrainConfig
from .errors import CloError
from .io import atomic_save_safetensors, atomic_write_json

ADAPTER_FILE = "adapters.safetensors"
CONFIG_FILE = "adapter_config.json"


class AdapterError(CloError):
    """Adapter files that are missing or do not fit the model."""


def _check_keys(model: nn.Module, keys: list[str]) -> None:
    available = {name for name, _ in model.layers[0].named_modules() if name}
    missing = [k for k in keys if k not in available]
    if missing:
        linear = sorted(
            n
            for n, m in model.layers[0].named_modules()
            if isinstance(m, (nn.Linear, nn.QuantizedLinear))
        )
        raise AdapterError(
            f"lora_parameters.keys: {missing} match no module of the model's layers; "
            f"linear modules in a layer: {linear}"
        )


def selected_layers(model: nn.Module, num_layers: int) -> list:
    """The last `num_layers` layers (all when -1), mlx-lm's convention."""
    n = len(model.layers)
    if num_layers > n:
        raise AdapterError(f"num_layers={num_layers} but the model has only {n} layers")
    return model.layers[-max(num_layers, 0) :] if num_layers != -1 else list(model.layers)


def apply_trainable(model: nn.Module, cfg: TrainConfig) -> None:
    """Freeze the model and make only the configured parameters trainable."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model.freeze()
    keys = cfg.lora_parameters["keys"]
    _check_keys(model, keys)
    if cfg.fine_tune_type == "full":
        for layer in selected_layers(model, cfg.num_layers):
            for name, module in layer.named_modules():
                if name in keys:
                    if isinstance(module, nn.QuantizedLinear):
                        raise AdapterError(
                            "fine_tune_type: full cannot train quantized weights; use lora (QLoRA)"
                        )
                    module.unfreeze()
        return
    selected_layers(model, cfg.num_layers)
    linear_to_lora_layers(
        model,
        cfg.num_layers,
        dict(cfg.lora_parameters),
        use_dora=cfg.fine_tune_type == "dora",
    )


def trainable_weights(model: nn.Module) -> dict[str, mx.array]:
    return dict(tree_flatten(model.trainable_parameters()))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts (quantized weights counted as stored)."""
    trainable = sum(v.size for v in trainable_weights(model).values())
    total = sum(
        v.size
        for k, v in tree_flatten(model.parameters())
        if not k.endswith((".lora_a", ".lora_b", ".m"))
    )
    return trainable, total


def adapter_config(cfg: TrainConfig) -> dict:
    """The adapter_config.json content: the whole training config (as mlx-lm saves it)."""
    return cfg.to_dict()


def save_adapters(
    model: nn.Module, adapter_path: str | Path, cfg: TrainConfig, filename: str = ADAPTER_FILE
) -> Path:
    """Write the trainable weights (and adapter_config.json) atomically."""
    adapter_path = Path(adapter_path)
    adapter_path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(adapter_path / CONFIG_FILE, adapter_config(cfg))
    return atomic_save_safetensors(adapter_path / filename, trainable_weights(model))


def check_adapter_path(adapter_path: str | Path) -> dict:
    """The adapter config of `adapter_path`, with clear errors when files are missing or bad."""
    adapter_path = Path(adapter_path)
    if not adapter_path.is_dir():
        raise AdapterError(f"{adapter_path}: no such adapter folder")
    for name in (CONFIG_FILE, ADAPTER_FILE):
        if not (adapter_path / name).is_file():
            raise AdapterError(f"{adapter_path}: missing {name}")
    try:
        config = json.loads((adapter_path / CONFIG_FILE).read_text())
    except json.JSONDecodeError as e:
        raise AdapterError(
            f"{adapter_path / CONFIG_FILE}:{e.lineno}: malformed JSON ({e.msg})"
        ) from e
    for key in ("num_layers",):
        if key not in config:
            raise AdapterError(f"{adapter_path / CONFIG_FILE}: missing field {key!r}")
    if config.get("fine_tune_type", "lora") != "full" and "lora_parameters" not in config:
        raise AdapterError(f"{adapter_path / CONFIG_FILE}: missing field 'lora_parameters'")
    return config


def check_adapters_fit(model: nn.Module, adapter_path: str | Path) -> dict:
    """Check that the adapters in `adapter_path` were made for a model of this shape."""
    config = check_adapter_path(adapter_path)
    where = Path(adapter_path) / CONFIG_FILE
    n = len(model.layers)
    if config["num_layers"] > n:
        raise AdapterError(
            f"{where}: num_layers={config['num_layers']} but the model has only {n} layers "
            "(adapters made for another model?)"
        )
    keys = (config.get("lora_parameters") or {}).get("keys")
    if keys:
        try:
            _check_keys(model, keys)
        except AdapterError as e:
            raise AdapterError(f"{where}: {e} (adapters made for another model?)") from None
    return config


def load_adapters_checked(model: nn.Module, adapter_path: str | Path) -> None:
    """mlx-lm's adapter loading, after our checks, with its shape errors named as ours."""
    from mlx_lm.tuner.utils import load_adapters

    check_adapters_fit(model, adapter_path)
    try:
        load_adapters(model, str(adapter_path))
    except ValueError as e:
        raise AdapterError(f"{adapter_path}: adapters do not fit this model: {e}") from None


def load_weights_into(model: nn.Module, weights_file: str | Path) -> None:
    """Load trainable weights (e.g. a checkpoint) into a model prepared by `apply_trainable`."""
    weights = mx.load(str(weights_file))
    expected = trainable_weights(model)
    errors = [
        f"  {k}: not a trainable parameter of this model" for k in weights if k not in expected
    ] + [
        f"  {k}: shape {tuple(w.shape)} != model's {tuple(expected[k].shape)}"
        for k, w in weights.items()
        if k in expected and w.shape != expected[k].shape
    ]
    if errors:
        raise AdapterError(f"{weights_file} does not fit this model:\n" + "\n".join(errors[:10]))
    model.load_weights(list(weights.items()), strict=False)
