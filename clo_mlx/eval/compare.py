"""`clo-mlx eval`: compare a base model and several adapters on held-out data, side by side.

Metrics (one flat dict per model):
- `fidelity/<lang>`: share of greedy answers written in the prompt's language (`clo_mlx.eval.fidelity`),
  for target-language and English prompts of the held-out rows;
- preference metrics of the held-out pairs (`clo_mlx.trainer.evaluate_pairs`): `rewards/accuracies`,
  `rewards/margins`, ... overall and per pair kind (`/en`, `/tgt`); with several target languages
  also per language of the row (`<lang>:rewards/accuracies`, ...). The reference is always the
  base model: its log-probs are computed once, before any adapter is loaded;
- `ppl/<lang>`: token-weighted perplexity of the held-out chosen responses in each language,
  exp(-sum log p / sum tokens), on the same log-prob path as training;
- `mc/<lang>/acc`, `mc/<lang>/acc_norm`: multiple-choice accuracy (`clo_mlx.eval.multiple_choice`);
- retention against the base model, per language (`en` is the one CLO should keep):
  `logp_change/<lang>` (mean change of the held-out reference answers' log-prob, nats per answer),
  `ppl_ratio/<lang>` (their perplexity over the base's), `same_as_base/<lang>` (share of greedy
  answers identical to the base's), `answer_mc/<lang>/acc` (`answer_mc` items: pick the reference
  answer among the answers to the most similar other held-out prompts).

`write_report` writes `report.json` (everything, with fidelity samples), `report.md` (a table) and
`report.png` (one bar panel per metric).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .. import distributed
from ..batching import PairData
from ..config import ConfigError, TrainConfig, build_config
from ..data import DataError, Pair, load_pairs
from ..io import atomic_write_json, atomic_write_text
from ..plots import save_figure
from ..reference import score_pairs
from ..tokens import encode_pairs
from .multiple_choice import MCItem, evaluate_mc

BASE_NAME = "base"


@dataclass
class EvalOptions:
    batch_size: int = 8
    max_seq_length: int = 2048
    fidelity_prompts: int = 50  # per language; 0: no fidelity
    max_tokens: int = 48  # generated tokens per fidelity answer
    generation_batch_size: int = 32
    mc_batch_size: int = 16
    beta: float = 0.1
    lam: float = 0.5
    preference: str = "sigmoid"
    simpo_gamma: float = 0.5
    dtype: str = "auto"
    cache_dir: str | None = None
    logprob_chunk_size: int | None = None
    answer_mc: int = 0  # held-out prompts per language for answer_mc/<lang>/acc; 0: off
    answer_mc_choices: int = 4

    def train_config(self, model: str | None = None) -> TrainConfig:
        """The TrainConfig the core's evaluate_pairs() and reference code read their settings from."""
        return build_config(
            overrides={
                "model": model,
                "batch_size": self.batch_size,
                "max_seq_length": self.max_seq_length,
                "dtype": self.dtype,
                "cache_dir": self.cache_dir,
                "logprob_chunk_size": self.logprob_chunk_size,
                "clo": {
                    "beta": self.beta,
                    "lambda": self.lam,
                    "preference": self.preference,
                    "simpo_gamma": self.simpo_gamma,
                },
            }
        )


@dataclass
class EvalSet:
    """Held-out material, fixed once on the base model, for evaluating any number of adapters."""

    pairs: PairData | None = None
    prompts_by_lang: dict[str, list[str]] = field(default_factory=dict)
    candidates: list[str] = field(default_factory=list)
    mc_items: list[MCItem] | None = None
    base_fidelity: dict | None = None  # the base model's greedy answers (same_as_base/<lang>)
    answer_mc: list[MCItem] | None = None


# ----------------------------------------------------------------------------- held-out data


def heldout_file(data: str | Path) -> Path:
    """The held-out file of `data`: the file itself, or test.jsonl (else valid.jsonl) of a folder."""
    data = Path(data)
    if data.is_file():
        return data
    if not data.is_dir():
        raise DataError(f"{data}: no such data file or folder")
    for split in ("test", "valid"):
        if (data / f"{split}.jsonl").is_file():
            return data / f"{split}.jsonl"
    raise DataError(f"{data}: no test.jsonl or valid.jsonl to evaluate on")


def target_languages(pairs: Sequence[Pair]) -> list[str]:
    return sorted({p.lang for p in pairs if p.kind == "tgt"})


def fidelity_prompts(pairs: Sequence[Pair], n: int) -> dict[str, list[str]]:
    """Up to `n` distinct prompts per language: each target language's, and English."""
    out: dict[str, list[str]] = {}
    for p in pairs:
        if p.kind not in ("en", "tgt"):
            continue
        lst = out.setdefault(p.lang, [])
        if len(lst) < n and p.prompt not in lst:
            lst.append(p.prompt)
    return {lang: out[lang] for lang in sorted(out, key=lambda x: (x == "en", x))}


def row_languages(data: PairData) -> np.ndarray:
    """The target language of each pair's row (both pairs of a parallel row get it)."""
    by_row = {e.pair.row: e.pair.lang for e in data.encoded if e.pair.kind == "tgt"}
    return np.array([by_row.get(e.pair.row, "") for e in data.encoded])


def answer_mc_items(
    pairs: Sequence[Pair], n: int, n_choices: int = 4, langs: Sequence[str] | None = None
) -> list[MCItem]:
    """Multiple-choice items from held-out pairs, up to `n` per language: a prompt, its reference
    answer, and as distractors the reference answers of the `n_choices - 1` other prompts of that
    language sharing most words with it (ties: file order); the reference answer goes to position
    `k % n_choices` for the k-th item, so that the label is not always the same. Prompts whose similar
    prompts have the same answer are skipped. No model is involved in building them."""
    by_lang: dict[str, list[tuple[str, str]]] = {}
    for p in pairs:
        if p.kind in ("en", "tgt") and (langs is None or p.lang in langs):
            lst = by_lang.setdefault(p.lang, [])
            if all(p.prompt != q for q, _ in lst):
                lst.append((p.prompt, p.chosen))
    items = []
    for lang, rows in sorted(by_lang.items()):
        words = [set(q.lower().split()) for q, _ in rows]
        made = 0
        for i, (prompt, answer) in enumerate(rows):
            if made >= n:
                break
            near = sorted(
                (j for j in range(len(rows)) if j != i),
                key=lambda j: (-len(words[i] & words[j]) / len(words[i] | words[j]), j),
            )
            distract: list[str] = []
            for j in near:
                if rows[j][1] != answer and rows[j][1] not in distract:
                    distract.append(rows[j][1])
                if len(distract) == n_choices - 1:
                    break
            if len(distract) < n_choices - 1:
                continue
            label = made % n_choices
            choices = distract[:label] + [answer] + distract[label:]
            items.append(MCItem(f"answer_mc-{lang}-{i}", lang, prompt, tuple(choices), label))
            made += 1
    return items


def subset(data: PairData, idx: Sequence[int]) -> PairData:
    idx = list(idx)
    return PairData(
        [data.encoded[i] for i in idx],
        data.ref_chosen[idx],
        data.ref_rejected[idx],
        data.nll_weight[idx],
    )


def build_eval_set(
    model: nn.Module,
    tokenizer,
    pairs: Sequence[Pair] | None,
    opts: EvalOptions,
    model_id: str,
    mc_items: Sequence[MCItem] | None = None,
    console=None,
) -> EvalSet:
    """Encode held-out pairs and attach reference log-probs from `model`, which must be the base
    model (no adapters yet)."""
    from ..run import _console, pair_data

    console = console or _console()
    es = EvalSet(mc_items=list(mc_items) if mc_items else None)
    if pairs:
        cfg = opts.train_config()
        encoded, report = encode_pairs(tokenizer, list(pairs), cfg.max_seq_length, cfg.truncation)
        if msg := report.message():
            console.print(f"[yellow]held-out:[/] {msg}")
        if not encoded:
            raise ValueError("held-out data: no pairs left after fitting them into max_seq_length")
        model.eval()
        es.pairs = pair_data(model, encoded, cfg, model_id, console, "held-out")
        if opts.fidelity_prompts > 0:
            es.prompts_by_lang = fidelity_prompts(pairs, opts.fidelity_prompts)
            es.candidates = sorted({"en", *target_languages(pairs)})
            es.base_fidelity = _fidelity(model, tokenizer, es, opts)
        if opts.answer_mc > 0:
            es.answer_mc = answer_mc_items(pairs, opts.answer_mc, opts.answer_mc_choices)
    return es


def _fidelity(model: nn.Module, tokenizer, es: EvalSet, opts: EvalOptions) -> dict:
    from .fidelity import language_fidelity

    return language_fidelity(
        model,
        tokenizer,
        es.prompts_by_lang,
        es.candidates,
        max_tokens=opts.max_tokens,
        batch_size=opts.generation_batch_size,
    )


# ----------------------------------------------------------------------------- metrics


def response_metrics(model: nn.Module, data: PairData, cfg: TrainConfig) -> dict[str, float]:
    """`ppl/<lang>` of the chosen responses, and against the reference log-probs (the base model
    in `clo-mlx eval`) `logp_change/<lang>` = mean(logp - ref logp) per response and
    `ppl_ratio/<lang>` = exp(-(sum logp - sum ref logp) / sum tokens) = ppl / reference ppl."""
    scores = score_pairs(
        model,
        data.encoded,
        cfg.batch_size,
        cfg.max_seq_length,
        cfg.logprob_chunk_size,
    )
    langs = np.array([e.pair.lang or "chosen" for e in data.encoded])
    out = {}
    for lang in sorted(set(langs)):
        sel = langs == lang
        lp = scores["chosen_logp"][sel].astype(np.float64)
        ref = data.ref_chosen[sel].astype(np.float64)
        total_tok = max(int(scores["chosen_tokens"][sel].sum()), 1)
        out[f"ppl/{lang}"] = math.exp(-lp.sum() / total_tok)
        out[f"logp_change/{lang}"] = float(np.mean(lp - ref))
        out[f"ppl_ratio/{lang}"] = math.exp(-(lp.sum() - ref.sum()) / total_tok)
    return out


def same_as_base(fid: dict, base_fid: dict) -> dict[str, float]:
    """`{same_as_base/<lang>: share}` of greedy answers identical to the base model's."""
    out = {}
    for lang, r in fid.items():
        base = {s["prompt"]: s["response"] for s in base_fid.get(lang, {}).get("samples", [])}
        pairs = [(s["response"], base[s["prompt"]]) for s in r["samples"] if s["prompt"] in base]
        if pairs:
            out[f"same_as_base/{lang}"] = sum(a == b for a, b in pairs) / len(pairs)
    return out


def fidelity_metrics(result: dict) -> dict[str, float]:
    """`{fidelity/<lang>: share}` from `language_fidelity`'s result, plus their mean."""
    out = {f"fidelity/{lang}": float(r["fidelity"]) for lang, r in result.items()}
    if out:
        out["fidelity/mean"] = float(np.mean(list(out.values())))
    return out


def preference_metrics(model: nn.Module, data: PairData, cfg: TrainConfig) -> dict[str, float]:
    """The core's held-out preference metrics, plus per-row-language ones when there are several."""
    from ..trainer import evaluate_pairs

    out = dict(evaluate_pairs(model, data, cfg))
    langs = row_languages(data)
    present = sorted(set(langs) - {""})
    if len(present) > 1:
        for lang in present:
            sub = evaluate_pairs(model, subset(data, np.nonzero(langs == lang)[0]), cfg)
            out.update(
                {f"{lang}:{k}": v for k, v in sub.items() if k.startswith(("rewards/", "nll/"))}
            )
    return out


def evaluate_model(
    model: nn.Module,
    tokenizer,
    es: EvalSet,
    opts: EvalOptions,
    console=None,
    is_reference: bool = False,
) -> tuple[dict[str, float], dict]:
    """(flat metrics, details such as fidelity samples) of one model on an EvalSet.

    `is_reference`: the model is the base model itself. Its rewards are zero by definition
    (policy = reference), so reward metrics are left out rather than reported as float noise
    from a different batching of the same computation."""
    from ..run import _console

    console = console or _console()
    model.eval()
    cfg = opts.train_config()
    metrics: dict[str, float] = {}
    details: dict = {}
    if es.prompts_by_lang:
        if is_reference and es.base_fidelity is not None:
            fid = es.base_fidelity
        else:
            fid = _fidelity(model, tokenizer, es, opts)
        metrics.update(fidelity_metrics(fid))
        if not is_reference and es.base_fidelity is not None:
            metrics.update(same_as_base(fid, es.base_fidelity))
        details["fidelity"] = fid
    if es.pairs is not None:
        pref = preference_metrics(model, es.pairs, cfg)
        if is_reference:
            pref = {k: v for k, v in pref.items() if "rewards/" not in k}
        metrics.update(pref)
        resp = response_metrics(model, es.pairs, cfg)
        if is_reference:  # changes against itself: 0 and 1 by definition
            resp = {k: v for k, v in resp.items() if k.startswith("ppl/")}
        metrics.update(resp)
    if es.answer_mc:
        amc = evaluate_mc(model, tokenizer, es.answer_mc, opts.mc_batch_size, opts.max_seq_length)
        metrics.update({f"answer_mc/{lang}/acc": r["acc"] for lang, r in amc.items()})
        details["answer_mc"] = amc
    if es.mc_items:
        from rich.progress import Progress

        n_choices = sum(len(item.choices) for item in es.mc_items)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("multiple choice", total=n_choices)
            mc = evaluate_mc(
                model,
                tokenizer,
                es.mc_items,
                opts.mc_batch_size,
                opts.max_seq_length,
                progress=lambda n: progress.advance(task, n),
            )
        for lang, r in mc.items():
            metrics[f"mc/{lang}/acc"] = r["acc"]
            metrics[f"mc/{lang}/acc_norm"] = r["acc_norm"]
        details["mc"] = mc
    return metrics, details


# ----------------------------------------------------------------------------- adapters


def strip_adapters(model: nn.Module) -> nn.Module:
    """Put the base linear layers back in place of LoRA / DoRA layers (the base is untouched)."""
    from mlx.utils import tree_unflatten
    from mlx_lm.tuner.dora import DoRALinear
    from mlx_lm.tuner.lora import LoRALinear

    reset = [
        (name, m.linear)
        for name, m in model.named_modules()
        if isinstance(m, (LoRALinear, DoRALinear))
    ]
    if reset:
        model.update_modules(tree_unflatten(reset))
    return model


def adapter_label(path: str | Path) -> str:
    path = Path(path)
    return path.name or str(path)


def check_names(
    names: Sequence[str] | None, adapter_paths: Sequence[str | Path], include_base: bool = True
) -> None:
    """One `--name` per `--adapter-path`, all different (they label the report's rows)."""
    if names:
        if len(names) != len(adapter_paths):
            raise ConfigError(
                f"--name given {len(names)} times for {len(adapter_paths)} --adapter-path; "
                "give one name per adapter folder, in order (or none: folder names)"
            )
    labels = list(names) if names else [adapter_label(a) for a in adapter_paths]
    taken = [*labels, BASE_NAME] if include_base else labels
    dupes = sorted({n for n in labels if taken.count(n) > 1})
    if dupes:
        raise ConfigError(
            f"adapter names {dupes} are not unique"
            + (f" (the base model's row is {BASE_NAME!r})" if include_base else "")
            + "; label each --adapter-path with --name"
        )


def check_adapters_fit(model: nn.Module, path: str | Path, config: dict) -> None:
    """Raise AdapterError if the adapters in `path` do not fit `model`; leave `model` unchanged."""
    from mlx.utils import tree_flatten

    from ..adapters import ADAPTER_FILE, AdapterError, load_adapters_checked

    if config.get("fine_tune_type", "lora") == "full":
        # Loading full weights would overwrite the base: compare names and shapes only.
        params = dict(tree_flatten(model.parameters()))
        file = Path(path) / ADAPTER_FILE
        for k, v in mx.load(str(file)).items():
            if k not in params or params[k].shape != v.shape:
                got = "no such parameter" if k not in params else f"shape {params[k].shape}"
                raise AdapterError(
                    f"{path}: adapters do not fit this model: {file}: {k} {v.shape} ({got})"
                )
        return
    load_adapters_checked(model, path)
    strip_adapters(model)


def compare_models(
    model_path: str,
    adapter_paths: Sequence[str | Path],
    data: str | Path | None = None,
    mc_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    opts: EvalOptions | None = None,
    names: Sequence[str] | None = None,
    include_base: bool = True,
    mc_langs: Sequence[str] | None = None,
    mc_split: str | None = None,
    mc_limit: int | None = None,
    mc_items: Sequence[MCItem] | None = None,
    console=None,
    judge: str | None = None,
    judge_max_tokens: int = 8,
) -> list[dict]:
    """Evaluate the base model and each adapter on the same held-out material; write a report
    to `out_dir` when given. Returns `[{"name", "adapter_path", "metrics", "details"}, ...]`.

    `judge`: a local mlx-lm chat model that compares each adapter's greedy answers with the base
    model's (`clo_mlx.eval.judge`; both orders), giving `judge/<lang>/win_rate` and its interval."""
    from ..adapters import load_adapters_checked, read_adapter_config
    from ..models import load_model, model_fingerprint
    from ..run import _console
    from .multiple_choice import load_mc

    console = console or _console()
    opts = opts or EvalOptions()
    check_names(names, adapter_paths, include_base)
    configs = [read_adapter_config(a) for a in adapter_paths]  # fail early on bad paths
    pairs = load_pairs(heldout_file(data)) if data is not None else None
    if mc_items is None and mc_path is not None:
        mc_items = load_mc(mc_path, langs=mc_langs, split=mc_split, limit=mc_limit)
    if pairs is None and not mc_items:
        raise ConfigError("nothing to evaluate: give held-out data (--data) and/or --mc items")
    if judge is not None:
        from ..models import resolve_model_path

        if pairs is None or opts.fidelity_prompts <= 0:
            raise ConfigError(
                "--judge compares generated answers: it needs --data and --fidelity-prompts > 0"
            )
        resolve_model_path(judge)  # fail before any long work

    model, tokenizer = load_model(model_path, dtype=opts.dtype)
    for path, acfg in zip(adapter_paths, configs, strict=True):
        check_adapters_fit(model, path, acfg)  # before the base model's (long) evaluation
    es = build_eval_set(
        model, tokenizer, pairs, opts, model_fingerprint(model_path), mc_items, console
    )
    results = []
    if include_base:
        console.print(f"[bold]evaluating {BASE_NAME}[/]")
        m, d = evaluate_model(model, tokenizer, es, opts, console, is_reference=True)
        results.append({"name": BASE_NAME, "adapter_path": None, "metrics": m, "details": d})
    names = list(names) if names is not None else [adapter_label(a) for a in adapter_paths]
    for name, path, acfg in zip(names, adapter_paths, configs, strict=True):
        console.print(f"[bold]evaluating {name}[/] ({path})")
        load_adapters_checked(model, path)
        m, d = evaluate_model(model, tokenizer, es, opts, console)
        results.append({"name": name, "adapter_path": str(path), "metrics": m, "details": d})
        if acfg.get("fine_tune_type", "lora") == "full":  # weights were overwritten: reload
            model, tokenizer = load_model(model_path, dtype=opts.dtype)
        else:
            strip_adapters(model)
    if judge is not None:
        from .judge import generate_judge, judge_results

        del model
        judge_model, judge_tok = load_model(judge, dtype=opts.dtype)
        ask = generate_judge(judge_model, judge_tok, judge_max_tokens, opts.generation_batch_size)
        judge_results(results, es.base_fidelity, ask, model_fingerprint(judge), out_dir, console)
    if out_dir is not None and distributed.is_main():
        write_report(results, out_dir, title=f"clo-mlx eval: {Path(model_path).name}")
    return results


# ----------------------------------------------------------------------------- reports

HEADLINE_PATTERNS = (
    "fidelity/",
    "same_as_base/",
    "logp_change/",
    "rewards/accuracies",
    "rewards/margins",
    "ppl/",
    "answer_mc/",
    "mc/",
    "judge/",
)


def headline_metrics(results: Sequence[dict]) -> list[str]:
    """The metric columns of the table and plot, in a fixed order, present in any result."""
    keys: list[str] = []
    for r in results:
        for k in r["metrics"]:
            if k not in keys:
                keys.append(k)

    def order(k: str) -> tuple:
        for i, p in enumerate(HEADLINE_PATTERNS):
            if k.startswith(p):
                return (i, 2 if k.endswith("/mean") else int(k.endswith("/en")), k)
        return (len(HEADLINE_PATTERNS), False, k)

    chosen = [k for k in keys if k.startswith(HEADLINE_PATTERNS) and ":" not in k]
    chosen = [k for k in chosen if not k.startswith("rewards/margins/")]
    return sorted(chosen, key=order)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.3g}"
    return str(v)


def markdown_table(results: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    columns = list(columns) if columns is not None else headline_metrics(results)
    head = "| model | " + " | ".join(columns) + " |"
    sep = "|---|" + "---:|" * len(columns)
    rows = [
        f"| {r['name']} | " + " | ".join(_fmt(r["metrics"].get(c)) for c in columns) + " |"
        for r in results
    ]
    return "\n".join([head, sep, *rows]) + "\n"


def plot_comparison(
    results: Sequence[dict], path: str | Path, columns: Sequence[str] | None = None, title=None
) -> Path | None:
    """One bar panel per metric, one bar per model; None when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = list(columns) if columns is not None else headline_metrics(results)
    columns = [c for c in columns if any(c in r["metrics"] for r in results)]
    if not columns:
        return None
    ncol = min(4, len(columns))
    nrow = -(-len(columns) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.0 * nrow), squeeze=False)
    names = [r["name"] for r in results]
    colors = [plt.cm.tab10(i % 10) for i in range(len(names))]
    for ax, col in zip(axes.flat, columns, strict=False):
        vals = [r["metrics"].get(col) for r in results]
        vals = [float("nan") if v is None else v for v in vals]
        bars = ax.bar(range(len(names)), vals, color=colors)
        labels = ["" if v is None or math.isnan(v) else f"{v:.3g}" for v in vals]
        ax.bar_label(bars, labels=labels, fontsize=6)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set_title(col, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    return save_figure(fig, path, title)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_report(results: Sequence[dict], out_dir: str | Path, title: str | None = None) -> dict:
    """report.json, report.md and report.png in `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    paths = {
        "json": atomic_write_json(out_dir / "report.json", _jsonable(list(results))),
        "md": atomic_write_text(
            out_dir / "report.md", (f"# {title}\n\n" if title else "") + markdown_table(results)
        ),
    }
    png = plot_comparison(results, out_dir / "report.png", title=title)
    if png is not None:
        paths["png"] = png
    return paths
