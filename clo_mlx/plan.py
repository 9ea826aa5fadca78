"""`train --dry-run`: a plan before the long run.

Everything a run checks before its reference pass is checked the same way; then one reference
batch (the one with the most padded tokens) and two training steps are measured, and the run's
size, its estimated reference-pass and training time and the peak memory are printed. Nothing is
written to the adapter folder or the reference cache (the two steps train in a temporary folder).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections import Counter

import mlx.core as mx

from .batching import PairData, bucket_length, collate_pairs, pair_lengths, unit_batches
from .config import TrainConfig
from .memory import default_budget, wired_limit
from .reference import make_logp_fn, queue_logps, reference_batches
from .run import check_output_folder, needs_reference, prepare, train_model


def machine_memory() -> tuple[int | None, str]:
    """(bytes, what they are): the GPU's recommended working set, else the physical memory."""
    return default_budget()


def time_reference_batch(prep, cfg: TrainConfig) -> dict:
    """Seconds for the reference batch with the most padded tokens, and the pass's estimate
    (seconds per padded token x the pass's padded tokens; compilation included: an upper bound)."""
    encoded = prep.train.encoded
    lengths = pair_lengths(encoded)
    batches = reference_batches(encoded, cfg.batch_size)  # the run's own plan

    def padded(idx: list[int]) -> int:
        return 2 * len(idx) * bucket_length(max(lengths[i] for i in idx) - 1, cfg.max_seq_length)

    idx = max(batches, key=padded)
    batch = collate_pairs(encoded, idx, cfg.max_seq_length)
    logp_fn = make_logp_fn(prep.model, cfg.logprob_chunk_size)
    prep.model.eval()
    tic = time.perf_counter()
    mx.eval(queue_logps(logp_fn, *batch))
    seconds = time.perf_counter() - tic
    total = sum(padded(b) for b in batches)
    return {
        "reference_batch_pairs": len(idx),
        "reference_batch_seconds": seconds,
        "reference_batches": len(batches),
        "reference_estimate_seconds": seconds * total / padded(idx),
    }


def dry_run(cfg: TrainConfig, console=None, overwrite: bool = False) -> dict:
    """Validate the run, measure one reference batch and two training steps, print the plan."""
    from rich.console import Console

    console = console or Console(stderr=True)
    check_output_folder(cfg, overwrite)  # an earlier run is refused as the real run would
    with wired_limit():
        # No reference pass: one batch of it is timed below.
        prep = prepare(cfg, console=console, reference=False)
        data = prep.train
        plan: dict = {"pairs": {"train": len(data)}}
        for split in ("valid", "test"):
            if (d := getattr(prep, split)) is not None:
                plan["pairs"][split] = len(d)
        if isinstance(data, PairData):
            plan["tokens"] = sum(len(e.chosen) + len(e.rejected) for e in data.encoded)
        else:
            plan["tokens"] = sum(len(s) for s, _ in data.seqs)
        batches = unit_batches(data, cfg.batch_size, full=True)
        buckets = Counter(
            bucket_length(max(data.length(i) for i in b) - 1, cfg.max_seq_length) for b in batches
        )
        plan["buckets"] = dict(sorted(buckets.items()))
        if needs_reference(cfg):
            plan.update(time_reference_batch(prep, cfg))
        with tempfile.TemporaryDirectory(prefix="clo-mlx-dry-run-") as tmp:
            steps = dataclasses.replace(
                cfg, iters=2, steps_per_report=1, steps_per_eval=10**9, save_every=10**9,
                adapter_path=tmp, report_to=None, resume=False,
            )  # fmt: skip
            two_steps = dataclasses.replace(prep, valid=None, test=None)  # no evaluations
            result = train_model(steps, two_steps, console)
        second = result.reports[-1]
        plan["step_seconds"] = [1 / r["steps_per_second"] for r in result.reports]
        tokens_per_step = plan["tokens"] / len(batches)  # the mean batch, not the measured two
        plan["training_estimate_seconds"] = (
            cfg.iters * tokens_per_step / second["tokens_per_second"]
        )
        plan["peak_memory_gb"] = mx.get_peak_memory() / 1e9
        if (choice := prep.memory) is not None:  # made as the run makes it, before its reference
            plan["memory_estimate_gb"] = choice.estimate_bytes / 1e9
            plan["memory_fits"], plan["memory_choice"] = choice.fits, choice.why
    memory, what = machine_memory()
    plan["machine_memory_gb"] = memory / 1e9 if memory else None
    if cfg.memory_budget_gb:
        what = "memory_budget_gb"
    plan["memory_budget_gb"] = cfg.memory_budget_gb or plan["machine_memory_gb"]
    print_plan(plan, cfg, what, console)
    return plan


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def print_plan(plan: dict, cfg: TrainConfig, memory_kind: str, console) -> None:
    pairs = ", ".join(f"{k} {v:,}" for k, v in plan["pairs"].items())
    unit = "sequences" if cfg.loss == "sft" else "pairs"
    lines = [
        f"dry run: {unit} {pairs}; train tokens {plan['tokens']:,}",
        "length buckets (padded length: batches): "
        + ", ".join(f"{k}: {v}" for k, v in plan["buckets"].items()),
    ]
    if "reference_estimate_seconds" in plan:
        lines.append(
            f"reference pass: {plan['reference_batches']} batches of up to {cfg.batch_size} "
            f"pairs (batch_size); the largest "
            f"({plan['reference_batch_pairs']} pairs) took {plan['reference_batch_seconds']:.1f} s"
            f" -> about {_duration(plan['reference_estimate_seconds'])} "
            "(upper bound: compilation included; a cached pass takes none)"
        )
    steps = ", ".join(f"{s:.2f}" for s in plan["step_seconds"])
    lines.append(
        f"training: 2 steps took {steps} s (the first compiles) -> {cfg.iters} iters in about "
        f"{_duration(plan['training_estimate_seconds'])} (without evaluations)"
    )
    mem = plan["memory_budget_gb"]
    budget = f" of the {mem:.1f} GB budget ({memory_kind})" if mem else ""
    lines.append(f"peak memory (MLX) over the 2 steps: {plan['peak_memory_gb']:.2f} GB{budget}")
    if "memory_choice" in plan:
        lines.append(f"memory plan for the longest batch: {plan['memory_choice']}")
    if mem and plan["peak_memory_gb"] > 0.9 * mem:
        lines.append(
            "[yellow]close to the machine's memory: lower micro_batch_size, or set "
            "grad_checkpoint: true (README: Memory on a Mac)"
        )
    lines.append("nothing was written; run without --dry-run to train")
    for line in lines:
        console.print(line, highlight=False)
