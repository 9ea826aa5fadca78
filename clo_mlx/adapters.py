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
    # mlx-lm matches keys against each layer's modules and the model's own (e.g. lm_head).
    available = {name for name, _ in model.layers[0].named_modules() if name}
    available |= {name for name, _ in model.named_modules() if name}
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


def check_trainable_fits(model: nn.Module, cfg: TrainConfig) -> None:
    """What `apply_trainable` would refuse, checked without changing the model: the keys, the
    layer count, and a LoRA rank no larger than the smaller side of every adapted matrix."""
    _check_keys(model, cfg.lora_parameters["keys"])
    layers = selected_layers(model, cfg.num_layers)
    if cfg.fine_tune_type == "full":
        return
    rank, keys = cfg.lora_parameters["rank"], cfg.lora_parameters["keys"]
    found = {**dict(model.named_modules()), **(dict(layers[0].named_modules()) if layers else {})}
    for name, module in ((k, found[k]) for k in keys if k in found):
        module = getattr(module, "linear", module)  # already a LoRA layer (reference adapters)
        if not isinstance(module, (nn.Linear, nn.QuantizedLinear)):
            continue
        out_dims, in_dims = module.weight.shape
        if isinstance(module, nn.QuantizedLinear):
            in_dims *= 32 // module.bits
        if rank > min(in_dims, out_dims):
            raise AdapterError(
                f"lora_parameters.rank={rank} is larger than {name} ({in_dims} -> {out_dims}) "
                f"of this model: at most {min(in_dims, out_dims)}"
            )


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


def read_adapter_config(adapter_path: str | Path) -> dict:
    """Read and check an mlx-lm adapter folder's config; errors name the file and field."""
    adapter_path = Path(adapter_path)
    if not adapter_path.is_dir():
        raise AdapterError(f"{adapter_path}: not found (no such adapter folder)")
    for name in (CONFIG_FILE, ADAPTER_FILE):
        if not (adapter_path / name).is_file():
            raise AdapterError(
                f"{adapter_path / name}: not found (an mlx-lm adapter folder has one)"
            )
    path = adapter_path / CONFIG_FILE
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
    if not isinstance(config.get("num_layers"), int):
        raise AdapterError(f"{path}: field 'num_layers' missing or not an integer")
    if kind != "full":
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


def load_adapters_checked(model: nn.Module, adapter_path: str | Path) -> dict:
    """Load mlx-lm adapters onto `model` (in place, as `mlx_lm.load` does) after checking they
    were made for a model of this shape; return their config.

    Every adapter module the config creates must get its tensors from the file, and every tensor
    in the file must match a model parameter in name and shape.
    """
    from mlx_lm.tuner.utils import load_adapters

    adapter_path = Path(adapter_path)
    config = read_adapter_config(adapter_path)
    where = adapter_path / CONFIG_FILE
    keys = (config.get("lora_parameters") or {}).get("keys")
    if keys:
        try:
            _check_keys(model, keys)
        except AdapterError as e:
            raise AdapterError(f"{where}: {e} (adapters made for another model?)") from None
    read_safetensors(adapter_path / ADAPTER_FILE)  # a truncated file: a clear error, not mlx's
    try:
        load_adapters(model, str(adapter_path))
    except ValueError as e:
        raise AdapterError(f"{adapter_path}: adapters do not fit this model: {e}") from None
    if config.get("fine_tune_type", "lora") != "full":
        saved = read_safetensors(adapter_path / ADAPTER_FILE)
        leaves = ("lora_a", "lora_b", "m")
        missing = [
            k
            for k, _ in tree_flatten(model.parameters())
            if k.rsplit(".", 1)[-1] in leaves and k not in saved
        ]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise AdapterError(
                f"{adapter_path / ADAPTER_FILE}: lacks {len(missing)} adapter tensor(s) that "
                f"{where} implies for this model: {shown}"
            )
    return config


def read_safetensors(path: str | Path) -> dict[str, mx.array]:
    """The tensors of a safetensors file; an AdapterError naming it when it is unreadable."""
    try:
        return mx.load(str(path))
    except (OSError, RuntimeError, ValueError) as e:
        raise AdapterError(f"{path}: unreadable safetensors file ({e})") from None


def load_weights_into(model: nn.Module, weights_file: str | Path) -> None:
    """Load trainable weights (e.g. a checkpoint) into a model prepared by `apply_trainable`."""
    load_arrays_into(model, read_safetensors(weights_file), weights_file)


def load_arrays_into(model: nn.Module, weights: dict, weights_file: str | Path) -> None:
    """load_weights_into for tensors already read from `weights_file` (named in errors)."""
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
