"""Entry point of the `clo-mlx` console script.

Each command is a plain function in its own module under `cli/`; this module registers them all.
The command modules import only typer at load time (MLX comes later, inside the commands), so
`main` can still re-exec with a fast BLAS before anything imports MLX.
"""

from __future__ import annotations

import os
import sys

import typer

from .data_cmd import oasst
from .doctor_cmd import doctor
from .eval_cmd import eval_command
from .export_cmd import export_hf_cmd, import_hf_cmd
from .fuse_cmd import fuse_cmd
from .generate_cmd import generate
from .score_cmd import score
from .sweep_cmd import sweep
from .train_cmd import train
from .translate_cmd import translate

app = typer.Typer(
    name="clo-mlx",
    help="Cross-Lingual Optimization (CLO) for MLX: teach an English-centric LLM another language.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
COMMANDS = {
    "translate": translate,
    "train": train,
    "eval": eval_command,
    "score": score,
    "generate": generate,
    "sweep": sweep,
    "fuse": fuse_cmd,
    "export-hf": export_hf_cmd,
    "import-hf": import_hf_cmd,
    "doctor": doctor,
}
for _name, _fn in COMMANDS.items():
    app.command(_name)(_fn)
data_app = typer.Typer(help="Build training inputs from public datasets.", no_args_is_help=True)
data_app.command("oasst")(oasst)
app.add_typer(data_app, name="data")


# Commands that never run MLX: no fast-BLAS re-exec and no line about it.
NO_COMPUTE = {"data"}


def computes(args: list[str]) -> bool:
    """Whether the command line `args` (without the program) runs MLX (not help, not `data`)."""
    if not args or "--help" in args or "-h" in args:
        return False
    command = next((a for a in args if not a.startswith("-")), None)
    return command is not None and command not in NO_COMPUTE


def main() -> None:
    # First, before anything imports mlx: on Linux CPUs re-exec with OpenBLAS preloaded.
    if computes(sys.argv[1:]):
        from clo_mlx.blas import ensure_fast_blas

        ensure_fast_blas()
    # clo-mlx never downloads: models come from local folders or the local Hugging Face cache.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from clo_mlx import distributed

    distributed.install_sigterm_handler()  # under mlx.launch: a failed rank stops the others
    try:
        app()
    except Exception as e:  # a user's bad input: one clear message, no traceback
        from clo_mlx.errors import CloError
        from clo_mlx.trainer import TrainingInterrupted

        if isinstance(e, TrainingInterrupted):
            typer.echo(f"clo-mlx: {e}", err=True)
            raise SystemExit(130) from None
        if distributed.is_peer_lost(e) and not os.environ.get("CLO_MLX_DEBUG"):
            typer.echo(f"clo-mlx: error: {distributed.failure_message(e)}", err=True)
            raise SystemExit(1) from None
        if not isinstance(e, (CloError, FileNotFoundError)) or os.environ.get("CLO_MLX_DEBUG"):
            raise
        typer.echo(f"clo-mlx: error: {e}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
