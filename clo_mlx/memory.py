"""Apple-silicon memory behaviour as mlx-lm has it: the wired limit.

mlx-lm's trainer and generator raise the wired (non-pageable) memory limit to the GPU's
recommended working-set size, so the model's weights are not paged out between steps. clo-mlx
does the same around training, the reference pass, evaluation and generation, and puts the old
limit back afterwards. Devices that report no recommended size (the CPU backend, CUDA) are left
alone: a no-op, never an error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import mlx.core as mx

F = TypeVar("F", bound=Callable)


def recommended_working_set() -> int | None:
    """The device's recommended working-set size in bytes, or None when it reports none."""
    info = getattr(mx, "device_info", None) or getattr(mx.metal, "device_info", None)
    try:
        size = info().get("max_recommended_working_set_size") if info else None
    except (RuntimeError, ValueError, AttributeError):
        return None
    return int(size) if size else None


def maybe_set_recommended_wired_limit() -> int | None:
    """Set the wired limit to the recommended size (mlx-lm's function, made safe).

    Returns the previous limit, or None when nothing was changed.
    """
    size = recommended_working_set()
    if size is None:
        return None
    try:
        return mx.set_wired_limit(size)
    except (RuntimeError, ValueError):  # e.g. a limit the OS refuses: keep running unwired
        return None


@contextmanager
def wired_limit() -> Iterator[None]:
    """The recommended wired limit for the duration of the block; the old one restored after."""
    old = maybe_set_recommended_wired_limit()
    try:
        yield
    finally:
        if old is not None:
            mx.synchronize()  # the limit must not change under a running evaluation
            mx.set_wired_limit(old)


def with_wired_limit(fn: F) -> F:
    """Decorator: run `fn` inside `wired_limit()`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with wired_limit():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
