"""Training configuration: mlx-lm's key names plus `loss` and `clo: {beta, lambda, nll_languages}`.

Precedence: CLI flag > YAML file > default. Every key in a YAML file takes effect; a key that does
not exist is an error that suggests the nearest valid one.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import math
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
# Far beyond any model's context: a typo (e.g. an extra zero), not a setting.
MAX_SEQ_LENGTH_LIMIT = 1 << 20
LR_SCHEDULES = ("cosine_decay", "exponential_decay", "linear_schedule", "step_decay")


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
    data_split: str | None = None  # Hugging Face data: the split to train on (default: splits)
    data_columns: dict | None = None  # Hugging Face data: {name clo-mlx reads: column}
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
    grad_checkpoint: bool | None = None  # None: on only when memory_budget_gb needs it
    grad_accumulation_steps: int = 1
    micro_batch_size: int | None = None  # pairs per forward/backward; None: automatic
    memory_budget_gb: float | None = None  # None: the machine's (memory.default_budget)
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
    report_to: str | None = None  # mlx-lm's key: comma-separated wandb, swanlab, tensorboard
    project_name: str | None = None  # tracker project (default clo-mlx)

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
    if cfg["train"] is not True:
        raise ConfigError(
            f"{where}: train: false is not supported: `clo-mlx train` always trains; "
            "evaluate adapters with `clo-mlx eval` or `clo-mlx score`"
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
    if cfg["memory_budget_gb"] is not None and cfg["memory_budget_gb"] <= 0:
        raise ConfigError(
            f"{where}: memory_budget_gb must be > 0 (or null: the machine's memory), "
            f"got {cfg['memory_budget_gb']}"
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
    # Written as `not (x >= 0 ...)`: NaN fails every comparison, so `x < 0` would let it through.
    if not (cfg["learning_rate"] >= 0 and math.isfinite(cfg["learning_rate"])):
        raise ConfigError(
            f"{where}: learning_rate must be a finite number >= 0, got {cfg['learning_rate']}"
        )
    for name in ("clo.beta", "lora_parameters.scale"):
        parent, _, child = name.partition(".")
        value = cfg[parent][child] if child else cfg[parent]
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{where}: {name} must be a positive finite number, got {value}")
    for name in ("clo.lambda", "clo.simpo_gamma"):
        value = cfg["clo"][name.split(".")[1]]
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {name} must be a finite number, got {value}")
    dropout = cfg["lora_parameters"]["dropout"]
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"{where}: lora_parameters.dropout must be in [0, 1), got {dropout}")
    if cfg["num_layers"] != -1 and cfg["num_layers"] < 1:
        raise ConfigError(
            f"{where}: num_layers must be >= 1 (the last N layers) or -1 (all), "
            f"got {cfg['num_layers']}"
        )
    for name in ("val_batches", "test_batches"):
        if cfg[name] != -1 and cfg[name] < 1:
            raise ConfigError(f"{where}: {name} must be >= 1 or -1 (all), got {cfg[name]}")
    chunk = cfg["logprob_chunk_size"]
    if chunk is not None and chunk < 0:
        raise ConfigError(
            f"{where}: logprob_chunk_size must be >= 1, 0 (off) or null (automatic), got {chunk}"
        )
    if cfg["max_seq_length"] > MAX_SEQ_LENGTH_LIMIT:
        raise ConfigError(
            f"{where}: max_seq_length={cfg['max_seq_length']} is beyond any model's context "
            f"(at most {MAX_SEQ_LENGTH_LIMIT})"
        )
    if cfg["clear_cache_threshold"] < 0:
        raise ConfigError(f"{where}: clear_cache_threshold must be >= 0")
    _check_schedule(cfg["lr_schedule"], where)
    optimizer_kwargs(cfg["optimizer"], cfg["optimizer_config"], where)
    from .reporting import parse_report_to

    try:
        parse_report_to(cfg["report_to"], f"{where}: report_to")
    except CloError as e:
        raise ConfigError(str(e)) from None


def _check_schedule(schedule: dict | None, where: str) -> None:
    """mlx-lm's `lr_schedule: {name, arguments, warmup?, warmup_init?}`, checked by building it."""
    if schedule is None:
        return
    allowed = ("name", "arguments", "warmup", "warmup_init")
    for key in schedule:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key lr_schedule.{key}.{_suggest(str(key), allowed)}"
            )
    name = schedule.get("name")
    if name not in LR_SCHEDULES:
        raise ConfigError(
            f"{where}: lr_schedule.name must be one of {list(LR_SCHEDULES)}, got {name!r}."
            f"{_suggest(str(name), LR_SCHEDULES)}"
        )
    args = schedule.get("arguments")
    if not isinstance(args, list) or not args:
        raise ConfigError(
            f"{where}: lr_schedule.arguments must be a non-empty list (the arguments of "
            f"mlx.optimizers.{name}, the initial learning rate first), got {args!r}"
        )
    warmup = schedule.get("warmup", 0)
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ConfigError(f"{where}: lr_schedule.warmup must be an integer >= 0, got {warmup!r}")
    from mlx_lm.tuner.utils import build_schedule

    try:
        lr = build_schedule(schedule)(0)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"{where}: lr_schedule: arguments {args!r} do not fit mlx.optimizers.{name} ({e})"
        ) from None
    if not math.isfinite(float(lr)):
        raise ConfigError(f"{where}: lr_schedule gives a non-finite learning rate")


def optimizer_kwargs(optimizer: str, config: dict, where: str = "config") -> dict:
    """The keyword arguments of `optimizer` in `optimizer_config`: flat (`{betas: [...]}`) or
    mlx-lm's per-optimizer form (`{adam: {betas: [...]}, sgd: {...}}`); checked against the
    optimizer's signature and by constructing it."""
    import mlx.optimizers as optim

    per_optimizer = ("adam", "adamw", "muon", "sgd", "adafactor")  # mlx-lm's keys
    nested = [k for k in config if k in per_optimizer]
    if nested:
        flat = [k for k in config if k not in per_optimizer]
        if flat:
            raise ConfigError(
                f"{where}: optimizer_config mixes optimizer names {nested} with options {flat}; "
                "use either {adam: {...}, sgd: {...}} (mlx-lm) or the options of `optimizer`"
            )
        config = config.get(optimizer) or {}
        label = f"optimizer_config.{optimizer}"
        if not isinstance(config, dict):
            raise ConfigError(f"{where}: {label} must be a mapping, got {config!r}")
    else:
        label = "optimizer_config"
    cls = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD,
           "adafactor": optim.Adafactor}[optimizer]  # fmt: skip
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p not in ("self", "learning_rate")]
    for key in config:
        if key not in valid:
            raise ConfigError(
                f"{where}: {label}: {key!r} is not an option of {optimizer} "
                f"(valid: {valid}).{_suggest(str(key), valid)}"
            )
    try:
        cls(learning_rate=1e-3, **config)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {label}: bad value for {optimizer} ({e})") from None
    return dict(config)


def merge_overrides(base: dict, updates: dict) -> dict:
    """A copy of `base` with `updates` applied; nested mappings (e.g. `clo`) merge key by key."""
    out = copy.deepcopy(base)
    for k, v in updates.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **copy.deepcopy(v)}
        else:
            out[k] = copy.deepcopy(v)
    return out


def _unique_key_loader():
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last) and
    reads `1e-5` as a float (PyYAML: a string), as mlx-lm's config loader does."""
    import re

    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (first on line {seen[key] + 1})",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    UniqueKeyLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
            |\.[0-9_]+(?:[eE][-+][0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
            re.X,
        ),
        list("-+0123456789."),
    )
    return UniqueKeyLoader


def load_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror or e})") from e
    try:
        loaded = yaml.load(text, Loader=_unique_key_loader())
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
    config_file: str | Path | None = None,
    overrides: dict | None = None,
    overrides_where: str = "command line",
) -> TrainConfig:
    """Defaults, then the YAML file, then `overrides` (CLI flags; None values are ignored).

    `overrides_where` names the overrides' origin in error messages."""
    cfg = TrainConfig().to_dict()
    where = "defaults"
    if config_file is not None:
        where = str(config_file)
        _merge(cfg, load_yaml(config_file), where)
    cli = {k: v for k, v in (overrides or {}).items() if v is not None}
    if cli:
        _merge(cfg, copy.deepcopy(cli), overrides_where)
        where = f"{where} + {overrides_where}" if config_file else overrides_where
    _validate(cfg, where)
    return TrainConfig(**cfg)
