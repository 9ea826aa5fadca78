"""Training loop: encoded pairs -> batches -> compiled step (CLO / DPO / SFT) -> adapters.

The step is `mx.compile`d with explicit state (model, optimizer, RNG), as mlx-lm's trainer does.
Chosen and rejected sequences share one forward pass; sequences are padded to length buckets so
compiled shapes repeat; reference log-probs come precomputed (see reference.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_map, tree_unflatten

from . import distributed, reporting
from .adapters import ADAPTER_FILE, save_adapters, trainable_weights
from .batching import (
    bucket_length,
    collate,
    epoch_order,
    length_sorted_batches,
)
from .checkpoint import save_checkpoint
from .config import TrainConfig, optimizer_kwargs
from .errors import CloError
from .io import append_jsonl, ensure_folder
from .logprobs import head_index, sequence_logps
from .losses import clo_loss, mean_token_nll
from .memory import with_wired_limit
from .tokens import EncodedPair

# ----------------------------------------------------------------------------- data for a step


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
        seqs = [(self.encoded[i].chosen, self.encoded[i].chosen_start) for i in idx]
        seqs += [(self.encoded[i].rejected, self.encoded[i].rejected_start) for i in idx]
        inputs, targets, mask = collate(seqs, max_len)  # [2P, L]
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


def unit_batches(data: PairData | SequenceData, batch_size: int, full: bool) -> list[list[int]]:
    """Batches of item indices built from whole units, grouped by length."""
    units = data.units()
    per_batch = max(1, batch_size // max(len(u) for u in units))
    lengths = [max(data.length(i) for i in u) for u in units]
    grouped = length_sorted_batches(lengths, per_batch, full=full)
    return [[i for u in g for i in units[u]] for g in grouped]


def nll_weights(encoded: list[EncodedPair], nll_languages: str) -> np.ndarray:
    """Which chosen responses the CLO NLL term covers: target-language only (the paper), or both."""
    kinds = [e.pair.kind for e in encoded]
    if nll_languages == "both":
        return np.ones(len(kinds), np.float32)
    return np.array([k in ("tgt", "pair") for k in kinds], np.float32)


SFT_KINDS = {"target": ("tgt", "pair"), "en": ("en",), "both": ("en", "tgt", "pair")}


def sft_sequences(encoded: list[EncodedPair], languages: str) -> list[tuple[list[int], int]]:
    """Chosen responses for SFT: target-language ('target'), English ('en') or both."""
    keep = SFT_KINDS[languages]
    return [(e.chosen, e.chosen_start) for e in encoded if e.pair.kind in keep]


def batch_stream(data, batch_size: int, seed: int, start_step: int = 0):
    """Endless (epoch, position, indices) in a fixed order given the seed; resumable at any step."""
    batches = unit_batches(data, batch_size, full=True)
    step, epoch = 0, 0
    while True:
        for pos, b in enumerate(epoch_order(len(batches), seed, epoch)):
            if step >= start_step:
                yield epoch, pos, batches[b]
            step += 1
        epoch += 1


# ----------------------------------------------------------------------------- losses of a step


def preference_options(cfg: TrainConfig) -> dict:
    return {
        "beta": cfg.clo["beta"],
        "preference": cfg.clo["preference"],
        "gamma": cfg.clo["simpo_gamma"],
    }


def retention_weights(cfg: TrainConfig, is_en: mx.array) -> dict:
    """clo_loss's per-pair DPOP and anchor weights [P] (losses.py), only for the terms in use."""
    c, out = cfg.clo, {}
    if c["dpop_en"] or c["dpop_tgt"]:
        out["dpop_weight"] = c["dpop_en"] * is_en + c["dpop_tgt"] * (1 - is_en)
    if c["anchor_en"]:
        out["anchor_weight"] = c["anchor_en"] * is_en
    return out


def make_loss_fn(cfg: TrainConfig) -> Callable:
    """loss(model, *batch, totals) -> (loss, metrics) for cfg.loss.

    `totals` = [pairs (sequences for SFT), NLL tokens] of the whole batch: losses and metrics are
    divided by these, so the micro-batches of one batch add up exactly to the batch's values.
    """
    chunk = cfg.logprob_chunk_size
    lam = cfg.clo["lambda"] if cfg.loss == "clo" else 0.0
    pref = preference_options(cfg)

    def preference_loss(model, inputs, targets, mask, ref_c, ref_r, nll_w, is_en, start, totals):
        logps, ntok = sequence_logps(model, inputs, targets, mask, chunk, start)  # [2P]
        P = ref_c.shape[0]
        policy_c, policy_r = logps[:P], logps[P:]  # [P], [P]
        target_nll = mean_token_nll(policy_c, ntok[:P], nll_w, totals[1])  # scalar
        return clo_loss(
            policy_c,
            policy_r,
            ref_c,
            ref_r,
            target_nll,
            lam=lam,
            chosen_tokens=ntok[:P],
            rejected_tokens=ntok[P:],
            num_pairs=totals[0],
            **pref,
            **retention_weights(cfg, is_en),
        )

    def sft_loss(model, inputs, targets, mask, start, totals):
        logps, _ = sequence_logps(model, inputs, targets, mask, chunk, start)  # [B]
        nll = -logps.sum() / totals[1]
        return nll, {"loss": nll, "nll/train": nll}

    return sft_loss if cfg.loss == "sft" else preference_loss


AUTO_MICRO_BATCH_TOKENS = 1024


def micro_batches(
    data: PairData | SequenceData, idx: list[int], cfg: TrainConfig
) -> tuple[list[tuple[mx.array, ...]], mx.array]:
    """A batch as micro-batches (see micro_batch_pairs), each padded to its own length bucket,
    and the batch's totals [pairs, NLL tokens] (see make_loss_fn).

    Gradients of the parts add up to the whole batch's gradient; only one part's activations
    are alive at a time.
    """
    n_parts = -(-len(idx) // micro_batch_pairs(data, idx, cfg))
    parts = [data.batch(part.tolist(), cfg.max_seq_length) for part in np.array_split(idx, n_parts)]
    if isinstance(data, PairData):
        # NLL tokens: response tokens of the chosen sequences (first P rows) the NLL term covers.
        tokens = sum(
            (mask[: len(nll_w)].sum(axis=-1) * nll_w).sum() for _, _, mask, _, _, nll_w, *_ in parts
        )
    else:
        tokens = sum(mask.sum() for _, _, mask, _ in parts)
    # Data-parallel: `idx` is this rank's share and the totals are the global batch's.
    totals = distributed.all_sum(mx.stack([mx.array(float(len(idx))), tokens.astype(mx.float32)]))
    return parts, mx.stack([totals[0], mx.maximum(totals[1], 1.0)])


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


def micro_batch_pairs(data: PairData | SequenceData, idx: list[int], cfg: TrainConfig) -> int:
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


def spread_batches(n_batches: int, num: int, seed: int) -> list[int]:
    """`num` of `n_batches` length-sorted batches, one from each of `num` equal length strata
    (at a position fixed by the seed), so a partial validation covers short and long rows."""
    if num < 0 or num >= n_batches:  # -1: all
        return list(range(n_batches))
    rng = np.random.default_rng([seed, n_batches, num])
    edges = np.linspace(0, n_batches, num + 1).round().astype(int)
    return [int(rng.integers(lo, hi)) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


@with_wired_limit
def evaluate(model: nn.Module, data: PairData, cfg: TrainConfig, num_batches: int = -1) -> dict:
    """Preference metrics on held-out pairs, over all pairs at once (not averaged per batch).

    `loss` is the training objective of cfg.loss: CLO with the configured beta and lambda, DPO
    (lambda 0), or SFT's mean per-token NLL of the chosen responses sft.languages covers;
    `nll/target` is the mean per-token NLL of the target-language chosen responses. Metrics per
    pair kind get a suffix, e.g. `rewards/accuracies/tgt`. With `num_batches`, that many batches
    spread over the lengths (spread_batches).
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
    logps, ntoks = mx.array(scores["logps"].T), mx.array(scores["ntoks"].T)
    ref_c, ref_r = mx.array(data.ref_chosen[order]), mx.array(data.ref_rejected[order])
    nll_w = mx.array(data.nll_weight[order])
    is_en = mx.array(data.is_en[order])
    kinds = np.array([data.encoded[i].pair.kind for i in order])
    lam = {"clo": cfg.clo["lambda"], "dpo": 0.0, "sft": 1.0}[cfg.loss]
    sft_w = mx.array(np.isin(kinds, SFT_KINDS[cfg.sft["languages"]]).astype(np.float32))

    def metrics_of(sel: np.ndarray) -> dict:
        s = mx.array(np.nonzero(sel)[0])
        nll = mean_token_nll(logps[0][s], ntoks[0][s], nll_w[s])
        _, m = clo_loss(
            logps[0][s],
            logps[1][s],
            ref_c[s],
            ref_r[s],
            nll,
            lam=lam,
            chosen_tokens=ntoks[0][s],
            rejected_tokens=ntoks[1][s],
            **preference_options(cfg),
            **retention_weights(cfg, is_en[s]),
        )
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


@dataclass
class TrainResult:
    reports: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    adapter_file: Path | None = None


class NonFiniteLoss(CloError):
    """NaN/inf loss or weights; the message names the step."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C during training: a checkpoint was saved; `clo-mlx train --resume` continues."""


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


@with_wired_limit
def train(
    model: nn.Module,
    cfg: TrainConfig,
    train_data: PairData | SequenceData,
    valid_data: PairData | None = None,
    on_report: Callable[[dict], None] | None = None,
    on_eval: Callable[[int, nn.Module], dict] | None = None,
    console=None,
    start_step: int = 0,
    optimizer: optim.Optimizer | None = None,
    training_callback: reporting.Tracker | None = None,
    verbose: bool = False,
) -> TrainResult:
    """Train the trainable parameters of `model` (prepared by adapters.apply_trainable).

    Reports go to `metrics.jsonl` in cfg.adapter_path, to `on_report`, and to the console; evals
    (preference metrics on `valid_data`, plus whatever `on_eval` returns) every steps_per_eval.
    Every save_every steps: adapters (mlx-lm layout) and a resumable checkpoint. To resume, pass
    the step and the optimizer restored by `checkpoint.load_checkpoint`: the batch order and the
    RNG depend only on (seed, step), so a resumed run continues exactly.
    `training_callback` (mlx-lm's TrainingCallback shape) gets reports and evals; without one,
    the trackers of cfg.report_to are made here and closed at the end.
    """
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = console or distributed.console()
    main = distributed.is_main()  # data-parallel: only rank 0 prints and writes files
    check_batch_divides(train_data, cfg.batch_size)
    adapter_path = ensure_folder(cfg.adapter_path) if main else Path(cfg.adapter_path)
    metrics_file = adapter_path / "metrics.jsonl"
    if main:
        _truncate_metrics(metrics_file, start_step)
    if cfg.grad_checkpoint:
        _grad_checkpoint(model.layers[0])
    optimizer = optimizer or build_optimizer(cfg)
    # The state must exist before the first step: a non-finite first step restores a snapshot of it.
    optimizer.init(model.trainable_parameters())
    loss_value_and_grad = nn.value_and_grad(model, make_loss_fn(cfg))
    accum = cfg.grad_accumulation_steps
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
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
        # Checked inside the compiled graph: one fused reduction instead of a pass per tensor.
        finite = mx.all(mx.stack([mx.isfinite(w).all() for w in trainable_weights(model).values()]))
        return metrics, None, finite

    callback = training_callback or (
        reporting.make_trackers(cfg.report_to, cfg.project_name, adapter_path, cfg.to_dict())
        if main  # trackers log from rank 0 only
        else None
    )
    result = TrainResult()
    sums: dict[str, mx.array] = {}  # metrics stay arrays: read once per report, not per step
    n_steps, n_good, n_tokens, elapsed, trained_tokens = 0, 0, 0, 0.0, 0
    grad, pending = None, 0  # summed gradients of `pending` steps not applied yet
    saved_step = start_step  # the last step whose adapters and checkpoint are on disk (0: none)
    model.train()

    def run_eval(it: int) -> None:
        record: dict = {"step": it}
        tic = time.perf_counter()
        if valid_data is not None and len(valid_data):
            record.update(
                {
                    f"val/{k}": v
                    for k, v in evaluate(model, valid_data, cfg, cfg.val_batches).items()
                }
            )
        if on_eval is not None:
            record.update(on_eval(it, model) or {})
        model.train()
        if len(record) > 1:
            record["val_time"] = time.perf_counter() - tic
            result.evals.append(record)
            if main:
                append_jsonl(metrics_file, [{"type": "eval", **record}])
            if callback is not None:
                callback.on_val_loss_report({"iteration": it, **record})
            console.print(reporting.eval_line(record, verbose), style="cyan", highlight=False)

    columns = (
        TextColumn("[bold]train"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    unit = "sequences" if isinstance(train_data, SequenceData) else "pairs"
    per_pass = (
        f"at most {cfg.micro_batch_size} {unit}"
        if cfg.micro_batch_size
        else f"automatic, <= {AUTO_MICRO_BATCH_TOKENS:,} padded tokens"
    )
    console.print(f"batches of {cfg.batch_size} {unit}; forward/backward passes: {per_pass}")
    with Progress(*columns, console=console, transient=False, disable=not main) as progress:
        task = progress.add_task("train", total=cfg.iters, completed=start_step, info="")
        if start_step == 0:
            run_eval(0)
        stream = batch_stream(train_data, cfg.batch_size, cfg.seed, start_step)
        with _StopOnSigint() as sigint:
            for it in range(start_step + 1, cfg.iters + 1):
                _, _, idx = next(stream)
                idx = rank_share(train_data, idx)
                parts, totals = micro_batches(train_data, idx, cfg)
                mx.random.seed(cfg.seed * 1_000_003 + it)  # RNG (dropout) fixed by (seed, step)
                before = (trainable_weights(model), tree_map(lambda x: x, optimizer.state))
                tic = time.perf_counter()
                values = {}
                # The last step applies what is pending even when iters is not a multiple of accum.
                update = it % accum == 0 or it == cfg.iters
                for p, part in enumerate(parts):
                    last = p == len(parts) - 1
                    apply = last and update
                    metrics, grad, finite = step(
                        part, totals, grad, apply, pending + 1 if apply else 1
                    )
                    mx.eval(state, metrics, grad, finite)  # frees this part's activations
                    for k, v in metrics.items():  # shares of the batch's values: they add up
                        values[k] = values.get(k, 0.0) + v
                # Global numbers: every rank's shares summed, and a Ctrl-C on any rank stops all.
                values, (batch_tokens, stop) = distributed.sum_step(
                    values, _count_tokens(train_data, idx), float(sigint.requested)
                )
                elapsed += time.perf_counter() - tic
                if cfg.clear_cache_threshold and mx.get_cache_memory() > cfg.clear_cache_threshold:
                    mx.clear_cache()
                # The one host read of a step: whether the loss and the updated weights are finite.
                if not (finite & mx.isfinite(values["loss"])).item():
                    # Undo the step: the weights before it are still referenced in `before`.
                    model.update(tree_unflatten(list(before[0].items())))
                    _assign_inplace(optimizer.state, before[1])
                    grad, pending = None, 0
                    if not cfg.skip_nonfinite:
                        saved = (
                            f"The last good adapters and checkpoint (step {saved_step}) are in "
                            f"{adapter_path}"
                            if saved_step
                            else f"Nothing was saved yet (the first save is at step "
                            f"{min(cfg.save_every, cfg.iters)})"
                        )
                        raise NonFiniteLoss(
                            f"non-finite loss or weights at step {it} "
                            f"(loss {values['loss'].item()}); "
                            f"stopped. {saved} (lower the learning rate, check the data, or set "
                            "skip_nonfinite: true)."
                        )
                    console.print(f"[yellow]step {it}: non-finite loss, batch skipped")
                    values = {}
                else:
                    pending = 0 if grad is None else pending + 1
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_good += bool(values)  # report averages are over the steps not skipped
                n_tokens += int(batch_tokens)
                n_steps += 1
                progress.update(task, advance=1, **({} if values else {"info": "skipped"}))

                if it % cfg.steps_per_report == 0 or it == cfg.iters:
                    trained_tokens += n_tokens
                    report = {
                        "step": it,
                        **{k: (v / n_good).item() for k, v in sums.items()},
                        "learning_rate": float(optimizer.learning_rate.item()),
                        "tokens_per_second": n_tokens / elapsed,
                        "steps_per_second": n_steps / elapsed,
                        "trained_tokens": trained_tokens,
                        "peak_memory_gb": mx.get_peak_memory() / 1e9,
                    }
                    result.reports.append(report)
                    if main:
                        append_jsonl(metrics_file, [{"type": "train", **report}])
                    if on_report is not None and main:
                        on_report(report)
                    if callback is not None:
                        callback.on_train_loss_report({"iteration": it, **report})
                    progress.console.print(reporting.train_line(report, verbose), highlight=False)
                    progress.update(task, info=f"loss {report['loss']:.3f}" if n_good else "")
                    sums, n_steps, n_good, n_tokens, elapsed = {}, 0, 0, 0, 0.0

                if it % cfg.steps_per_eval == 0 or it == cfg.iters:
                    run_eval(it)
                at_boundary = grad is None  # no gradient pending
                if (it % cfg.save_every == 0 or it == cfg.iters) and at_boundary:
                    # The checkpoint first: a kill before the other files can still --resume.
                    result.adapter_file = adapter_path / ADAPTER_FILE
                    if main:
                        save_checkpoint(adapter_path, it, model, optimizer, cfg)
                        if it != cfg.iters:
                            save_adapters(
                                model, adapter_path, cfg, filename=f"{it:07d}_adapters.safetensors"
                            )
                        save_adapters(model, adapter_path, cfg)
                    saved_step = it
                if stop and at_boundary:
                    if main:
                        save_checkpoint(adapter_path, it, model, optimizer, cfg)
                        save_adapters(model, adapter_path, cfg)
                    # mlx.launch stops every rank once one exits non-zero: wait for rank 0's save.
                    distributed.barrier()
                    raise TrainingInterrupted(
                        f"interrupted at step {it}; checkpoint saved in {adapter_path}. "
                        "Run the same command with --resume to continue."
                    )
    if callback is not None and training_callback is None:
        callback.on_run_end(reporting.final_metrics(result.evals))
    return result


def _truncate_metrics(path: Path, keep_until: int) -> None:
    """Keep the metrics lines of steps <= keep_until (a resumed run rewrites later ones)."""
    if not path.exists():
        return
    if keep_until == 0:
        path.unlink()
        return
    import json

    from .io import atomic_write_text

    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= keep_until:
                kept.append(line + "\n")
        except json.JSONDecodeError:
            continue  # a torn last line from a crash
    atomic_write_text(path, "".join(kept))


def _count_tokens(data, idx: list[int]) -> int:
    return sum(len(s) for s in _batch_sequences(data, idx))


def _batch_sequences(data, idx: list[int]):
    """The token sequences a batch trains on (for token counting)."""
    if isinstance(data, PairData):
        for i in idx:
            yield data.encoded[i].chosen
            yield data.encoded[i].rejected
    else:
        for i in idx:
            yield data.seqs[i][0]
