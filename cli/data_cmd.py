"""`clo-mlx data`: build training inputs from public datasets (`data oasst`)."""

from __future__ import annotations

from pathlib import Path

import typer


def oasst(
    input: Path = typer.Option(
        ...,
        "--input",
        help="OpenAssistant export: *.trees.jsonl(.gz), *.messages.jsonl(.gz) or the messages "
        "parquet of the Hugging Face dataset.",
    ),
    output: Path = typer.Option(..., help="English SFT JSONL to write (prompt/response rows)."),
    limit: int = typer.Option(6400, help="Keep the first N rows (the paper: 6400); 0: all."),
    lang: str = typer.Option("en", help="Language of the rows kept (the paper: en)."),
    overwrite: bool = typer.Option(False, help="Replace an existing output file."),
) -> None:
    """Single-turn SFT rows the paper's way: each prompt's top-ranked reply, one language."""
    from rich.console import Console
    from rich.table import Table

    from clo_mlx.oasst import oasst_to_sft

    if limit < 0:
        raise typer.BadParameter("must be >= 0", param_hint="--limit")
    summary = oasst_to_sft(input, output, lang=lang, limit=limit or None, overwrite=overwrite)
    table = Table(title=f"OASST -> {lang} SFT rows")
    table.add_column("prompts")
    table.add_column("count", justify="right")
    table.add_row("initial prompts", str(summary["prompts"]))
    for reason, n in summary["dropped_prompts"].items():
        table.add_row(f"dropped: {reason}", str(n))
    for reason, n in summary["dropped_replies"].items():
        table.add_row(f"replies passed over: {reason}", str(n))
    table.add_row("eligible", str(summary["eligible"]))
    table.add_row("over --limit", str(summary["over_limit"]))
    table.add_row("kept", str(summary["kept"]))
    Console(stderr=True).print(table)
    typer.echo(f"rows: {summary['output']}")
