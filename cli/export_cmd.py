"""`clo-mlx export-hf` and `clo-mlx import-hf`: PEFT adapters and fused Hugging Face models."""

from __future__ import annotations

from pathlib import Path

import typer

from .fuse_cmd import base_model_option, fail


def export_hf_cmd(
    model: str | None = base_model_option(),
    adapter_path: Path = typer.Option(..., "--adapter-path", help="mlx-lm adapter directory."),
    output: Path = typer.Option(..., "--output", help="Output directory."),
    fused: bool = typer.Option(
        False, "--fused", help="Write a full HF model (adapters merged, de-quantized)."
    ),
    base_model_id: str | None = typer.Option(
        None, "--base-model-id", help="HF id of the base model, for the PEFT adapter_config.json."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --output."),
) -> None:
    """Export adapters as a PEFT LoRA/DoRA adapter, or (--fused) as a full Hugging Face model."""
    from rich.console import Console

    from clo_mlx.export.peft import export_fused_hf, export_peft

    console = Console(stderr=True)
    try:
        with console.status(f"exporting {adapter_path}"):
            if fused:
                out = export_fused_hf(model, adapter_path, output, overwrite=overwrite)
            else:
                out = export_peft(model, adapter_path, output, base_model_id, overwrite=overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        fail(e)
    kind = "Hugging Face model" if fused else "PEFT adapter"
    console.print(f"{kind} saved to {out}")


def import_hf_cmd(
    adapter: Path = typer.Option(..., "--adapter", help="PEFT LoRA adapter directory."),
    model: str | None = typer.Option(
        None,
        "--model",
        help="Base model it belongs to (local folder or cached HF repo id). "
        "Default: the adapter's base_model_name_or_path.",
    ),
    output: Path = typer.Option(..., "--output", help="Output mlx-lm adapter directory."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --output."),
) -> None:
    """Convert a PEFT LoRA/DoRA adapter into mlx-lm adapters (to use or keep training)."""
    from rich.console import Console

    from clo_mlx.export.peft import import_peft

    console = Console(stderr=True)
    try:
        with console.status(f"importing {adapter}"):
            out = import_peft(adapter, model, output, overwrite=overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        fail(e)
    console.print(f"mlx-lm adapters saved to {out}")
