"""`clo-mlx score`: per-pair response log-probs (the training code path) to a JSONL file."""

from __future__ import annotations

import typer


def score(
    model: str = typer.Option(..., help="Local model folder (HF layout) or a cached HF repo id."),
    data: str = typer.Option(..., help="JSONL file of parallel CLO rows or preference rows."),
    output: str = typer.Option(..., help="Output JSONL, one line per pair."),
    adapter_path: str | None = typer.Option(None, help="Adapters to apply (mlx-lm format)."),
    batch_size: int = typer.Option(8, help="Pairs per forward pass."),
    max_seq_length: int = typer.Option(2048),
    truncation: str = typer.Option("truncate_prompt", help="truncate_prompt | drop"),
    dtype: str = typer.Option("auto", help="auto | float32 | bfloat16 | float16"),
) -> None:
    """Write {row, kind, chosen_logp, rejected_logp, chosen_tokens, rejected_tokens} per pair."""
    from clo_mlx.eval.score import score_file

    lines = score_file(
        model, data, output, adapter_path, batch_size, max_seq_length, truncation, dtype
    )
    from clo_mlx import distributed

    if distributed.is_main():
        typer.echo(f"wrote {len(lines)} pairs to {output}", err=True)
