"""`clo-mlx translate`: build parallel CLO data from English SFT data with a local model."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def translate(
    source: Path = typer.Option(
        ...,
        help="English SFT rows (prompt/response, Alpaca, single-turn messages or ShareGPT): "
        "JSONL, or a Hugging Face dataset (parquet/arrow, save_to_disk folder, cached id).",
    ),
    split: str | None = typer.Option(None, help="Hugging Face data: the split (default train)."),
    columns: str | None = typer.Option(
        None, help="Hugging Face data: column names, e.g. prompt=question,response=answer."
    ),
    lang: str = typer.Option(..., help="Target language (ISO 639-1, e.g. sw, yo, de, zh)."),
    output: Path = typer.Option(..., help="Parallel CLO JSONL to write (appended; resumable)."),
    model: Path = typer.Option(..., help="Local model folder (M2M100/NLLB-200 or a chat model)."),
    backend: str = typer.Option("m2m100", help="m2m100 (M2M100/NLLB-200) or llm (mlx-lm chat)."),
    batch_size: int = typer.Option(16, help="Rows per written batch and sentences per forward."),
    beams: int | None = typer.Option(
        None,
        help="Beam size (m2m100; 1 = greedy). Default: the model's generation_config.json, else 1.",
    ),
    max_new_tokens: int | None = typer.Option(
        None,
        help="Maximum tokens per piece. Default: generation_config.json's max_length - 1, else 256.",
    ),
    length_penalty: float | None = typer.Option(
        None, help="Beam length penalty (m2m100). Default: generation_config.json, else 1.0."
    ),
    early_stopping: bool | None = typer.Option(
        None,
        "--early-stopping/--no-early-stopping",
        help="Stop beam search once num_beams hypotheses end (m2m100). Default: generation_config.json.",
    ),
    model_lang: str | None = typer.Option(
        None, help="The model's own target code when it differs (e.g. swh_Latn for NLLB)."
    ),
    dtype: str | None = typer.Option(
        None, help="m2m100 weights dtype (float32, float16, bfloat16); default: as stored."
    ),
    max_chars: int = typer.Option(400, help="Split sentences longer than this many characters."),
    min_ratio: float | None = typer.Option(
        None, help="Lowest target/source length ratio (default: the calibrated band of --lang)."
    ),
    max_ratio: float | None = typer.Option(
        None, help="Highest target/source length ratio (default: the calibrated band of --lang)."
    ),
    check_language: bool = typer.Option(
        True, "--check-language/--no-check-language", help="Reject rows not in --lang."
    ),
    check_numbers: bool = typer.Option(
        True, "--check-numbers/--no-check-numbers", help="Reject rows whose numbers changed."
    ),
    min_logprob: float | None = typer.Option(
        None,
        help="m2m100: reject rows whose translator's mean token log-prob is below this (off by default; not calibrated).",
    ),
    min_back_chrf: float | None = typer.Option(
        None,
        help="m2m100: translate kept rows back into English with the same model and reject those whose chrF (0-100) against the source is below this (off by default; not calibrated).",
    ),
    limit: int | None = typer.Option(None, help="Translate only the first N rows."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Translate English SFT rows into parallel rows; rejected rows go to a side file."""
    from rich.console import Console
    from rich.table import Table

    from clo_mlx.data import DataError
    from clo_mlx.translate.backends import make_llm, make_m2m100
    from clo_mlx.translate.langid import check_language as check_code
    from clo_mlx.translate.pipeline import (
        Filters,
        read_finished,
        read_sft,
        side_paths,
        translate_file,
    )

    if backend not in ("m2m100", "llm"):
        raise typer.BadParameter("must be 'm2m100' or 'llm'", param_hint="--backend")
    if min_back_chrf is not None and backend != "m2m100":
        raise typer.BadParameter("needs --backend m2m100", param_hint="--min-back-chrf")
    if min_back_chrf is not None and not 0 <= min_back_chrf <= 100:
        raise typer.BadParameter("must be between 0 and 100 (chrF)", param_hint="--min-back-chrf")
    for name, value in (("--batch-size", batch_size), ("--beams", beams or 1)):
        if value < 1:
            raise typer.BadParameter("must be >= 1", param_hint=name)
    try:
        check_code(lang, where="--lang")
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--lang") from e
    from clo_mlx.hf_data import is_hf_source

    if not source.is_file() and not is_hf_source(source):
        raise typer.BadParameter(f"{source}: no such file", param_hint="--source")
    if lang == "en":
        raise typer.BadParameter(
            "names the target language; it cannot be 'en'", param_hint="--lang"
        )
    if output.is_dir():
        raise typer.BadParameter(
            f"{output}: is a folder; give the JSONL file to write", param_hint="--output"
        )
    if not (model / "config.json").is_file():
        raise typer.BadParameter(
            f"{model}: not a model folder (no config.json)", param_hint="--model"
        )
    try:
        model_type = json.loads((model / "config.json").read_text()).get("model_type")
    except (ValueError, AttributeError) as e:
        raise typer.BadParameter(f"{model / 'config.json'}: not a JSON object ({e})") from None
    if backend == "llm" and model_type == "m2m_100":
        raise typer.BadParameter(
            f"{model} is an M2M100/NLLB translation model; use --backend m2m100",
            param_hint="--model",
        )

    def fail(e: Exception) -> None:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from e

    try:
        # Input files first: a bad row must not wait for the model to load.
        rows = read_sft(source, split, columns)
        for path in (output, *side_paths(output)[:1]):
            read_finished(path, lang)
        if backend == "m2m100":
            fn = make_m2m100(
                model, lang, batch_size, max_new_tokens, beams, model_lang, dtype,
                length_penalty=length_penalty, early_stopping=early_stopping,
                with_scores=min_logprob is not None,
            )  # fmt: skip
        else:
            fn = make_llm(model, lang, batch_size, max_new_tokens or 256)
    except (DataError, ValueError, FileNotFoundError) as e:
        fail(e)
    filters = Filters(
        min_ratio=min_ratio, max_ratio=max_ratio, langid=check_language, numbers=check_numbers,
        min_logprob=min_logprob, min_back_chrf=min_back_chrf,
    )  # fmt: skip
    try:
        summary = translate_file(
            source, output, lang, fn, batch_size=batch_size, filters=filters,
            max_chars=max_chars, limit=limit, show_progress=progress,
            generation=getattr(fn, "settings", None), split=split, columns=columns, rows=rows,
            back_fn=getattr(fn, "back", None) if min_back_chrf is not None else None,
        )  # fmt: skip
    except (DataError, ValueError) as e:
        fail(e)
    from clo_mlx import distributed

    if not distributed.is_main():  # under mlx.launch only rank 0 reports
        return
    table = Table(title=f"translate -> {summary['lang']}")
    table.add_column("rows")
    table.add_column("count", justify="right")
    run = summary["this_run"]
    table.add_row("total", str(summary["rows"]))
    table.add_row("skipped (done before)", str(run["skipped_finished"]))
    table.add_row("kept", str(summary["kept"]))
    for reason, n in summary["reasons"].items():
        table.add_row(f"rejected: {reason}", str(n))
    if run["rows_per_s"]:
        table.add_row("rows/s (this run)", f"{run['rows_per_s']:.2f}")
    Console().print(table)
    if "generation" in summary:
        used = ", ".join(
            f"{k}={v['value']} ({v['from']})" for k, v in summary["generation"].items()
        )
        typer.echo(f"decoding: {used}")
    typer.echo(
        f"parallel rows: {summary['output']}\nrejected rows: {summary['rejected_file']}\n"
        f"report: {summary['report_file']}"
    )
