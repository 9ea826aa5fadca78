"""Training configuration: mlx-lm's key names plus `loss` and `clo: {beta, lambda, nll_languages}`.

Precedence: CLI flag > YAML file > default. Every key in a YAML file takes effect; a key that does
not exist is an error that suggests the nearest valid one.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import CloError
from .losses import PREFERENCE_LOSSES

ATTENTION_KEYS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
LOSSES = ("clo", "dpo", "sft")
FINE_TUNE_TYPES = ("lora", "dora", "full")
NLL_LANGUAGES = ("target", "both")
SFT_LANGUAGES = ("target", "en", "both")
OPTIMIZERS = ("adam", "adamw", "sgd", "adafactor")
DTYPES = ("auto", "float32", "bfloat16", "float16")


class ConfigError(CloError):
    """A bad configuration value; the message names the file and key."""


def _default_lora() -> dict:
    return {"rank": 8, "scale": 20.0, "dropout": 0.0, "keys": list(ATTENTION_KEYS)}


def _default_clo() -> dict:
    return {
        "beta": 0.1,
        "lambda": 0.5,
        "nll_languages": "target",
        "preference": "sigmoid",
        "simpo_gamma": 0.5,
        "dpop_en": 0.0,  # English retention (losses.py): DPOP weight on `en` pairs
        "dpop_tgt": 0.0,  # ... on `tgt` (and plain preference) pairs
        "anchor_en": 0.0,  # one-sided anchor on the English chosen answers
    }


@dataclass
class TrainConfig:
    model: str | None = None
    data: str | None = None
    train: bool = True
    fine_tune_type: str = "lora"
    num_layers: int = -1  # -1: all layers (the paper adapts attention in every layer)
    batch_size: int = 4  # pairs per step (CLO/DPO) or sequences per step (SFT)
    iters: int = 1000
    learning_rate: float = 1e-5
    lr_schedule: dict | None = None
    optimizer: str = "adam"
    optimizer_config: dict = field(default_factory=dict)
    steps_per_report: int = 10
    steps_per_eval: int = 200
    val_batches: int = 25  # -1: the whole validation set
    save_every: int = 100
    adapter_path: str = "adapters"
    resume_adapter_file: str | None = None
    max_seq_length: int = 2048
    truncation: str = "truncate_prompt"  # or "drop"
    grad_checkpoint: bool = False
    grad_accumulation_steps: int = 1
    micro_batch_size: int | None = None  # pairs per forward/backward; None: automatic
    seed: int = 0
    lora_parameters: dict = field(default_factory=_default_lora)
    loss: str = "clo"
    clo: dict = field(default_factory=_default_clo)
    sft: dict = field(default_factory=lambda: {"languages": "target"})
    dtype: str = "auto"  # auto: float32 on a CPU-only backend, the checkpoint's dtype elsewhere
    logprob_chunk_size: int | None = None  # positions per output-head chunk; None: automatic
    cache_dir: str | None = None  # reference log-prob cache; None: ~/.cache/clo-mlx
    reference_adapter_path: str | None = None  # reference = base + these adapters (SFT -> DPO)
    resume: bool = False  # continue from the latest checkpoint in adapter_path
    skip_nonfinite: bool = False  # skip a batch whose loss is NaN/inf instead of stopping
    test: bool = False
    test_batches: int = -1
    clear_cache_threshold: int = 0
    trust_remote_code: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


_NESTED = {
    "lora_parameters": {"rank": int, "scale": float, "dropout": float, "keys": list},
    "clo": {
        "beta": float,
        "lambda": float,
        "nll_languages": str,
        "preference": str,
        "simpo_gamma": float,
        "dpop_en": float,
        "dpop_tgt": float,
        "anchor_en": float,
    },
    "sft": {"languages": str},
}
_CHOICES = {
    "fine_tune_type": FINE_TUNE_TYPES,
    "loss": LOSSES,
    "optimizer": OPTIMIZERS,
    "dtype": DTYPES,
    "truncation": ("truncate_prompt", "drop"),
    "clo.nll_languages": NLL_LANGUAGES,
    "clo.preference": PREFERENCE_LOSSES,
    "sft.languages": SFT_LANGUAGES,
}
_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def _suggest(key: str, valid) -> str:
    near = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" Did you mean {near[0]!r}?" if near else ""


def _check_type(name: str, value: Any, expected: Any, where: str) -> Any:
    """Coerce/validate one value against a field's annotation (given as a string)."""
    exp = expected if isinstance(expected, str) else getattr(expected, "__name__", str(expected))
    if value is None and "None" in exp:
        return None
    if "bool" in exp:
        if isinstance(value, bool):
            return value
    elif "int" in exp and "float" not in exp:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif "float" in exp:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif "dict" in exp:
        if isinstance(value, dict):
            return value
    elif "list" in exp:
        if isinstance(value, list):
            return value
    elif "str" in exp:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where}: {name} must be {exp}, got {value!r}")


def _merge(cfg: dict, updates: dict, where: str) -> None:
    for key, value in updates.items():
        if key not in _TYPES:
            raise ConfigError(f"{where}: unknown config key {key!r}.{_suggest(key, _TYPES)}")
        if key in _NESTED and value is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
            spec = _NESTED[key]
            for sub, subval in value.items():
                if sub not in spec:
                    raise ConfigError(
                        f"{where}: unknown key {key}.{sub}.{_suggest(sub, spec)}"
                        + (" (mlx-lm uses 'scale', not 'alpha')" if sub == "alpha" else "")
                    )
                cfg[key][sub] = _check_type(f"{key}.{sub}", subval, spec[sub].__name__, where)
        else:
            cfg[key] = _check_type(key, value, _TYPES[key], where)


def _validate(cfg: dict, where: str) -> None:
    for name, allowed in _CHOICES.items():
        parent, _, child = name.partition(".")
        value = cfg[parent][child] if child else cfg[parent]
        if value not in allowed:
            raise ConfigError(
                f"{where}: {name} must be one of {list(allowed)}, got {value!r}."
                f"{_suggest(str(value), allowed)}"
            )
    positive = ("batch_size", "iters", "steps_per_report", "steps_per_eval", "save_every")
    for name in (*positive, "max_seq_length", "grad_accumulation_steps"):
        if cfg[name] < 1:
            raise ConfigError(f"{where}: {name} must be >= 1, got {cfg[name]}")
    if cfg["micro_batch_size"] is not None and cfg["micro_batch_size"] < 1:
        raise ConfigError(
            f"{where}: micro_batch_size must be >= 1 (or null: automatic), "
            f"got {cfg['micro_batch_size']}"
        )
    if not 0.0 <= cfg["clo"]["lambda"] <= 1.0:
        raise ConfigError(f"{where}: clo.lambda must be in [0, 1], got {cfg['clo']['lambda']}")
    if cfg["clo"]["beta"] <= 0:
        raise ConfigError(f"{where}: clo.beta must be > 0, got {cfg['clo']['beta']}")
    for key in ("dpop_en", "dpop_tgt", "anchor_en"):
        if cfg["clo"][key] < 0:
            raise ConfigError(f"{where}: clo.{key} must be >= 0, got {cfg['clo'][key]}")
    if cfg["clo"]["preference"] == "simpo" and cfg["clo"]["dpop_en"] + cfg["clo"]["dpop_tgt"]:
        raise ConfigError(f"{where}: clo.dpop_en/dpop_tgt need a reference; simpo has none")
    if cfg["lora_parameters"]["rank"] < 1:
        raise ConfigError(f"{where}: lora_parameters.rank must be >= 1")
    keys = cfg["lora_parameters"]["keys"]
    if not keys or not all(isinstance(k, str) for k in keys):
        raise ConfigError(f"{where}: lora_parameters.keys must be a non-empty list of module paths")


def merge_overrides(base: dict, updates: dict) -> dict:
    """A copy of `base` with `updates` applied; nested mappings (e.g. `clo`) merge key by key."""
    out = copy.deepcopy(base)
    for k, v in updates.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **copy.deepcopy(v)}
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror or e})") from e
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML ({getattr(e, 'problem', e)})") from e
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys to values")
    return loaded


def build_config(
    config_file: str | Path | None = None, overrides: dict | None = None
) -> TrainConfig:
    """Defaults, then the YAML file, then `overrides` (CLI flags; None values are ignored)."""
    cfg = TrainConfig().to_dict()
    where = "defaults"
    if config_file is not None:
        where = str(config_file)
        _merge(cfg, load_yaml(config_file), where)
    cli = {k: v for k, v in (overrides or {}).items() if v is not None}
    if cli:
        _merge(cfg, copy.deepcopy(cli), "command line")
        where = f"{where} + command line" if config_file else "command line"
    _validate(cfg, where)
    return TrainConfig(**cfg)
