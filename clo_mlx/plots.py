"""Training-curve plots (matplotlib, Agg backend: works headless).

Input is a list of metric records as written to `metrics.jsonl` by the trainer:
`{"type": "train" | "eval", "step": ..., "<metric>": value, ...}`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

DEFAULT_PANELS: list[tuple[str, list[str]]] = [
    ("loss", ["loss", "val/loss", "nll/target", "nll/train", "val/nll/target"]),
    ("reward margin", ["rewards/margins", "val/rewards/margins"]),
    ("language fidelity", ["fidelity/*"]),
]


def read_metrics(path: str | Path) -> list[dict]:
    """Records of a `metrics.jsonl` file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _series(records: Sequence[dict], pattern: str) -> dict[str, tuple[list[float], list[float]]]:
    """{key: (steps, values)} for keys equal to `pattern`, or starting with it if it ends in '*'."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for r in records:
        for k, v in r.items():
            match = k.startswith(pattern[:-1]) if pattern.endswith("*") else k == pattern
            if match and isinstance(v, (int, float)) and "step" in r:
                xs, ys = out.setdefault(k, ([], []))
                xs.append(r["step"])
                ys.append(float(v))
    return out


def plot_training(
    records: Sequence[dict] | str | Path,
    out_path: str | Path,
    panels: Sequence[tuple[str, Sequence[str]]] | None = None,
    title: str | None = None,
) -> Path | None:
    """Plot one panel per (title, metric keys) that has data; write a PNG; None if nothing to plot.

    A key ending in '*' matches every metric with that prefix (e.g. "fidelity/*").
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(records, (str, Path)):
        records = read_metrics(records)
    panels = panels if panels is not None else DEFAULT_PANELS
    filled = []
    for name, keys in panels:
        series: dict[str, tuple[list[float], list[float]]] = {}
        for key in keys:
            series.update(_series(records, key))
        if series:
            filled.append((name, series))
    if not filled:
        return None
    fig, axes = plt.subplots(1, len(filled), figsize=(5 * len(filled), 3.6), squeeze=False)
    for ax, (name, series) in zip(axes[0], filled, strict=True):
        for key, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=key)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, out_path, title)


def save_figure(fig, path: str | Path, title: str | None = None) -> Path:
    """Title, layout, and an atomic PNG write (a temporary file renamed into place); closes `fig`."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
