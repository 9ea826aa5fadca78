"""Per-sequence response log-probs: sum_t mask[t] * log p(targets[t] | inputs[:t+1]).

The full-vocabulary log-softmax is never materialised: each token's log-prob is its logit minus the
logsumexp over the vocabulary. The head and its logsumexp are a large share of a step with a big
vocabulary (about a quarter of a Qwen2.5-0.5B forward), so they run only where a log-prob counts:
- `start` (batching.response_start): the leading positions that are prompt in every row are
  skipped;
- `batching.head_index(mask)` gives (start, positions): the head then runs only over the gathered
  response positions (no padding, no prompt of rows with a longer prompt), and the log-probs are
  put back in place before the per-row sum, so the sums are the same additions as without the
  gather (the matmul and logsumexp of a position do not depend on the other rows).
For large vocabularies the head runs over chunks under `mx.checkpoint`, so at most one chunk of
logits is alive, in the forward and in the backward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

# Architectures whose `Model.__call__` is exactly `head(self.model(inputs))`.
SPLITTABLE = {"llama", "mistral", "qwen2", "qwen3"}
AUTO_CHUNK_BYTES = 256 * 2**20


def token_logps(logits: mx.array, targets: mx.array) -> mx.array:
    """[B, L, V] logits, [B, L] targets -> [B, L] log-probs of the targets (fp32)."""
    logits = logits.astype(mx.float32)
    picked = mx.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return picked - mx.logsumexp(logits, axis=-1)


def output_head(model: nn.Module) -> Callable[[mx.array], mx.array] | None:
    """The hidden -> logits head, when the model splits cleanly and the head is frozen."""
    if getattr(model, "model_type", None) not in SPLITTABLE or not hasattr(model, "model"):
        return None
    if hasattr(model, "lm_head"):
        head = model.lm_head
        if tree_flatten(head.trainable_parameters()):
            return None  # a trained head needs the plain path to get its gradient
        return head
    embed = model.model.embed_tokens
    if tree_flatten(embed.trainable_parameters()):
        return None
    return embed.as_linear


def chunk_length(batch: int, length: int, vocab: int, chunk_size: int | None) -> int:
    """Sequence positions per head chunk: `chunk_size` if set (0 = no chunking), else automatic."""
    if chunk_size is not None:
        return length if chunk_size <= 0 else min(chunk_size, length)
    per_position = batch * vocab * 4
    return max(1, min(length, AUTO_CHUNK_BYTES // per_position))


def _head_logps(head, hidden: mx.array, targets: mx.array, C: int) -> mx.array:
    """[N, H] hidden, [N] targets -> [N] log-probs, the head over chunks of C positions."""
    N = targets.shape[0]
    if C >= N:
        return token_logps(head(hidden), targets)
    chunk = mx.checkpoint(lambda h, t: token_logps(head(h), mx.stop_gradient(t)))
    return mx.concatenate([chunk(hidden[s : s + C], targets[s : s + C]) for s in range(0, N, C)])


def sequence_logps(
    model: nn.Module,
    inputs: mx.array,  # [B, L] int
    targets: mx.array,  # [B, L] int
    mask: mx.array,  # [B, L] float, 1 on response tokens
    chunk_size: int | None = None,
    start: int | tuple[int, mx.array] = 0,  # response_start, or head_index's (start, positions)
) -> tuple[mx.array, mx.array]:
    """(summed response log-probs [B], response token counts [B])."""
    start, positions = start if isinstance(start, tuple) else (start, None)
    head = output_head(model)
    vocab = getattr(getattr(model, "args", None), "vocab_size", 0)
    targets, mask = targets[:, start:], mask[:, start:]  # [B, L']
    B, L = targets.shape
    if head is None:
        logps = token_logps(model(inputs)[:, start:], targets)  # [B, L']
        return (logps * mask).sum(axis=-1), mask.sum(axis=-1)
    hidden = model.model(inputs)[:, start:]  # [B, L', H]
    C = chunk_length(B, L, vocab, chunk_size) if vocab else L
    if positions is not None:
        # Same memory per chunk as C positions of all B rows.
        C = C * B if chunk_size is not None else chunk_length(1, B * L, vocab, None)
        idx = mx.minimum(positions, B * L - 1)  # the padding slots (B * L) read the last one
        picked = _head_logps(head, hidden.reshape(B * L, -1)[idx], targets.reshape(-1)[idx], C)
        picked = mx.where(positions < B * L, picked, 0.0)
        logps = mx.zeros((B * L,), mx.float32).at[idx].add(picked).reshape(B, L)
    elif C >= L:
        logps = token_logps(head(hidden), targets)  # [B, L']
    else:
        chunk = mx.checkpoint(lambda h, t: token_logps(head(h), mx.stop_gradient(t)))
        logps = mx.concatenate(
            [chunk(hidden[:, s : s + C], targets[:, s : s + C]) for s in range(0, L, C)], axis=1
        )
    return (logps * mask).sum(axis=-1), mask.sum(axis=-1)
