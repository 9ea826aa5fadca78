"""Offline model loading: a local folder or a model already in the Hugging Face cache.

Never downloads. Weights come only from safetensors; `trust_remote_code` is off unless asked for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
import struct
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


# RoPE as transformers computes it, in the two config styles: transformers < 5 writes top-level
# `rope_theta` / `rope_scaling`, transformers >= 5 writes `rope_parameters` (with `rope_theta`
# inside) and nothing at top level. mlx-lm 0.32's llama/qwen2 (and so mistral) read only the old
# keys and silently fall back to their own defaults, so clo-mlx resolves the settings itself and
# passes them to mlx-lm explicitly.
ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")
# Architectures whose mlx-lm RoPE is checked against transformers here; others keep mlx-lm's own
# reading of the config (e.g. phi3's longrope, gemma's per-layer RoPE).
ROPE_ARCHS = ("llama", "mistral", "qwen2", "qwen3")
DEFAULT_ROPE_THETA = 10000.0  # transformers' default (4.x and 5.x) for llama, mistral, qwen2, qwen3
_ROPE_REQUIRED = {
    "linear": ("factor",),
    "dynamic": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor"),
    "yarn": ("factor",),
}
_ROPE_OPTIONAL = {
    "linear": (),
    "dynamic": (),
    "llama3": ("original_max_position_embeddings",),
    "yarn": ("original_max_position_embeddings", "beta_fast", "beta_slow", "mscale",
             "mscale_all_dim", "truncate", "attention_factor"),
}  # fmt: skip


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_config(path: Path) -> dict:
    """The model's config.json as a dict; a clear error for unreadable or malformed files."""
    file = path / "config.json"
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelError(f"{file}, line {e.lineno}: invalid JSON: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"{file}: cannot be read: {e}") from None
    if not isinstance(config, dict):
        raise ModelError(f"{file}: must be a JSON object, got {type(config).__name__}")
    return config


def _rope_dict(value, file: Path, key: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ModelError(f"{file}: field {key!r} must be an object, got {value!r}")
    return dict(value)


def resolve_rope(config: dict, file: Path = Path("config.json")) -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling or None) as transformers computes them, from either config style.

    `rope_scaling` is mlx-lm's form: `{"rope_type": ..., <the type's parameters>}`, with the
    defaults transformers fills in made explicit (mlx-lm's own defaults differ). Settings that
    mlx-lm cannot compute as transformers does, or two styles that disagree, are a `ModelError`
    naming the key.
    """
    new = _rope_dict(config.get("rope_parameters"), file, "rope_parameters")
    old = _rope_dict(config.get("rope_scaling"), file, "rope_scaling")
    if new is not None and any(isinstance(v, dict) for v in new.values()):
        raise ModelError(
            f"{file}: field 'rope_parameters' is nested per layer type; only one RoPE for all "
            "layers is supported for this architecture"
        )
    styles = []
    if new is not None:
        styles.append(("rope_parameters", new, new.get("rope_theta", config.get("rope_theta"))))
    if old is not None or "rope_theta" in config:
        styles.append(("rope_theta/rope_scaling", old or {}, config.get("rope_theta")))
    if not styles:
        styles.append(("defaults", {}, None))
    resolved = [
        (name, *_rope_settings(params, theta, config, file, name)) for name, params, theta in styles
    ]
    if len({(t, json.dumps(s, sort_keys=True)) for _, t, s in resolved}) > 1:
        (a, ta, sa), (b, tb, sb) = resolved
        raise ModelError(
            f"{file}: '{a}' (rope_theta {ta}, scaling {sa}) and top-level '{b}' (rope_theta "
            f"{tb}, scaling {sb}) disagree; transformers 4 reads the top-level keys, "
            "transformers 5 reads rope_parameters (unless a top-level rope_scaling is set). "
            "Keep one of them."
        )
    return resolved[0][1], resolved[0][2]


def _rope_settings(
    params: dict, theta, config: dict, file: Path, key: str
) -> tuple[float, dict | None]:
    field = "rope_parameters" if key == "rope_parameters" else "rope_scaling"
    if theta is None:
        theta = DEFAULT_ROPE_THETA
    if not _is_number(theta) or theta <= 0:
        where = "rope_parameters.rope_theta" if "rope_theta" in params else "rope_theta"
        raise ModelError(f"{file}: field {where!r} must be a positive number, got {theta!r}")
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise ModelError(
            f"{file}: field '{field}.rope_type' is {rope_type!r}; clo-mlx supports "
            f"{', '.join(ROPE_TYPES)} (as mlx-lm computes them the way transformers does)"
        )
    prf = params.get("partial_rotary_factor", config.get("partial_rotary_factor"))
    if prf not in (None, 1, 1.0):
        raise ModelError(
            f"{file}: field 'partial_rotary_factor' = {prf!r}: mlx-lm's "
            f"{config.get('model_type')} rotates the whole head (1.0 only)"
        )
    if rope_type == "default":
        return float(theta), None
    known = {"rope_type", "type", "rope_theta", "partial_rotary_factor"}
    known |= set(_ROPE_REQUIRED[rope_type]) | set(_ROPE_OPTIONAL[rope_type])
    for k in params:
        if k not in known:
            raise ModelError(
                f"{file}: field '{field}.{k}' is not a parameter of rope_type {rope_type!r}"
            )
    out: dict = {"rope_type": rope_type}
    for k in _ROPE_REQUIRED[rope_type]:
        if not _is_number(params.get(k)):
            raise ModelError(
                f"{file}: field '{field}.{k}' (a number) is required for rope_type {rope_type!r}"
            )
        out[k] = params[k]
    if rope_type in ("llama3", "yarn"):
        # transformers' default; mlx-lm's own defaults are 8192 (llama3) and 4096 (yarn).
        omp = params.get("original_max_position_embeddings", config.get("max_position_embeddings"))
        if not _is_number(omp):
            raise ModelError(
                f"{file}: field '{field}.original_max_position_embeddings' (or "
                f"'max_position_embeddings') is required for rope_type {rope_type!r}"
            )
        out["original_max_position_embeddings"] = omp
    if rope_type == "dynamic" and not _is_number(config.get("max_position_embeddings")):
        raise ModelError(f"{file}: field 'max_position_embeddings' is required for dynamic RoPE")
    if rope_type == "yarn":
        if params.get("truncate", True) is not True:
            raise ModelError(
                f"{file}: field '{field}.truncate' = false is not supported by mlx-lm's YaRN"
            )
        if params.get("attention_factor") is not None:
            raise ModelError(
                f"{file}: field '{field}.attention_factor' is not supported by mlx-lm's YaRN"
            )
        for k in ("beta_fast", "beta_slow"):
            if params.get(k):  # transformers treats 0/None as its default (32 / 1), as mlx-lm
                out[k] = params[k]
        mscale, mscale_all = params.get("mscale"), params.get("mscale_all_dim")
        # transformers uses mscale only when both are set and non-zero; mlx-lm uses any mscale.
        if mscale and mscale_all:
            out["mscale"], out["mscale_all_dim"] = mscale, mscale_all
    return float(theta), out


def hf_rope_config(config: dict, file: Path = Path("config.json")) -> dict:
    """The RoPE keys to write into an exported config so that transformers 4.x (top-level
    `rope_theta`, `rope_scaling`), transformers 5.x (`rope_parameters`) and mlx-lm all read the
    same RoPE as `config` describes; nothing for architectures outside `ROPE_ARCHS`."""
    if config.get("model_type") not in ROPE_ARCHS:
        return {}
    theta, scaling = resolve_rope(config, file)
    return {
        "rope_theta": theta,
        "rope_scaling": scaling,
        "rope_parameters": {"rope_type": "default", **(scaling or {}), "rope_theta": theta},
    }


def _model_args_class(config: dict, file: Path):
    from mlx_lm.utils import MODEL_REMAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelError(f'{file}: field \'model_type\' is missing (e.g. "llama", "qwen2")')
    module = MODEL_REMAPPING.get(model_type, model_type)
    try:
        arch = importlib.import_module(f"mlx_lm.models.{module}")
    except ImportError:
        raise ModelError(
            f"{file}: field 'model_type' is {model_type!r}, an architecture mlx-lm does not know"
        ) from None
    return arch.ModelArgs


def check_config(config: dict, file: Path) -> None:
    """Every field the architecture needs is present (mlx-lm would fail with a TypeError)."""
    args = _model_args_class(config, file)
    missing = [
        f.name
        for f in dataclasses.fields(args)
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in config
    ]
    if missing:
        raise ModelError(
            f"{file}: field(s) {', '.join(repr(m) for m in missing)} missing (needed by "
            f"mlx-lm's {config['model_type']})"
        )


def mlx_config_overrides(config: dict, file: Path = Path("config.json")) -> dict:
    """Config values to pass to mlx-lm so that it builds the model transformers builds."""
    args = {f.name for f in dataclasses.fields(_model_args_class(config, file))}
    if config.get("model_type") not in ROPE_ARCHS or not {"rope_theta", "rope_scaling"} <= args:
        return {}
    theta, scaling = resolve_rope(config, file)
    overrides = {"rope_theta": theta, "rope_scaling": scaling}
    if "rope_parameters" in args:
        overrides["rope_parameters"] = None  # resolved above; mlx-lm would prefer it otherwise
    return overrides


def weight_files(path: Path) -> list[Path]:
    """The safetensors files mlx-lm loads (`model*.safetensors`)."""
    return sorted(path.glob("model*.safetensors"))


def safetensors_header(file: Path) -> dict:
    """The JSON header of a safetensors file, after checking the file is complete."""
    try:
        with open(file, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelError(f"{file}: not a safetensors file (empty or truncated)")
            (n,) = struct.unpack("<Q", head)
            size = file.stat().st_size
            if n > size - 8:
                raise ModelError(f"{file}: truncated or not a safetensors file")
            header = json.loads(f.read(n))
    except OSError as e:
        raise ModelError(f"{file}: cannot be read: {e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{file}: not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise ModelError(f"{file}: not a safetensors file (unreadable header)")
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    if 8 + n + max(ends, default=0) > size:
        raise ModelError(
            f"{file}: truncated ({size} bytes, the header describes {8 + n + max(ends)})"
        )
    return header


def check_weights(path: Path, config: dict) -> None:
    """The weight files are complete and hold as many layers as config.json says."""
    files = weight_files(path)
    if not files:
        raise ModelError(f"{path}: no model*.safetensors weights in the model folder")
    layers = set()
    for f in files:
        for name in safetensors_header(f):
            parts = name.split(".")
            if "layers" in parts[:-1]:
                i = parts.index("layers")
                if parts[i + 1].isdigit() and parts[i - 1 : i] == ["model"]:
                    layers.add(int(parts[i + 1]))
    n = config.get("num_hidden_layers")
    # Only where every layer is a plain decoder layer (DeepSeek-V3 stores an extra MTP layer).
    if (
        config.get("model_type") in ROPE_ARCHS
        and layers
        and isinstance(n, int)
        and len(layers) != n
    ):
        raise ModelError(
            f"{path / 'config.json'}: field 'num_hidden_layers' is {n} but the weights hold "
            f"{len(layers)} layers"
        )


def load_mlx_model(path: Path, lazy: bool = False, trust_remote_code: bool = False):
    """mlx-lm's `(model, config)` for a resolved model folder, with the config checked first and
    RoPE read as transformers reads it (both config styles); errors are `ModelError`s."""
    from mlx_lm.utils import load_model as _load_model

    file = path / "config.json"
    config = read_config(path)
    check_config(config, file)
    overrides = mlx_config_overrides(config, file)
    check_weights(path, config)
    try:
        return _load_model(
            path, lazy=lazy, model_config=overrides, trust_remote_code=trust_remote_code
        )
    except (ValueError, TypeError, KeyError, RuntimeError) as e:
        raise ModelError(f"{path}: the model cannot be built from its files: {e}") from e


def eos_token_ids(path: Path, config: dict) -> list[int] | None:
    """The end-of-sequence ids of config.json and generation_config.json together (Llama 3.x
    lists <|end_of_text|>, <|eom_id|> and <|eot_id|>; some checkpoints only in one file)."""
    ids: list[int] = []
    sources = [config]
    gen = path / "generation_config.json"
    if gen.is_file():
        try:
            sources.append(json.loads(gen.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelError(f"{gen}: cannot be read as JSON: {e}") from None
    for src in sources:
        value = src.get("eos_token_id") if isinstance(src, dict) else None
        for i in value if isinstance(value, list) else [value]:
            if isinstance(i, int) and i not in ids:
                ids.append(i)
    return ids or None


def load_tokenizer_checked(path: Path, trust_remote_code: bool = False):
    """mlx-lm's tokenizer wrapper for the folder, with every eos id; errors are `ModelError`s."""
    from mlx_lm.utils import load_tokenizer

    try:
        return load_tokenizer(
            path,
            {"trust_remote_code": True} if trust_remote_code else None,
            # config.json as written: mlx-lm's load_config replaces its eos ids by
            # generation_config's.
            eos_token_ids=eos_token_ids(path, read_config(path)),
        )
    except ModelError:
        raise
    except Exception as e:  # transformers raises many kinds for broken tokenizer files
        raise ModelError(f"{path}: the tokenizer files cannot be loaded: {e}") from e


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
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = resolve_model_path(path_or_repo)
    model, _ = load_mlx_model(path, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer_checked(path, trust_remote_code)
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
