"""Data-efficiency sweep on the built-in demo: CLO vs SFT vs DPO at several training-set sizes.

    python bench/demo_sweep.py [--model PATH] [--out DIR] [--sizes 0.125,0.25,0.5,1.0]
                               [--methods clo,sft,dpo] [--seeds 0] [--epochs 3]
                               [--learning-rate 2e-4]

Uses the demo corpus (English / Swahili, `clo_mlx.demo`) and, by default, the shipped demo model;
training settings are the demo's (`clo_mlx.demo.run.DEMO_CONFIG`) except the learning rate
(`--learning-rate`), each stage trained for `--epochs` epochs of its subset. Resumable: re-running skips finished cells. Writes
`results.json`, `results.md`, `results.png` to --out and prints the summary plus the answer to
"does CLO on half the rows beat SFT on all rows?" (language fidelity and preference accuracy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from clo_mlx.blas import ensure_fast_blas

    ensure_fast_blas()
    from clo_mlx.demo import DEMO_MODEL
    from clo_mlx.demo.run import DEMO_CONFIG, prepare_demo_data
    from clo_mlx.sweep import aggregate, load_spec, run_sweep

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEMO_MODEL))
    ap.add_argument("--out", default="bench/results/demo_sweep")
    ap.add_argument("--methods", default="clo,sft,dpo")
    ap.add_argument("--sizes", default="0.125,0.25,0.5,1.0")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=float, default=3.0)
    # 1e-3 (an earlier demo setting) diverged over the longer runs of the sweep (CLO's target NLL
    # rose from 2.5 to 6-10 within 50-100 steps); 2e-4 trains stably.
    ap.add_argument("--learning-rate", type=float, default=2e-4)
    ap.add_argument("--fidelity-prompts", type=int, default=60)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args(argv)

    if not (Path(args.model) / "config.json").is_file():
        print(f"no model at {args.model} (the demo model is not built yet?)", file=sys.stderr)
        return 2
    data = prepare_demo_data()
    train = {
        k: v for k, v in DEMO_CONFIG.items() if k not in ("iters", "steps_per_eval", "val_batches")
    }
    train["steps_per_report"] = 25
    train["learning_rate"] = args.learning_rate
    spec = load_spec(
        overrides={
            "model": args.model,
            "data": str(data),
            "out": args.out,
            "methods": args.methods.split(","),
            "sizes": [float(s) if "." in s else int(s) for s in args.sizes.split(",")],
            "seeds": [int(s) for s in args.seeds.split(",")],
            "epochs": args.epochs,
            "train": train,
            "eval": {
                "batch_size": 16,
                "max_seq_length": DEMO_CONFIG["max_seq_length"],
                "fidelity_prompts": args.fidelity_prompts,
                "max_tokens": args.max_tokens,
                "beta": DEMO_CONFIG["clo"]["beta"],
            },
        }
    )
    tic = time.perf_counter()
    records = run_sweep(spec)
    wall = time.perf_counter() - tic
    out = Path(args.out)
    print((out / "results.md").read_text())
    print(f"wall time {wall:.0f} s for {len(records)} cells (finished cells are reused on re-run)")

    rows = sorted({r["rows"] for r in records})
    full = rows[-1]
    half = next((k for k in rows if 2 * k == full), None)
    verdict = {}
    for metric in ("fidelity/sw", "fidelity/en", "fidelity/mean", "rewards/accuracies", "ppl/sw"):
        agg = aggregate(records, metric)
        if "clo" in agg and "sft" in agg and half in agg["clo"] and full in agg["sft"]:
            clo_half, sft_full = agg["clo"][half][0], agg["sft"][full][0]
            better = clo_half < sft_full if metric.startswith("ppl/") else clo_half > sft_full
            verdict[metric] = {
                f"clo@{half}": clo_half,
                f"sft@{full}": sft_full,
                "clo_half_beats_sft_full": bool(better),
            }
    if verdict:
        print("CLO on half the rows vs SFT on all rows:")
        for metric, v in verdict.items():
            print(f"  {metric}: {json.dumps(v)}")
        (out / "clo_half_vs_sft_full.json").write_text(json.dumps(verdict, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
