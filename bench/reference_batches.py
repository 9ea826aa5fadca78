"""Does a reference pass get faster with larger batches? The same pairs, batched three ways.

    python bench/reference_batches.py [--pairs 48] [--caps 4096,16384] [--repeat 3]

A 29.4M-parameter random fp32 Llama (the 30M shape of bench_dpo_vs_mlx_lm_lora.py: hidden 512,
8 layers, 8 heads, intermediate 1024, vocabulary 8,192) scores random pairs (prompt 40-70 tokens,
responses 80-200) with the reference pass's own pieces (`make_logp_fn`, `queue_logps`, each batch
evaluated asynchronously while the next is collated, as `score_pairs` runs): once in
length-sorted batches of `--batch-size` pairs (what `score_pairs` does), and once per cap in
length-sorted batches grown to at most CAP padded tokens. Runs are interleaved; the first round
includes compilation. Prints the seconds of each round and the largest relative difference of
the summed log-probs against the first way.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--caps", default="4096,16384", help="padded tokens per pass, comma-separated")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from clo_mlx.blas import ensure_fast_blas

    ensure_fast_blas()

    import mlx.core as mx
    import numpy as np
    from mlx_lm.models import llama

    from clo_mlx.batching import bucket_length, collate_pairs, length_sorted_batches, pair_lengths
    from clo_mlx.data import Pair
    from clo_mlx.reference import make_logp_fn, queue_logps
    from clo_mlx.tokens import EncodedPair

    vocab = 8192
    margs = llama.ModelArgs(
        model_type="llama", hidden_size=512, num_hidden_layers=8, intermediate_size=1024,
        num_attention_heads=8, num_key_value_heads=8, rms_norm_eps=1e-6, vocab_size=vocab,
        tie_word_embeddings=True,
    )  # fmt: skip
    model = llama.Model(margs)
    mx.eval(model.parameters())
    model.eval()
    rng = np.random.default_rng(0)
    encoded = []
    for i in range(args.pairs):
        p, c, r = int(rng.integers(40, 70)), int(rng.integers(80, 200)), int(rng.integers(80, 200))
        prompt = rng.integers(3, vocab, p).tolist()
        chosen, rejected = rng.integers(3, vocab, c).tolist(), rng.integers(3, vocab, r).tolist()
        pair = Pair(i, "pair", "sw", "", "", "", "")
        encoded.append(EncodedPair(pair, prompt + chosen, p, prompt + rejected, p))
    lengths = pair_lengths(encoded)

    def capped(cap: int) -> list[list[int]]:
        batches: list[list[int]] = []
        for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
            padded = bucket_length(lengths[i] - 1, 2048)
            if batches and 2 * (len(batches[-1]) + 1) * padded <= cap:
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    ways = {f"batches of {args.batch_size} pairs": length_sorted_batches(lengths, args.batch_size)}
    for cap in (int(c) for c in args.caps.split(",")):
        ways[f"up to {cap} padded tokens"] = capped(cap)
    logp_fn = make_logp_fn(model)

    def score(batches: list[list[int]]) -> np.ndarray:
        out, queued = np.zeros((2, len(encoded)), np.float32), None
        for idx in batches + [None]:
            if idx is not None:
                logps, _ = queue_logps(logp_fn, *collate_pairs(encoded, idx, 2048))
                mx.async_eval(logps)
            if queued is not None:
                q_idx, q_logps = queued
                got = np.array(q_logps)
                out[0, q_idx], out[1, q_idx] = got[: len(q_idx)], got[len(q_idx) :]
            queued = (idx, logps) if idx is not None else None
        return out

    seconds: dict[str, list[float]] = {k: [] for k in ways}
    results = {}
    for _ in range(args.repeat):
        for name, batches in ways.items():
            tic = time.perf_counter()
            results[name] = score(batches)
            seconds[name].append(time.perf_counter() - tic)
    first = next(iter(results.values()))
    for name, batches in ways.items():
        rel = float(np.max(np.abs(results[name] - first) / np.abs(first)))
        later = seconds[name][1:] or seconds[name]
        print(
            f"{name}: {len(batches)} batches of {min(map(len, batches))}-"
            f"{max(map(len, batches))} pairs; rounds {[round(s, 1) for s in seconds[name]]} s, "
            f"median after the first {statistics.median(later):.1f} s; "
            f"max relative difference {rel:.1e}"
        )


if __name__ == "__main__":
    main()
