"""English retention on the built-in demo: settings x seeds, and the measured frontier.

    python bench/demo_retention.py [--out bench/results/demo_retention] [--seeds 0]
                                   [--settings "NAME;NAME"] [--plot-only]

Each setting is a set of overrides of the demo's training config (`SETTINGS`, or JSON given as
NAME='{"clo": {...}}'); every run is `clo_mlx.demo.run.run_demo` (the same code as `clo-mlx
train`), one line per (setting, seed) appended to `runs.jsonl` (a re-run skips finished lines).
`frontier.png`: Swahili fidelity (gained) against English answers identical to the base's and
against the held-out English reference log-prob change, one point per run, the issue's target
region shaded; `frontier.md`: the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PAPER = {"clo": {"lambda": 0.5, "dpop_en": 0.0, "dpop_tgt": 0.0, "anchor_en": 0.0}}  # the paper's


def _clo(**kw) -> dict:
    return {"clo": {**PAPER["clo"], **kw}}


SETTINGS: dict[str, dict] = {
    "paper (lambda 0.5)": PAPER,
    "dpop en 5": _clo(dpop_en=5.0),
    "dpop en 20": _clo(dpop_en=20.0),
    "dpop en+tgt 5": _clo(dpop_en=5.0, dpop_tgt=5.0),
    "dpop en+tgt 10": _clo(dpop_en=10.0, dpop_tgt=10.0),
    "dpop en 10 + tgt 5, beta 0.2": _clo(dpop_en=10.0, dpop_tgt=5.0, beta=0.2),
    "dpop en+tgt 5, lr 1.5e-4": {**_clo(dpop_en=5.0, dpop_tgt=5.0), "learning_rate": 1.5e-4},
    "dpop en+tgt 5, lambda 0.6 (demo default)": _clo(dpop_en=5.0, dpop_tgt=5.0, **{"lambda": 0.6}),
    "dpop en+tgt 5, lambda 0.7": _clo(dpop_en=5.0, dpop_tgt=5.0, **{"lambda": 0.7}),
    "dpop en+tgt 10, lambda 0.7": _clo(dpop_en=10.0, dpop_tgt=10.0, **{"lambda": 0.7}),
    "anchor en 1": _clo(anchor_en=1.0),
    "anchor en 5": _clo(anchor_en=5.0),
}
TARGETS = {"sw": 0.90, "en": 0.97, "same": 0.70, "drop": 0.5}


def row_of(r: dict) -> dict:
    ret = r["retention"] or {}
    v = r["valid_logps"] or {}
    return {
        "setting": r["setting"],
        "seed": r["seed"],
        "sw": r["after"]["sw"],
        "en": r["after"]["en"],
        "same": r["en_same_as_base"],
        "test_logp_change_en": ret.get("logp_change_en"),
        "valid_logp_change_en": (v["after"]["logp_en"] - v["before"]["logp_en"]) if v else None,
        "answer_mc_en": ret.get("answer_mc_en", {}).get("after"),
        "train_seconds": r.get("train_seconds"),
    }


def meets(row: dict) -> bool:
    t = TARGETS
    return (
        row["sw"] >= t["sw"]
        and row["en"] >= t["en"]
        and row["same"] >= t["same"]
        and row["test_logp_change_en"] is not None
        and row["test_logp_change_en"] >= -t["drop"]
    )


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    names = list(dict.fromkeys(r["setting"] for r in rows))
    for ax, key, label, lim in (
        (axes[0], "same", "English answers identical to the base's", TARGETS["same"]),
        (axes[1], "test_logp_change_en", "English reference log-prob change (nats, test)",
         -TARGETS["drop"]),
    ):  # fmt: skip
        ax.axhline(lim, color="green", linestyle=":", linewidth=1)
        ax.axvline(TARGETS["sw"], color="green", linestyle=":", linewidth=1)
        for i, name in enumerate(names):
            pts = [r for r in rows if r["setting"] == name and r[key] is not None]
            ax.scatter([r["sw"] for r in pts], [r[key] for r in pts], label=name, s=22,
                       color=plt.cm.tab10(i % 10), marker="o" if i < 10 else "s")  # fmt: skip
        lo, hi = ax.get_ylim()
        ax.fill_between([TARGETS["sw"], 1.0], lim, max(hi, lim), color="green", alpha=0.08)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("Swahili prompts answered in Swahili (gained)")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.suptitle("demo: Swahili gained vs English kept (one point per run; targets dotted)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: list[dict]) -> str:
    def f(v, kind: str = "num") -> str:
        if v is None:
            return "–"
        return {"pct": f"{100 * v:.0f}%", "num": f"{v:+.2f}", "int": f"{v:.0f}"}[kind]

    head = (
        "| setting | seed | sw fidelity | en fidelity | en = base | en log-prob change (test) "
        "| en answer choice | train s | all targets |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['seed']} | {f(r['sw'], 'pct')} | {f(r['en'], 'pct')} | "
            f"{f(r['same'], 'pct')} | {f(r['test_logp_change_en'])} | {f(r['answer_mc_en'], 'pct')} "
            f"| {f(r['train_seconds'], 'int')} | {'yes' if meets(r) else ''} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/demo_retention")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--settings", default=";".join(SETTINGS), help="names, ;-separated")
    ap.add_argument("--extra", action="append", default=[], help="NAME=JSON overrides")
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    runs = out / "runs.jsonl"
    settings = {k: SETTINGS[k] for k in args.settings.split(";") if k}
    for e in args.extra:
        name, _, js = e.partition("=")
        settings[name] = json.loads(js)
    done = [json.loads(x) for x in runs.read_text().splitlines()] if runs.is_file() else []
    if not args.plot_only:
        from clo_mlx.blas import ensure_fast_blas

        ensure_fast_blas()
        from rich.console import Console

        from clo_mlx.demo.run import run_demo
        from clo_mlx.io import append_jsonl

        for seed in (int(s) for s in args.seeds.split(",")):
            for name, ov in settings.items():
                if any(d["setting"] == name and d["seed"] == seed for d in done):
                    continue
                r = run_demo(adapter_path=out / "adapters" / f"{len(done)}", seed=seed,
                             console=Console(stderr=True, quiet=True), **ov)  # fmt: skip
                keep = {k: r[k] for k in ("after", "before", "en_same_as_base", "valid_logps",
                                          "retention", "train_seconds", "seconds", "settings")}  # fmt: skip
                keep.update(setting=name, seed=seed, overrides=ov)
                append_jsonl(runs, [keep])
                done.append(keep)
                print(json.dumps(row_of(keep)), flush=True)
    rows = [row_of(d) for d in done]
    plot(rows, out / "frontier.png")
    (out / "frontier.md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
