"""Cost of a reference pass against a training step, on one model folder, with the same shapes.

    python bench/reference_vs_step.py MODEL_DIR [--length 512] [--pairs 4] [--repeat 2]

The reference pass: `reference.make_logp_fn` (compiled, forward only, gathered head) over all
2 x pairs sequences in one [2P, L] pass, as `score_pairs` runs it. The step: LoRA r8 on q/k/v/o,
value-and-grad of the summed response log-probs in micro-batches of one pair ([2, L]), as the
trainer's default runs a batch at real sizes. Random token ids (the first 80 positions are prompt),
OpenBLAS preloaded as the CLI does. With a frozen base the backward needs input gradients only
(about one more forward), so the reference pass is expected near half a step.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=80)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    from clo_mlx.blas import ensure_fast_blas

    ensure_fast_blas()

    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from clo_mlx.batching import head_index
    from clo_mlx.logprobs import sequence_logps
    from clo_mlx.reference import make_logp_fn

    model, _ = load(args.model)
    model.freeze()
    keys = [f"self_attn.{p}_proj" for p in "qkvo"]
    lora = {"rank": 8, "scale": 10.0, "dropout": 0.0, "keys": keys}
    linear_to_lora_layers(model, len(model.layers), lora)
    rows, length = 2 * args.pairs, args.length
    ids = np.random.default_rng(0).integers(0, model.args.vocab_size, (rows, length + 1))
    inputs, targets = mx.array(ids[:, :-1].astype(np.int32)), mx.array(ids[:, 1:].astype(np.int32))
    mask_np = np.zeros((rows, length), np.float32)
    mask_np[:, args.prompt :] = 1
    mask = mx.array(mask_np)

    model.eval()
    logp_fn = make_logp_fn(model)
    ref = []
    for _ in range(args.repeat + 1):  # the first call compiles
        t = time.perf_counter()
        mx.eval(logp_fn(inputs, targets, mask, start=head_index(mask_np)))
        ref.append(time.perf_counter() - t)

    model.train()

    def loss(model, x, y, m, start):
        return sequence_logps(model, x, y, m, None, start=start)[0].sum()

    value_and_grad = nn.value_and_grad(model, loss)
    step = []
    for _ in range(args.repeat + 1):
        t = time.perf_counter()
        for j in range(0, rows, 2):
            part = slice(j, j + 2)
            start = head_index(mask_np[part])
            mx.eval(value_and_grad(model, inputs[part], targets[part], mask[part], start))
        step.append(time.perf_counter() - t)

    r, s = statistics.median(ref[1:]), statistics.median(step[1:])
    print(f"reference pass [{rows}, {length}]: {r:.1f} s (first call {ref[0]:.1f} s)")
    print(f"training step {args.pairs} x [2, {length}]: {s:.1f} s (first {step[0]:.1f} s)")
    print(f"reference / step: {r / s:.2f}")


if __name__ == "__main__":
    main()
