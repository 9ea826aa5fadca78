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
from dataclasses import dataclass
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


# ----------------------------------------------------------------------------- memory budget
#
# A training pass's peak, estimated from the model's shape (calibrated on the Qwen2.5-0.5B shape
# in fp32: estimate 7.9 GB, MLX peak measured 7.8 GB for passes of 2 x 576 tokens):
# - the weights, and the LoRA parameters with their gradient and two Adam moments (4 copies);
# - the body's activations kept for the backward pass, per token and layer about 12 hidden-size
#   and 4 intermediate-size vectors, plus the attention scores and probabilities of each head
#   (the CPU attention is not fused); under gradient checkpointing only each layer's input is
#   kept, plus one layer's activations while it is recomputed;
# - the output head's logits of one chunk (fp32, with their exp and gradient: 3 copies).

HIDDEN_COPIES, INTERMEDIATE_COPIES, SCORE_COPIES, LOGIT_COPIES = 12, 4, 2, 3
HEAD_CHUNKS_BYTES = (256 * 2**20, 64 * 2**20, 16 * 2**20)  # the automatic head chunk, then less


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    intermediate: int
    heads: int
    vocab: int
    weight_bytes: int
    trainable: int  # trainable parameters (LoRA)
    itemsize: int = 4  # bytes per activation value (the weights' float dtype)


@dataclass(frozen=True)
class MemoryChoice:
    micro_batch_size: int
    grad_checkpoint: bool
    head_chunk_bytes: int
    estimate_bytes: int
    budget_bytes: int
    fits: bool
    why: str
    default: bool = False  # the settings a run without a budget would use


def model_shape(model) -> ModelShape:
    """The shape facts the estimate needs, read from an mlx-lm model (trainable = after LoRA)."""
    from mlx.utils import tree_flatten

    args = model.args
    params = tree_flatten(model.parameters())
    floats = [v for _, v in params if mx.issubdtype(v.dtype, mx.floating)]
    return ModelShape(
        hidden=args.hidden_size,
        layers=args.num_hidden_layers,
        intermediate=args.intermediate_size,
        heads=args.num_attention_heads,
        vocab=args.vocab_size,
        weight_bytes=sum(v.nbytes for _, v in params),
        trainable=sum(v.size for _, v in tree_flatten(model.trainable_parameters())),
        itemsize=floats[0].itemsize if floats else 4,
    )


def has_shape(model) -> bool:
    """Whether the estimate applies: an mlx-lm transformer's args."""
    return hasattr(getattr(model, "args", None), "intermediate_size")


def pass_peak_bytes(
    shape: ModelShape, sequences: int, length: int, grad_checkpoint: bool, head_chunk_bytes: int
) -> int:
    """Estimated peak bytes of one forward/backward pass over `sequences` x `length` tokens."""
    tokens = sequences * length
    per_token_layer = shape.itemsize * (
        HIDDEN_COPIES * shape.hidden + INTERMEDIATE_COPIES * shape.intermediate
    )
    scores = SCORE_COPIES * 4 * sequences * shape.heads * length * length  # per layer
    one_layer = tokens * per_token_layer + scores
    if grad_checkpoint:
        body = shape.layers * tokens * shape.hidden * shape.itemsize + one_layer
    else:
        body = shape.layers * one_layer
    per_position = 4 * shape.vocab
    chunk = max(1, min(tokens, head_chunk_bytes // per_position))
    head = LOGIT_COPIES * chunk * per_position
    return shape.weight_bytes + 16 * shape.trainable + body + head


def choose_memory(
    shape: ModelShape,
    batch_size: int,
    sequences_per_item: int,
    padded_length: int,
    budget_bytes: int,
    auto_micro: int,
    micro_batch_size: int | None = None,
    grad_checkpoint: bool | None = None,
    head_chunk_bytes: int | None = None,
) -> MemoryChoice:
    """The fastest settings whose estimated peak fits the budget, for the longest batch.

    Settings given (not None) are kept. Otherwise, in order of speed: micro-batches from
    `auto_micro` items (the default, ~1k padded tokens) down to 1, then the same with gradient
    checkpointing (one more forward per step), then smaller head chunks. When nothing fits, the
    smallest choice is returned with fits=False.
    """
    top = max(1, min(auto_micro, batch_size))
    micros = [micro_batch_size] if micro_batch_size else list(range(top, 0, -1))
    checkpoints = [grad_checkpoint] if grad_checkpoint is not None else [False, True]
    chunks = [head_chunk_bytes] if head_chunk_bytes is not None else list(HEAD_CHUNKS_BYTES)
    tried = []
    for chunk in chunks:
        for gc in checkpoints:
            for micro in micros:
                est = pass_peak_bytes(shape, micro * sequences_per_item, padded_length, gc, chunk)
                tried.append((micro, gc, chunk, est))
                if est <= budget_bytes:
                    return MemoryChoice(micro, gc, chunk, est, budget_bytes, True,
                                        _why(micro, gc, chunk, est, budget_bytes, len(tried)),
                                        default=len(tried) == 1)  # fmt: skip
    micro, gc, chunk, est = min(tried, key=lambda t: t[3])
    return MemoryChoice(micro, gc, chunk, est, budget_bytes, False,
                        _why(micro, gc, chunk, est, budget_bytes, 0))  # fmt: skip


def _why(micro: int, gc: bool, chunk: int, est: int, budget: int, rank: int) -> str:
    fit = "fits" if rank else "does NOT fit"
    first = " (the default settings)" if rank == 1 else ""
    return (
        f"micro_batch_size {micro}, grad_checkpoint {'on' if gc else 'off'}, head chunks of "
        f"{chunk / 2**20:.0f} MiB: estimated peak {est / 1e9:.1f} GB {fit} the memory budget "
        f"of {budget / 1e9:.1f} GB{first}"
    )


def default_budget() -> tuple[int | None, str]:
    """(bytes, what they are): the GPU's recommended working set, else the physical memory."""
    if size := recommended_working_set():
        return size, "recommended working set"
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"
    except (ValueError, OSError, AttributeError):
        return None, "unknown"


def plan_memory(cfg, lengths: list[int], per_item: int, shape: ModelShape) -> MemoryChoice:
    """The choice for this run: its longest item (`lengths`: tokens per pair or sequence;
    `per_item`: sequences per item, 2 for pairs), its model, cfg.memory_budget_gb (or the
    machine's), with the settings cfg gives kept."""
    from .batching import AUTO_MICRO_BATCH_TOKENS, bucket_length

    budget = int(cfg.memory_budget_gb * 1e9) if cfg.memory_budget_gb else default_budget()[0]
    longest = max(lengths) - 1  # the model sees tokens[:-1]
    padded = bucket_length(max(longest, 1), cfg.max_seq_length)
    chunk = cfg.logprob_chunk_size
    chunk_bytes = None if chunk is None else max(1, chunk) * per_item * 4 * shape.vocab
    return choose_memory(
        shape,
        cfg.batch_size,
        per_item,
        padded,
        budget or 2**62,
        max(1, AUTO_MICRO_BATCH_TOKENS // (per_item * padded)),
        cfg.micro_batch_size,
        cfg.grad_checkpoint,
        None if chunk == 0 else chunk_bytes,
    )


def memory_line(choice: MemoryChoice) -> str:
    """The one line a run prints about its choice (rich markup: yellow when it does not fit)."""
    if choice.fits:
        return f"memory: {choice.why}"
    return f"[yellow]memory: {choice.why} (lower batch_size or max_seq_length; README: Memory on a Mac)"


def apply_memory(cfg, choice: MemoryChoice, per_item: int, vocab: int):
    """cfg with the automatic settings that `choice` resolved (the given ones are kept)."""
    import dataclasses

    changes: dict = {"grad_checkpoint": choice.grad_checkpoint}
    if cfg.micro_batch_size is None and not choice.default:
        changes["micro_batch_size"] = choice.micro_batch_size
    if cfg.logprob_chunk_size is None and choice.head_chunk_bytes != HEAD_CHUNKS_BYTES[0]:
        rows = choice.micro_batch_size * per_item
        changes["logprob_chunk_size"] = max(1, choice.head_chunk_bytes // (rows * 4 * vocab))
    return dataclasses.replace(cfg, **changes)


def data_lengths(data) -> tuple[list[int], int]:
    """(lengths, sequences per item) of PairData or SequenceData."""
    from .batching import PairData

    return [data.length(i) for i in range(len(data))], 2 if isinstance(data, PairData) else 1


def fit_memory(cfg, data, model, console=None, said: MemoryChoice | None = None):
    """cfg with the automatic memory settings resolved by plan_memory for the model as it is
    (adapters attached); one line says what was chosen and why (a warning when the estimate
    exceeds the budget), unless it is `said`: the choice run.prepare printed before the
    reference pass (it differs only when a setting changed since, or prepare could not tell)."""
    if not has_shape(model):
        return cfg  # not an mlx-lm transformer shape: nothing to estimate
    lengths, per_item = data_lengths(data)
    choice = plan_memory(cfg, lengths, per_item, model_shape(model))
    if console is not None and choice != said:
        console.print(memory_line(choice), highlight=False)
    return apply_memory(cfg, choice, per_item, model.args.vocab_size)
