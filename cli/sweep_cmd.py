"""`clo-mlx sweep`: methods x training-set sizes x seeds, with the data-efficiency figure."""

from __future__ import annotations

import typer


def _list(text: str | None, cast=str) -> list | None:
    return [cast(x.strip()) for x in text.split(",") if x.strip()] if text else None


def _size(token: str) -> float | int:
    # "0.5" / "1.0" are fractions of the training rows; "100" is a row count.
    return float(token) if "." in token else int(token)


def sweep(
    config: str | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Sweep YAML (model, data, out, methods, sizes, seeds, train, eval, ...).",
    ),
    model: str | None = typer.Option(None, help="Base model folder or cached HF repo id."),
    data: str | None = typer.Option(
        None, help="Data folder with train.jsonl and test.jsonl (or valid.jsonl)."
    ),
    out: str | None = typer.Option(None, help="Output folder (cells/, results.json/md/png)."),
    methods: str | None = typer.Option(
        None,
        help="Comma-separated: clo, sft, sft_en, sft_both, dpo, sft+dpo, sft+clo, clo_ipo, "
        "clo_hinge, clo_simpo (default clo,sft,dpo).",
    ),
    sizes: str | None = typer.Option(
        None, help="Comma-separated fractions (with a dot: 0.125,0.5,1.0) or row counts (100,200)."
    ),
    seeds: str | None = typer.Option(None, help="Comma-separated seeds (default 0)."),
    train_config: str | None = typer.Option(None, help="Training YAML applied to every stage."),
    epochs: float | None = typer.Option(
        None, help="Train each stage this many epochs of its subset (else a fixed `iters`)."
    ),
    iters: int | None = typer.Option(None, help="Training steps per stage (when no --epochs)."),
    batch_size: int | None = typer.Option(None),
    learning_rate: float | None = typer.Option(None),
    max_seq_length: int | None = typer.Option(None),
    fidelity_prompts: int | None = typer.Option(None, help="Eval prompts per language (0: skip)."),
    max_tokens: int | None = typer.Option(None, help="Generated tokens per fidelity answer."),
    mc: str | None = typer.Option(None, help="Multiple-choice items (XCOPA/BELEBELE JSONL)."),
    mc_langs: str | None = typer.Option(None, help="Only MC rows of these languages."),
    mc_split: str | None = typer.Option(None, help="Only MC rows of this split."),
    mc_limit: int | None = typer.Option(None, help="At most N MC rows per language."),
    plot_metrics: str | None = typer.Option(
        None,
        help="Metrics to plot/tabulate (default fidelity/<tgt>, fidelity/en, rewards/accuracies, ppl/<tgt>).",
    ),
) -> None:
    """Run (or resume) a sweep; finished cells are skipped on re-run."""
    from clo_mlx.eval.sweep import load_spec, run_sweep

    spec = load_spec(
        config,
        overrides={
            "model": model,
            "data": data,
            "out": out,
            "methods": _list(methods),
            "sizes": _list(sizes, _size),
            "seeds": _list(seeds, int),
            "train_config": train_config,
            "epochs": epochs,
            "mc": mc,
            "mc_langs": _list(mc_langs),
            "mc_split": mc_split,
            "mc_limit": mc_limit,
            "plot_metrics": _list(plot_metrics),
        },
        train_overrides={
            "iters": iters,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "max_seq_length": max_seq_length,
        },
        eval_overrides={
            "fidelity_prompts": fidelity_prompts,
            "max_tokens": max_tokens,
            "max_seq_length": max_seq_length,
        },
    )
    run_sweep(spec)
    typer.echo((__import__("pathlib").Path(spec.out) / "results.md").read_text())
