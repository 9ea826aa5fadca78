"""DPO training speed and memory: clo-mlx against mlx-lm-lora 5.10.2 on the same models and data.

    python bench/bench_dpo_vs_mlx_lm_lora.py                 # everything (about 10-20 min on 2 cores)
    python bench/bench_dpo_vs_mlx_lm_lora.py --sizes 30m --iters 8 --no-vocab   # quicker

What it does (run it with the project's virtual environment; the table is printed last):
- installs mlx-lm-lora==5.10.2 (with the same mlx and mlx-lm versions as here) in its own virtual
  environment, bench/.venv-peer (git-ignored);
- builds tiny random fp32 Llama models of about 30M and 105M parameters with an 8k byte-level BPE
  vocabulary (clo_mlx.tiny pieces) and synthetic preference pairs (prompt ~40 tokens, chosen and
  rejected responses 110-120 tokens), in one data folder that both tools read;
- trains LoRA rank 8, scale 10, on q/k/v/o of every layer, batch 4 pairs, Adam lr 1e-5, with both
  tools in separate subprocesses under the same BLAS (clo_mlx.blas picks and preloads OpenBLAS)
  and the same glibc malloc settings;
- reports median seconds per iteration (warm-up iterations dropped), sequence tokens per second,
  peak RSS of each run's process (getrusage RUSAGE_CHILDREN of a launcher that runs only it), and
  achieved GFLOP/s against the fp32 matmul ceiling measured in the same run;
- with a Qwen2.5-sized vocabulary (151,936), the peak memory of one LoRA step's log-prob pass with
  a naive full log-softmax, with clo-mlx's log-probs over full logits, and with its chunked head.

Token count: per pair, len(chosen sequence) + len(rejected sequence), both the full chat-template
sequence (the prompt counts twice, since both tools run it twice); padding is not counted.

mlx-lm-lora 5.10.2 needs two workarounds on a Linux CPU, applied here in its worker (its files are
not changed): `mx.device_info()` has no `max_recommended_working_set_size` (it would raise KeyError
before step 1), and its config drops `lora_parameters.keys` (it would adapt all 7 linear layers);
the keys are passed through so both tools train the same parameters.

Only the standard library is imported at the top: the peer's worker runs this file with the
peer's Python.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEER_VERSION = "5.10.2"
KEYS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
LORA = {"rank": 8, "scale": 10.0, "dropout": 0.0}
BATCH = 4
LR = 1e-5
MAX_SEQ = 512
SIZES = {
    # name: (hidden, layers, heads, kv_heads, intermediate)
    "30m": (512, 8, 8, 8, 1024),
    "105m": (768, 12, 12, 12, 2304),
}
VOCAB = 8192
BIG_VOCAB = 151_936  # Qwen2.5


# ----------------------------------------------------------------------------- workers


def _emit(tag: str, obj) -> None:
    print(f"{tag} {json.dumps(obj)}", flush=True)


def worker_measure(cmd: list[str]) -> int:
    """Run `cmd` as this process's only child; report its peak RSS."""
    import resource

    proc = subprocess.run(cmd)
    kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    _emit("RUSAGE", {"maxrss_mb": kb / 1024, "returncode": proc.returncode})
    return proc.returncode


def worker_ceiling(repeats: int) -> None:
    import mlx.core as mx

    from clo_mlx.blas import active_blas, matmul_gflops

    out = {"blas": active_blas(), "device": str(mx.default_device())}
    for n in (1024, 2048):
        runs = [matmul_gflops(n, "float32", repeats=3) for _ in range(repeats)]
        out[f"fp32_{n}"] = statistics.median(runs)
        out[f"fp32_{n}_runs"] = runs
    _emit("RESULT", out)


def worker_peer(model: str, data: str, out_dir: str, iters: int) -> None:
    """mlx-lm-lora's own DPO training (train.run) with the two Linux-CPU workarounds."""
    import mlx.core as mx

    device_info = mx.device_info

    def patched_device_info():
        info = dict(device_info())
        info.setdefault("max_recommended_working_set_size", 0)
        return info

    mx.device_info = patched_device_info

    import mlx_lm_lora.train as peer_train
    import mlx_lm_lora.utils as peer_utils

    to_lora = peer_utils.linear_to_lora_layers

    def with_keys(model, num_layers, config, use_dora=False):
        return to_lora(model, num_layers, {**config, "keys": KEYS}, use_dora=use_dora)

    peer_utils.linear_to_lora_layers = with_keys

    from mlx_lm.tuner.callbacks import TrainingCallback

    stamps: list[float] = []
    losses: list[float] = []

    class Clock(TrainingCallback):
        def on_train_loss_report(self, info):
            stamps.append(time.perf_counter())
            losses.append(float(info["train_loss"]))

    args = vars(peer_train.build_parser().parse_args([]))
    args.update(
        model=model,
        data=data,
        train=True,
        train_mode="dpo",
        train_type="lora",
        batch_size=BATCH,
        iters=iters,
        learning_rate=LR,
        steps_per_report=1,
        steps_per_eval=10**9,
        save_every=10**9,
        adapter_path=out_dir,
        max_seq_length=MAX_SEQ,
        lora_parameters=dict(LORA),
        fuse=False,
        num_layers=-1,
        seed=0,
    )
    for k, v in peer_train.CONFIG_DEFAULTS.items():
        if args.get(k) is None:
            args[k] = v
    ns = argparse.Namespace(**args)
    t0 = time.perf_counter()
    peer_train.run(ns, training_callback=Clock())
    total = time.perf_counter() - t0
    adapters = mx.load(str(Path(out_dir) / "adapters.safetensors"))
    _emit(
        "RESULT",
        {
            "stamps": stamps,
            "losses": losses,
            "total_s": total,
            "mx_peak_gb": mx.get_peak_memory() / 1e9,
            "trainable": int(sum(v.size for v in adapters.values())),
            "adapted": sorted({k.rsplit(".", 1)[0].split(".", 3)[-1] for k in adapters}),
        },
    )


def worker_clo(
    model: str, data: str, out_dir: str, iters: int, grad_checkpoint: bool, micro: int | None
) -> None:
    """clo-mlx's own training path (prepare -> reference log-probs -> adapters -> train)."""
    import mlx.core as mx
    from rich.console import Console

    from clo_mlx.config import build_config
    from clo_mlx.models import load_model
    from clo_mlx.run import prepare, train_model

    cfg = build_config(
        overrides=dict(
            model=model,
            data=data,
            loss="dpo",
            batch_size=BATCH,
            iters=iters,
            learning_rate=LR,
            steps_per_report=1,
            steps_per_eval=10**9,
            save_every=10**9,
            adapter_path=out_dir,
            max_seq_length=MAX_SEQ,
            lora_parameters={**LORA, "keys": KEYS},
            cache_dir=str(Path(out_dir) / "cache"),
            dtype="float32",
            seed=0,
            grad_checkpoint=grad_checkpoint or None,  # None: memory_budget_gb decides
            **({"micro_batch_size": micro} if micro else {}),
            **(
                {"memory_budget_gb": float(os.environ["BENCH_MEMORY_BUDGET_GB"])}
                if os.environ.get("BENCH_MEMORY_BUDGET_GB")
                else {}
            ),
        )
    )
    if os.environ.get("BENCH_PAD_TO"):  # evaluates a bucket size other than the core's
        import clo_mlx.batching as batching

        pad = int(os.environ["BENCH_PAD_TO"])
        batching.bucket_length.__defaults__ = (pad,)
        batching.collate.__defaults__ = (pad,)
    console = Console(stderr=True)
    t0 = time.perf_counter()
    model_, tokenizer = load_model(model, dtype="float32")
    t_load = time.perf_counter() - t0
    prep = prepare(cfg, model=model_, tokenizer=tokenizer, console=console)
    t_ref = time.perf_counter() - t0 - t_load  # encoding + reference log-probs (incl. compile)
    stamps: list[float] = []
    losses: list[float] = []

    class Clock:  # an mlx-lm TrainingCallback
        def on_train_loss_report(self, info):
            stamps.append(time.perf_counter())
            losses.append(float(info["loss"]))

    t1 = time.perf_counter()
    train_model(cfg, prep, console, callbacks=[Clock()])
    adapters = mx.load(str(Path(out_dir) / "adapters.safetensors"))
    _emit(
        "RESULT",
        {
            "stamps": stamps,
            "losses": losses,
            "total_s": time.perf_counter() - t0,
            "prepare_s": t_ref,
            "load_s": t_load,
            "mx_peak_gb": mx.get_peak_memory() / 1e9,
            "train_start": t1,
            "pairs": len(prep.train),
            "trainable": int(sum(v.size for v in adapters.values())),
            "adapted": sorted({k.rsplit(".", 1)[0].split(".", 3)[-1] for k in adapters}),
        },
    )


def worker_vocab(variant: str, seq_len: int) -> None:
    """Peak memory of one LoRA value-and-grad step of the response log-probs, 151,936 vocab."""
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np
    from mlx_lm.models.qwen2 import Model, ModelArgs

    from clo_mlx.adapters import apply_trainable
    from clo_mlx.batching import response_start
    from clo_mlx.config import TrainConfig
    from clo_mlx.logprobs import sequence_logps

    mx.random.seed(0)
    args = ModelArgs(
        model_type="qwen2",
        hidden_size=896,
        num_hidden_layers=2,
        intermediate_size=4864,
        num_attention_heads=14,
        num_key_value_heads=2,
        rms_norm_eps=1e-6,
        vocab_size=BIG_VOCAB,
        tie_word_embeddings=True,
    )
    model = Model(args)
    mx.eval(model.parameters())
    apply_trainable(model, TrainConfig(lora_parameters={**LORA, "keys": KEYS}))
    rows = 2 * BATCH  # chosen and rejected of 4 pairs
    tokens = mx.random.randint(0, BIG_VOCAB, (rows, seq_len + 1))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    prompt = round(seq_len * 54 / 172)  # the prompt share of the training benchmark's pairs
    mask = (mx.arange(seq_len)[None] >= prompt).astype(mx.float32) * mx.ones((rows, 1))

    def naive(model):
        logp = nn.log_softmax(model(inputs).astype(mx.float32), axis=-1)  # [B, L, V]
        picked = mx.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        return -(picked * mask).sum()

    def clo(chunk, start=0):
        def loss(model):
            logps, _ = sequence_logps(model, inputs, targets, mask, chunk, start=start)
            return -logps.sum()

        return loss

    fn = {
        "naive": naive,
        "full": clo(0),
        "chunked": clo(None),
        "skip": clo(None, response_start(np.array(mask))),
    }[variant]
    step = nn.value_and_grad(model, fn)
    mx.eval(inputs, targets, mask)
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    times, values = [], []
    for _ in range(2):
        t = time.perf_counter()
        value, grads = step(model)
        mx.eval(value, grads)
        times.append(time.perf_counter() - t)
        values.append(value.item())
    _emit(
        "RESULT",
        {
            "variant": variant,
            "peak_gb": mx.get_peak_memory() / 1e9,
            "weights_gb": base / 1e9,
            "time_s": min(times),
            "loss": values[-1],
        },
    )


# ----------------------------------------------------------------------------- setup


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_peer_venv(venv: Path) -> Path:
    """A virtual environment with mlx-lm-lora==5.10.2 and this environment's mlx / mlx-lm."""
    from importlib.metadata import version

    python = venv / "bin" / "python"
    probe = "import importlib.metadata as m; print(m.version('mlx-lm-lora'), m.version('mlx'))"
    want = f"{PEER_VERSION} {version('mlx')}"
    if python.exists():
        got = subprocess.run([python, "-c", probe], capture_output=True, text=True).stdout.strip()
        if got == want:
            return python
    log(f"installing mlx-lm-lora=={PEER_VERSION} into {venv} ...")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pins = [f"mlx-lm-lora=={PEER_VERSION}", f"mlx-lm=={version('mlx-lm')}"]
    pins.append(
        f"mlx[cpu]=={version('mlx')}" if sys.platform == "linux" else f"mlx=={version('mlx')}"
    )
    subprocess.run([python, "-m", "pip", "install", "-q", *pins], check=True)
    return python


def ensure_clo_venv(venv: Path) -> Path:
    """A virtual environment with only clo-mlx and its own dependencies (`pip install -e .`, no
    test extra: torch there would add ~225 MB to every process that imports transformers)."""
    python = venv / "bin" / "python"
    probe = "import clo_mlx, mlx_lm; print(clo_mlx.__file__)"
    if python.exists():
        got = subprocess.run([python, "-c", probe], capture_output=True, text=True).stdout.strip()
        if got.startswith(str(ROOT)):
            return python
    log(f"installing clo-mlx (editable, no extras) into {venv} ...")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "-e", str(ROOT)], check=True)
    return python


SYLLABLES = (
    "ka ki ku ke ko ma mi mu me mo na ni nu ne no ta ti tu te to ra ri ru re ro sa si su se so "
    "la li lu le lo ba bi bu be bo da di du de do ga gi gu ge go pa pi pu pe po wa we wi ya yo "
    "zan tor mel vin qua shi cha dro ple str ght ion ent ous ard"
).split()


def synthetic_words(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(n)]


def build_models(work: Path, sizes: list[str]) -> dict[str, Path]:
    """Tokenizer (8k BPE on synthetic text) and random fp32 Llama models; reused when present."""
    from clo_mlx.tiny import model_config, random_weights, save_weights, train_tokenizer

    rng = random.Random(0)
    tok_dir = work / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        lexicon = synthetic_words(rng, 30000)
        texts = [" ".join(rng.choices(lexicon, k=60)) + "." for _ in range(4000)]
        train_tokenizer(texts, VOCAB, tok_dir)
        (tok_dir / "lexicon.json").write_text(json.dumps(lexicon))
    tok = json.loads((tok_dir / "tokenizer.json").read_text())
    vocab = len(tok["model"]["vocab"]) + sum(
        1 for t in tok["added_tokens"] if t["content"] not in tok["model"]["vocab"]
    )
    ids = {t["content"]: t["id"] for t in tok["added_tokens"]}
    out = {}
    for name in sizes:
        hidden, layers, heads, kv, inter = SIZES[name]
        d = work / f"llama-{name}"
        if not (d / "model.safetensors").exists():
            d.mkdir(parents=True, exist_ok=True)
            for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                shutil.copy(tok_dir / f, d / f)
            config = model_config(
                "llama",
                vocab_size=vocab,
                hidden_size=hidden,
                num_layers=layers,
                num_heads=heads,
                num_kv_heads=kv,
                intermediate_size=inter,
            )
            config["eos_token_id"] = ids["<|im_end|>"]
            config["pad_token_id"] = ids["<|endoftext|>"]
            (d / "config.json").write_text(json.dumps(config, indent=2))
            save_weights(random_weights(config, seed=0), d / "model.tmp.safetensors")
            os.replace(d / "model.tmp.safetensors", d / "model.safetensors")
        out[name] = d
    return out


def build_data(work: Path, n_pairs: int) -> Path:
    """`n_pairs` preference rows {prompt, chosen, rejected}: ~40 / 110-120 / 110-120 tokens."""
    from tokenizers import Tokenizer

    data = work / f"data-{n_pairs}"
    if (data / "train.jsonl").exists():
        return data
    tok = Tokenizer.from_file(str(work / "tokenizer" / "tokenizer.json"))
    lexicon = json.loads((work / "tokenizer" / "lexicon.json").read_text())
    rng = random.Random(1)

    def text(lo: int, hi: int) -> str:
        target = rng.randint(lo, hi)
        words: list[str] = []
        while True:
            cand = " ".join([*words, rng.choice(lexicon)])
            n = len(tok.encode(cand).ids)
            if n > hi:
                continue
            words = cand.split(" ")
            if n >= target:
                return cand

    rows = [
        {"prompt": text(38, 42), "chosen": text(110, 120), "rejected": text(110, 120)}
        for _ in range(n_pairs)
    ]
    data.mkdir(parents=True, exist_ok=True)
    tmp = data / "train.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, data / "train.jsonl")
    return data


def token_stats(model_dir: Path, data: Path, micro_sizes: list[int | None]) -> dict:
    """Sequence lengths under the shared token convention, and the passes each tool runs.

    Passes of a step, as (sequences, padded length, first position of the output head):
    mlx-lm-lora pads chosen and rejected of 4 pairs to the longest of the group; clo-mlx splits a
    batch into micro-batches (automatic, or `micro_batch_size`), each padded to its own length
    bucket, and starts the head at batching.response_start.
    """
    import numpy as np
    from transformers import AutoTokenizer

    from clo_mlx.batching import (
        AUTO_MICRO_BATCH_TOKENS,
        bucket_length,
        collate,
        length_sorted_batches,
        response_start,
    )
    from clo_mlx.tokens import encode_pair

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    ch = [encode_pair(tok, r["prompt"], r["chosen"]) for r in rows]
    rj = [encode_pair(tok, r["prompt"], r["rejected"]) for r in rows]
    lc, lr = [len(c[0]) for c in ch], [len(r[0]) for r in rj]
    # mlx-lm-lora: groups of 4 sorted by chosen length, both padded to max(chosen, rejected).
    order = sorted(range(len(rows)), key=lambda i: lc[i])
    groups = [order[i : i + BATCH] for i in range(0, len(order) - BATCH + 1, BATCH)]
    peer_pad = [max(max(lc[i], lr[i]) for i in g) - 1 for g in groups]  # the model sees x[:-1]
    # clo-mlx: batches of whole units sorted by max(chosen, rejected), as the trainer builds them.
    lens = [max(a, b) for a, b in zip(lc, lr, strict=True)]
    batches = length_sorted_batches(lens, BATCH, full=True)

    def clo_passes(micro: int | None) -> list[list[tuple[int, int, int]]]:
        steps = []
        for g in batches:
            padded = bucket_length(max(lens[i] for i in g) - 1, MAX_SEQ)
            per = micro or max(1, AUTO_MICRO_BATCH_TOKENS // (2 * padded))
            passes = []
            for part in np.array_split(np.array(g), -(-len(g) // per)):
                _, _, mask = collate([ch[i] for i in part] + [rj[i] for i in part], MAX_SEQ)
                passes.append((mask.shape[0], mask.shape[1], response_start(mask)))
            steps.append(passes)
        return steps

    return {
        "pairs": len(rows),
        "prompt": float(np.mean([c[1] for c in ch])),
        "chosen": float(np.mean([a - c[1] for a, c in zip(lc, ch, strict=True)])),
        "rejected": float(np.mean([a - r[1] for a, r in zip(lr, rj, strict=True)])),
        "seq": float(np.mean(lc + lr)),
        "tokens_per_pair": float(np.mean([a + b for a, b in zip(lc, lr, strict=True)])),
        "peer_padded_len": float(np.mean(peer_pad)),
        "peer_passes": [[(2 * BATCH, n, 0)] for n in peer_pad],
        "clo_passes": {str(m): clo_passes(m) for m in micro_sizes},
    }


def step_matmul_flops(model_dir: Path, steps: list[list[tuple[int, int, int]]]) -> float:
    """Forward matmul FLOPs of one step, averaged over the steps given as passes of (sequences,
    padded length, head start): 2 x (projection + MLP weights) + attention over the padded
    context (not halved) per position, and 2 x the output head's weights per head position."""
    c = json.loads((model_dir / "config.json").read_text())
    h, n, inter = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"]
    hd = h // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * hd
    per_layer = h * h * 2 + 2 * h * kv + 3 * h * inter
    head = 2 * c["vocab_size"] * h
    total = 0.0
    for passes in steps:
        for seqs, length, start in passes:
            body = 2 * n * per_layer + n * 2 * 2 * h * length
            total += seqs * (body * length + head * (length - start))
    return total / len(steps)


# ----------------------------------------------------------------------------- running


def run_measured(cmd: list[str], env: dict, log_file: Path, timeout: int) -> tuple[dict, float]:
    """Run one worker through the RUSAGE launcher; (its RESULT, its peak RSS in MB)."""
    launcher = [sys.executable, str(Path(__file__).resolve()), "_measure", "--", *cmd]
    with open(log_file, "w") as f:
        proc = subprocess.run(
            launcher, env=env, stdout=subprocess.PIPE, stderr=f, text=True, timeout=timeout
        )
    result, rusage = None, None
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
        elif line.startswith("RUSAGE "):
            rusage = json.loads(line[7:])
    if proc.returncode != 0 or result is None or rusage is None:
        tail = "".join(log_file.read_text().splitlines(True)[-25:])
        raise RuntimeError(f"{' '.join(cmd[:4])} failed (log {log_file}):\n{tail}")
    return result, rusage["maxrss_mb"]


def step_times(stamps: list[float], warmup: int) -> list[float]:
    diffs = [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True)]  # diffs[i]: step i + 2
    return diffs[max(warmup - 1, 0) :]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="30m,105m", help="comma-separated: 30m, 105m")
    ap.add_argument("--iters", type=int, default=10, help="training iterations per run")
    ap.add_argument("--warmup", type=int, default=2, help="first iterations not timed")
    ap.add_argument("--pairs", type=int, default=64, help="preference pairs in the data")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool and size (medians)")
    ap.add_argument("--work", default=str(HERE / ".work"), help="models, data, logs")
    ap.add_argument("--peer-venv", default=str(HERE / ".venv-peer"))
    ap.add_argument(
        "--clo-venv",
        default=str(HERE / ".venv-clo"),
        help="clo-mlx's own environment ('' = this Python)",
    )
    ap.add_argument("--no-peer", action="store_true", help="only clo-mlx")
    ap.add_argument("--no-vocab", action="store_true", help="skip the 151,936-vocabulary case")
    ap.add_argument(
        "--grad-checkpoint",
        action="store_true",
        help="also run clo-mlx with grad_checkpoint (less memory, one more forward per step)",
    )
    ap.add_argument(
        "--micro-batch",
        default="",
        help="also run clo-mlx with these micro_batch_size values, e.g. 1,4 (4 = one pass per batch)",
    )
    ap.add_argument("--vocab-seq", type=int, default=171, help="sequence length, vocab case")
    ap.add_argument("--json", help="also write all results to this JSON file")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per run")
    a = ap.parse_args()
    sizes = [s.strip() for s in a.sizes.split(",") if s.strip()]
    for s in sizes:
        if s not in SIZES:
            ap.error(f"unknown size {s!r}; choose from {sorted(SIZES)}")
    if a.iters <= a.warmup + 1:
        ap.error("--iters must exceed --warmup + 1")
    work = Path(a.work)
    (work / "logs").mkdir(parents=True, exist_ok=True)

    from clo_mlx.blas import fast_blas_env

    env = fast_blas_env()
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["TOKENIZERS_PARALLELISM"] = "false"
    log(f"LD_PRELOAD={env.get('LD_PRELOAD', '-')}")
    peer_python = None if a.no_peer else ensure_peer_venv(Path(a.peer_venv))
    clo_python = str(ensure_clo_venv(Path(a.clo_venv))) if a.clo_venv else sys.executable
    me = str(Path(__file__).resolve())

    log("building models and data ...")
    models = build_models(work, sizes)
    data = build_data(work, a.pairs)
    micro_sizes = [None] + [int(m) for m in a.micro_batch.split(",") if m.strip()]
    stats = {s: token_stats(models[s], data, micro_sizes) for s in sizes}
    load = os.getloadavg()

    def ceiling(tag: str) -> dict:
        r, _ = run_measured(
            [clo_python, me, "_ceiling", "--repeats", "3"],
            env,
            work / "logs" / f"ceiling-{tag}.log",
            a.timeout,
        )
        log(
            f"fp32 matmul ceiling ({tag}): {r['fp32_1024']:.0f} GFLOP/s at 1024, "
            f"{r['fp32_2048']:.0f} at 2048; BLAS {r['blas']}"
        )
        return r

    ceilings = [ceiling("start")]
    runs: dict[tuple[str, str], list[dict]] = {}
    for rep in range(a.repeat):
        for size in sizes:
            tools = ["clo-mlx"] if a.no_peer else ["mlx-lm-lora", "clo-mlx"]
            if a.grad_checkpoint:
                tools.append("clo-mlx +gc")
            tools += [f"clo-mlx mb{m.strip()}" for m in a.micro_batch.split(",") if m.strip()]
            for tool in tools:
                tag = tool.replace(" +", "-").replace(" ", "-")
                out = work / "runs" / f"{tag}-{size}-{rep}"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                args = [str(models[size]), str(data), str(out), str(a.iters)]
                if tool.startswith("clo-mlx"):
                    cmd = [clo_python, me, "_clo", *args, *tool.split()[1:]]
                else:
                    cmd = [str(peer_python), me, "_peer", *args]
                log(f"{tool} {size} (run {rep + 1}/{a.repeat}) ...")
                t = time.perf_counter()
                result, rss = run_measured(
                    cmd,
                    env,
                    work / "logs" / f"{tag}-{size}-{rep}.log",
                    a.timeout,
                )
                result["rss_mb"], result["wall_s"] = rss, time.perf_counter() - t
                result["step_s"] = step_times(result["stamps"], a.warmup)
                log(
                    f"  {statistics.median(result['step_s']):.2f} s/it, peak RSS {rss:.0f} MB, "
                    f"losses {[round(x, 4) for x in result['losses'][:3]]}"
                )
                runs.setdefault((tool, size), []).append(result)
    ceilings.append(ceiling("end"))

    vocab = []
    if not a.no_vocab:
        for variant in ("naive", "full", "chunked", "skip"):
            log(f"vocab {BIG_VOCAB}: {variant} ...")
            r, rss = run_measured(
                [clo_python, me, "_vocab", variant, str(a.vocab_seq)],
                env,
                work / "logs" / f"vocab-{variant}.log",
                a.timeout,
            )
            r["rss_mb"] = rss
            vocab.append(r)

    report = summarize(runs, stats, ceilings, vocab, models, load, env, a)
    if a.json:
        Path(a.json).write_text(json.dumps(report["raw"], indent=1, default=str))
    print(report["text"])


def summarize(runs, stats, ceilings, vocab, models, load, env, a) -> dict:
    ceil = statistics.median(
        [c["fp32_1024"] for c in ceilings] + [c["fp32_2048"] for c in ceilings]
    )
    lines = []
    lines.append(
        f"BLAS: {ceilings[0]['blas']}; fp32 matmul ceiling {ceil:.0f} GFLOP/s (median of 1024^2 "
        f"and 2048^2 at start and end: "
        + ", ".join(f"{c['fp32_1024']:.0f}/{c['fp32_2048']:.0f}" for c in ceilings)
        + f"); load average at start {load[0]:.2f}, {os.cpu_count()} CPUs."
    )
    lines.append(
        f"LoRA r{LORA['rank']} scale {LORA['scale']:g} on q/k/v/o of all layers (both tools; "
        f"mlx-lm-lora given the keys by the benchmark's wrapper), batch {BATCH} pairs, fp32, "
        f"{a.iters} iterations, first {a.warmup} not timed, {a.repeat} run(s): medians."
    )
    header = (
        "| model | tool | s/it | seq tok/s | speed-up | peak RSS MB | RSS ratio | MLX peak GB | "
        "GFLOP/s | % of ceiling | first-epoch tok/s |"
    )
    table = [header, "|" + "---|" * 11]
    raw = {"ceilings": ceilings, "stats": stats, "runs": {}, "vocab": vocab}
    for size in stats:
        st = stats[size]
        ntok = st["tokens_per_pair"] * BATCH
        base = {}
        for tool in dict.fromkeys(["mlx-lm-lora", "clo-mlx", *(t for t, _ in runs)]):
            rs = runs.get((tool, size))
            if not rs:
                continue
            sec = statistics.median([statistics.median(r["step_s"]) for r in rs])
            rss = statistics.median([r["rss_mb"] for r in rs])
            mx_peak = statistics.median([r.get("mx_peak_gb", float("nan")) for r in rs])
            tps = ntok / sec
            if tool == "mlx-lm-lora":
                # reference forward + policy forward + policy backward (~ one forward)
                steps, passes = st["peer_passes"], 3
                first_epoch = tps
            else:
                # policy forward + backward (+ the forward recomputed under grad checkpointing)
                micro = next((t[2:] for t in tool.split()[1:] if t.startswith("mb")), "None")
                steps, passes = st["clo_passes"][micro], 3 if "gc" in tool else 2
                # amortise the one-off reference pass over one epoch of the data
                prep = statistics.median([r["prepare_s"] for r in rs])
                n_steps = st["pairs"] / BATCH
                first_epoch = st["pairs"] * st["tokens_per_pair"] / (prep + n_steps * sec)
            flops = passes * step_matmul_flops(models[size], steps)
            gflops = flops / sec / 1e9
            base.setdefault("tps", tps)
            base.setdefault("rss", rss)
            speed = f"{tps / base['tps']:.2f}x"
            ratio = f"{rss / base['rss']:.2f}"
            table.append(
                f"| {size} | {tool} | {sec:.2f} | {tps:.0f} | {speed} | {rss:.0f} | {ratio} | "
                f"{mx_peak:.2f} | {gflops:.0f} | {100 * gflops / ceil:.0f}% | {first_epoch:.0f} |"
            )
            raw["runs"][f"{tool}/{size}"] = rs
    lines.append("")
    lines += table
    lines.append("")
    for size, st in stats.items():
        lines.append(
            f"{size}: {st['pairs']} pairs; mean prompt {st['prompt']:.1f}, chosen {st['chosen']:.1f}, "
            f"rejected {st['rejected']:.1f} tokens; sequence {st['seq']:.1f}; "
            f"{st['tokens_per_pair']:.1f} tokens per pair (chosen + rejected sequence); "
            f"padded length mlx-lm-lora {st['peer_padded_len']:.1f}; clo-mlx passes per step "
            f"(sequences, padded length, head start) e.g. {st['clo_passes']['None'][0]}"
        )
    for (tool, size), rs in runs.items():
        r = rs[0]
        extra = f", reference pass {r['prepare_s']:.1f} s" if "prepare_s" in r else ""
        lines.append(
            f"{tool} {size}: trainable {r['trainable']:,} ({', '.join(r['adapted'])}); "
            f"step times {[round(x, 2) for x in r['step_s']]}{extra}"
        )
    if vocab:
        lines.append("")
        lines.append(
            f"Vocabulary {BIG_VOCAB:,} (Qwen2.5-like head, hidden 896, 2 layers, tied embeddings), "
            f"{2 * BATCH} sequences x {a.vocab_seq} tokens, one LoRA value-and-grad of the "
            f"response log-probs:"
        )
        lines.append("")
        lines.append("| log-prob | MLX peak GB | peak RSS MB | s/step | loss |")
        lines.append("|---|---|---|---|---|")
        names = {
            "naive": "naive full log_softmax",
            "full": "clo-mlx, full logits (chunk 0)",
            "chunked": "clo-mlx, chunked head (auto)",
            "skip": "clo-mlx, chunked head from the first response position (default)",
        }
        for r in vocab:
            lines.append(
                f"| {names[r['variant']]} | {r['peak_gb']:.2f} | {r['rss_mb']:.0f} | "
                f"{r['time_s']:.2f} | {r['loss']:.2f} |"
            )
    return {"text": "\n".join(lines), "raw": raw}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        cmd, rest = sys.argv[1], sys.argv[2:]
        if cmd == "_measure":
            sys.exit(worker_measure(rest[1:] if rest[:1] == ["--"] else rest))
        if cmd == "_ceiling":
            worker_ceiling(int(rest[1]) if len(rest) > 1 else 3)
        elif cmd == "_peer":
            worker_peer(rest[0], rest[1], rest[2], int(rest[3]))
        elif cmd == "_clo":
            flags = [f.lstrip("+") for f in rest[4:]]
            micro = [int(f[2:]) for f in flags if f.startswith("mb")]
            worker_clo(rest[0], rest[1], rest[2], int(rest[3]), "gc" in flags, (micro or [None])[0])
        elif cmd == "_vocab":
            worker_vocab(rest[0], int(rest[1]))
        else:
            sys.exit(f"unknown worker {cmd}")
    else:
        main()
