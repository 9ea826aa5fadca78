"""Data-parallel cost on this machine: the gradient all_sum, and 2-rank vs 1-rank step time.

    python bench/distributed_bench.py                    # both parts, 30M and 105M (a few minutes)
    python bench/distributed_bench.py --sizes 30m --iters 6

1. all_sum: 2 ranks over 127.0.0.1 (`python -m clo_mlx.launch --backend ring -n 2`) sum the LoRA
   gradients of the 30M and 105M Llama shapes of bench_dpo_vs_mlx_lm_lora.py (rank 8 on q/k/v/o
   of every layer, fp32) with the trainer's own `distributed.sum_gradients`, and report the
   median time of one reduction and the bytes each rank sends (a ring all-reduce sends
   2 (n-1)/n of the buffer).
2. step time: `clo-mlx train` on the 30M model (synthetic preference pairs, batch 4, LoRA as
   above) as 1 process and as 2 ranks with the same global batch; median seconds per step from
   the time stamps of the training log (first steps, which compile, dropped).

On a 2-core machine the 2 ranks share the cores, so no speed-up is expected: the numbers show
what data parallelism costs, not what it gains on several machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

from bench_dpo_vs_mlx_lm_lora import LORA, SIZES, build_data, build_models  # noqa: E402

KEYS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]


def lora_grad_shapes(size: str) -> dict[str, tuple[int, int]]:
    hidden, layers, heads, kv, _ = SIZES[size]
    head_dim = hidden // heads
    out_dims = {"q": hidden, "k": kv * head_dim, "v": kv * head_dim, "o": hidden}
    shapes = {}
    for layer in range(layers):
        for key in KEYS:
            n_out = out_dims[key.split(".")[1][0]]
            n_in = hidden
            shapes[f"layers.{layer}.{key}.lora_a"] = (n_in, LORA["rank"])
            shapes[f"layers.{layer}.{key}.lora_b"] = (LORA["rank"], n_out)
    return shapes


def worker_all_sum(sizes: list[str], repeats: int) -> None:
    """Runs on every rank: time sum_gradients on LoRA-shaped gradients."""
    import mlx.core as mx
    from mlx.utils import tree_unflatten

    from clo_mlx import distributed

    n = distributed.size()
    out = {}
    for size in sizes:
        shapes = lora_grad_shapes(size)
        grad = tree_unflatten([(k, mx.random.normal(s)) for k, s in shapes.items()])
        mx.eval(grad)
        nbytes = sum(a * b * 4 for a, b in shapes.values())
        times = []
        for _ in range(repeats + 2):
            distributed.barrier()
            tic = time.perf_counter()
            mx.eval(distributed.sum_gradients(grad))
            times.append(time.perf_counter() - tic)
        out[size] = {
            "tensors": len(shapes),
            "grad_bytes": nbytes,
            "sent_bytes_per_rank": int(2 * (n - 1) / n * nbytes),
            "median_ms": 1000 * statistics.median(times[2:]),
        }
    if distributed.is_main():
        print("ALLSUM " + json.dumps(out), flush=True)


def launch(n: int, command: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    if n > 1:
        command = [sys.executable, "-m", "clo_mlx.launch", "--backend", "ring", "-n", str(n),
                   "--", *command]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def step_seconds(model: Path, data: Path, out: Path, n: int, iters: int, env: dict) -> dict:
    cfg = {
        "model": str(model),
        "data": str(data),
        "adapter_path": str(out),
        "cache_dir": str(out.parent / "cache"),
        "dtype": "float32",
        "loss": "dpo",
        "batch_size": 4,
        "iters": iters,
        "steps_per_report": 1,
        "steps_per_eval": 10_000,
        "save_every": 10_000,
        "learning_rate": 1e-5,
        "max_seq_length": 512,
        "lora_parameters": {**LORA, "keys": KEYS},
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(json.dumps(cfg))
    cmd = [sys.executable, "-c", "from cli.main import main; main()", "train", "-c", str(path)]
    tic = time.perf_counter()
    r = launch(n, cmd, env, timeout=1800)
    wall = time.perf_counter() - tic
    if r.returncode != 0:
        raise SystemExit(f"{n} rank(s) failed:\n{r.stderr[-3000:]}")
    reports = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    per_step = [1 / x["steps_per_second"] for x in reports if x["type"] == "train"]
    return {
        "ranks": n,
        "median_step_s": statistics.median(per_step[2:] or per_step),
        "steps": len(per_step),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="30m,105m")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--work", default=None, help="folder for models and data (default: temp)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = args.sizes.split(",")
    if args.worker:
        worker_all_sum(sizes, args.repeats)
        return

    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--sizes", args.sizes,
           "--repeats", str(args.repeats)]  # fmt: skip
    r = launch(2, cmd, env, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"all_sum worker failed:\n{r.stderr[-3000:]}")
    allsum = json.loads(next(x for x in r.stdout.splitlines() if x.startswith("ALLSUM "))[7:])
    print("all_sum of the LoRA gradients, 2 ranks, ring over 127.0.0.1 (once per optimizer update)")
    print(f"{'model':>6} {'tensors':>8} {'grad MiB':>9} {'sent MiB/rank':>14} {'median ms':>10}")
    for size, v in allsum.items():
        print(
            f"{size:>6} {v['tensors']:>8} {v['grad_bytes'] / 2**20:>9.2f} "
            f"{v['sent_bytes_per_rank'] / 2**20:>14.2f} {v['median_ms']:>10.2f}"
        )

    work = Path(args.work or tempfile.mkdtemp(prefix="clo-dist-bench-"))
    models = build_models(work, ["30m"])
    data = build_data(work, 64)
    print("\nclo-mlx train, 30M model, DPO, global batch 4 pairs (~160-token sequences)")
    print(f"{'ranks':>6} {'median s/step':>14} {'steps':>6} {'wall s':>7}")
    for n in (1, 2):
        res = step_seconds(models["30m"], data, work / f"run-{n}", n, args.iters, env)
        print(f"{n:>6} {res['median_step_s']:>14.3f} {res['steps']:>6} {res['wall_s']:>7}")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
