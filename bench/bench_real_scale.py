"""DPO at real model shapes: clo-mlx against mlx-lm-lora 5.10.2, under a memory cap.

    python bench/bench_real_scale.py --rows qwen0.5b,llama1b,qwen1.5b --cap-gb 16
    python bench/bench_real_scale.py --rows qwen0.5b --batch 2 --pairs 8 --cap-gb 15

Rows (random fp32 weights, the exact shapes of the public checkpoints, the real tokenizers):
- qwen0.5b: Qwen2.5-0.5B (hidden 896, 24 layers, 14 heads, 2 KV, intermediate 4864, vocab 151,936,
  tied, q/k/v bias), 494M parameters;
- qwen1.5b: Qwen2.5-1.5B (hidden 1536, 28 layers, 12 heads, 2 KV, intermediate 8960, tied), 1.54B;
- llama1b: Llama-3.2-1B (hidden 2048, 16 layers, 32 heads, 8 KV, intermediate 8192, vocab 128,256,
  tied, llama3 RoPE scaling), 1.24B.
The vocabularies come from ../shared/data/tokenizers (tests/real_models.py rebuilds the Hugging Face
tokenizers from them); a row whose tokenizer is absent is skipped with a message.

Data: `--pairs` preference rows with OASST-like lengths (prompt 50-90 tokens, responses 150-450),
the chosen response always the longer, sequence lengths spread apart: both tools then group the
same pairs into the same batches of `--batch` pairs (mlx-lm-lora sorts by chosen length, clo-mlx
by the longer of the two). Both tools' batch shuffles are replaced in their workers by the sorted
order (clo-mlx: batching.epoch_order; mlx-lm-lora: numpy.random.permutation, which 5.10.2 calls
once per step because it builds a fresh batch iterator every step and trains its first batch: the
k-th call is the identity rotated by k, so step k trains batch k - 1), so step i trains the same
pairs in both. Each worker prints the file rows of every step's batch ("STEP_ROWS"); the table
says whether the two tools' lists are identical. Each tool runs one epoch plus one step
(`--pairs / --batch + 1` steps); the first step (compilation, and the first batch) is not timed,
the others cover every batch once: "epoch s" is their sum, tokens/s is the epoch's tokens over it,
and clo-mlx's "first epoch incl. reference" adds its one-off reference pass (mlx-lm-lora runs its
reference model inside every step). The load average (1 minute) is sampled during each run.

Memory cap (the machine is shared): every worker runs under RLIMIT_AS = cap + 6 GB (virtual
address space that is never touched: thread stacks, malloc arenas, libraries) and a watchdog that
kills it as soon as its RSS passes the cap; either is reported as "OOM at <cap> GB", a result
row, and the benchmark goes on. A run starts only when the machine has cap + 1 GB available
(it waits up to 10 minutes, then skips the run with a message).

LoRA, optimiser, BLAS, malloc settings and the two mlx-lm-lora CPU workarounds are those of
bench_dpo_vs_mlx_lm_lora.py (this script reuses its workers). Only the standard library is
imported at the top: the peer's worker runs this file with the peer's Python.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import bench_dpo_vs_mlx_lm_lora as base  # noqa: E402

MAX_SEQ = 1024
GB = 1e9
ROWS = {
    # name: (family, arch, hidden, layers, heads, kv_heads, intermediate)
    "qwen0.5b": ("qwen2.5", "qwen2", 896, 24, 14, 2, 4864),
    "qwen1.5b": ("qwen2.5", "qwen2", 1536, 28, 12, 2, 8960),
    "llama1b": ("llama3", "llama", 2048, 16, 32, 8, 8192),
}
OOM_MARKS = ("std::bad_alloc", "MemoryError", "Cannot allocate memory", "out of memory")


def log(msg: str) -> None:
    print(f"[real-scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- workers


def worker_build(row: str, out: str) -> None:
    """The row's model folder: the family's tokenizer, its config, random fp32 weights."""
    import mlx.core as mx

    sys.path.insert(0, str(ROOT / "tests"))
    from real_models import FAMILIES, build_tokenizer

    from clo_mlx.tiny import model_config

    family, arch, hidden, layers, heads, kv, inter = ROWS[row]
    spec = FAMILIES[family]
    d = Path(out)
    build_tokenizer(family, d)
    config = model_config(
        arch,
        vocab_size=spec["config"]["vocab_size"],
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        intermediate_size=inter,
        tie_word_embeddings=True,
        max_position_embeddings=spec["config"]["max_position_embeddings"],
    )
    config.update({k: v for k, v in spec["config"].items() if k.endswith("_token_id")})
    config.update(spec["rope"], rms_norm_eps=spec["config"]["rms_norm_eps"])
    config.pop("pad_token_id", None)
    (d / "config.json").write_text(json.dumps(config, indent=2))
    # Tensor by tensor in MLX (fp32 directly): numpy's float64 draws would double the peak.
    h, hd = hidden, hidden // heads
    key = mx.random.key(0)
    shapes = {"model.embed_tokens.weight": (config["vocab_size"], h), "model.norm.weight": (h,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (heads * hd, h),
            p + "self_attn.k_proj.weight": (kv * hd, h),
            p + "self_attn.v_proj.weight": (kv * hd, h),
            p + "self_attn.o_proj.weight": (h, heads * hd),
            p + "mlp.gate_proj.weight": (inter, h),
            p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        })  # fmt: skip
        if arch == "qwen2":
            shapes.update({p + "self_attn.q_proj.bias": (heads * hd,),
                           p + "self_attn.k_proj.bias": (kv * hd,),
                           p + "self_attn.v_proj.bias": (kv * hd,)})  # fmt: skip
    weights = {}
    for name, shape in shapes.items():
        key, sub = mx.random.split(key)
        w = mx.random.normal(shape, key=sub) * 0.02
        weights[name] = w + 1.0 if "norm" in name else w
        mx.eval(weights[name])
    mx.save_safetensors(str(d / "model.tmp.safetensors"), weights, metadata={"format": "pt"})
    os.replace(d / "model.tmp.safetensors", d / "model.safetensors")
    n = sum(w.size for w in weights.values())
    base._emit("RESULT", {"params": n})


def worker_measure(cap_gb: float, cmd: list[str]) -> int:
    """Run `cmd` under the memory cap; report its peak RSS and whether the cap stopped it."""
    cap = int(cap_gb * GB)

    def limit() -> None:
        soft = cap + int(6 * GB)
        resource.setrlimit(resource.RLIMIT_AS, (soft, soft))

    proc = subprocess.Popen(cmd, preexec_fn=limit)
    status, peak, killed = Path(f"/proc/{proc.pid}/status"), 0, False
    loads, polls = [], 0
    while proc.poll() is None:
        if polls % 50 == 0:  # every ~5 s
            loads.append(os.getloadavg()[0])
        polls += 1
        try:
            rss = next(
                int(line.split()[1]) * 1024
                for line in status.read_text().splitlines()
                if line.startswith("VmRSS:")
            )
        except (OSError, StopIteration):
            rss = 0
        peak = max(peak, rss)
        if rss > cap and not killed:
            killed = True
            proc.send_signal(signal.SIGKILL)
        time.sleep(0.1)
    kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    base._emit(
        "RUSAGE",
        {
            "maxrss_mb": max(kb / 1024, peak / 2**20),
            "returncode": proc.returncode,
            "capped": killed,
            "load": loads,
        },
    )
    return 0


def _sorted_order_clo() -> None:
    """Batches in sorted order; print each step's file rows."""
    import clo_mlx.batching as batching
    import clo_mlx.trainer as trainer

    def sorted_order(n_batches: int, seed: int, epoch: int) -> list[int]:
        return list(range(n_batches))

    batching.epoch_order = sorted_order
    stream = trainer.batch_stream

    def recorded(data, *args, **kwargs):
        for idx in stream(data, *args, **kwargs):
            base._emit("STEP_ROWS", sorted(data.encoded[i].pair.row for i in idx))
            yield idx

    trainer.batch_stream = recorded


def rotating_permutation(permutation):
    """numpy.random.permutation for mlx-lm-lora 5.10.2: its DPO loop builds a fresh batch iterator
    every step and trains that iterator's first batch, so the k-th call (k = 0, 1, ...) returns
    the identity rotated by k: step k + 1 trains sorted batch k (mod the number of batches)."""
    calls = [0]

    def rotated(x):
        if not isinstance(x, int):
            return permutation(x)
        import numpy as np

        k = calls[0] % max(x, 1)
        calls[0] += 1
        return np.roll(np.arange(x), -k)

    return rotated


class _RecordedRows:
    """A dataset that remembers which rows were read (mlx-lm-lora's batches index the file rows)."""

    def __init__(self, data):
        self.data, self.seen = data, []

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        self.seen.append(int(i))
        return self.data[i]


def _sorted_order_peer() -> None:
    """Batches in sorted order; print each training step's file rows."""
    import numpy as np

    np.random.permutation = rotating_permutation(np.random.permutation)
    import mlx_lm_lora.trainer.dpo_trainer as dpo

    batches = dpo.iterate_dpo_batches

    def recorded(dataset, batch_size, max_seq_length, train=False):
        if not train:
            yield from batches(dataset, batch_size, max_seq_length, train)
            return
        rows = _RecordedRows(dataset)
        for batch in batches(rows, batch_size, max_seq_length, train):
            base._emit("STEP_ROWS", sorted(rows.seen[-batch_size:]))  # the batch's reads
            rows.seen.clear()
            yield batch

    dpo.iterate_dpo_batches = recorded


# ----------------------------------------------------------------------------- data


SYLLABLES = base.SYLLABLES


def build_data(model_dir: Path, out: Path, n_pairs: int, seed: int = 1) -> Path:
    """OASST-like rows: prompt 50-90, rejected 150-440, chosen longer (by >= 10) up to 450 tokens;
    the chosen responses' lengths spread apart (>= 12 tokens) so the sort order is robust."""
    from transformers import AutoTokenizer

    if (out / "train.jsonl").exists():
        return out
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    rng = random.Random(seed)
    lexicon = base.synthetic_words(rng, 5000)

    def text(n_tokens: int) -> str:
        words: list[str] = []
        while len(tok.encode(" ".join(words), add_special_tokens=False)) < n_tokens:
            words += rng.choices(lexicon, k=max(1, (n_tokens - len(words)) // 4))
        while len(tok.encode(" ".join(words), add_special_tokens=False)) > n_tokens:
            words.pop()
        return " ".join(words)

    span = (450 - 160) / max(1, n_pairs - 1)
    chosen = [160 + round(i * span) for i in range(n_pairs)]
    rng.shuffle(chosen)
    rows = []
    for c in chosen:
        rows.append({
            "prompt": text(rng.randint(50, 90)),
            "chosen": text(c),
            "rejected": text(rng.randint(150, max(150, c - 10))),
        })  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "train.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, out / "train.jsonl")
    return out


def data_stats(model_dir: Path, data: Path, batch: int) -> dict:
    """Tokens per pair and the batches both tools form (sorted by chosen sequence length)."""
    from transformers import AutoTokenizer

    from clo_mlx.batching import length_sorted_batches
    from clo_mlx.tokens import encode_pair

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    ch = [encode_pair(tok, r["prompt"], r["chosen"]) for r in rows]
    rj = [encode_pair(tok, r["prompt"], r["rejected"]) for r in rows]
    lc, lr = [len(c[0]) for c in ch], [len(r[0]) for r in rj]
    clo = length_sorted_batches([max(a, b) for a, b in zip(lc, lr, strict=True)], batch)
    order = sorted(range(len(rows)), key=lambda i: lc[i])
    peer = [order[i : i + batch] for i in range(0, len(order), batch)]
    return {
        "pairs": len(rows),
        "prompt": statistics.mean(c[1] for c in ch),
        "seq_min": min(lc + lr),
        "seq_max": max(lc + lr),
        "tokens": sum(lc) + sum(lr),
        "batch_tokens": [sum(lc[i] + lr[i] for i in b) for b in clo],
        "same_batches": [sorted(b) for b in clo] == [sorted(b) for b in peer],
        "batches": [sorted(b) for b in clo],
    }


def same_steps(a: list[list[int]] | None, b: list[list[int]] | None) -> bool | None:
    """Whether two tools trained the same rows at every step both ran (None: nothing to compare)."""
    n = min(len(a or []), len(b or []))
    if n == 0:
        return None
    return all(sorted(x) == sorted(y) for x, y in zip(a[:n], b[:n], strict=True))


# ----------------------------------------------------------------------------- running


def available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / GB
    return float("inf")


def wait_for_memory(need_gb: float, max_wait: int = 600) -> bool:
    t0 = time.time()
    while available_gb() < need_gb:
        if time.time() - t0 > max_wait:
            return False
        log(f"waiting: {available_gb():.1f} GB available, need {need_gb:.1f}")
        time.sleep(20)
    return True


def run_capped(cmd: list[str], env: dict, log_file: Path, cap_gb: float, timeout: int) -> dict:
    """One worker under the cap: its RESULT (or {"oom": True}) plus rss_mb and wall_s."""
    launcher = [sys.executable, str(Path(__file__).resolve()), "_measure", str(cap_gb), "--", *cmd]
    t = time.perf_counter()
    with open(log_file, "w") as f:
        try:
            proc = subprocess.run(
                launcher, env=env, stdout=subprocess.PIPE, stderr=f, text=True, timeout=timeout
            )
            stdout = proc.stdout
        except subprocess.TimeoutExpired as e:
            stdout = e.stdout or ""
            stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
            return {"timeout": True, "wall_s": time.perf_counter() - t, "rss_mb": float("nan")}
    result, rusage, step_rows = {}, {}, []
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
        elif line.startswith("RUSAGE "):
            rusage = json.loads(line[7:])
        elif line.startswith("STEP_ROWS "):
            step_rows.append(json.loads(line[10:]))
    result["step_rows"] = step_rows
    result["load"] = rusage.get("load", [])
    result["rss_mb"] = rusage.get("maxrss_mb", float("nan"))
    result["wall_s"] = time.perf_counter() - t
    text = log_file.read_text(errors="replace")
    if said := [line for line in text.splitlines() if line.startswith("memory: ")]:
        result["memory_line"] = said[0]  # clo-mlx's memory_budget_gb choice
    if rusage.get("capped") or (rusage.get("returncode") and any(m in text for m in OOM_MARKS)):
        result["oom"] = True
    elif rusage.get("returncode") or "stamps" not in result and "params" not in result:
        tail = "".join(text.splitlines(True)[-25:])
        result["error"] = f"exit {rusage.get('returncode')} (log {log_file}):\n{tail}"
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="qwen0.5b,llama1b,qwen1.5b", help=f"of {sorted(ROWS)}")
    ap.add_argument("--tools", default="mlx-lm-lora,clo-mlx", help="mlx-lm-lora, clo-mlx")
    ap.add_argument(
        "--pairs", type=int, default=12, help="preference pairs (a multiple of --batch)"
    )
    ap.add_argument("--batch", type=int, default=4, help="pairs per step, both tools")
    ap.add_argument("--cap-gb", type=float, default=16.0, help="memory cap per run (RSS)")
    ap.add_argument(
        "--clo-budget-gb", type=float, help="clo-mlx's memory_budget_gb (default: the machine's)"
    )
    ap.add_argument("--work", default=str(HERE / ".work-real"), help="models, data, logs")
    ap.add_argument("--peer-venv", default=str(HERE / ".venv-peer"))
    ap.add_argument("--clo-venv", default=str(HERE / ".venv-clo"), help="'' = this Python")
    ap.add_argument("--json", help="also write all results to this JSON file")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per run")
    a = ap.parse_args()
    rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    tools = [t.strip() for t in a.tools.split(",") if t.strip()]
    if bad := [r for r in rows if r not in ROWS]:
        ap.error(f"unknown rows {bad}; choose from {sorted(ROWS)}")
    if a.batch < 1 or a.pairs < a.batch or a.pairs % a.batch:
        ap.error(f"--pairs ({a.pairs}) must be a positive multiple of --batch ({a.batch})")
    sys.path.insert(0, str(ROOT / "tests"))
    from real_models import FAMILIES, SHARED_TOKENIZERS

    work = Path(a.work)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    from clo_mlx.blas import fast_blas_env

    env = fast_blas_env()
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["TOKENIZERS_PARALLELISM"] = "false"
    if a.clo_budget_gb:
        env["BENCH_MEMORY_BUDGET_GB"] = str(a.clo_budget_gb)
    peer_python = base.ensure_peer_venv(Path(a.peer_venv)) if "mlx-lm-lora" in tools else None
    clo_python = str(base.ensure_clo_venv(Path(a.clo_venv))) if a.clo_venv else sys.executable
    me = str(Path(__file__).resolve())
    iters = a.pairs // a.batch + 1
    results: dict = {
        "cap_gb": a.cap_gb,
        "iters": iters,
        "batch": a.batch,
        "rows": {},
        "budget": a.clo_budget_gb,
    }
    for row in rows:
        family = ROWS[row][0]
        if not (SHARED_TOKENIZERS / FAMILIES[family]["tokenizer"]).is_file():
            log(f"{row}: skipped, the {family} tokenizer is not in {SHARED_TOKENIZERS}")
            results["rows"][row] = {"skipped": f"no {FAMILIES[family]['tokenizer']}"}
            continue
        model = work / row
        if not (model / "model.safetensors").exists():
            log(f"{row}: building random weights ...")
            r = run_capped([sys.executable, me, "_build", row, str(model)], env,
                           work / "logs" / f"build-{row}.log", a.cap_gb, a.timeout)  # fmt: skip
            if "params" not in r:
                sys.exit(f"building {row} failed: {r}")
        data = build_data(model, work / f"data-{family}-{a.pairs}", a.pairs)
        st = data_stats(model, data, a.batch)
        log(f"{row}: {st}")
        out = {"stats": st}
        for tool in tools:
            run_dir = work / "runs" / f"{tool}-{row}-b{a.batch}"
            subprocess.run(["rm", "-rf", str(run_dir)], check=True)
            run_dir.mkdir(parents=True)
            args = [str(model), str(data), str(run_dir), str(iters), str(a.batch)]
            if tool == "clo-mlx":
                cmd = [clo_python, me, "_clo", *args]
            else:
                cmd = [str(peer_python), me, "_peer", *args]
            if not wait_for_memory(a.cap_gb + 1):
                log(f"{tool} {row}: skipped, less than {a.cap_gb + 1:.0f} GB available")
                out[tool] = {"skipped": "machine memory"}
                continue
            log(f"{tool} {row}: running ({available_gb():.1f} GB available) ...")
            log_file = work / "logs" / f"{tool}-{row}-b{a.batch}.log"
            r = run_capped(cmd, env, log_file, a.cap_gb, a.timeout)
            if "stamps" in r:
                r["step_s"] = base.step_times(r["stamps"], 1)
            log(f"  {summary_line(r, st, a.cap_gb)}")
            if "memory_line" in r:
                log(f"  {r['memory_line']}")
            out[tool] = r
            out["same_steps"] = same_steps(
                out.get("clo-mlx", {}).get("step_rows"), out.get("mlx-lm-lora", {}).get("step_rows")
            )
            results["rows"][row] = out
            if a.json:
                Path(a.json).write_text(json.dumps(results, indent=1, default=str))
        results["rows"][row] = out
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1, default=str))
    print(table(results))


def gb(rss_mb: float) -> float:
    return rss_mb * 2**20 / GB


def load_text(loads: list[float]) -> str:
    if not loads:
        return "-"
    return f"{statistics.median(loads):.1f} ({min(loads):.1f}-{max(loads):.1f})"


def summary_line(r: dict, st: dict, cap: float) -> str:
    load = f", load {load_text(r.get('load', []))}"
    if r.get("oom"):
        return (
            f"OOM at {cap:g} GB (RSS reached {gb(r['rss_mb']):.1f} GB, {r['wall_s']:.0f} s, "
            f"{len(r.get('step_rows', []))} batches drawn{load})"
        )
    if "error" in r or "timeout" in r:
        return f"failed: {r.get('error', 'timeout')}"
    epoch = sum(r["step_s"])
    return (
        f"steps {[round(x, 1) for x in r['step_s']]} s, epoch {epoch:.0f} s, "
        f"{st['tokens'] / epoch:.0f} tok/s, RSS {gb(r['rss_mb']):.2f} GB, "
        f"MLX peak {r.get('mx_peak_gb', float('nan')):.2f} GB"
        + (f", reference pass {r['prepare_s']:.0f} s" if "prepare_s" in r else "")
        + load
        + f", step rows {r.get('step_rows')}"
    )


def ratios(out: dict) -> str | None:
    """clo-mlx against mlx-lm-lora: tokens/s, peak RSS, first epoch, reference pass per batch."""
    clo, peer = out.get("clo-mlx", {}), out.get("mlx-lm-lora", {})
    if "step_s" not in clo:
        return None
    n_batches = len(out["stats"]["batches"])
    ref_batch = clo.get("prepare_s", float("nan")) / n_batches / statistics.median(clo["step_s"])
    parts = [f"reference pass per batch / clo-mlx step {ref_batch:.2f}"]
    if "step_s" in peer:
        clo_epoch, peer_epoch = sum(clo["step_s"]), sum(peer["step_s"])
        first = clo_epoch + clo.get("prepare_s", 0)
        parts = [
            f"tokens/s {peer_epoch / clo_epoch:.2f}x",
            f"peak RSS {clo['rss_mb'] / peer['rss_mb']:.2f}x",
            f"first epoch incl. reference {peer_epoch / first:.2f}x as fast",
            *parts,
        ]
    return "; ".join(parts)


def table(results: dict) -> str:
    cap, batch = results["cap_gb"], results.get("batch", 4)
    lines = [
        f"Cap {cap:g} GB RSS per run; {results['iters']} steps per run, the first not timed; "
        f"batch {batch} pairs, LoRA r8 on q/k/v/o, fp32"
        + (f"; clo-mlx memory_budget_gb {results['budget']:g}." if results.get("budget") else "."),
        "",
        "| model | tool | s/it per step | median s/it | epoch s (training) | tokens/s | ref pass s |"
        " first epoch incl. ref s | peak RSS GB | MLX peak GB | load avg (median, range) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, out in results["rows"].items():
        if "skipped" in out:
            lines.append(f"| {row} | - | skipped: {out['skipped']} |||||||||")
            continue
        st = out["stats"]
        for tool in ("mlx-lm-lora", "clo-mlx"):
            r = out.get(tool)
            if r is None:
                continue
            load = load_text(r.get("load", []))
            if r.get("oom"):
                lines.append(f"| {row} | {tool} | OOM at {cap:g} GB |||||||"
                             f" > {cap:g} (killed) | | {load} |")  # fmt: skip
                continue
            if "step_s" not in r:
                lines.append(f"| {row} | {tool} | failed ||||||||| {load} |")
                continue
            epoch = sum(r["step_s"])
            ref = r.get("prepare_s")
            first = epoch + (ref or 0)
            lines.append(
                f"| {row} | {tool} | {', '.join(f'{x:.1f}' for x in r['step_s'])} | "
                f"{statistics.median(r['step_s']):.1f} | {epoch:.0f} | "
                f"{st['tokens'] / epoch:.0f} | {'-' if ref is None else f'{ref:.0f}'} | "
                f"{first:.0f} | {gb(r['rss_mb']):.2f} | {r.get('mx_peak_gb', float('nan')):.2f} |"
                f" {load} |"
            )
    for row, out in results["rows"].items():
        if "stats" in out:
            st = out["stats"]
            lines.append(
                f"{row}: {st['pairs']} pairs, {st['tokens']:,} sequence tokens (chosen + rejected),"
                f" sequences {st['seq_min']}-{st['seq_max']} tokens, mean prompt "
                f"{st['prompt']:.0f}; both tools' batches identical: {st['same_batches']}; "
                f"per-step rows identical: {out.get('same_steps')}"
            )
            if r := ratios(out):
                lines.append(f"{row} clo-mlx vs mlx-lm-lora: {r}")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        cmd, rest = sys.argv[1], sys.argv[2:]
        if cmd == "_measure":
            sys.exit(worker_measure(float(rest[0]), rest[2:] if rest[1:2] == ["--"] else rest[1:]))
        base.MAX_SEQ = MAX_SEQ
        if cmd == "_build":
            worker_build(rest[0], rest[1])
        elif cmd == "_clo":
            base.BATCH = int(rest[4])
            _sorted_order_clo()
            base.worker_clo(rest[0], rest[1], rest[2], int(rest[3]), False, None)
        elif cmd == "_peer":
            base.BATCH = int(rest[4])
            _sorted_order_peer()
            base.worker_peer(rest[0], rest[1], rest[2], int(rest[3]))
        else:
            sys.exit(f"unknown worker {cmd}")
    else:
        main()
