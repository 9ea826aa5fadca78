"""Data parallelism on MLX's own engine: `mx.distributed` (ring, jaccl, mpi, nccl), started with
`mlx.launch`. One process per rank; without `mlx.launch` the group has one rank and every helper
here is the identity, so single-process runs are unchanged.

What crosses the network: the summed LoRA gradients once per optimizer update, a few scalars per
step (metrics, token counts, the stop flag), and, once, the reference log-probs and evaluation
scores, gathered by summing arrays that are zero outside each rank's share. Rank 0 alone prints
and writes files; whatever it read from disk (a cached reference, a checkpoint, translation
progress) is broadcast, so other machines need the model and the data but not rank 0's outputs.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Sequence

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from .errors import CloError


class RankFailed(RuntimeError):
    """Another rank died or was stopped; this rank stops too (what was saved is kept)."""


def world() -> mx.distributed.Group:
    """The global group (size 1 unless started by `mlx.launch`)."""
    return mx.distributed.init()


def size() -> int:
    return world().size()


def rank() -> int:
    return world().rank()


def is_main() -> bool:
    return rank() == 0


def console(**kwargs):
    """A rich console on stderr for rank 0; a silent one on the other ranks."""
    from rich.console import Console

    return Console(stderr=True, quiet=not is_main(), **kwargs)


def all_sum(x, group: mx.distributed.Group | None = None) -> mx.array:
    """Sum over ranks (the identity on one rank), on the CPU stream as the backends need."""
    group = group or world()
    x = mx.array(x)
    if group.size() == 1:
        return x
    return mx.distributed.all_sum(x, group=group, stream=mx.cpu)


def sum_np(x: np.ndarray) -> np.ndarray:
    """all_sum of a numpy array, back as numpy (64-bit numbers are sent as 32-bit ones)."""
    if size() == 1:
        return x
    dtype = {np.dtype(np.float64): np.float32, np.dtype(np.int64): np.int32}.get(x.dtype, x.dtype)
    return np.array(all_sum(mx.array(x.astype(dtype)))).astype(x.dtype)


def broadcast_np(x: np.ndarray) -> np.ndarray:
    """Rank 0's array on every rank (others pass an array of the same shape and dtype)."""
    if size() == 1:
        return x
    return sum_np(x if is_main() else np.zeros_like(x))


def broadcast_json(obj=None):
    """Rank 0's JSON-able object on every rank (the others' `obj` is ignored)."""
    if size() == 1:
        return obj
    data = json.dumps(obj).encode() if is_main() else b""
    n = int(broadcast_np(np.array([len(data)], np.int32))[0])
    buf = np.frombuffer(data, np.uint8) if is_main() else np.zeros(n, np.uint8)
    return json.loads(broadcast_np(buf.astype(np.int32)).astype(np.uint8).tobytes())


def gather_json(obj) -> list | None:
    """Every rank's JSON-able object, in rank order, on rank 0 (None on the other ranks)."""
    if size() == 1:
        return [obj]
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = np.zeros(size(), np.int32)
    sizes[rank()] = len(data)
    sizes = sum_np(sizes)
    buf = np.zeros(int(sizes.sum()), np.int32)
    start = int(sizes[: rank()].sum())
    buf[start : start + len(data)] = data
    buf = sum_np(buf).astype(np.uint8).tobytes()
    if not is_main():
        return None
    ends = np.cumsum(sizes)
    return [json.loads(buf[e - s : e]) for s, e in zip(sizes.tolist(), ends.tolist(), strict=True)]


def barrier() -> None:
    mx.eval(all_sum(mx.array(0.0)))


def sum_gradients(grad, group: mx.distributed.Group | None = None):
    """The ranks' gradients summed (mlx's `nn.average_gradients`, times the number of ranks).

    Every rank's loss is already divided by the *global* batch's pair and token counts, so the
    ranks' gradients are shares that add up to the global batch's gradient.
    """
    from mlx.nn import average_gradients

    group = group or world()
    n = group.size()
    if n == 1:
        return grad
    return tree_map(lambda g: g * n, average_gradients(grad, group=group))


# ----------------------------------------------------------------------------- sharding


def shard(items: Sequence, group: mx.distributed.Group | None = None) -> list:
    """This rank's share: every size-th item from its rank on (mlx-lm's rank offset)."""
    group = group or world()
    return list(items[group.rank() :: group.size()])


def shard_units(units: Sequence[Sequence[int]]) -> list[int]:
    """The item indices of this rank's units (a unit: the pairs of one row, kept together)."""
    return [i for u in shard(units) for i in u]


def check_batch_divides(batch_size: int, unit_size: int, what: str) -> None:
    """A global batch must split into equal shares of whole units across the ranks."""
    n = size()
    units = max(1, batch_size // unit_size)
    if n > 1 and units % n:
        need = unit_size * n
        raise CloError(
            f"batch_size={batch_size} gives {units} {what} per batch, which do not split evenly "
            f"across {n} ranks; use a batch_size that is a multiple of {need}"
        )


def gather_rows(values: dict[str, np.ndarray], rows: Sequence[int], total: int) -> dict:
    """Each rank's `values[k]` (one entry per index in `rows`) placed at `rows` in arrays of
    length `total`, summed over ranks: every rank ends with all ranks' values."""
    out = {}
    for k, v in values.items():
        full = np.zeros((total, *np.shape(v)[1:]), np.asarray(v).dtype)
        full[list(rows)] = v
        out[k] = sum_np(full)
    return out


# ----------------------------------------------------------------------------- failures


def is_peer_lost(e: BaseException) -> bool:
    """Whether an exception is a collective failing because another rank is gone."""
    if isinstance(e, RankFailed):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and size() > 1 and ("peer" in text or "[ring]" in text)


def failure_message(e: BaseException) -> str:
    return (
        f"rank {rank()} of {size()} stopped: another rank died or was stopped ({e}). "
        "What was saved so far is kept; run the same command again "
        "(`clo-mlx train ... --resume` for training) to continue."
    )


def install_sigterm_handler() -> None:
    """`mlx.launch` sends SIGTERM to the other ranks when one fails: stop with a clear error
    (raised when the current MLX computation returns) instead of dying silently."""
    if size() == 1:
        return

    def handler(signum, frame):
        raise RankFailed("SIGTERM from mlx.launch")

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        pass


def tree_broadcast(tree):
    """Rank 0's arrays of a tree on every rank (every rank passes a tree with the same keys)."""
    if size() == 1:
        return tree
    flat = sorted(tree_flatten(tree), key=lambda kv: kv[0])
    keys = [(k, list(v.shape), str(v.dtype)) for k, v in flat]
    if broadcast_json(keys) != json.loads(json.dumps(keys)):
        raise CloError(f"rank {rank()}: its arrays differ from rank 0's (model or config differ)")
    out = [(k, all_sum(v if is_main() else mx.zeros_like(v))) for k, v in flat]
    mx.eval([v for _, v in out])
    return tree_unflatten(out)


def sum_step(values: dict[str, mx.array], *extra: float) -> tuple[dict[str, mx.array], list]:
    """A step's metric shares (scalar arrays) and extra numbers summed over ranks: one small
    all_sum, and one host read for the extras (the metrics stay arrays)."""
    if size() == 1:
        return values, list(extra)
    keys = sorted(values)
    parts = [mx.stack([mx.array(values[k]).astype(mx.float32) for k in keys])] if keys else []
    total = all_sum(mx.concatenate([*parts, mx.array(extra, mx.float32)]))
    return {k: total[i] for i, k in enumerate(keys)}, total[len(keys) :].tolist()
