"""Batches: encoded sequences -> padded arrays in length buckets (so compiled shapes repeat).

One module for training, reference scoring and evaluation: the data a step trains on (PairData,
SequenceData), batches of whole units grouped by length, the epoch order, micro-batches, and a
data-parallel rank's share.

A sequence `ids` with response start `s` becomes
    inputs  = ids[:-1]                      (padded with 0 on the right to the bucket length L)
    targets = ids[1:]
    mask[t] = 1  for  s - 1 <= t < len(ids) - 1   (targets[t] is a response token)
Right padding never changes earlier positions under a causal mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from . import distributed
from .losses import nll_tokens
from .tokens import EncodedPair

MIN_STEP = 8
# Automatic micro-batches: as many pairs (SFT: sequences) per pass as fit in this many padded tokens.
AUTO_MICRO_BATCH_TOKENS = 1024


def bucket_length(n: int, max_len: int) -> int:
    """`n` rounded up to its bucket, never above `max_len` (when n <= max_len).

    Buckets step by about n/8 (a power of two, at least 8): padding stays under 12.5% and the
    number of distinct shapes, hence of compilations, grows only with log(n) (48 up to 2048).
    """
    step = max(MIN_STEP, 1 << max(0, n.bit_length() - 4))
    return max(n, min(step * -(-n // step), max_len))


def collate(
    seqs: list[tuple[list[int], int]], max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs [B, L] int32, targets [B, L] int32, mask [B, L] float32) for (ids, start) pairs."""
    length = bucket_length(max(len(ids) - 1 for ids, _ in seqs), max_len)
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


def head_index(mask: np.ndarray) -> tuple[int, mx.array]:
    """(start, positions) for sequence_logps: `start` = batching.response_start(mask); positions =
    flat indices into mask[:, start:] of its response tokens, padded to a length bucket (so
    compiled shapes repeat) with the index one past the end (ignored)."""
    start = response_start(mask)
    rest = mask[:, start:]
    pos = np.flatnonzero(rest.reshape(-1) > 0).astype(np.int32)
    padded = np.full(bucket_length(max(len(pos), 1), max(rest.size, 1)), rest.size, np.int32)
    padded[: len(pos)] = pos
    return start, mx.array(padded)


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


# ----------------------------------------------------------------------------- pairs


def pair_lengths(encoded: list[EncodedPair]) -> list[int]:
    """A pair's length: its longer sequence (chosen and rejected share one padded batch)."""
    return [max(len(e.chosen), len(e.rejected)) for e in encoded]


def collate_pairs(
    encoded: list[EncodedPair], idx: list[int], max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """collate of pairs `idx`: the chosen sequences (rows 0..P-1), then the rejected ([2P, L])."""
    seqs = [(encoded[i].chosen, encoded[i].chosen_start) for i in idx]
    seqs += [(encoded[i].rejected, encoded[i].rejected_start) for i in idx]
    return collate(seqs, max_len)


@dataclass
class PairData:
    """Encoded pairs with their reference log-probs, ready to batch.

    The unit of batching is a row: both pairs of a parallel row (kinds "en" and "tgt") always go
    into the same batch, so every batch has target-language responses for the NLL term and
    balanced DPO pairs.
    """

    encoded: list[EncodedPair]
    ref_chosen: np.ndarray  # [N]
    ref_rejected: np.ndarray  # [N]
    nll_weight: np.ndarray  # [N] 1 where the chosen response enters the NLL term

    def __post_init__(self):
        self.is_en = np.array([e.pair.kind == "en" for e in self.encoded], np.float32)  # [N]

    def __len__(self) -> int:
        return len(self.encoded)

    def units(self) -> list[list[int]]:
        by_row: dict[int, list[int]] = {}
        for i, e in enumerate(self.encoded):
            by_row.setdefault(e.pair.row, []).append(i)
        return list(by_row.values())

    def length(self, i: int) -> int:
        return max(len(self.encoded[i].chosen), len(self.encoded[i].rejected))

    def batch(self, idx: list[int], max_len: int) -> tuple:
        """(inputs, targets, mask [2P, L], ref_chosen, ref_rejected, nll_weight, is_en [P], start)."""
        inputs, targets, mask = collate_pairs(self.encoded, idx, max_len)  # [2P, L]
        arrays = (
            inputs,
            targets,
            mask,
            self.ref_chosen[idx],
            self.ref_rejected[idx],
            self.nll_weight[idx],
            self.is_en[idx],
        )
        return (*(mx.array(a) for a in arrays), head_index(mask))

    def tokens(self, idx: list[int]) -> int:
        """Tokens of the sequences of `idx` (both of each pair; padding not counted)."""
        return sum(len(self.encoded[i].chosen) + len(self.encoded[i].rejected) for i in idx)


@dataclass
class SequenceData:
    """Single (prompt, response) sequences for SFT."""

    seqs: list[tuple[list[int], int]]

    def __len__(self) -> int:
        return len(self.seqs)

    def units(self) -> list[list[int]]:
        return [[i] for i in range(len(self.seqs))]

    def length(self, i: int) -> int:
        return len(self.seqs[i][0])

    def batch(self, idx: list[int], max_len: int) -> tuple:
        """(inputs, targets, mask [B, L], start)."""
        arrays = collate([self.seqs[i] for i in idx], max_len)
        return (*(mx.array(a) for a in arrays), head_index(arrays[2]))

    def tokens(self, idx: list[int]) -> int:
        return sum(len(self.seqs[i][0]) for i in idx)


# ----------------------------------------------------------------------------- batches of units


def unit_batches(data: PairData | SequenceData, batch_size: int, full: bool) -> list[list[int]]:
    """Batches of item indices built from whole units, grouped by length."""
    units = data.units()
    per_batch = max(1, batch_size // max(len(u) for u in units))
    lengths = [max(data.length(i) for i in u) for u in units]
    grouped = length_sorted_batches(lengths, per_batch, full=full)
    return [[i for u in g for i in units[u]] for g in grouped]


def batch_stream(data: PairData | SequenceData, batch_size: int, seed: int, start_step: int = 0):
    """Endless batches (item indices) in an order fixed by the seed; resumable at any step."""
    batches = unit_batches(data, batch_size, full=True)
    step, epoch = 0, 0
    while True:
        for b in epoch_order(len(batches), seed, epoch):
            if step >= start_step:
                yield batches[b]
            step += 1
        epoch += 1


def spread_batches(n_batches: int, num: int, seed: int) -> list[int]:
    """`num` of `n_batches` length-sorted batches, one from each of `num` equal length strata
    (at a position fixed by the seed), so a partial validation covers short and long rows."""
    if num < 0 or num >= n_batches:  # -1: all
        return list(range(n_batches))
    rng = np.random.default_rng([seed, n_batches, num])
    edges = np.linspace(0, n_batches, num + 1).round().astype(int)
    return [int(rng.integers(lo, hi)) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


# ----------------------------------------------------------------------------- micro-batches


def micro_batch_pairs(data: PairData | SequenceData, idx: list[int], cfg) -> int:
    """At most this many pairs (SFT: sequences) per forward/backward pass: `micro_batch_size`,
    or automatically as many as fit in AUTO_MICRO_BATCH_TOKENS padded tokens (at least one).

    Activation memory grows with the tokens of one pass, while ~1k-token passes already keep the
    matmuls efficient: on a 2-core CPU, passes of 2 pairs of 172-token sequences instead of one
    pass of 4 halve peak memory at 0-10% speed cost (bench/bench_dpo_vs_mlx_lm_lora.py).
    """
    if cfg.micro_batch_size:
        return cfg.micro_batch_size
    sequences = 2 if isinstance(data, PairData) else 1
    longest = max(data.length(i) for i in idx) - 1  # the model sees tokens[:-1]
    padded = bucket_length(max(longest, 1), cfg.max_seq_length)
    return max(1, AUTO_MICRO_BATCH_TOKENS // (sequences * padded))


def micro_batches(
    data: PairData | SequenceData, idx: list[int], cfg
) -> tuple[list[tuple[mx.array, ...]], mx.array]:
    """A batch as micro-batches (see micro_batch_pairs), each padded to its own length bucket,
    and the batch's totals [pairs (SFT: sequences), NLL tokens] that the losses divide by
    (losses.py: the parts then add up to the whole batch).

    Gradients of the parts add up to the whole batch's gradient; only one part's activations
    are alive at a time.
    """
    n_parts = -(-len(idx) // micro_batch_pairs(data, idx, cfg))
    parts = [data.batch(part.tolist(), cfg.max_seq_length) for part in np.array_split(idx, n_parts)]
    if isinstance(data, PairData):
        # The chosen sequences are the first P rows of a part's mask.
        tokens = sum(
            nll_tokens(mask[: len(w)].sum(axis=-1), w) for _, _, mask, _, _, w, *_ in parts
        )
    else:
        tokens = sum(mask.sum() for _, _, mask, _ in parts)
    # Data-parallel: `idx` is this rank's share and the totals are the global batch's.
    totals = distributed.all_sum(mx.stack([mx.array(float(len(idx))), tokens.astype(mx.float32)]))
    return parts, mx.stack([totals[0], mx.maximum(totals[1], 1.0)])


# ----------------------------------------------------------------------------- data parallel


def rank_share(data: PairData | SequenceData, idx: list[int]) -> list[int]:
    """This rank's part of a global batch: every size-th unit (a row's pairs stay together)."""
    if distributed.size() == 1:
        return idx
    keys = [data.encoded[i].pair.row for i in idx] if isinstance(data, PairData) else idx
    units: dict[int, list[int]] = {}
    for k, i in zip(keys, idx, strict=True):
        units.setdefault(k, []).append(i)
    return distributed.shard_units(list(units.values()))


def check_batch_divides(data: PairData | SequenceData, batch_size: int) -> None:
    """The global batch must split into equal numbers of whole units across the ranks."""
    unit = max(len(u) for u in data.units())
    distributed.check_batch_divides(batch_size, unit, "rows" if unit > 1 else "items")
