"""One training run from a config: model + data -> reference log-probs -> adapters.

Order matters: the reference log-probs are computed with the base model *before* the adapters are
attached, so there is never a second copy of the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from . import distributed
from .adapters import apply_trainable, count_parameters, load_weights_into
from .checkpoint import CheckpointError, load_checkpoint
from .config import ConfigError, TrainConfig
from .data import Pair, load_splits
from .models import file_fingerprint, load_model, model_fingerprint
from .reference import reference_logps
from .tokens import EncodedPair, TruncationReport, encode_pairs
from .trainer import (
    PairData,
    SequenceData,
    TrainResult,
    build_optimizer,
    nll_weights,
    sft_sequences,
    train,
)


@dataclass
class Prepared:
    model: object
    tokenizer: object
    train: PairData | SequenceData
    valid: PairData | None
    test: PairData | None
    reports: dict[str, TruncationReport]


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
            cfg.dtype,
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


def prepare(
    cfg: TrainConfig,
    model=None,
    tokenizer=None,
    splits: dict[str, list[Pair]] | None = None,
    console=None,
) -> Prepared:
    """Load and validate everything a run needs (data is checked before the model is loaded)."""
    console = console or _console()
    if cfg.model is None and model is None:
        raise ConfigError("no model given (set `model` in the config or pass --model)")
    if splits is None:
        if cfg.data is None:
            raise ConfigError("no data given (set `data` in the config or pass --data)")
        splits = load_splits(cfg.data)
    if "train" in splits:
        unit = 1 if cfg.loss == "sft" or all(p.kind == "pair" for p in splits["train"]) else 2
        distributed.check_batch_divides(cfg.batch_size, unit, "rows" if unit > 1 else "items")
    ref_adapters = cfg.reference_adapter_path
    if ref_adapters and model is not None:
        raise ConfigError("reference_adapter_path needs the model given by path (`model`)")
    if model is None:
        # With reference adapters (e.g. SFT -> DPO with the SFT model as reference) the model is
        # loaded with them for the reference pass, then loaded again without: never two copies.
        model, tokenizer = load_model(
            cfg.model,
            adapter_path=ref_adapters,
            dtype=cfg.dtype,
            trust_remote_code=cfg.trust_remote_code,
        )
    model_id = model_fingerprint(cfg.model) if cfg.model else f"in-memory-{id(model)}"
    if ref_adapters:
        model_id += "+" + file_fingerprint(Path(ref_adapters) / "adapters.safetensors")

    encoded, reports = {}, {}
    for split, pairs in splits.items():
        encoded[split], reports[split] = encode_pairs(
            tokenizer, pairs, cfg.max_seq_length, cfg.truncation
        )
        if msg := reports[split].message():
            console.print(f"[yellow]{split}:[/] {msg}")
        if not encoded[split]:
            raise ConfigError(f"{split}: no pairs left after fitting them into max_seq_length")

    model.eval()
    need_ref = cfg.loss in ("clo", "dpo")
    train_data = (
        pair_data(model, encoded["train"], cfg, model_id, console, "train")
        if need_ref
        else SequenceData(sft_sequences(encoded["train"], cfg.sft["languages"]))
    )
    if isinstance(train_data, SequenceData) and len(train_data) < cfg.batch_size:
        raise ConfigError(
            f"sft.languages={cfg.sft['languages']!r} leaves {len(train_data)} sequences, "
            f"fewer than batch_size={cfg.batch_size}"
        )
    if len(train_data) < cfg.batch_size:
        raise ConfigError(
            f"train has {len(train_data)} items, fewer than batch_size={cfg.batch_size}"
        )
    valid = (
        pair_data(model, encoded["valid"], cfg, model_id, console, "valid")
        if "valid" in encoded
        else None
    )
    test = (
        pair_data(model, encoded["test"], cfg, model_id, console, "test")
        if cfg.test and "test" in encoded
        else None
    )
    if ref_adapters:
        del model
        model, tokenizer = load_model(
            cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code
        )
    return Prepared(model, tokenizer, train_data, valid, test, reports)


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


def resume_checkpoint(cfg: TrainConfig, model, optimizer) -> int:
    """load_checkpoint on rank 0, its weights, optimizer state and step broadcast to all ranks."""
    if distributed.size() == 1:
        return load_checkpoint(cfg.adapter_path, model, optimizer, cfg)
    error, start = None, -1
    if distributed.is_main():
        try:
            start = load_checkpoint(cfg.adapter_path, model, optimizer, cfg)
        except CheckpointError as e:
            error = str(e)
    else:
        optimizer.init(model.trainable_parameters())
    start, error = distributed.broadcast_json([start, error])
    if error is not None:
        raise CheckpointError(error if distributed.is_main() else f"rank 0: {error}")
    model.update(distributed.tree_broadcast(model.trainable_parameters()))
    optimizer.state = distributed.tree_broadcast(optimizer.state)
    return start


def run_training(cfg: TrainConfig, console=None, **train_kwargs) -> tuple[Prepared, TrainResult]:
    """The whole run: prepare, attach adapters, train, and evaluate on test when asked."""
    console = console or _console()
    prep = prepare(cfg, console=console)
    attach_adapters(prep.model, cfg, console)
    np.random.seed(cfg.seed)
    if cfg.resume:
        optimizer = build_optimizer(cfg)
        start = resume_checkpoint(cfg, prep.model, optimizer)
        console.print(f"resuming from the checkpoint at step {start} in {cfg.adapter_path}")
        train_kwargs.update(start_step=start, optimizer=optimizer)
    result = train(prep.model, cfg, prep.train, prep.valid, console=console, **train_kwargs)
    if prep.test is not None:
        from .trainer import evaluate

        metrics = evaluate(prep.model, prep.test, cfg, cfg.test_batches)
        console.print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        result.evals.append({"step": cfg.iters, **{f"test/{k}": v for k, v in metrics.items()}})
    console.print(f"adapters saved to {cfg.adapter_path}")
    return prep, result
