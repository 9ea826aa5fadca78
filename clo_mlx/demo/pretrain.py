"""Pretrain the demo's tiny English-centric base model (Llama architecture, a few M params).

The mix makes the model English-centric on purpose, the bias CLO removes:
- English prompts answered in English (chat),
- Swahili prompts answered in English most of the time (chat), in Swahili otherwise,
- Swahili question/answer text outside the chat format, so the model can write Swahili.

Run `python -m clo_mlx.demo.pretrain --out clo_mlx/assets/demo_model` (fixed seed; resumable:
a checkpoint is written every `--save-every` steps under `<out>/checkpoint/`).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np

from ..io import atomic_save_safetensors, atomic_write_json
from ..tiny import CHATML_TEMPLATE, build_tiny_model
from .corpus import split_rows

MODEL_CONFIG = dict(
    hidden_size=128,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=384,
    max_position_embeddings=512,
)
VOCAB_SIZE = 2048
P_TARGET_ANSWER = 0.1  # share of Swahili chat prompts answered in Swahili during pretraining


def _chat(prompt: str, response: str) -> str:
    # Same string `apply_chat_template` renders from CHATML_TEMPLATE for one user/assistant turn.
    assert "<|im_start|>" in CHATML_TEMPLATE
    return f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{response}<|im_end|>\n"


def pretrain_texts(rows: list[dict], seed: int = 0, p_target: float = P_TARGET_ANSWER) -> list[str]:
    """The pretraining documents for `rows` (see the module docstring for the mix)."""
    rng = random.Random(seed)
    texts = []
    for r in rows:
        texts.append(_chat(r["prompt_en"], r["response_en"]))
        answer = r["response_tgt"] if rng.random() < p_target else r["response_en"]
        texts.append(_chat(r["prompt_tgt"], answer))
        texts.append(f"<|endoftext|>{r['prompt_tgt']}\n{r['response_tgt']}<|endoftext|>")
    return texts


def tokenizer_texts(texts: list[str]) -> list[str]:
    """The pretraining texts without special tokens (what the BPE tokenizer is trained on)."""
    specials = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
    out = []
    for t in texts:
        for sp in specials:
            t = t.replace(sp, "")
        out.append(t)
    return out


def _save_model(model, path: Path) -> None:
    from mlx.utils import tree_flatten

    atomic_save_safetensors(path, dict(tree_flatten(model.parameters())), {"format": "pt"})


def pretrain(
    out_dir: str | Path,
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 2e-3,
    warmup: int = 50,
    seed: int = 0,
    save_every: int = 100,
    n_pretrain: int = 3000,
    sizes: dict[str, int] | None = None,
    vocab_size: int = VOCAB_SIZE,
    model_config: dict | None = None,
    stop_at: int | None = None,
) -> Path:
    """Build and pretrain the demo base model in `out_dir` (HF layout); resumes from a checkpoint.

    `stop_at` ends this run early at that step with a checkpoint (to spread the work out).
    """
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten, tree_unflatten
    from mlx_lm import load
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    out_dir = Path(out_dir)
    ckpt = out_dir / "checkpoint"
    rows = split_rows(seed=seed, sizes=sizes, n_pretrain=n_pretrain)["pretrain"]
    texts = pretrain_texts(rows, seed=seed)
    if not (out_dir / "config.json").exists():
        tok_texts = tokenizer_texts(texts)
        build_tiny_model(
            out_dir,
            texts=tok_texts,
            vocab_size=vocab_size,
            seed=seed,
            **(model_config or MODEL_CONFIG),
        )
    mx.random.seed(seed)
    model, tokenizer = load(str(out_dir))
    model.train()
    tok = tokenizer._tokenizer
    data = [tok.encode(t, add_special_tokens=False) for t in texts]
    pad_id = tok.convert_tokens_to_ids("<|endoftext|>")

    schedule = optim.join_schedules(
        [
            optim.linear_schedule(1e-7, lr, warmup),
            optim.cosine_decay(lr, steps - warmup, lr * 0.05),
        ],
        [warmup],
    )
    optimizer = optim.AdamW(learning_rate=schedule, weight_decay=0.01)
    start = 0
    if (ckpt / "state.json").exists():
        state = json.loads((ckpt / "state.json").read_text())
        start = state["step"]
        model.load_weights(str(ckpt / "model.safetensors"))
        optimizer.init(model.trainable_parameters())
        opt_state = tree_unflatten(list(mx.load(str(ckpt / "optimizer.safetensors")).items()))
        optimizer.state = opt_state
        print(f"resuming from step {start}")

    def loss_fn(model, x, y, mask):
        logits = model(x)
        ce = nn.losses.cross_entropy(logits, y) * mask
        return ce.sum() / mask.sum()

    state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(x, y, mask):
        loss, grads = nn.value_and_grad(model, loss_fn)(model, x, y, mask)
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        optimizer.update(model, grads)
        return loss

    def batch(i: int):
        rng = np.random.default_rng([seed, i])
        idx = rng.choice(len(data), batch_size, replace=False)
        seqs = [data[j] for j in idx]
        length = max(len(s) for s in seqs)
        length = int(math.ceil(length / 16) * 16) + 1  # few distinct shapes for mx.compile
        arr = np.full((batch_size, length), pad_id, dtype=np.int32)
        mask = np.zeros((batch_size, length - 1), dtype=np.float32)
        for k, s in enumerate(seqs):
            arr[k, : len(s)] = s
            mask[k, : len(s) - 1] = 1.0
        return mx.array(arr[:, :-1]), mx.array(arr[:, 1:]), mx.array(mask)

    def save_ckpt(i: int) -> None:
        ckpt.mkdir(parents=True, exist_ok=True)
        _save_model(model, ckpt / "model.safetensors")
        atomic_save_safetensors(ckpt / "optimizer.safetensors", dict(tree_flatten(optimizer.state)))
        atomic_write_json(ckpt / "state.json", {"step": i})

    losses: list[float] = []
    t0 = time.time()
    with Progress(
        TextColumn("pretraining"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.3f}"), TimeRemainingColumn(),
    ) as progress:  # fmt: skip
        task = progress.add_task("pretrain", total=steps, completed=start, loss=float("nan"))
        for i in range(start, steps):
            loss = step(*batch(i))
            mx.eval(state, loss)
            losses.append(loss.item())
            progress.update(task, advance=1, loss=float(np.mean(losses[-20:])))
            if stop_at is not None and i + 1 == stop_at and i + 1 < steps:
                save_ckpt(i + 1)
                progress.console.print(f"stopped at step {i + 1}; run again to resume")
                return out_dir
            if (i + 1) % save_every == 0 and i + 1 < steps:
                save_ckpt(i + 1)
                progress.console.print(
                    f"step {i + 1}: loss {np.mean(losses[-save_every:]):.3f}, "
                    f"{time.time() - t0:.0f} s, checkpoint saved"
                )
    print(
        f"{steps - start} steps in {time.time() - t0:.0f} s, final loss {np.mean(losses[-50:]):.3f}"
    )
    _save_model(model, out_dir / "model.safetensors")
    shutil.rmtree(ckpt, ignore_errors=True)
    return out_dir


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default=str(Path(__file__).parents[1] / "assets" / "demo_model"))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=100)
    a = p.parse_args()
    pretrain(
        a.out, steps=a.steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed, save_every=a.save_every
    )


if __name__ == "__main__":
    main()
