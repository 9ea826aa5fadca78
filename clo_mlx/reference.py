"""Scoring pairs, and the frozen reference's log-probs computed once and cached on disk.

The reference is the base model. LoRA starts at zero, so the base *is* the reference: its log-probs
are computed once before training (never a second copy of the model) and cached under a key made of
the weights (a model folder's fingerprint plus any reference adapters, or a hash of the tensors of
a model given in memory), the dtypes the weights actually have, and every token id and response
start (so any change of data, tokenizer, template or max_seq_length gives a new key).
"""

from __future__ import annotations

import hashlib
import os
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from . import distributed
from .batching import collate, collate_pairs, head_index, length_sorted_batches, pair_lengths
from .io import atomic_save_safetensors
from .logprobs import sequence_logps
from .memory import with_wired_limit
from .tokens import EncodedPair


def make_logp_fn(model: nn.Module, chunk_size: int | None = None):
    """Compiled (inputs, targets, mask, start=0) -> (summed log-probs [B], token counts [B]).

    `start`: batching.head_index of the mask (the head runs only over the response positions).
    """

    @partial(mx.compile, inputs=model.state)
    def logp_fn(inputs, targets, mask, start=0):
        return sequence_logps(model, inputs, targets, mask, chunk_size, start=start)

    return logp_fn


def queue_logps(
    logp_fn, inputs: np.ndarray, targets: np.ndarray, mask: np.ndarray
) -> tuple[mx.array, mx.array]:
    """logp_fn on one collated batch, head over its response positions; not yet evaluated."""
    return logp_fn(mx.array(inputs), mx.array(targets), mx.array(mask), start=head_index(mask))


def collated_logps(
    logp_fn, seqs: list[tuple[list[int], int]], max_seq_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """(summed response log-probs, token counts) of (ids, response start) sequences, one batch."""
    logps, ntok = queue_logps(logp_fn, *collate(seqs, max_seq_length))
    return np.array(logps), np.array(ntok)


def reference_batches(encoded: list[EncodedPair], batch_size: int) -> list[list[int]]:
    """The batches a reference pass runs (and `train --dry-run` plans with): length-sorted, of
    `batch_size` pairs. Larger ones were measured not to be faster on a CPU (README: the
    reference pass) and would change the log-probs' last bits."""
    return length_sorted_batches(pair_lengths(encoded), batch_size)


@with_wired_limit
def score_pairs(
    model: nn.Module,
    encoded: list[EncodedPair],
    batch_size: int,
    max_seq_length: int,
    chunk_size: int | None = None,
    progress=None,
) -> dict[str, np.ndarray]:
    """Summed response log-probs and token counts of every pair's chosen and rejected response.

    Chosen and rejected sequences of a batch go through one forward pass ([2P, L]). Each batch
    is evaluated asynchronously while the next one is collated: the host reads a batch's results
    only once the next is queued. Batches stay at `batch_size` pairs: larger ones change the
    log-probs' last bits at real model sizes (other padding and head chunks change the
    reductions), and the cache must not change. `progress(n_pairs_done)` is called after each
    batch when given. Data-parallel (`mlx.launch`): each rank scores every
    size-th batch and all ranks get every score (call it on all ranks).
    """
    was_training = model.training
    model.eval()
    logp_fn = make_logp_fn(model, chunk_size)
    n = len(encoded)
    out = {k: np.zeros(n, np.float32) for k in ("chosen_logp", "rejected_logp")}
    out.update({k: np.zeros(n, np.int32) for k in ("chosen_tokens", "rejected_tokens")})
    mine: list[int] = []

    def store(idx: list[int], logps: mx.array, ntok: mx.array) -> None:
        logps, ntok, P = np.array(logps), np.array(ntok), len(idx)
        out["chosen_logp"][idx], out["rejected_logp"][idx] = logps[:P], logps[P:]
        out["chosen_tokens"][idx], out["rejected_tokens"][idx] = ntok[:P], ntok[P:]
        mine.extend(idx)
        if progress is not None:
            progress(P)

    queued = None
    batches = reference_batches(encoded, batch_size)
    for idx in distributed.shard(batches):
        logps, ntok = queue_logps(logp_fn, *collate_pairs(encoded, idx, max_seq_length))
        mx.async_eval(logps, ntok)
        if queued is not None:
            store(*queued)
        queued = (idx, logps, ntok)
    if queued is not None:
        store(*queued)
    model.train(was_training)
    if distributed.size() > 1:
        out = distributed.gather_rows({k: v[mine] for k, v in out.items()}, mine, n)
    return out


def weight_dtypes(model: nn.Module) -> str:
    """The dtypes the model's tensors have (e.g. "bfloat16,uint32"): what `dtype: auto` became."""
    from mlx.utils import tree_flatten

    return ",".join(sorted({str(v.dtype) for _, v in tree_flatten(model.parameters())}))


def weights_digest(model: nn.Module) -> str:
    """sha256 (16 hex digits) of every tensor of `model`, names, dtypes and values."""
    from mlx.utils import tree_flatten

    h = hashlib.sha256()
    for name, v in sorted(tree_flatten(model.parameters()), key=lambda kv: kv[0]):
        h.update(f"{name}|{v.dtype}|{v.shape}".encode())
        if v.dtype == mx.bfloat16:  # numpy has no bfloat16: hash its bits
            v = v.view(mx.uint16)
        h.update(np.ascontiguousarray(np.asarray(v)).tobytes())
    return h.hexdigest()[:16]


def cache_key(model_id: str, dtype: str, encoded: list[EncodedPair]) -> str:
    h = hashlib.sha256(f"{model_id}|{dtype}|v2".encode())
    for e in encoded:
        h.update(np.asarray(e.chosen, np.int32).tobytes())
        h.update(np.asarray([-1, e.chosen_start, -2, e.rejected_start, -3], np.int32).tobytes())
        h.update(np.asarray(e.rejected, np.int32).tobytes())
    return h.hexdigest()[:24]


def default_cache_dir() -> Path:
    if env := os.environ.get("CLO_MLX_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "clo-mlx"


def reference_logps(
    model: nn.Module,
    encoded: list[EncodedPair],
    model_id: str,
    dtype: str,
    batch_size: int,
    max_seq_length: int,
    cache_dir: str | Path | None = None,
    chunk_size: int | None = None,
    progress=None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(reference chosen log-probs [N], rejected [N], whether they came from the cache)."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / "reference" / f"{cache_key(model_id, dtype, encoded)}.safetensors"
    found = _read_cache(path, len(encoded)) if distributed.is_main() else None
    # Data-parallel: rank 0's cache decides (other machines need not have it).
    if distributed.size() > 1 and distributed.broadcast_json(found is not None):
        both = found if found is not None else np.zeros((2, len(encoded)), np.float32)
        found = distributed.broadcast_np(np.stack(both).astype(np.float32))
    if found is not None:
        return np.asarray(found[0]), np.asarray(found[1]), True
    scores = score_pairs(model, encoded, batch_size, max_seq_length, chunk_size, progress)
    if distributed.is_main():
        atomic_save_safetensors(
            path,
            {k: mx.array(scores[k]) for k in ("chosen_logp", "rejected_logp")},
            metadata={"model": model_id, "dtype": dtype, "pairs": str(len(encoded))},
        )
    return scores["chosen_logp"], scores["rejected_logp"], False


def _read_cache(path: Path, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        arrays = mx.load(str(path))
        chosen, rejected = np.array(arrays["chosen_logp"]), np.array(arrays["rejected_logp"])
    except Exception:  # an unreadable cache entry is recomputed
        return None
    if chosen.shape == (n,) and rejected.shape == (n,):
        return chosen, rejected
    return None
