"""`clo-mlx eval`: the base model and several adapters side by side (JSON + Markdown + PNG)."""

from __future__ import annotations

import typer


def eval_command(
    model: str = typer.Option(
        ..., help="Local base model folder (HF layout) or a cached HF repo id."
    ),
    adapter_path: list[str] = typer.Option(
        [], "--adapter-path", "-a", help="Adapter folder to compare (repeat for several)."
    ),
    name: list[str] = typer.Option(
        [], "--name", help="Label for each --adapter-path, in order (default: folder names)."
    ),
    data: str | None = typer.Option(
        None,
        help="Held-out parallel CLO rows: a JSONL file, or a data folder (test.jsonl, else valid.jsonl).",
    ),
    mc: str | None = typer.Option(
        None, help="Multiple-choice items (XCOPA / BELEBELE-style JSONL) for accuracy."
    ),
    mc_langs: str | None = typer.Option(
        None, help="Only MC rows of these languages (comma-separated)."
    ),
    mc_split: str | None = typer.Option(None, help="Only MC rows with this `split` (e.g. test)."),
    mc_limit: int | None = typer.Option(None, help="At most N MC rows per language."),
    mc_english: bool = typer.Option(
        True, "--mc-english/--no-mc-english", help="Also score XCOPA's English (en_mt) items."
    ),
    out: str = typer.Option("eval_report", help="Folder for report.json, report.md, report.png."),
    fidelity_prompts: int = typer.Option(50, help="Prompts per language for fidelity (0: skip)."),
    max_tokens: int = typer.Option(48, help="Generated tokens per fidelity answer."),
    batch_size: int = typer.Option(8, help="Pairs per forward pass."),
    max_seq_length: int = typer.Option(2048),
    beta: float = typer.Option(0.1, help="Reward scale of the preference metrics (clo.beta)."),
    lam: float = typer.Option(0.5, "--lambda", help="clo.lambda for the reported CLO loss."),
    preference: str = typer.Option("sigmoid", help="sigmoid | ipo | hinge | simpo"),
    simpo_gamma: float = typer.Option(0.5),
    base: bool = typer.Option(True, "--base/--no-base", help="Also evaluate the base model."),
    dtype: str = typer.Option("auto", help="auto | float32 | bfloat16 | float16"),
    cache_dir: str | None = typer.Option(None, help="Reference log-prob cache folder."),
    answer_mc: int = typer.Option(
        0, help="English/target answer-choice items per language from the held-out rows (0: off)."
    ),
    judge: str | None = typer.Option(
        None,
        help="Local mlx-lm chat model judging each adapter's answers against the base model's "
        "(both orders; win rate per language with a 95% interval; verdicts in OUT/judge/).",
    ),
    judge_max_tokens: int = typer.Option(8, help="Tokens the judge may write per verdict."),
) -> None:
    """Compare adapters (and the base model) on language fidelity, preference accuracy, perplexity
    and multiple-choice accuracy. The reference of the preference metrics is the base model."""
    from clo_mlx.eval.compare import EvalOptions, check_names, compare_models, markdown_table
    from clo_mlx.eval.multiple_choice import load_mc

    check_names(name or None, adapter_path, base)

    opts = EvalOptions(
        batch_size=batch_size,
        max_seq_length=max_seq_length,
        fidelity_prompts=fidelity_prompts,
        max_tokens=max_tokens,
        beta=beta,
        lam=lam,
        preference=preference,
        simpo_gamma=simpo_gamma,
        dtype=dtype,
        cache_dir=cache_dir,
        answer_mc=answer_mc,
    )
    opts.train_config()  # validate the options before loading anything
    langs = [x.strip() for x in mc_langs.split(",") if x.strip()] if mc_langs else None
    mc_items = load_mc(mc, langs, mc_split, english=mc_english, limit=mc_limit) if mc else None
    results = compare_models(
        model,
        adapter_path,
        data=data,
        mc_items=mc_items,
        out_dir=out,
        opts=opts,
        names=name or None,
        include_base=base,
        judge=judge,
        judge_max_tokens=judge_max_tokens,
    )
    from clo_mlx import distributed

    if not distributed.is_main():  # under mlx.launch only rank 0 reports
        return
    typer.echo(markdown_table(results))
    typer.echo(f"report written to {out}/report.json, report.md, report.png", err=True)
