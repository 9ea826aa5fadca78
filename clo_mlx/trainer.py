"""Training loop: batches -> compiled step (CLO / DPO / SFT) -> trained adapters.

The step is `mx.compile`d with explicit state (model, optimizer, RNG), as mlx-lm's trainer does.
Chosen and rejected sequences share one forward pass, padded to length buckets so compiled
shapes repeat (batching.py); reference log-probs come precomputed (reference.py); the loss is
losses.py's. The loop only trains: reports, evaluations, metrics files, the progress bar and
saving are callbacks (callbacks.py); run.train_model puts them together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_map, tree_unflatten

from . import distributed
from .adapters import trainable_weights
from .batching import (
    PairData,
    SequenceData,
    batch_stream,
    check_batch_divides,
    micro_batches,
    rank_share,
    spread_batches,
    unit_batches,
)
from .callbacks import TrainingCallback
from .config import TrainConfig, optimizer_kwargs
from .errors import CloError
from .logprobs import sequence_logps
from .losses import SFT_KINDS, kind_weights, mean_token_nll, pair_loss, sft_loss
from .memory import with_wired_limit

# ----------------------------------------------------------------------------- the step


def make_loss_fn(cfg: TrainConfig) -> Callable:
    """loss(model, *batch, totals) -> (loss, metrics) for cfg.loss, on a PairData (SFT:
    SequenceData) batch; `totals`: micro_batches' [pairs, NLL tokens] of the whole batch."""
    chunk = cfg.logprob_chunk_size

    def pairs(model, inputs, targets, mask, ref_c, ref_r, nll_w, is_en, start, totals):
        logps, ntok = sequence_logps(model, inputs, targets, mask, chunk, start)  # [2P]
        return pair_loss(cfg, logps, ntok, ref_c, ref_r, nll_w, is_en, totals[0], totals[1])

    def sequences(model, inputs, targets, mask, start, totals):
        logps, _ = sequence_logps(model, inputs, targets, mask, chunk, start)  # [B]
        return sft_loss(logps, totals[1])

    return sequences if cfg.loss == "sft" else pairs


def build_optimizer(cfg: TrainConfig) -> optim.Optimizer:
    from mlx_lm.tuner.utils import build_schedule

    lr = build_schedule(cfg.lr_schedule) if cfg.lr_schedule else cfg.learning_rate
    cls = {
        "adam": optim.Adam,
        "adamw": optim.AdamW,
        "sgd": optim.SGD,
        "adafactor": optim.Adafactor,
    }[cfg.optimizer]
    return cls(learning_rate=lr, **optimizer_kwargs(cfg.optimizer, cfg.optimizer_config))


# ----------------------------------------------------------------------------- evaluation


@with_wired_limit
def evaluate_pairs(
    model: nn.Module, data: PairData, cfg: TrainConfig, num_batches: int = -1
) -> dict:
    """Preference metrics on held-out pairs, over all pairs at once (not averaged per batch).

    `loss` is the training objective of cfg.loss: CLO with the configured beta and lambda, DPO
    (lambda 0), or SFT's mean per-token NLL of the chosen responses sft.languages covers;
    `nll/target` is the mean per-token NLL of the target-language chosen responses. Metrics per
    pair kind get a suffix, e.g. `rewards/accuracies/tgt`. With `num_batches`, that many batches
    spread over the lengths (batching.spread_batches).
    """
    was_training = model.training
    model.eval()
    logp_fn = mx.compile(
        partial(sequence_logps, model, chunk_size=cfg.logprob_chunk_size), inputs=model.state
    )
    batches = unit_batches(data, cfg.batch_size, full=False)
    batches = [batches[b] for b in spread_batches(len(batches), num_batches, cfg.seed)]
    order = [i for idx in batches for i in idx]
    if not order:
        model.train(was_training)
        return {}
    # Data-parallel: each rank scores every size-th batch; the scores are gathered to all ranks.
    mine, logps, ntoks = [], [], []
    for idx in distributed.shard(batches):
        inputs, targets, mask, *_, start = data.batch(idx, cfg.max_seq_length)
        lp, nt = logp_fn(inputs, targets, mask, start=start)
        P = len(idx)
        logps.append(mx.stack([lp[:P], lp[P:]]))  # [2, P]
        ntoks.append(mx.stack([nt[:P], nt[P:]]))  # [2, P]
        mine += idx
    model.train(was_training)
    position = {i: p for p, i in enumerate(order)}
    scores = {"logps": np.zeros((0, 2), np.float32), "ntoks": np.zeros((0, 2), np.float32)}
    if mine:
        scores = {
            "logps": np.array(mx.concatenate(logps, axis=1)).T.astype(np.float32),
            "ntoks": np.array(mx.concatenate(ntoks, axis=1)).T.astype(np.float32),
        }
    scores = distributed.gather_rows(scores, [position[i] for i in mine], len(order))
    logps, ntoks = mx.array(scores["logps"].T), mx.array(scores["ntoks"].T)  # [2, N]
    ref_c, ref_r = mx.array(data.ref_chosen[order]), mx.array(data.ref_rejected[order])
    nll_w, is_en = mx.array(data.nll_weight[order]), mx.array(data.is_en[order])
    kinds = np.array([data.encoded[i].pair.kind for i in order])
    sft_w = mx.array(kind_weights(kinds, SFT_KINDS[cfg.sft["languages"]]))

    def metrics_of(sel: np.ndarray) -> dict:
        s = mx.array(np.nonzero(sel)[0])
        lp, nt = logps[:, s].reshape(-1), ntoks[:, s].reshape(-1)  # [2n]: chosen, then rejected
        _, m = pair_loss(cfg, lp, nt, ref_c[s], ref_r[s], nll_w[s], is_en[s])
        if cfg.loss == "sft":
            m["loss"] = mean_token_nll(logps[0][s], ntoks[0][s], sft_w[s])
        return {k: v.item() for k, v in m.items()}

    result = metrics_of(np.ones(len(order), bool))
    if len(set(kinds)) > 1:
        for kind in sorted(set(kinds)):
            for k, v in metrics_of(kinds == kind).items():
                if k.startswith(("rewards/", "logps/", "loss/dpo")):
                    result[f"{k}/{kind}"] = v
    return result


# ----------------------------------------------------------------------------- training


class NonFiniteLoss(CloError):
    """NaN/inf loss or weights; the message names the step."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C during training: a checkpoint was saved; `clo-mlx train --resume` continues."""


@with_wired_limit
def train(
    model: nn.Module,
    cfg: TrainConfig,
    data: PairData | SequenceData,
    callback: TrainingCallback | None = None,
    start_step: int = 0,
    optimizer: optim.Optimizer | None = None,
) -> None:
    """Train the trainable parameters of `model` (adapters.apply_trainable), steps
    start_step + 1 .. cfg.iters, telling `callback` (callbacks.py) when to report, evaluate and save.

    To resume, pass the step and the optimizer restored by `checkpoint.load_checkpoint`: the batch
    order and the RNG depend only on (seed, step), so a resumed run continues exactly. Steps with a
    non-finite loss are undone (and skipped with cfg.skip_nonfinite, else NonFiniteLoss); the
    first Ctrl-C stops at the next update with a checkpoint (TrainingInterrupted).
    """
    callback = callback or TrainingCallback()
    check_batch_divides(data, cfg.batch_size)
    if cfg.grad_checkpoint:
        _grad_checkpoint(model.layers[0])
    optimizer = optimizer or build_optimizer(cfg)
    # The state must exist before the first step: a non-finite first step restores a snapshot of it.
    optimizer.init(model.trainable_parameters())
    step, meter = _Step(model, optimizer, cfg), _Meter()
    saved = start_step  # the last step whose adapters and checkpoint are on disk (0: none)
    model.train()
    callback.on_train_begin(start_step, model)
    stream = batch_stream(data, cfg.batch_size, cfg.seed, start_step)
    with _StopOnSigint() as sigint:
        for it in range(start_step + 1, cfg.iters + 1):
            idx = rank_share(data, next(stream))
            parts, totals = micro_batches(data, idx, cfg)
            mx.random.seed(cfg.seed * 1_000_003 + it)  # RNG (dropout) fixed by (seed, step)
            before = (trainable_weights(model), tree_map(lambda x: x, optimizer.state))
            tic = time.perf_counter()
            # The last step applies what is pending even when iters is not a multiple of accum.
            update = it % cfg.grad_accumulation_steps == 0 or it == cfg.iters
            values, finite = step(parts, totals, update)
            # Global numbers: every rank's shares summed, and a Ctrl-C on any rank stops all.
            values, (tokens, stop) = distributed.sum_step(
                values, data.tokens(idx), float(sigint.requested)
            )
            seconds = time.perf_counter() - tic
            if cfg.clear_cache_threshold and mx.get_cache_memory() > cfg.clear_cache_threshold:
                mx.clear_cache()
            # The one host read of a step: whether the loss and the updated weights are finite.
            if (finite & mx.isfinite(values["loss"])).item():
                step.keep()
            else:  # undo the step: the weights before it are still referenced in `before`
                model.update(tree_unflatten(list(before[0].items())))
                _assign_inplace(optimizer.state, before[1])
                step.drop()
                if not cfg.skip_nonfinite:
                    raise _non_finite(it, values["loss"].item(), saved, cfg)
                values = {}
            meter.add(values, tokens, seconds)
            if it % cfg.steps_per_report == 0 or it == cfg.iters:
                callback.on_train_loss_report({"iteration": it, **meter.report(it, optimizer)})
            callback.on_step_end(it, model, not values)  # evaluations (callbacks.Evaluator)
            if step.at_boundary and (it % cfg.save_every == 0 or it == cfg.iters or stop):
                callback.on_save(it, model, optimizer, it % cfg.save_every == 0 and it != cfg.iters)
                saved = it
            if stop and step.at_boundary:
                # mlx.launch stops every rank once one exits non-zero: wait for rank 0's save.
                distributed.barrier()
                raise TrainingInterrupted(
                    f"interrupted at step {it}; checkpoint saved in {cfg.adapter_path}. "
                    "Run the same command with --resume to continue."
                )


class _Step:
    """The compiled training step over the micro-batches of a batch, with gradient accumulation:
    the summed gradients of `pending` steps not applied yet are kept in `grad`."""

    def __init__(self, model: nn.Module, optimizer: optim.Optimizer, cfg: TrainConfig):
        loss_value_and_grad = nn.value_and_grad(model, make_loss_fn(cfg))
        self.state = [model.state, optimizer.state, mx.random.state]
        self.grad, self.pending = None, 0

        @partial(mx.compile, inputs=self.state, outputs=self.state)
        def step(batch, totals, prev_grad, do_update, n_accumulated):
            (_, metrics), grad = loss_value_and_grad(model, *batch, totals)
            if prev_grad is not None:
                grad = tree_map(lambda a, b: a + b, grad, prev_grad)
            if not do_update:
                return metrics, grad, mx.array(True)
            grad = distributed.sum_gradients(grad)
            if n_accumulated > 1:  # the mean gradient of the steps since the last update
                grad = tree_map(lambda g: g / n_accumulated, grad)
            optimizer.update(model, grad)
            # Checked inside the compiled graph: one fused reduction, not a pass per tensor.
            weights = trainable_weights(model).values()
            return metrics, None, mx.all(mx.stack([mx.isfinite(w).all() for w in weights]))

        self._step = step

    def __call__(self, parts: list, totals: mx.array, update: bool) -> tuple[dict, mx.array]:
        """(the batch's metrics, whether the updated weights are finite); `update` applies the
        pending gradients after the last part."""
        values: dict[str, mx.array] = {}
        for p, part in enumerate(parts):
            apply = update and p == len(parts) - 1
            n = self.pending + 1 if apply else 1
            metrics, self.grad, finite = self._step(part, totals, self.grad, apply, n)
            mx.eval(self.state, metrics, self.grad, finite)  # frees this part's activations
            for k, v in metrics.items():  # shares of the batch's values: they add up
                values[k] = values.get(k, 0.0) + v
        return values, finite

    @property
    def at_boundary(self) -> bool:
        """No gradient pending: the weights are those of a whole number of updates."""
        return self.grad is None

    def keep(self) -> None:
        self.pending = 0 if self.grad is None else self.pending + 1

    def drop(self) -> None:
        self.grad, self.pending = None, 0


class _Meter:
    """Metrics and throughput since the last report: averages over the steps not skipped."""

    def __init__(self):
        self.trained_tokens = 0
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, mx.array] = {}  # arrays: read once per report, not per step
        self.steps, self.good, self.tokens, self.seconds = 0, 0, 0, 0.0

    def add(self, values: dict, tokens: float, seconds: float) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.good += bool(values)
        self.tokens += int(tokens)
        self.steps += 1
        self.seconds += seconds

    def report(self, step: int, optimizer: optim.Optimizer) -> dict:
        self.trained_tokens += self.tokens
        report = {
            "step": step,
            **{k: (v / self.good).item() for k, v in self.sums.items()},
            "learning_rate": float(optimizer.learning_rate.item()),
            "tokens_per_second": self.tokens / self.seconds,
            "steps_per_second": self.steps / self.seconds,
            "trained_tokens": self.trained_tokens,
            "peak_memory_gb": mx.get_peak_memory() / 1e9,
        }
        self._reset()
        return report


def _non_finite(step: int, loss: float, saved: int, cfg: TrainConfig) -> NonFiniteLoss:
    where = (
        f"The last good adapters and checkpoint (step {saved}) are in {cfg.adapter_path}"
        if saved
        else f"Nothing was saved yet (the first save is at step {min(cfg.save_every, cfg.iters)})"
    )
    return NonFiniteLoss(
        f"non-finite loss or weights at step {step} (loss {loss}); stopped. {where} (lower the "
        "learning rate, check the data, or set skip_nonfinite: true)."
    )


def _assign_inplace(dst, src):
    """Copy the arrays of tree `src` into the containers of tree `dst` (compiled state stays bound)."""
    if isinstance(dst, dict):
        for k in dst:
            dst[k] = _assign_inplace(dst[k], src[k])
        return dst
    if isinstance(dst, list):
        for i in range(len(dst)):
            dst[i] = _assign_inplace(dst[i], src[i])
        return dst
    return src


class _StopOnSigint:
    """First Ctrl-C asks the loop to stop after the current step; a second one interrupts."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        import signal
        import threading

        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        import signal

        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def _grad_checkpoint(layer: nn.Module) -> None:
    from mlx_lm.tuner.trainer import grad_checkpoint

    grad_checkpoint(layer)
