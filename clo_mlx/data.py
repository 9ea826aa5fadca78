"""Data: JSONL rows -> validated rows -> preference pairs.

Two row formats (one per file):
- parallel (CLO): {"lang", "prompt_en", "response_en", "prompt_tgt", "response_tgt", "id"?}
  gives two pairs: kind "en"  (prompt_en:  chosen response_en,  rejected response_tgt)
                   kind "tgt" (prompt_tgt: chosen response_tgt, rejected response_en)
- preference (plain DPO): {"prompt", "chosen", "rejected", "id"?} gives one pair of kind "pair".

`data` may be a JSONL file or a folder with train.jsonl / valid.jsonl / test.jsonl (as mlx-lm).
Every problem is reported as `file:line: field ...` before any long work starts. Refused: a key
given twice in one object, a field name one typo away from a known one (`respons_tgt`), the same
`id` on two rows of one `lang`, text that is not valid Unicode (a lone surrogate, "\\ud800").
Other extra fields are ignored. Rows whose chosen and rejected texts are identical carry no preference
signal: they are kept (their NLL term still counts) and reported as a warning with their lines.
"""

from __future__ import annotations

import difflib
import gzip
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import CloError
from .translate.langid import check_language

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
    where: str = ""  # "file:line" of the row, for messages


def iter_jsonl(path: str | Path, error: type[Exception] = DataError) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) for each non-empty line, streamed (`.gz` too); a problem
    raises `error` naming the file and line."""
    path = Path(path)
    try:
        f = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as e:
        raise error(f"{path}: cannot read data file ({e.strerror or e})") from e
    with f:
        try:
            for lineno, line in enumerate(f, start=1):
                # Without its "\n": one inside an unterminated string changes json's message.
                if line.strip():
                    yield lineno, _parse_line(line.rstrip(b"\n"), f"{path}:{lineno}", error)
        except (OSError, EOFError) as e:  # a truncated or corrupt .gz
            raise error(f"{path}: cannot read data file ({e})") from e


def _parse_line(line: bytes, where: str, error: type[Exception]) -> dict:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{where}: invalid UTF-8 at byte {e.start} of the line") from e
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise error(f"{where}: malformed JSON ({json_error(e)})") from e
    except _DuplicateKey as e:
        raise error(f"{where}: duplicate key {e.args[0]!r} in one object") from None
    if not isinstance(obj, dict):
        raise error(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """iter_jsonl as a list."""
    return list(iter_jsonl(path))


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    # json.loads keeps the last of repeated keys; a row with two "response_tgt" is ambiguous.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def json_error(e: json.JSONDecodeError) -> str:
    """`e`'s message and column ("Unterminated string starting at column 9", not "at at")."""
    return f"{e.msg}{'' if e.msg.endswith(' at') else ' at'} column {e.colno}"


def detect_format(obj: dict) -> str | None:
    """'parallel', 'preference' or None for a row object."""
    if all(k in obj for k in ("prompt_en", "prompt_tgt")) or "response_tgt" in obj:
        return "parallel"
    if all(k in obj for k in PREFERENCE_FIELDS):
        return "preference"
    return None


def _require_text(obj: dict, field: str, where: str) -> str:
    if field not in obj:
        unknown = [k for k in obj if k not in (*PARALLEL_FIELDS, *PREFERENCE_FIELDS, "id")]
        near = difflib.get_close_matches(field, unknown, n=1, cutoff=0.6)
        hint = f"; found unknown field {near[0]!r} (a typo?)" if near else ""
        raise DataError(f"{where}: missing field {field!r}{hint}")
    value = obj[field]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: field {field!r} is empty")
    check_unicode(value, field, where)
    return value


def check_unicode(value: str, field: str, where: str) -> None:
    """Refuse a lone surrogate ("\\ud800" is valid JSON, but no tokenizer takes it)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(
            f"{where}: field {field!r} is not valid Unicode text (lone surrogate "
            f"{value[e.start]!r} at character {e.start})"
        ) from None


def _check_field_names(obj: dict, fields: tuple[str, ...], where: str) -> None:
    """Refuse a field name one typo away from a known one (it would be silently ignored)."""
    known = (*fields, "id")
    for key in obj:
        if key in known:
            continue
        near = difflib.get_close_matches(key, known, n=1, cutoff=0.85)
        if near:
            raise DataError(f"{where}: unknown field {key!r}. Did you mean {near[0]!r}?")


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
    ids: dict[tuple[str, str], int] = {}
    same: list[int] = []
    for lineno, obj in lines:
        where = f"{path}:{lineno}"
        _check_field_names(obj, fields, where)
        row = {f: _require_text(obj, f, where) for f in fields}
        if fmt == "parallel":
            try:
                check_language(row["lang"], where=f"{where}: field 'lang'")
            except ValueError as e:
                raise DataError(str(e)) from None
            if row["lang"] == "en":
                raise DataError(f"{where}: field 'lang' is 'en'; it names the target language")
        if "id" in obj:
            rid = obj["id"]
            if not isinstance(rid, (str, int)) or isinstance(rid, bool):
                raise DataError(f"{where}: field 'id' must be a string or an integer")
            # One English row translated into several languages keeps its id in each.
            key = (str(rid), row.get("lang", ""))
            if key in ids:
                lang = f" for lang {key[1]!r}" if key[1] else ""
                raise DataError(f"{where}: duplicate id {rid!r}{lang} (first on line {ids[key]})")
            ids[key] = lineno
            row["id"] = rid
        chosen, rejected = ("response_en", "response_tgt") if fmt == "parallel" else fields[1:]
        if row[chosen] == row[rejected]:
            same.append(lineno)
        row["_line"] = lineno
        rows.append(row)
    if same:
        shown = ", ".join(str(n) for n in same[:5]) + (" ..." if len(same) > 5 else "")
        what = "response_en == response_tgt" if fmt == "parallel" else "chosen == rejected"
        print(
            f"clo-mlx: warning: {path}: {len(same)} of {len(rows)} rows have {what} (lines "
            f"{shown}); they carry no preference signal",
            file=sys.stderr,
        )
    return fmt, rows


def rows_to_pairs(fmt: str, rows: list[dict], source: str = "") -> list[Pair]:
    """Preference pairs from validated rows (two per parallel row, one per preference row)."""
    pairs = []
    for i, r in enumerate(rows):
        w = f"{source}:{r['_line']}" if source and "_line" in r else ""
        if fmt == "parallel":
            en, tgt = r["response_en"], r["response_tgt"]
            pairs.append(Pair(i, "en", "en", r["prompt_en"], en, tgt, w))
            pairs.append(Pair(i, "tgt", r["lang"], r["prompt_tgt"], tgt, en, w))
        else:
            pairs.append(Pair(i, "pair", "", r["prompt"], r["chosen"], r["rejected"], w))
    return pairs


def load_pairs(path: str | Path) -> list[Pair]:
    """Validated pairs of one JSONL file."""
    return rows_to_pairs(*load_rows(path), source=str(path))


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
            name: rows_to_pairs(*load_rows(label, lines), source=label)
            for name, (label, lines) in hf_data.training_splits(data, split, columns).items()
        }
    if split is not None or columns:
        raise DataError(f"{data}: data_split and data_columns apply to Hugging Face datasets")
    return {split: load_pairs(path) for split, path in resolve_splits(data).items()}
