"""`clo-mlx fuse`: merge adapters into the base model, save an MLX model directory."""

from __future__ import annotations

from pathlib import Path

import typer


def fail(e: Exception) -> None:
    """Print a clean one-line error and exit 2, as every bad input does (no traceback)."""
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def base_model_option():
    """`--model` of fuse and export-hf: defaults to the model the adapters were trained on."""
    return typer.Option(
        None,
        "--model",
        help="Base model: local folder (HF or MLX layout) or HF repo id in the local cache. "
        "Default: the 'model' of the adapter config.",
    )


def fuse_cmd(
    model: str | None = base_model_option(),
    adapter_path: Path = typer.Option(..., "--adapter-path", help="mlx-lm adapter directory."),
    save_path: Path = typer.Option(..., "--save-path", help="Output MLX model directory."),
    dequantize: bool = typer.Option(
        False, "--dequantize", help="Save full-precision weights if the base is quantized."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --save-path."),
) -> None:
    """Merge LoRA/DoRA (or full fine-tune) adapters into the base; `mlx_lm.load` opens the result."""
    from rich.console import Console

    from clo_mlx.export.fuse import fuse

    console = Console(stderr=True)
    try:
        with console.status(f"fusing {adapter_path} into {model or 'the base model'}"):
            out = fuse(model, adapter_path, save_path, dequantize=dequantize, overwrite=overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        fail(e)
    console.print(f"fused model saved to {out}")
