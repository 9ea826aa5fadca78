"""Entry point of the `clo-mlx` console script.

Each command lives in its own module under `cli/` and registers itself on `app`.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="clo-mlx",
    help="Cross-Lingual Optimization (CLO) for MLX: teach an English-centric LLM another language.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _register_commands() -> None:
    # Importing a command module registers its commands on `app`.
    import cli.doctor_cmd  # noqa: F401
    import cli.eval_cmd  # noqa: F401
    import cli.generate_cmd  # noqa: F401
    import cli.sweep_cmd  # noqa: F401
    import cli.translate_cmd  # noqa: F401
    from cli import export_cmd, fuse_cmd  # noqa: F401
    from cli import train_cmd  # noqa: F401


def main() -> None:
    # First, before anything imports mlx: on Linux CPUs re-exec with OpenBLAS preloaded.
    from clo_mlx.blas import ensure_fast_blas

    ensure_fast_blas()
    _register_commands()
    app()


if __name__ == "__main__":
    main()
