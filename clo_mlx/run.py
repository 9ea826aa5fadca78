"""The training recipe: model + data -> reference log-probs -> adapters -> trained adapters.

`prepare` loads and checks everything and computes the reference log-probs; `train_model` (the one
recipe the CLI, the demo, the sweep, the bench and `--dry-run` train with) attaches the adapters
and trains with the standard callbacks; `run_training` is the CLI's whole run around them.
Order matters: the reference log-probs are computed with the base model *before* the adapters are
attached, so there is never a second copy of the model.

Seeding, one rule: `cfg.seed` fixes the LoRA initialisation (attach_adapters), the batch order
(batching.epoch_order) and each step's RNG (trainer.train, from (seed, step)); nothing else draws.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from . import distributed
from .adapters import (
    ADAPTER_FILE,
    CONFIG_FILE,
    apply_trainable,
    check_trainable_fits,
    count_parameters,
    load_arrays_into,
    load_weights_into,
)
from .batching import PairData, SequenceData, pair_lengths
from .callbacks import Callbacks, Checkpointer, ConsoleLog, Evaluator, MetricsFile, TrainResult
from .checkpoint import checkpoint_root, load_checkpoint, resumable_checkpoint
from .config import ConfigError, TrainConfig
from .data import Pair, load_splits
from .io import WriteError, lock_folder, remove_stale_temporaries
from .losses import SFT_KINDS, nll_weights
from .memory import (
    MemoryChoice,
    data_lengths,
    fit_memory,
    has_shape,
    memory_line,
    model_shape,
    plan_memory,
)
from .models import file_fingerprint, load_model, model_fingerprint
from .reference import reference_logps, weight_dtypes, weights_digest
from .reporting import eval_line, final_metrics, make_trackers
from .tokens import EncodedPair, TruncationReport, encode_pairs
from .trainer import build_optimizer, evaluate_pairs, train


@dataclass
class Prepared:
    model: object
    tokenizer: object
    train: PairData | SequenceData
    valid: PairData | None
    test: PairData | None
    reports: dict[str, TruncationReport]
    memory: MemoryChoice | None = None  # memory_budget_gb's choice, made before the reference


def _console():
    return distributed.console()  # silent on ranks other than 0 under mlx.launch


def pair_data(
    model, encoded: list[EncodedPair], cfg: TrainConfig, model_id: str, console, label: str
) -> PairData:
    """Attach (cached) reference log-probs to encoded pairs."""
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"reference log-probs ({label})", total=len(encoded))
        ref_c, ref_r, cached = reference_logps(
            model,
            encoded,
            model_id,
            weight_dtypes(model),  # what dtype "auto" resolved to
            cfg.batch_size,
            cfg.max_seq_length,
            cfg.cache_dir,
            cfg.logprob_chunk_size,
            progress=lambda n: progress.advance(task, n),
        )
    console.print(
        f"reference log-probs ({label}, {len(encoded)} pairs): "
        f"{'from cache' if cached else 'computed and cached'}"
    )
    return PairData(encoded, ref_c, ref_r, nll_weights(encoded, cfg.clo["nll_languages"]))


def sft_sequences(encoded: list[EncodedPair], languages: str) -> list[tuple[list[int], int]]:
    """Chosen responses for SFT: target-language ('target'), English ('en') or both."""
    return [(e.chosen, e.chosen_start) for e in encoded if e.pair.kind in SFT_KINDS[languages]]


def needs_reference(cfg: TrainConfig) -> bool:
    """Whether the loss uses the reference's log-probs (SFT and reference-free SimPO do not)."""
    return cfg.loss in ("clo", "dpo") and cfg.clo["preference"] != "simpo"


def no_reference(model, encoded: list[EncodedPair], cfg: TrainConfig, *_) -> PairData:
    zeros = np.zeros(len(encoded), np.float32)
    return PairData(encoded, zeros, zeros.copy(), nll_weights(encoded, cfg.clo["nll_languages"]))


def check_batch_size(encoded: list[EncodedPair], cfg: TrainConfig) -> None:
    """A batch is made of whole rows: both pairs of a parallel row (en, tgt) share it."""
    per_row: dict[int, int] = {}
    for e in encoded:
        per_row[e.pair.row] = per_row.get(e.pair.row, 0) + 1
    unit = max(per_row.values(), default=1)
    if cfg.loss != "sft" and cfg.batch_size % unit:
        near = [n for n in (cfg.batch_size // unit * unit, -(-cfg.batch_size // unit) * unit) if n]
        raise ConfigError(
            f"batch_size={cfg.batch_size} is not a multiple of {unit}: each parallel row gives "
            f"{unit} pairs (en and tgt) that always share a batch; use "
            + " or ".join(map(str, near))
        )


def prepare(
    cfg: TrainConfig,
    model=None,
    tokenizer=None,
    splits: dict[str, list[Pair]] | None = None,
    console=None,
    preflight: Callable[[object], None] | None = None,
    reference: bool = True,
) -> Prepared:
    """Load and validate everything a run needs (data is checked before the model is loaded).

    `preflight(model)` runs once the model is loaded, before the reference pass (the long part):
    run_training checks there everything that would otherwise fail only after it.
    `reference=False` skips the reference pass (zeros instead; `train --dry-run` times one batch).
    """
    console = console or _console()
    if cfg.model is None and model is None:
        raise ConfigError("no model given (set `model` in the config or pass --model)")
    if splits is None:
        if cfg.data is None:
            raise ConfigError("no data given (set `data` in the config or pass --data)")
        splits = load_splits(cfg.data, cfg.data_split, cfg.data_columns)
    if "train" in splits:
        unit = 1 if cfg.loss == "sft" or all(p.kind == "pair" for p in splits["train"]) else 2
        distributed.check_batch_divides(cfg.batch_size, unit, "rows" if unit > 1 else "items")
    ref_adapters = cfg.reference_adapter_path
    if ref_adapters and model is not None:
        raise ConfigError("reference_adapter_path needs the model given by path (`model`)")
    if model is None:
        model, tokenizer = load_model(
            cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code
        )
        model_id = model_fingerprint(cfg.model)
        if ref_adapters:
            model_id += "+" + file_fingerprint(Path(ref_adapters) / ADAPTER_FILE)
    else:
        # A model given in memory may differ from any files (a cast, attached adapters, e.g. a
        # sweep's previous stage): key its reference log-probs on its actual tensors.
        model_id = "weights-" + weights_digest(model)
    check_trainable_fits(model, cfg)  # keys, layers, LoRA rank: before the reference pass
    if preflight is not None:
        preflight(model)
    shape = planned_shape(model, cfg)  # before reference adapters are loaded into the model
    if ref_adapters:
        # With reference adapters (e.g. SFT -> DPO with the SFT model as reference) the model
        # carries them for the reference pass, then is loaded again without: never two copies.
        from .adapters import load_adapters_checked

        load_adapters_checked(model, ref_adapters)

    encoded, reports = {}, {}
    for split, pairs in splits.items():
        encoded[split], reports[split] = encode_pairs(
            tokenizer, pairs, cfg.max_seq_length, cfg.truncation
        )
        if msg := reports[split].message():
            console.print(f"[yellow]{split}:[/] {msg}")
        if not encoded[split]:
            raise ConfigError(f"{split}: no pairs left after fitting them into max_seq_length")
    check_batch_size(encoded["train"], cfg)
    sft = None
    if cfg.loss == "sft":
        sft = SequenceData(sft_sequences(encoded["train"], cfg.sft["languages"]))
    if sft is not None and len(sft) < cfg.batch_size:
        raise ConfigError(
            f"sft.languages={cfg.sft['languages']!r} leaves {len(sft)} sequences, "
            f"fewer than batch_size={cfg.batch_size}"
        )
    if cfg.loss != "sft" and len(encoded["train"]) < cfg.batch_size:
        raise ConfigError(
            f"train has {len(encoded['train'])} items, fewer than batch_size={cfg.batch_size}"
        )
    # memory_budget_gb's choice, before the long part: settings that cannot fit are said now.
    memory = None
    if shape is not None:
        if sft is not None:
            lengths, per_item = data_lengths(sft)
        else:
            lengths, per_item = pair_lengths(encoded["train"]), 2
        memory = plan_memory(cfg, lengths, per_item, shape)
        console.print(memory_line(memory), highlight=False)

    model.eval()
    # The reference pass only where the loss uses it.
    pairs_of = pair_data if reference and needs_reference(cfg) else no_reference
    train_data = (
        pairs_of(model, encoded["train"], cfg, model_id, console, "train")
        if cfg.loss != "sft"
        else sft
    )
    valid = (
        pairs_of(model, encoded["valid"], cfg, model_id, console, "valid")
        if "valid" in encoded
        else None
    )
    test = (
        pairs_of(model, encoded["test"], cfg, model_id, console, "test")
        if cfg.test and "test" in encoded
        else None
    )
    if ref_adapters:
        del model
        model, tokenizer = load_model(
            cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code
        )
    return Prepared(model, tokenizer, train_data, valid, test, reports, memory)


def planned_shape(model, cfg: TrainConfig):
    """memory.ModelShape of `model` once cfg's adapters are attached (set up on a copy that
    shares the weights, which stay untouched); None when there is nothing to estimate."""
    if not has_shape(model):
        return None
    try:
        probe = shallow_copy(model)
        apply_trainable(probe, cfg)
    except (TypeError, AttributeError, ValueError, copy.Error):
        return None  # e.g. a model that already carries adapters: train_model chooses then
    return model_shape(probe)


def attach_adapters(model, cfg: TrainConfig, console=None) -> None:
    console = console or _console()
    mx.random.seed(cfg.seed)  # LoRA's random init of lora_a is fixed by the seed
    apply_trainable(model, cfg)
    if cfg.resume_adapter_file:
        load_weights_into(model, cfg.resume_adapter_file)
        console.print(f"initialised adapters from {cfg.resume_adapter_file}")
    trainable, total = count_parameters(model)
    console.print(
        f"trainable parameters: {trainable / 1e6:.3f}M of {total / 1e6:.3f}M "
        f"({100 * trainable / max(total, 1):.3f}%), {cfg.fine_tune_type} on "
        f"{', '.join(cfg.lora_parameters['keys'])}"
    )


def resume_checkpoint(cfg: TrainConfig, model, optimizer, ckpt) -> int:
    """load_checkpoint on rank 0; under mlx.launch its weights, optimizer state and step are
    sent to every rank (other machines need not have the checkpoint)."""
    if distributed.size() == 1:
        return load_checkpoint(cfg.adapter_path, model, optimizer, cfg, ckpt)
    if distributed.is_main():
        start = load_checkpoint(cfg.adapter_path, model, optimizer, cfg, ckpt)
    else:
        start = -1
        optimizer.init(model.trainable_parameters())
    start = distributed.broadcast_json(start)
    model.update(distributed.tree_broadcast(model.trainable_parameters()))
    optimizer.state = distributed.tree_broadcast(optimizer.state)
    return start


def previous_run_files(adapter_path: str | Path) -> list[Path]:
    """What an earlier training run left in `adapter_path` (what --overwrite removes)."""
    folder = Path(adapter_path)
    if not folder.is_dir():
        return []
    names = [ADAPTER_FILE, CONFIG_FILE, "metrics.jsonl", checkpoint_root(folder).name]
    found = [folder / n for n in names if (folder / n).exists()]
    return found + sorted(folder.glob("[0-9]" * 7 + "_adapters.safetensors"))


def check_output_folder(cfg: TrainConfig, overwrite: bool) -> None:
    """Before any work: the adapter folder can take this run without losing an earlier one."""
    folder = Path(cfg.adapter_path)
    if folder.exists() and not folder.is_dir():
        raise WriteError(f"{folder}: adapter_path exists and is not a folder")
    if cfg.resume:
        resumable_checkpoint(cfg)  # no checkpoint, an unreadable one, or a changed config
    elif (found := previous_run_files(folder)) and not overwrite:
        raise ConfigError(
            f"{folder}: holds an earlier run ({', '.join(p.name for p in found[:4])}"
            f"{' ...' if len(found) > 4 else ''}); pass --resume to continue it, --overwrite to "
            "replace it, or another --adapter-path"
        )


def shallow_copy(model):
    """A copy of the module tree that shares every parameter array (no weights are copied)."""
    from mlx.utils import tree_flatten

    return copy.deepcopy(model, {id(v): v for _, v in tree_flatten(model.parameters())})


def check_trainable(model, cfg: TrainConfig, resume_from: dict | None, where: Path | None) -> None:
    """Fail now, not after the reference pass, if the adapters cannot be set up as configured:
    layers and keys, and whether `resume_adapter_file` or the checkpoint fits (checked on a copy
    of the model that shares its weights, which stays untouched). Keys, layers and the LoRA rank
    were checked by `prepare` (adapters.check_trainable_fits)."""
    if cfg.resume_adapter_file is None and resume_from is None:
        return
    try:
        probe = shallow_copy(model)
    except (TypeError, AttributeError, copy.Error):  # a module that cannot be copied:
        return  # the same checks then run when the adapters are attached, after the reference
    apply_trainable(probe, cfg)
    if cfg.resume_adapter_file:
        load_weights_into(probe, cfg.resume_adapter_file)
    if resume_from is not None:
        load_arrays_into(probe, resume_from, where)
    del probe


def train_model(
    cfg: TrainConfig,
    prep: Prepared,
    console=None,
    verbose: bool = False,
    on_eval: Callable[[int, object], dict] | None = None,
    callbacks: Sequence = (),
    trackers=None,
    checkpoint=None,
) -> TrainResult:
    """The recipe every training runs: attach the adapters to `prep.model`, resume when
    cfg.resume, train with the standard callbacks, evaluate on `prep.test` when it is there.

    Standard callbacks (callbacks.py): the result, `metrics.jsonl`, the console (progress bar and
    a line per report), the trackers, evaluations on `prep.valid` (plus `on_eval(step, model)`'s
    metrics, e.g. the demo's fidelity) and saving. `callbacks` (mlx-lm's TrainingCallback shape)
    get the reports too. `trackers`: started by the caller (run_training starts them before the
    reference pass), else cfg.report_to's are started here; either way they are closed here.
    `checkpoint`: what checkpoint.resumable_checkpoint found (with cfg.resume).
    """
    console = console or _console()
    main = distributed.is_main()  # under mlx.launch only rank 0 writes files and logs
    attach_adapters(prep.model, cfg, console)
    # memory_budget_gb: the same (pure, cheap) choice as prepare's, said again only if it changed
    cfg = fit_memory(cfg, prep.train, prep.model, console, said=prep.memory)
    optimizer, start = None, 0
    if cfg.resume:
        optimizer = build_optimizer(cfg)
        start = resume_checkpoint(cfg, prep.model, optimizer, checkpoint)
        console.print(f"resuming from the checkpoint at step {start} in {cfg.adapter_path}")
    if trackers is None and main:
        trackers = make_trackers(cfg.report_to, cfg.project_name, cfg.adapter_path, cfg.to_dict())
    result = TrainResult(cfg.adapter_path)
    unit = "sequences" if isinstance(prep.train, SequenceData) else "pairs"
    with ConsoleLog(cfg, console, verbose, unit) as log:
        metrics = MetricsFile(cfg.adapter_path, start) if main else None
        report = Callbacks([result, metrics, log, trackers, *callbacks])
        evaluator = Evaluator(cfg, prep.valid, report, on_eval)
        train(prep.model, cfg, prep.train, Callbacks([report, evaluator, Checkpointer(cfg)]),
              start, optimizer)  # fmt: skip
    if prep.test is not None:
        test = evaluate_pairs(prep.model, prep.test, cfg, cfg.test_batches)
        record = {"step": cfg.iters, **{f"test/{k}": v for k, v in test.items()}}
        console.print(eval_line(record, verbose, split="test"), highlight=False)
        result.evals.append(record)
        if trackers is not None:
            trackers.on_val_loss_report({"iteration": cfg.iters, **record})
    if trackers is not None:
        trackers.on_run_end(final_metrics(result.evals))
    return result


def run_training(
    cfg: TrainConfig, console=None, overwrite: bool = False, verbose: bool = False
) -> tuple[Prepared, TrainResult]:
    """The whole run of `clo-mlx train`: prepare, then train_model (train, then test when asked).

    Everything that can fail is checked before the reference pass. The adapter folder is locked
    for the run; an earlier run in it is refused unless `overwrite` (its files are removed once the
    checks have passed) or cfg.resume. Trackers (cfg.report_to) get the config, train and eval
    metrics and the final eval table.
    """
    console = console or _console()
    main = distributed.is_main()  # under mlx.launch only rank 0 reads and writes adapter_path
    if main:
        check_output_folder(cfg, overwrite)
    # Trackers start first: a login problem shows before the long reference pass (rank 0 only).
    trackers = (
        make_trackers(cfg.report_to, cfg.project_name, cfg.adapter_path, cfg.to_dict())
        if main
        else None
    )
    with ExitStack() as stack:
        found = {}

        def preflight(model) -> None:
            if not main:
                return check_trainable(model, cfg, None, None)
            folder = Path(cfg.adapter_path)
            stack.enter_context(lock_folder(folder, "clo-mlx train"))
            for d in (folder, checkpoint_root(folder)):
                remove_stale_temporaries(d)
            if cfg.resume:
                found["ckpt"] = resumable_checkpoint(cfg)
                for why in found["ckpt"].skipped:
                    console.print(f"[yellow]skipped an unreadable checkpoint:[/] {why}")
            ckpt = found.get("ckpt")
            check_trainable(
                model,
                cfg,
                ckpt.adapters if ckpt else None,
                ckpt.folder / ADAPTER_FILE if ckpt else None,
            )

        prep = prepare(cfg, console=console, preflight=preflight)
        if overwrite and not cfg.resume and main:
            for p in previous_run_files(cfg.adapter_path):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        result = train_model(
            cfg, prep, console, verbose, trackers=trackers, checkpoint=found.get("ckpt")
        )
    console.print(f"adapters saved to {cfg.adapter_path}")
    return prep, result
