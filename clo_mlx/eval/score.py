"""`clo-mlx score`: summed response log-probs of every pair, with the training code path."""

from __future__ import annotations

import json
from pathlib import Path

from .. import distributed
from ..data import DataError, load_pairs
from ..io import atomic_write_text
from ..models import load_model
from ..reference import score_pairs
from ..tokens import encode_pairs


def score_file(
    model_path: str,
    data: str | Path,
    output: str | Path,
    adapter_path: str | None = None,
    batch_size: int = 8,
    max_seq_length: int = 2048,
    truncation: str = "truncate_prompt",
    dtype: str = "auto",
    logprob_chunk_size: int | None = None,
    console=None,
) -> list[dict]:
    """Write one JSON line per pair: row, kind, chosen/rejected log-prob and token count.

    Pairs that cannot fit `max_seq_length` get null log-probs and `"skipped": "too long"`.
    """
    from rich.progress import Progress

    console = console or distributed.console()
    if Path(output).is_dir():
        raise DataError(f"{output}: --output is a folder; give the JSONL file to write")
    pairs = load_pairs(data)
    model, tokenizer = load_model(model_path, adapter_path=adapter_path, dtype=dtype)
    encoded, report = encode_pairs(tokenizer, pairs, max_seq_length, truncation)
    if msg := report.message():
        console.print(f"[yellow]{msg}")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("scoring", total=len(encoded))
        scores = score_pairs(
            model,
            encoded,
            batch_size,
            max_seq_length,
            logprob_chunk_size,
            progress=lambda n: progress.advance(task, n),
        )
    by_pair = {id(e.pair): i for i, e in enumerate(encoded)}
    lines = []
    for p in pairs:
        i = by_pair.get(id(p))
        line = {"row": p.row, "kind": p.kind}
        if i is None:
            line.update(
                chosen_logp=None,
                rejected_logp=None,
                chosen_tokens=None,
                rejected_tokens=None,
                skipped="too long",
            )
        else:
            line.update(
                chosen_logp=float(scores["chosen_logp"][i]),
                rejected_logp=float(scores["rejected_logp"][i]),
                chosen_tokens=int(scores["chosen_tokens"][i]),
                rejected_tokens=int(scores["rejected_tokens"][i]),
            )
        lines.append(line)
    if distributed.is_main():  # data-parallel: the scores were gathered to every rank
        atomic_write_text(output, "".join(json.dumps(x) + "\n" for x in lines))
    return lines
