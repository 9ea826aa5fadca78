"""Data: JSONL rows -> validated rows -> preference pairs.

Two row formats (one per file):
- parallel (CLO): {"lang", "prompt_en", "response_en", "prompt_tgt", "response_tgt", "id"?}
  gives two pairs: kind "en"  (prompt_en:  chosen response_en,  rejected response_tgt)
                   kind "tgt" (prompt_tgt: chosen response_tgt, rejected response_en)
- preference (plain DPO): {"prompt", "chosen", "rejected", "id"?} gives one pair of kind "pair".

`data` may be a JSONL file or a folder with train.jsonl / valid.jsonl / test.jsonl (as mlx-lm).
Every problem is reported as `file:line: field ...` before any long work starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import CloError
from .langid import check_language

PARALLEL_FIELDS = ("lang", "prompt_en", "response_en", "prompt_tgt", "response_tgt")
PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")
SPLITS = ("train", "valid", "test")


class DataError(CloError):
    """Bad input data; the message names the file, line and field."""


@dataclass(frozen=True)
class Pair:
    row: int  # 0-based index of the row in its file
    kind: str  # "en" | "tgt" | "pair"
    lang: str  # language of the chosen response ("en", the target code, or "" for plain rows)
    prompt: str
    chosen: str
    rejected: str


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(1-based line number, object) for each non-empty line; errors name file and line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read data file ({e.strerror or e})") from e
    rows: list[tuple[int, dict]] = []
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{lineno}: invalid UTF-8 at byte {e.start} of the line") from e
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        rows.append((lineno, obj))
    return rows


def detect_format(obj: dict) -> str | None:
    """'parallel', 'preference' or None for a row object."""
    if all(k in obj for k in ("prompt_en", "prompt_tgt")) or "response_tgt" in obj:
        return "parallel"
    if all(k in obj for k in PREFERENCE_FIELDS):
        return "preference"
    return None


def _require_text(obj: dict, field: str, where: str) -> str:
    if field not in obj:
        raise DataError(f"{where}: missing field {field!r}")
    value = obj[field]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: field {field!r} is empty")
    return value


def load_rows(path: str | Path, lines: list | None = None) -> tuple[str, list[dict]]:
    """Validate a JSONL data file (or `lines` read from `path`, see hf_data); return its
    format and rows (with `_line` added)."""
    path = Path(path)
    lines = read_jsonl(path) if lines is None else lines
    if not lines:
        raise DataError(f"{path}: no rows")
    first_line, first = lines[0]
    fmt = detect_format(first)
    if fmt is None:
        raise DataError(
            f"{path}:{first_line}: unrecognised row (keys {sorted(first)}); expected a parallel CLO "
            f"row with {list(PARALLEL_FIELDS)} or a preference row with {list(PREFERENCE_FIELDS)}"
        )
    fields = PARALLEL_FIELDS if fmt == "parallel" else PREFERENCE_FIELDS
    rows = []
    for lineno, obj in lines:
        where = f"{path}:{lineno}"
        row = {f: _require_text(obj, f, where) for f in fields}
        if fmt == "parallel":
            try:
                check_language(row["lang"], where=f"{where}: field 'lang'")
            except ValueError as e:
                raise DataError(str(e)) from None
            if row["lang"] == "en":
                raise DataError(f"{where}: field 'lang' is 'en'; it names the target language")
        if "id" in obj:
            row["id"] = obj["id"]
        row["_line"] = lineno
        rows.append(row)
    return fmt, rows


def rows_to_pairs(fmt: str, rows: list[dict]) -> list[Pair]:
    """Preference pairs from validated rows (two per parallel row, one per preference row)."""
    pairs = []
    for i, r in enumerate(rows):
        if fmt == "parallel":
            pairs.append(Pair(i, "en", "en", r["prompt_en"], r["response_en"], r["response_tgt"]))
            pairs.append(
                Pair(i, "tgt", r["lang"], r["prompt_tgt"], r["response_tgt"], r["response_en"])
            )
        else:
            pairs.append(Pair(i, "pair", "", r["prompt"], r["chosen"], r["rejected"]))
    return pairs


def load_pairs(path: str | Path) -> list[Pair]:
    """Validated pairs of one JSONL file."""
    return rows_to_pairs(*load_rows(path))


def resolve_splits(data: str | Path) -> dict[str, Path]:
    """Map split name -> file for a JSONL file (train only) or an mlx-lm style data folder."""
    data = Path(data)
    if data.is_file():
        return {"train": data}
    if data.is_dir():
        found = {s: data / f"{s}.jsonl" for s in SPLITS if (data / f"{s}.jsonl").is_file()}
        if "train" not in found:
            raise DataError(f"{data}: data folder has no train.jsonl")
        return found
    raise DataError(f"{data}: no such data file or folder")


def load_splits(
    data: str | Path, split: str | None = None, columns: dict | None = None
) -> dict[str, list[Pair]]:
    """Validated pairs for each split present (all files are checked before returning).
    `data` may also be a Hugging Face dataset (hf_data: `split`, `columns`)."""
    from . import hf_data

    if hf_data.is_hf_source(data):
        return {
            name: rows_to_pairs(*load_rows(label, lines))
            for name, (label, lines) in hf_data.training_splits(data, split, columns).items()
        }
    if split is not None or columns:
        raise DataError(f"{data}: data_split and data_columns apply to Hugging Face datasets")
    return {split: load_pairs(path) for split, path in resolve_splits(data).items()}
