"""Batches: encoded sequences -> padded arrays in length buckets (so compiled shapes repeat).

A sequence `ids` with response start `s` becomes
    inputs  = ids[:-1]                      (padded with 0 on the right to the bucket length L)
    targets = ids[1:]
    mask[t] = 1  for  s - 1 <= t < len(ids) - 1   (targets[t] is a response token)
Right padding never changes earlier positions under a causal mask.
"""

from __future__ import annotations

import numpy as np

MIN_STEP = 8


def bucket_length(n: int, max_len: int, pad_to: int | None = None) -> int:
    """`n` rounded up to its bucket, never above `max_len` (when n <= max_len).

    Buckets step by about n/8 (a power of two, at least 8): padding stays under 12.5% and the
    number of distinct shapes, hence of compilations, grows only with log(n) (64 up to 2048).
    `pad_to` gives fixed multiples instead.
    """
    step = pad_to or max(MIN_STEP, 1 << max(0, n.bit_length() - 4))
    return max(n, min(step * -(-n // step), max_len))


def collate(
    seqs: list[tuple[list[int], int]], max_len: int, pad_to: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs [B, L] int32, targets [B, L] int32, mask [B, L] float32) for (ids, start) pairs."""
    length = bucket_length(max(len(ids) - 1 for ids, _ in seqs), max_len, pad_to)
    inputs = np.zeros((len(seqs), length), np.int32)
    targets = np.zeros((len(seqs), length), np.int32)
    mask = np.zeros((len(seqs), length), np.float32)
    for b, (ids, start) in enumerate(seqs):
        n = len(ids) - 1
        inputs[b, :n] = ids[:-1]
        targets[b, :n] = ids[1:]
        mask[b, max(start, 1) - 1 : n] = 1.0  # start 0: the first token has no predictor
    return inputs, targets, mask


def response_start(mask: np.ndarray) -> int:
    """The first position where any row has a response token, rounded down to 1/8 of the length.

    Positions before it hold prompt tokens only, so the output head can skip them. Rounding keeps
    the compiled shapes few (at most 8 starts per length bucket).
    """
    covered = np.flatnonzero(mask.any(axis=0))
    if not len(covered):
        return 0
    step = max(1, mask.shape[1] // 8)
    return int(covered[0] // step * step)


def length_sorted_batches(
    lengths: list[int], batch_size: int, full: bool = False
) -> list[list[int]]:
    """Indices grouped into batches of similar length (as mlx-lm does).

    With `full=True` (training) every batch has `batch_size` items: a short last batch is topped up
    with the shortest items, so no row is left out and one compiled shape serves each bucket.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if full and batches and len(batches[-1]) < batch_size:
        if len(order) < batch_size:
            raise ValueError(f"need at least batch_size={batch_size} items, got {len(order)}")
        batches[-1] += order[: batch_size - len(batches[-1])]
    return batches


def epoch_order(n_batches: int, seed: int, epoch: int) -> list[int]:
    """The batch order of one epoch: a permutation fixed by (seed, epoch), so runs resume exactly."""
    return np.random.default_rng([seed, epoch]).permutation(n_batches).tolist()
