"""The command line starts the three ways users start it: `python -m cli.main`, the `clo-mlx`
console script and `cli.main.main`, and every subcommand prints its help."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [
    "translate",
    "train",
    "eval",
    "score",
    "generate",
    "sweep",
    "fuse",
    "export-hf",
    "import-hf",
    "doctor",
    "data",
]


def listed_commands(help_text: str) -> list[str]:
    """Command names in the order the 'Commands' panel of a Typer help lists them."""
    panel = help_text.split("Commands")[1]
    return re.findall(r"^│ ([a-z][a-z-]*) ", panel, flags=re.M)


def run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100", "TERM": "dumb"}
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_python_m_cli_main_lists_every_command():
    proc = run([sys.executable, "-m", "cli.main", "--help"])
    assert proc.returncode == 0, proc.stderr
    assert listed_commands(proc.stdout) == COMMANDS


def test_console_script_lists_every_command():
    script = Path(sys.executable).parent / "clo-mlx"
    if not script.exists():
        pytest.skip(f"no clo-mlx console script beside {sys.executable} (pip install -e .)")
    proc = run([str(script), "--help"])
    assert proc.returncode == 0, proc.stderr
    assert listed_commands(proc.stdout) == COMMANDS


@pytest.mark.parametrize("command", [*COMMANDS, "data oasst"])
def test_every_subcommand_prints_its_help(command):
    from cli.main import app

    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "--help" in result.output
