"""Take MLX results back to Hugging Face: PEFT adapters, fused HF models, and PEFT import.

mlx-lm LoRA computes `y = W x + scale * (x @ lora_a) @ lora_b` with `lora_a` (in, r) and
`lora_b` (r, out). PEFT computes `y = W x + (alpha / r) * B (A x)` with `A` (r, in) and
`B` (out, r). So `A = lora_a.T`, `B = lora_b.T` and `alpha = scale * r`.

DoRA: mlx-lm's `DoRALinear` computes `m / ||W + scale * lora_b.T @ lora_a.T|| * (W x + scale *
B A x) + bias`, norms over the input axis (one per output row), scale inside the norm; PEFT's
DoRA computes the same with `lora_magnitude_vector` in place of `m`. So `m` is exported as is.

Hugging Face tensor names equal mlx-lm parameter names for the architectures in
`SUPPORTED_ARCHS` (checked against transformers by the tests); others are refused.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from rich.console import Console

from ..adapters import (
    ADAPTER_FILE,
    CONFIG_FILE,
    AdapterError,
    load_adapters_checked,
    read_adapter_config,
)
from .fuse import atomic_output_dir, fuse_modules, resolve_model

SUPPORTED_ARCHS = ("llama", "mistral", "qwen2", "qwen3")
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
_LAYER_RE = re.compile(r"^(?P<prefix>(?:.*\.)?layers)\.(?P<idx>\d+)\.(?P<key>.+)$")

console = Console(stderr=True)


def _check_arch(config: dict, model_path: Path) -> None:
    arch = config.get("model_type")
    if arch not in SUPPORTED_ARCHS:
        raise AdapterError(
            f"{model_path / 'config.json'}: model_type {arch!r} is not supported for Hugging Face "
            f"export (supported: {', '.join(SUPPORTED_ARCHS)}); its mlx-lm parameter names are "
            "not known to match the Hugging Face ones"
        )


def _lora_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The adapter layers of `model` by name; refuses kinds PEFT export does not cover."""
    from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear
    from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear, LoRASwitchLinear

    found = {}
    for name, module in model.named_modules():
        if isinstance(module, (LoRALinear, DoRALinear)):
            found[name] = module
        elif isinstance(module, (LoRAEmbedding, DoRAEmbedding, LoRASwitchLinear)):
            raise AdapterError(
                f"{name}: {type(module).__name__} adapters are not supported for PEFT export "
                "(only LoRA/DoRA on linear layers)"
            )
    return dict(sorted(found.items()))


def _layer_linears(model: nn.Module, adapted: dict[str, nn.Module]) -> list[str]:
    """Names of all linear/embedding layers of the base model (adapter wrappers included)."""
    inner = tuple(name + "." for name in adapted)
    kinds = (nn.Linear, nn.QuantizedLinear, nn.Embedding, nn.QuantizedEmbedding)
    return [
        n
        for n, m in model.named_modules()
        if n in adapted or (isinstance(m, kinds) and not n.startswith(inner))
    ]


def peft_selects(name: str, target_modules: list[str] | str, layers: list[int] | None) -> bool:
    """Whether PEFT's LoRA (0.21 rules) adapts module `name` under this config."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    if name in target_modules:
        return True
    if not any(name.endswith("." + t) for t in target_modules):
        return False
    if layers is None:
        return True
    match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", name)
    return match is not None and int(match["idx"]) in layers


def target_spec(
    all_names: list[str], adapted: list[str], num_layers: int
) -> tuple[list[str] | str, list[int] | None]:
    """PEFT `target_modules` and `layers_to_transform` that select exactly `adapted`.

    Uses leaf names (`q_proj`) where they are unambiguous, the layer-relative path
    (`self_attn.q_proj`) otherwise, and an exact regex when no such list fits.
    """
    parsed = [_LAYER_RE.match(n) for n in adapted]
    if all(parsed) and len({p["prefix"] for p in parsed}) == 1:
        keys = sorted({p["key"] for p in parsed})
        layers = sorted({int(p["idx"]) for p in parsed})
        if len(adapted) == len(keys) * len(layers):
            targets = []
            for key in keys:
                leaf = key.rsplit(".", 1)[-1]
                clash = [
                    n
                    for n in all_names
                    if (n == leaf or n.endswith("." + leaf))
                    and not ((m := _LAYER_RE.match(n)) and m["key"] == key)
                ]
                targets.append(key if clash else leaf)
            layer_sel = None if layers == list(range(num_layers)) else layers
            chosen = {n for n in all_names if peft_selects(n, targets, layer_sel)}
            if chosen == set(adapted):
                return targets, layer_sel
    return "(" + "|".join(re.escape(n) for n in adapted) + ")", None


def default_base_id(model: str | Path, config: dict, model_path: Path) -> str:
    """The Hugging Face id of the base: `model` when it is a repo id (not a local path),
    else the config's `_name_or_path`, else the local path (with a note)."""
    if not Path(model).expanduser().exists():
        return str(model)
    name = config.get("_name_or_path")
    if isinstance(name, str) and name and not Path(name).expanduser().is_absolute():
        return name
    console.print(
        f"[yellow]note:[/] base_model_name_or_path set to the local path {model_path.resolve()}; "
        "pass --base-model-id with the Hugging Face id of the base model to share the adapter"
    )
    return str(model_path.resolve())


def _load_base(
    model: str | Path | None, adapter_config: dict | None
) -> tuple[nn.Module, dict, Path]:
    from ..models import load_mlx_model

    model_path = resolve_model(model, adapter_config)
    model, config = load_mlx_model(model_path, lazy=True)
    _check_arch(config, model_path)
    return model, config, model_path


def export_peft(
    model_path: str | Path | None,
    adapter_path: str | Path,
    output: str | Path,
    base_model_id: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the mlx-lm adapters as a PEFT LoRA (or DoRA) adapter directory at `output`.

    `model_path` None: the model named in the adapter config.
    """
    adapter_path = Path(adapter_path)
    acfg = read_adapter_config(adapter_path)
    kind = acfg.get("fine_tune_type", "lora")
    if kind == "full":
        raise AdapterError(
            f"{adapter_path / CONFIG_FILE}: fine_tune_type is 'full': {ADAPTER_FILE} holds "
            "full weights, not LoRA matrices, so there is no PEFT adapter to export; "
            "use `clo-mlx export-hf --fused` to export the whole model"
        )
    model_arg = model_path or acfg.get("model")
    model, config, model_path = _load_base(model_path, acfg)
    if "quantization" in config:
        console.print(
            "[yellow]note:[/] the base model is quantized; the PEFT adapter will be applied to the "
            "full-precision Hugging Face base, so outputs differ by the quantization error"
        )
    load_adapters_checked(model, adapter_path)
    modules = _lora_modules(model)
    if not modules:
        raise AdapterError(f"{adapter_path}: the adapters adapt no layer of this model")
    params = acfg["lora_parameters"]
    rank, scale = int(params["rank"]), float(params["scale"])
    tensors = {}
    for name, m in modules.items():
        if m.lora_a.shape[1] != rank or m.scale != scale:
            raise AdapterError(f"{name}: rank/scale differ from {adapter_path / CONFIG_FILE}")
        prefix = PEFT_PREFIX + name
        tensors[prefix + ".lora_A.weight"] = mx.contiguous(m.lora_a.T)
        tensors[prefix + ".lora_B.weight"] = mx.contiguous(m.lora_b.T)
        if kind == "dora":
            tensors[prefix + ".lora_magnitude_vector"] = m.m
    targets, layers = target_spec(_layer_linears(model, modules), list(modules), len(model.layers))
    peft_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_id or default_base_id(model_arg, config, model_path),
        "r": rank,
        "lora_alpha": scale * rank,
        "lora_dropout": float(params.get("dropout", 0.0)),
        "target_modules": targets,
        "layers_to_transform": layers,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": kind == "dora",
        "lora_bias": False,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "init_lora_weights": True,
        "inference_mode": True,
    }
    with atomic_output_dir(output, overwrite, protect=(model_path, adapter_path)) as tmp:
        mx.eval(tensors)
        mx.save_safetensors(str(tmp / PEFT_WEIGHTS), tensors, metadata={"format": "pt"})
        (tmp / PEFT_CONFIG).write_text(json.dumps(peft_config, indent=2) + "\n")
    return Path(output)


def _original_dtype(config: dict, model: nn.Module) -> mx.Dtype:
    for key in ("torch_dtype", "dtype"):
        if config.get(key) in DTYPES:
            return DTYPES[config[key]]
    for name, p in tree_flatten(model.parameters()):
        if mx.issubdtype(p.dtype, mx.floating) and not name.endswith((".scales", ".biases")):
            return p.dtype
    return mx.float32


def write_hf_weights(
    weights: dict[str, mx.array], out: Path, max_shard_bytes: int = 5 << 30
) -> None:
    """`model.safetensors`, or shards plus `model.safetensors.index.json` as transformers reads."""
    shards: list[dict[str, mx.array]] = [{}]
    size = 0
    for k, v in weights.items():
        if shards[-1] and size + v.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += v.nbytes
    if len(shards) == 1:
        mx.save_safetensors(str(out / "model.safetensors"), shards[0], metadata={"format": "pt"})
        return
    index = {"metadata": {"total_size": sum(v.nbytes for v in weights.values())}, "weight_map": {}}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        mx.save_safetensors(str(out / name), shard, metadata={"format": "pt"})
        index["weight_map"].update(dict.fromkeys(shard, name))
    index["weight_map"] = dict(sorted(index["weight_map"].items()))
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def export_fused_hf(
    model_path: str | Path | None,
    adapter_path: str | Path,
    output: str | Path,
    overwrite: bool = False,
) -> Path:
    """Write base + adapters as one Hugging Face model (safetensors, config, tokenizer).

    A quantized base is de-quantized; weights are saved in the base's original dtype
    (`torch_dtype` of its config). Works for LoRA, DoRA and full fine-tunes.
    """
    from mlx_lm.utils import dequantize_model

    from ..models import hf_rope_config, read_config

    model, config, model_path = _load_base(model_path, read_adapter_config(adapter_path))
    dtype = _original_dtype(config, model)
    load_adapters_checked(model, adapter_path)
    fuse_modules(model, dequantize=True)
    dequantize_model(model)
    weights = {
        k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v
        for k, v in tree_flatten(model.parameters())
    }
    hf_config = read_config(model_path)
    # Both RoPE config styles, so transformers 4.x/5.x and mlx-lm read the same model.
    hf_config.update(hf_rope_config(hf_config, model_path / "config.json"))
    for key in ("quantization", "quantization_config"):
        hf_config.pop(key, None)
    dtype_name = next(k for k, v in DTYPES.items() if v == dtype)
    keys = [k for k in ("torch_dtype", "dtype") if k in hf_config] or ["torch_dtype"]
    hf_config.update(dict.fromkeys(keys, dtype_name))
    with atomic_output_dir(output, overwrite, protect=(model_path, Path(adapter_path))) as tmp:
        mx.eval(weights)
        write_hf_weights(weights, tmp)
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        for name in TOKENIZER_FILES:
            if (model_path / name).is_file():
                shutil.copy(model_path / name, tmp / name)
    return Path(output)


def _read_peft_config(peft_dir: Path) -> dict:
    path = peft_dir / PEFT_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (a PEFT adapter directory has one)")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AdapterError(f"{path}, line {e.lineno}: invalid JSON: {e.msg}") from None
    if cfg.get("peft_type") != "LORA":
        raise AdapterError(f"{path}: field 'peft_type' is {cfg.get('peft_type')!r}; only LORA")
    refuse = {
        "fan_in_fan_out": lambda v: bool(v),
        "bias": lambda v: v not in (None, "none"),
        "lora_bias": lambda v: bool(v),
        "modules_to_save": lambda v: bool(v),
        "layer_replication": lambda v: bool(v),
        "target_parameters": lambda v: bool(v),
        "trainable_token_indices": lambda v: bool(v),
        "use_qalora": lambda v: bool(v),
    }
    for field, bad in refuse.items():
        if bad(cfg.get(field)):
            raise AdapterError(
                f"{path}: field {field!r} = {cfg[field]!r} has no mlx-lm LoRA equivalent"
            )
    for field in ("r", "lora_alpha"):
        if not isinstance(cfg.get(field), (int, float)):
            raise AdapterError(f"{path}: field {field!r} missing or not a number")
    return cfg


def _linear_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(out, in) of every linear layer, de-quantized sizes for quantized ones."""
    shapes = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.QuantizedLinear):
            out_dims, packed = m.weight.shape
            shapes[name] = (out_dims, packed * 32 // m.bits)
        elif isinstance(m, nn.Linear):
            shapes[name] = tuple(m.weight.shape)
    return shapes


def _pattern_value(patterns: dict, name: str, default: float) -> float:
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def import_peft(
    peft_dir: str | Path,
    model_path: str | Path | None,
    output: str | Path,
    overwrite: bool = False,
) -> Path:
    """Convert a PEFT LoRA/DoRA adapter into mlx-lm adapters at `output` (training can resume).

    `model_path` None: the adapter's `base_model_name_or_path` (local folder or HF cache).
    """
    peft_dir = Path(peft_dir)
    if not peft_dir.is_dir():
        raise FileNotFoundError(f"PEFT adapter directory not found: {peft_dir}")
    cfg = _read_peft_config(peft_dir)
    weights_file = peft_dir / PEFT_WEIGHTS
    if not weights_file.is_file():
        hint = " (only safetensors is read; re-save with safe_serialization=True)"
        raise FileNotFoundError(f"{weights_file}: not found{hint}")
    saved = mx.load(str(weights_file))
    model_arg = model_path or cfg.get("base_model_name_or_path")
    model, config, model_path = _load_base(model_arg, {"model": model_arg})
    use_dora = bool(cfg.get("use_dora"))
    suffixes = {".lora_A.weight": "a", ".lora_B.weight": "b"}
    if use_dora:
        suffixes.update({".lora_magnitude_vector": "m", ".lora_magnitude_vector.weight": "m"})
    modules: dict[str, dict[str, mx.array]] = {}
    for key, value in saved.items():
        suffix = next((s for s in suffixes if key.endswith(s)), None)
        if not key.startswith(PEFT_PREFIX) or suffix is None:
            raise AdapterError(
                f"{weights_file}: tensor {key!r} is not a LoRA tensor mlx-lm can use"
            )
        name = key[len(PEFT_PREFIX) : -len(suffix)]
        modules.setdefault(name, {})[suffixes[suffix]] = value
    if not modules:
        raise AdapterError(f"{weights_file}: no LoRA tensors")

    shapes = _linear_shapes(model)
    n_layers = len(model.layers)
    layers, keys, ranks, scales = set(), set(), set(), set()
    for name, parts in sorted(modules.items()):
        need = {"a", "b", "m"} if use_dora else {"a", "b"}
        if set(parts) != need:
            raise AdapterError(f"{weights_file}: module {name} lacks {sorted(need - set(parts))}")
        match = _LAYER_RE.match(name)
        if match is None or match["prefix"] != "model.layers":
            raise AdapterError(
                f"{weights_file}: module {name} is not inside model.layers; mlx-lm adapters "
                "only cover transformer layers"
            )
        if name not in shapes:
            raise AdapterError(
                f"{weights_file}: tensor {PEFT_PREFIX}{name}.lora_A.weight: {model_path} has no "
                f"linear layer {name}"
            )
        out_dims, in_dims = shapes[name]
        r = parts["a"].shape[0]
        expect = {"a": (r, in_dims), "b": (out_dims, r), "m": (out_dims,)}
        for part in sorted(parts):
            if tuple(parts[part].shape) != expect[part]:
                key = next(k for k, v in suffixes.items() if v == part)
                raise AdapterError(
                    f"{weights_file}: tensor {PEFT_PREFIX}{name}{key} has shape "
                    f"{tuple(parts[part].shape)}, the model needs {expect[part]}"
                )
        layers.add(int(match["idx"]))
        keys.add(match["key"])
        alpha = _pattern_value(cfg.get("alpha_pattern") or {}, name, cfg["lora_alpha"])
        ranks.add(r)
        scales.add(alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r)
    if len(ranks) > 1 or len(scales) > 1:
        raise AdapterError(
            f"{peft_dir}: rank or alpha varies per module (ranks {sorted(ranks)}, scales "
            f"{sorted(scales)}); mlx-lm adapters have one rank and one scale"
        )
    num_layers = n_layers - min(layers)
    if max(layers) >= n_layers:
        raise AdapterError(
            f"{weights_file}: adapts layer {max(layers)} but {model_path} has {n_layers} layers"
        )
    if layers != set(range(n_layers - num_layers, n_layers)) or len(modules) != len(layers) * len(
        keys
    ):
        raise AdapterError(
            f"{peft_dir}: adapted layers {sorted(layers)} with modules {sorted(keys)} are not "
            "'the same modules in each of the last N layers', which is all mlx-lm adapters express"
        )
    tensors = {}
    for name, parts in modules.items():
        tensors[name + ".lora_a"] = mx.contiguous(parts["a"].T)
        tensors[name + ".lora_b"] = mx.contiguous(parts["b"].T)
        if use_dora:
            tensors[name + ".m"] = parts["m"]
    mlx_config = {
        "fine_tune_type": "dora" if use_dora else "lora",
        "num_layers": num_layers,
        "lora_parameters": {
            "rank": ranks.pop(),
            "scale": scales.pop(),
            "dropout": float(cfg.get("lora_dropout") or 0.0),
            "keys": sorted(keys),
        },
        "model": str(model_arg),
        "base_model_name_or_path": cfg.get("base_model_name_or_path"),
    }
    with atomic_output_dir(output, overwrite, protect=(peft_dir, model_path)) as tmp:
        mx.eval(tensors)
        mx.save_safetensors(str(tmp / ADAPTER_FILE), tensors, metadata={"format": "mlx"})
        (tmp / CONFIG_FILE).write_text(json.dumps(mlx_config, indent=2) + "\n")
        load_adapters_checked(model, tmp)  # shapes must fit the model; errors name the tensor
    return Path(output)
