"""`clo-mlx train`: CLO (or the SFT / DPO baselines) from a YAML config and flags.

With no model, data or config it runs the built-in offline demo.
"""

from __future__ import annotations

import typer


def train(
    config: str | None = typer.Option(
        None, "--config", "-c", help="YAML config (mlx-lm key names)."
    ),
    model: str | None = typer.Option(
        None, help="Local model folder (HF layout) or a cached HF repo id."
    ),
    data: str | None = typer.Option(
        None,
        help="JSONL file, folder with train/valid/test.jsonl, or a Hugging Face dataset "
        "(parquet/arrow file, save_to_disk folder, or a dataset id in the local HF cache).",
    ),
    split: str | None = typer.Option(
        None, help="Hugging Face data: the split to train on (default: train, validation, test)."
    ),
    columns: str | None = typer.Option(
        None, help="Hugging Face data: column names, e.g. prompt=question,chosen=better."
    ),
    adapter_path: str | None = typer.Option(
        None, help="Where adapters, checkpoints and metrics go."
    ),
    loss: str | None = typer.Option(None, help="clo | sft | dpo"),
    beta: float | None = typer.Option(None, help="DPO temperature (clo.beta)."),
    lam: float | None = typer.Option(
        None, "--lambda", help="Weight of the target NLL term (clo.lambda)."
    ),
    nll_languages: str | None = typer.Option(None, help="clo.nll_languages: target | both"),
    dpop_en: float | None = typer.Option(None, help="clo.dpop_en: DPOP weight, English pairs."),
    dpop_tgt: float | None = typer.Option(None, help="clo.dpop_tgt: DPOP weight, target pairs."),
    anchor_en: float | None = typer.Option(None, help="clo.anchor_en: English anchor weight."),
    sft_languages: str | None = typer.Option(None, help="sft.languages: target | en | both"),
    fine_tune_type: str | None = typer.Option(None, help="lora | dora | full (attention weights)"),
    num_layers: int | None = typer.Option(None, help="Adapt the last N layers (-1: all)."),
    lora_rank: int | None = typer.Option(None, help="lora_parameters.rank"),
    lora_scale: float | None = typer.Option(None, help="lora_parameters.scale"),
    lora_dropout: float | None = typer.Option(None, help="lora_parameters.dropout"),
    batch_size: int | None = typer.Option(None, help="Pairs per step (sequences for SFT)."),
    iters: int | None = typer.Option(None, help="Training steps."),
    learning_rate: float | None = typer.Option(None),
    steps_per_report: int | None = typer.Option(None),
    steps_per_eval: int | None = typer.Option(None),
    val_batches: int | None = typer.Option(None),
    save_every: int | None = typer.Option(None),
    max_seq_length: int | None = typer.Option(None),
    truncation: str | None = typer.Option(None, help="truncate_prompt | drop"),
    grad_checkpoint: bool | None = typer.Option(None, "--grad-checkpoint/--no-grad-checkpoint"),
    grad_accumulation_steps: int | None = typer.Option(None),
    micro_batch_size: int | None = typer.Option(
        None,
        help="Pairs per forward/backward pass; the batch's gradient is the exact sum of its "
        "micro-batches'. Default: automatic (memory).",
    ),
    memory_budget_gb: float | None = typer.Option(
        None,
        help="Memory the run may use (GB); micro-batches, gradient checkpointing and head "
        "chunks are chosen to fit. Default: the machine's (GPU working set, else RAM).",
    ),
    seed: int | None = typer.Option(None),
    dtype: str | None = typer.Option(None, help="auto | float32 | bfloat16 | float16"),
    resume_adapter_file: str | None = typer.Option(None, help="Start from these adapter weights."),
    test: bool | None = typer.Option(
        None, "--test/--no-test", help="Evaluate on test.jsonl after training."
    ),
    cache_dir: str | None = typer.Option(None, help="Reference log-prob cache folder."),
    logprob_chunk_size: int | None = typer.Option(
        None, help="Positions per output-head chunk (0: off)."
    ),
    reference_adapter_path: str | None = typer.Option(
        None, help="Reference = base + these adapters (e.g. SFT -> DPO/CLO). Default: the base."
    ),
    resume: bool | None = typer.Option(
        None, "--resume/--no-resume", help="Continue from the latest checkpoint in adapter_path."
    ),
    skip_nonfinite: bool | None = typer.Option(
        None, "--skip-nonfinite/--no-skip-nonfinite", help="Skip batches with a NaN/inf loss."
    ),
    report_to: str | None = typer.Option(
        None, help="Experiment trackers, comma-separated: wandb, swanlab, tensorboard."
    ),
    project_name: str | None = typer.Option(None, help="Tracker project (default clo-mlx)."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Print every metric of each report and evaluation."
    ),
    overwrite: bool = typer.Option(
        False, help="Replace an earlier run in adapter_path (default: refuse)."
    ),
    compare_sft: bool = typer.Option(
        False, help="Demo only: also run SFT on the same rows and compare."
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Check everything, time one reference batch and two steps, print the plan "
        "(pairs, tokens, buckets, estimated times, peak memory); write no adapters.",
    ),
) -> None:
    """Train adapters with CLO (default), SFT or DPO. No arguments: the built-in offline demo."""
    from clo_mlx.config import build_config
    from clo_mlx.hf_data import parse_columns
    from clo_mlx.run import run_training

    nested = {
        "clo": {
            "beta": beta,
            "lambda": lam,
            "nll_languages": nll_languages,
            "dpop_en": dpop_en,
            "dpop_tgt": dpop_tgt,
            "anchor_en": anchor_en,
        },
        "sft": {"languages": sft_languages},
        "lora_parameters": {"rank": lora_rank, "scale": lora_scale, "dropout": lora_dropout},
    }
    overrides = {
        "model": model,
        "data": data,
        "adapter_path": adapter_path,
        "loss": loss,
        "fine_tune_type": fine_tune_type,
        "num_layers": num_layers,
        "batch_size": batch_size,
        "iters": iters,
        "learning_rate": learning_rate,
        "steps_per_report": steps_per_report,
        "steps_per_eval": steps_per_eval,
        "val_batches": val_batches,
        "save_every": save_every,
        "max_seq_length": max_seq_length,
        "truncation": truncation,
        "grad_checkpoint": grad_checkpoint,
        "grad_accumulation_steps": grad_accumulation_steps,
        "micro_batch_size": micro_batch_size,
        "memory_budget_gb": memory_budget_gb,
        "seed": seed,
        "dtype": dtype,
        "resume_adapter_file": resume_adapter_file,
        "test": test,
        "cache_dir": cache_dir,
        "logprob_chunk_size": logprob_chunk_size,
        "resume": resume,
        "reference_adapter_path": reference_adapter_path,
        "skip_nonfinite": skip_nonfinite,
        "data_split": split,
        "data_columns": parse_columns(columns) or None,
        "report_to": report_to,
        "project_name": project_name,
    }
    for key, sub in nested.items():
        given = {k: v for k, v in sub.items() if v is not None}
        if given:
            overrides[key] = given

    if config is None and model is None and data is None:
        if dry_run:
            raise typer.BadParameter(
                "plans a run of your own: give -c, --model or --data", param_hint="--dry-run"
            )
        from clo_mlx.demo.run import run_demo, run_demo_comparison

        demo_overrides = {k: v for k, v in overrides.items() if v is not None}
        if compare_sft:
            run_demo_comparison(verbose=verbose, **demo_overrides)
        else:
            run_demo(verbose=verbose, **demo_overrides)
        return
    cfg = build_config(config, overrides)
    if dry_run:
        from clo_mlx.plan import dry_run as plan_run

        plan_run(cfg, overwrite=overwrite)
        return
    run_training(cfg, overwrite=overwrite, verbose=verbose)
