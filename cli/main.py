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
    from cli import train_cmd  # noqa: F401


def main() -> None:
    _register_commands()
    app()


if __name__ == "__main__":
    main()
