"""`clo-mlx sweep`: methods x training-set sizes x seeds, evaluated on the same held-out data.

Every cell (method, rows, seed) trains from the base model on a row subset and is evaluated with
`clo_mlx.eval.compare.evaluate_model` against reference log-probs computed once on the base model.
Row subsets are nested and fixed by the seed: the rows of a seed's random permutation are taken
from the front, so the 1/8 subset is inside the 1/4 subset, and so on.

Each finished cell writes `cells/<method>/rows<N>_seed<S>/result.json` atomically; a re-run skips
cells whose result exists with the same settings (a changed setting re-runs the cell). At the end
(and after each cell) `results.json`, `results.md` and `results.png` (metric vs rows, one line per
method, mean and spread over seeds; the base model as a dashed line) are rewritten.

Methods are lists of training stages (overrides of the training config). A later stage starts
from the previous stage's adapter weights (`resume_adapter_file`); its reference model is the base
model, or the previous stage's model when the stage says `reference: previous` (the `_sftref`
methods: SFT -> DPO/CLO with the SFT model as reference). Built in:
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import ConfigError, build_config, load_yaml, merge_overrides
from ..data import Pair, load_pairs, load_splits
from ..io import atomic_write_json, atomic_write_text
from ..plots import save_figure
from .compare import (
    BASE_NAME,
    EvalOptions,
    _jsonable,
    build_eval_set,
    evaluate_model,
    heldout_file,
    strip_adapters,
    target_languages,
)

SFT_TARGET = {"loss": "sft", "sft": {"languages": "target"}}
METHODS: dict[str, list[dict]] = {
    "clo": [{"loss": "clo"}],
    "dpo": [{"loss": "dpo"}],
    "sft": [SFT_TARGET],
    "sft_en": [{"loss": "sft", "sft": {"languages": "en"}}],
    "sft_both": [{"loss": "sft", "sft": {"languages": "both"}}],
    "sft+dpo": [SFT_TARGET, {"loss": "dpo"}],
    "sft+clo": [SFT_TARGET, {"loss": "clo"}],
    "sft+dpo_sftref": [SFT_TARGET, {"loss": "dpo", "reference": "previous"}],
    "sft+clo_sftref": [SFT_TARGET, {"loss": "clo", "reference": "previous"}],
    "clo_ipo": [{"loss": "clo", "clo": {"preference": "ipo"}}],
    "clo_hinge": [{"loss": "clo", "clo": {"preference": "hinge"}}],
    "clo_simpo": [{"loss": "clo", "clo": {"preference": "simpo"}}],
    # English retention (losses.py); the weights are the demo's measured choice (README)
    "clo_dpop": [{"loss": "clo", "clo": {"dpop_en": 5.0, "dpop_tgt": 5.0}}],
    "clo_anchor": [{"loss": "clo", "clo": {"anchor_en": 5.0}}],
}
__doc__ += "".join(f"\n- `{k}`: {v}" for k, v in METHODS.items())

DEFAULT_SIZES = [0.125, 0.25, 0.5, 1.0]


@dataclass
class SweepSpec:
    model: str
    data: str
    out: str
    methods: list[str] = field(default_factory=lambda: ["clo", "sft", "dpo"])
    custom_methods: dict[str, list[dict]] = field(default_factory=dict)
    sizes: list[float] = field(default_factory=lambda: list(DEFAULT_SIZES))
    seeds: list[int] = field(default_factory=lambda: [0])
    train_config: str | None = None  # a training YAML (mlx-lm keys), applied to every stage
    train: dict = field(default_factory=dict)  # overrides on top of it
    epochs: float | None = None  # when set: iters = ceil(epochs * batches per epoch) per stage
    eval: dict = field(default_factory=dict)  # EvalOptions fields
    mc: str | None = None
    mc_langs: list[str] | None = None
    mc_split: str | None = None
    mc_limit: int | None = None
    plot_metrics: list[str] | None = None
    include_base: bool = True

    def stages(self, method: str) -> list[dict]:
        table = {**METHODS, **self.custom_methods}
        if method not in table:
            raise ConfigError(
                f"unknown method {method!r}; built in: {sorted(METHODS)} "
                "(or define it under `custom_methods: {name: [stage overrides, ...]}`)"
            )
        stages = table[method]
        for i, st in enumerate(stages):
            ref = st.get("reference", "base")
            if ref not in ("base", "previous") or (ref == "previous" and i == 0):
                raise ConfigError(
                    f"method {method!r}, stage {i + 1}: reference must be 'base'"
                    + (" or 'previous'" if i else " in the first stage")
                    + f", got {ref!r}"
                )
        return stages


def load_spec(
    path: str | Path | None = None,
    overrides: dict | None = None,
    train_overrides: dict | None = None,
    eval_overrides: dict | None = None,
) -> SweepSpec:
    """A SweepSpec from a YAML file and/or overrides (None values ignored); errors name the key.

    `train_overrides` / `eval_overrides` are merged into the file's `train` / `eval` mappings."""
    raw = load_yaml(path) if path is not None else {}
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for key, extra in (("train", train_overrides), ("eval", eval_overrides)):
        extra = {k: v for k, v in (extra or {}).items() if v is not None}
        if extra:
            raw[key] = merge_overrides(raw.get(key) or {}, extra)
    names = {f.name for f in dataclasses.fields(SweepSpec)}
    where = str(path) if path else "sweep options"
    for k in raw:
        if k not in names:
            import difflib

            near = difflib.get_close_matches(k, names, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"{where}: unknown sweep key {k!r}.{hint}")
    for k in ("model", "data", "out"):
        if not raw.get(k):
            raise ConfigError(f"{where}: `{k}` is required")
    for k in ("methods", "sizes", "seeds"):
        if k in raw and not isinstance(raw[k], list):
            raise ConfigError(f"{where}: {k} must be a list, got {raw[k]!r}")
    for k in ("train", "eval", "custom_methods"):
        if k in raw and not isinstance(raw[k], dict):
            raise ConfigError(f"{where}: {k} must be a mapping, got {raw[k]!r}")
    spec = SweepSpec(**raw)
    eval_fields = {f.name for f in dataclasses.fields(EvalOptions)}
    for k in spec.eval:
        if k not in eval_fields:
            raise ConfigError(f"{where}: unknown eval option {k!r}; valid: {sorted(eval_fields)}")
    _check_sizes(spec.sizes, where)
    if not spec.seeds or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in spec.seeds
    ):
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers, got {spec.seeds}")
    # Every stage's training config is built now, so a typo fails here, named by where it is,
    # not after the first cells have trained.
    build_config(spec.train_config, spec.train, overrides_where=f"{where}: train")
    for m in spec.methods:
        for i, stage in enumerate(spec.stages(m)):
            stage = {k: v for k, v in stage.items() if k != "reference"}
            _stage_config(
                spec, stage, spec.seeds[0], Path(spec.out), None,
                where=f"{where}: train + method {m!r} stage {i + 1}",
            )  # fmt: skip
    return spec


def _check_sizes(sizes: list, where: str) -> None:
    if not sizes:
        raise ConfigError(f"{where}: sizes must not be empty")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not s > 0:
            raise ConfigError(f"{where}: sizes: {s!r} is not a positive number")
        if isinstance(s, float) and s > 1.0:
            raise ConfigError(
                f"{where}: sizes: {s!r} is neither a fraction of the rows (<= 1.0) nor a row "
                "count (a whole number, written without a dot)"
            )


# ----------------------------------------------------------------------------- row subsets


def resolve_sizes(sizes: Sequence[float], n_rows: int) -> list[int]:
    """Row counts for `sizes`: a float <= 1 is a fraction of the rows, anything else a count."""
    out = []
    for s in sizes:
        k = max(1, round(s * n_rows)) if isinstance(s, float) and s <= 1.0 else int(s)
        if k > n_rows:
            raise ConfigError(f"size {s} asks for {k} rows but the training data has {n_rows}")
        out.append(k)
    return sorted(set(out))


def nested_subsets(n_rows: int, counts: Sequence[int], seed: int) -> dict[int, list[int]]:
    """`{count: sorted row indices}`: the first `count` rows of a permutation fixed by the seed,
    so smaller subsets are contained in larger ones."""
    perm = np.random.default_rng([seed, 0x5EED]).permutation(n_rows)
    return {k: sorted(int(i) for i in perm[:k]) for k in counts}


def subset_pairs(pairs: Sequence[Pair], rows: Sequence[int]) -> list[Pair]:
    keep = set(rows)
    return [p for p in pairs if p.row in keep]


# ----------------------------------------------------------------------------- cells


def cell_key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def cell_dir(out: str | Path, method: str, rows: int, seed: int) -> Path:
    return Path(out) / "cells" / method / f"rows{rows}_seed{seed}"


def read_result(path: Path, key: str) -> dict | None:
    """The stored result when it exists and was made with the same settings."""
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return result if result.get("key") == key else None


def _stage_config(
    spec: SweepSpec, stage: dict, seed: int, adapter_path: Path, resume, where: str = "sweep"
):
    overrides = merge_overrides(spec.train, stage)
    overrides.update(
        {
            "model": spec.model,
            "adapter_path": str(adapter_path),
            "seed": seed,
            "resume_adapter_file": str(resume) if resume else None,
        }
    )
    cfg = build_config(spec.train_config, overrides, overrides_where=where)
    if cfg.fine_tune_type == "full":
        raise ConfigError(
            f"{where}: sweep trains adapters (lora or dora); fine_tune_type=full is not supported"
        )
    return cfg


def train_cell(
    model, tokenizer, spec: SweepSpec, method: str, pairs, seed: int, out: Path, console
):
    """Train the stages of `method` on `pairs` (adapters stay attached); return stage summaries."""
    from ..batching import unit_batches
    from ..run import prepare, train_model

    stages, resume = [], None
    for s, stage in enumerate(spec.stages(method)):
        stage = dict(stage)
        reference = stage.pop("reference", "base")
        path = out / (f"stage{s + 1}" if len(spec.stages(method)) > 1 else "adapters")
        cfg = _stage_config(spec, stage, seed, path, resume)
        if "save_every" not in spec.train:
            cfg = dataclasses.replace(cfg, save_every=10**9)  # no intermediate checkpoints
        if reference == "previous":
            # The model still carries the previous stage's adapters: they are this stage's
            # reference. Its log-probs are cached inside the cell (the cache key names only the
            # base model), then the adapters come off and are re-attached as trainable weights.
            cfg = dataclasses.replace(cfg, cache_dir=str(path / "reference_cache"))
        elif s > 0:
            strip_adapters(model)  # reference = the base model
        prep = prepare(
            cfg, model=model, tokenizer=tokenizer, splits={"train": pairs}, console=console
        )
        if reference == "previous":
            strip_adapters(model)
        if spec.epochs is not None:
            per_epoch = len(unit_batches(prep.train, cfg.batch_size, full=True))
            cfg = dataclasses.replace(cfg, iters=max(1, math.ceil(spec.epochs * per_epoch)))
        result = train_model(cfg, prep, console)
        resume = result.adapter_file
        last = result.reports[-1] if result.reports else {}
        stages.append(
            {
                "loss": cfg.loss,
                "iters": cfg.iters,
                "items": len(prep.train),
                "adapter_file": str(result.adapter_file),
                "final_train": {k: v for k, v in last.items() if isinstance(v, (int, float))},
            }
        )
    return stages


def run_sweep(spec: SweepSpec, console=None) -> list[dict]:
    """Run (or resume) every cell of the sweep; write the results table and plot; return records."""
    from rich.console import Console

    from ..models import load_model, model_fingerprint
    from .multiple_choice import load_mc

    console = console or Console(stderr=True)
    out = Path(spec.out)
    if not Path(spec.data).is_dir():
        raise ConfigError(
            f"{spec.data}: a sweep needs a data folder with train.jsonl and test.jsonl "
            "(or valid.jsonl) for evaluation"
        )
    train_pairs = load_splits(spec.data)["train"]
    heldout = load_pairs(heldout_file(spec.data))
    n_rows = len({p.row for p in train_pairs})
    counts = resolve_sizes(spec.sizes, n_rows)
    opts = EvalOptions(**spec.eval)
    mc_items = (
        load_mc(spec.mc, spec.mc_langs, spec.mc_split, limit=spec.mc_limit) if spec.mc else None
    )
    fingerprint = model_fingerprint(spec.model)
    eval_key = {
        "model": fingerprint,
        "eval": dataclasses.asdict(opts),
        "heldout": _file_digest(heldout_file(spec.data)),
        "train_data": _file_digest(Path(spec.data) / "train.jsonl"),
        "mc": [
            _file_digest(spec.mc) if spec.mc else None,
            spec.mc_langs,
            spec.mc_split,
            spec.mc_limit,
        ],
    }

    cells = [(m, k, s) for s in spec.seeds for k in counts for m in spec.methods]
    todo = []
    done: list[dict] = []
    for m, k, s in cells:
        key = cell_key(
            {
                **eval_key,
                "stages": spec.stages(m),
                "train": spec.train,
                "train_config": _file_text(spec.train_config),
                "epochs": spec.epochs,
                "rows": nested_subsets(n_rows, [k], s)[k],
                "seed": s,
            }
        )
        prev = read_result(cell_dir(out, m, k, s) / "result.json", key)
        (done.append(prev) if prev else todo.append((m, k, s, key)))
    base_key = cell_key(eval_key)
    base_path = out / "cells" / BASE_NAME / "result.json"
    base = read_result(base_path, base_key) if spec.include_base else None
    need_base = spec.include_base and base is None
    console.print(
        f"sweep: {len(cells)} cells ({len(spec.methods)} methods x rows {counts} x seeds "
        f"{spec.seeds}); {len(done)} done, {len(todo)} to run"
    )
    if todo or need_base:
        model, tokenizer = load_model(spec.model, dtype=opts.dtype)
        es = build_eval_set(model, tokenizer, heldout, opts, fingerprint, mc_items, console)
        if need_base:
            metrics, details = evaluate_model(
                model, tokenizer, es, opts, console, is_reference=True
            )
            base = {
                "key": base_key,
                "method": BASE_NAME,
                "rows": 0,
                "seed": None,
                "metrics": metrics,
                "details": details,
            }
            atomic_write_json(base_path, _jsonable(base))
        for i, (m, k, s, key) in enumerate(todo, start=1):
            console.rule(f"[bold]cell {i}/{len(todo)}: {m}, {k} rows, seed {s}")
            rows = nested_subsets(n_rows, [k], s)[k]
            d = cell_dir(out, m, k, s)
            stages = train_cell(
                model, tokenizer, spec, m, subset_pairs(train_pairs, rows), s, d, console
            )
            metrics, details = evaluate_model(model, tokenizer, es, opts, console)
            strip_adapters(model)
            record = {
                "key": key,
                "method": m,
                "rows": k,
                "seed": s,
                "stages": stages,
                "metrics": metrics,
                "details": details,
            }
            atomic_write_json(d / "result.json", _jsonable(record))
            done.append(record)
            write_results(done, base, out, spec, target_languages(heldout), plot=False)
    records = sorted(done, key=lambda r: (spec.methods.index(r["method"]), r["rows"], r["seed"]))
    write_results(records, base, out, spec, target_languages(heldout))
    return records


def _file_digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _file_text(path) -> str | None:
    return Path(path).read_text() if path else None


# ----------------------------------------------------------------------------- results


def default_plot_metrics(tgt_langs: Sequence[str]) -> list[str]:
    lang = tgt_langs[0] if tgt_langs else "tgt"
    return [
        f"fidelity/{lang}",
        "fidelity/en",
        "fidelity/mean",
        "same_as_base/en",
        "logp_change/en",
        "rewards/accuracies",
        f"ppl/{lang}",
    ]


def plot_tradeoff(records, base, tgt: str, path, methods: Sequence[str], title=None):
    """Both axes of the claim: target-language fidelity gained (x) against English kept (y:
    one panel per English metric), one point per method and size (mean, spread over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_agg = aggregate(records, f"fidelity/{tgt}")
    panels = [m for m in TRADEOFF_Y if aggregate(records, m)]
    if not x_agg or not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], panels, strict=True):
        y_agg = aggregate(records, metric)
        for i, m in enumerate(methods):
            sizes = [k for k in x_agg.get(m, {}) if k in y_agg.get(m, {})]
            if not sizes:
                continue
            xs, ys = [x_agg[m][k][0] for k in sizes], [y_agg[m][k][0] for k in sizes]
            ax.errorbar(
                xs, ys, xerr=[x_agg[m][k][1] for k in sizes], yerr=[y_agg[m][k][1] for k in sizes],
                marker="o", markersize=4, capsize=2, label=m, color=plt.cm.tab10(i % 10),
            )  # fmt: skip
            for x, y, k in zip(xs, ys, sizes, strict=True):
                ax.annotate(str(k), (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if base is not None:
            bx, by = base["metrics"].get(f"fidelity/{tgt}"), base["metrics"].get(metric)
            by = {"same_as_base/en": 1.0, "logp_change/en": 0.0}.get(metric, by)
            if bx is not None and by is not None:
                ax.plot([bx], [by], marker="*", markersize=10, color="gray", label=BASE_NAME)
        ax.set_xlabel(f"fidelity/{tgt} (target gained)")
        ax.set_ylabel(f"{metric} (English kept)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path, title)


TRADEOFF_Y = ("fidelity/en", "same_as_base/en", "logp_change/en", "answer_mc/en/acc")


def aggregate(
    records: Sequence[dict], metric: str
) -> dict[str, dict[int, tuple[float, float, int]]]:
    """`{method: {rows: (mean, std, n seeds)}}` of `metric` (NaN/missing values left out)."""
    acc: dict[str, dict[int, list[float]]] = {}
    for r in records:
        v = r["metrics"].get(metric)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        acc.setdefault(r["method"], {}).setdefault(r["rows"], []).append(float(v))
    return {
        m: {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in sorted(by.items())}
        for m, by in acc.items()
    }


def results_markdown(records, base, metrics: Sequence[str], methods: Sequence[str]) -> str:
    rows = sorted({r["rows"] for r in records})
    parts = []
    for metric in metrics:
        agg = aggregate(records, metric)
        if not agg:
            continue
        lines = [
            f"### {metric}",
            "",
            "| method | " + " | ".join(f"{k} rows" for k in rows) + " |",
            "|---|" + "---:|" * len(rows),
        ]
        if base is not None and metric in base["metrics"] and base["metrics"][metric] is not None:
            lines.append(
                f"| {BASE_NAME} | "
                + " | ".join(f"{base['metrics'][metric]:.3f}" for _ in rows)
                + " |"
            )
        for m in methods:
            cells = []
            for k in rows:
                if m in agg and k in agg[m]:
                    mean, std, n = agg[m][k]
                    cells.append(f"{mean:.3f}" + (f" ± {std:.3f}" if n > 1 else ""))
                else:
                    cells.append("–")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def plot_sweep(records, base, metrics: Sequence[str], path, methods: Sequence[str], title=None):
    """The data-efficiency figure: metric vs training rows, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [m for m in metrics if aggregate(records, m)]
    if not panels:
        return None
    ncol = min(3, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 3.4 * nrow), squeeze=False)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    for ax, metric in zip(axes.flat, panels, strict=False):
        agg = aggregate(records, metric)
        for i, m in enumerate(methods):
            if m not in agg:
                continue
            xs = list(agg[m])
            ys = [agg[m][x][0] for x in xs]
            es = [agg[m][x][1] for x in xs]
            ax.errorbar(
                xs,
                ys,
                yerr=es,
                marker="o",
                markersize=4,
                capsize=3,
                label=m,
                color=plt.cm.tab10(i % 10),
            )
        bv = base["metrics"].get(metric) if base else None
        if bv is not None and not (isinstance(bv, float) and math.isnan(bv)):
            ax.axhline(bv, color="gray", linestyle="--", linewidth=1, label=BASE_NAME)
        ax.set_xscale("log", base=2)
        ticks = sorted({r["rows"] for r in records})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        if metric.startswith("ppl/"):
            ax.set_yscale("log")
        ax.set_xlabel("training rows")
        ax.set_title(metric, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path, title)


def write_results(
    records, base, out: str | Path, spec: SweepSpec, tgt_langs, plot: bool = True
) -> dict:
    """results.json, results.md and (with `plot`) results.png in `out`; returns their paths."""
    out = Path(out)
    metrics = spec.plot_metrics or default_plot_metrics(tgt_langs)
    methods = [m for m in spec.methods if any(r["method"] == m for r in records)]
    summary = {m: aggregate(records, m) for m in metrics}
    payload = {
        "base": {k: v for k, v in base.items() if k != "details"} if base else None,
        "cells": [{k: v for k, v in r.items() if k != "details"} for r in records],
        "summary": {
            m: {meth: {str(k): v for k, v in by.items()} for meth, by in s.items()}
            for m, s in summary.items()
        },
    }
    paths = {
        "json": atomic_write_json(out / "results.json", _jsonable(payload)),
        "md": atomic_write_text(
            out / "results.md",
            "# Sweep results\n\n" + results_markdown(records, base, metrics, methods),
        ),
    }
    png = (
        plot_sweep(records, base, metrics, out / "results.png", methods, "clo-mlx sweep")
        if plot
        else None
    )
    if png is not None:
        paths["png"] = png
    if plot and tgt_langs:
        trade = plot_tradeoff(
            records, base, tgt_langs[0], out / "results_tradeoff.png", methods,
            f"clo-mlx sweep: {tgt_langs[0]} gained vs English kept (labels: training rows)",
        )  # fmt: skip
        if trade is not None:
            paths["tradeoff_png"] = trade
    return paths
