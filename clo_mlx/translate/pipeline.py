"""Build parallel CLO data by machine-translating English SFT data with a local model.

Reads `{"prompt","response"}`, Alpaca `{"instruction","input","output"}` or single-turn
`{"messages": [...]}` rows; writes parallel rows `{"id","lang","prompt_en","response_en",
"prompt_tgt","response_tgt"}`. Texts are split into sentences (code blocks, URLs, inline code
and number-only pieces pass through untouched), translated in batches by a `translate_fn`
(list of English strings -> list of translations; see `translate_backends.py`), rejoined and
checked by quality filters. Rejected rows go to a side file with their reason.

The output is appended and fsynced a batch at a time; a re-run skips rows already written (to
either file), and a torn last line left by a crash is cut off before appending.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .. import distributed
from ..data import DataError, check_unicode, iter_jsonl
from ..io import atomic_write_json, atomic_write_text
from .filters import REASONS, Filters, check_back_translation, check_pair, has_repetition  # noqa: F401
from .langid import check_language

TranslateFn = Callable[[list[str]], list[str] | list[tuple[str, float]]]

# ---------------------------------------------------------------------------- JSONL files


def append_jsonl_lines(path: str | Path, rows: Iterable[dict]) -> int:
    """Append `rows` as whole JSON lines with a single write, then fsync; return the count."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    if not data:
        return 0
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return data.count(b"\n")


def repair_jsonl_tail(path: str | Path) -> int:
    """Cut a torn last line (no trailing newline) off a JSONL file; return bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # Scan backwards for the last newline.
        pos, block = size, 1 << 16
        keep = 0
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep


def read_finished(path: str | Path, lang: str | None = None) -> dict[str, dict]:
    """Rows of an existing output/side file by id (after repairing a torn tail)."""
    path = Path(path)
    repair_jsonl_tail(path)
    if not path.exists():
        return {}
    done = {}
    for lineno, obj in iter_jsonl(path):
        if "id" not in obj:
            raise DataError(f"{path}:{lineno}: row has no 'id'; not written by `clo-mlx translate`")
        if lang is not None and obj.get("lang") != lang:
            raise DataError(
                f"{path}:{lineno}: row is for language {obj.get('lang')!r}, not {lang!r}; "
                "use another --output for another language"
            )
        done[str(obj["id"])] = obj
    return done


# ---------------------------------------------------------------------------- SFT readers


def _text(obj: dict, key: str, where: str, allow_empty: bool = False) -> str:
    if key not in obj:
        raise DataError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise DataError(f"{where}: field {key!r} is empty")
    check_unicode(value, key, where)
    return value


def sft_pair(obj: dict, where: str) -> tuple[str, str]:
    """(prompt, response) of one English SFT row in any supported format."""
    if "conversations" in obj and "messages" not in obj:  # ShareGPT
        from ..hf_data import sharegpt_messages

        obj = {**obj, "messages": sharegpt_messages(obj["conversations"], where)}
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
            raise DataError(f"{where}: field 'messages' must be a list of objects")
        roles = [m.get("role") for m in msgs]
        if roles != ["user", "assistant"]:
            raise DataError(
                f"{where}: field 'messages' must be one user turn then one assistant turn "
                f"(single-turn; no system message), got roles {roles}"
            )
        return (
            _text(msgs[0], "content", f"{where}: messages[0]"),
            _text(msgs[1], "content", f"{where}: messages[1]"),
        )
    if "instruction" in obj:
        instruction = _text(obj, "instruction", where)
        extra = _text(obj, "input", where, allow_empty=True) if "input" in obj else ""
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        return prompt, _text(obj, "output", where)
    if "prompt" in obj:
        return _text(obj, "prompt", where), _text(obj, "response", where)
    raise DataError(
        f"{where}: unrecognised SFT row (keys {sorted(obj)}); expected "
        '{"prompt","response"}, {"instruction","input","output"} or {"messages": [...]}'
    )


def read_sft(
    path: str | Path, split: str | None = None, columns: dict | str | None = None
) -> list[dict]:
    """English SFT rows as `{"id","prompt","response"}`; errors name file, line and field.

    Rows without an `id` get `"<line>-<hash of the texts>"`, so an edited line is redone.
    `path` may also be a Hugging Face dataset (see hf_data; `split`, `columns`).
    """
    from .. import hf_data

    path = Path(path)
    if hf_data.is_hf_source(path):
        path, lines = hf_data.read_source(path, split, columns)
    else:
        lines = iter_jsonl(path)
    rows, seen = [], {}
    for lineno, obj in lines:
        where = f"{path}:{lineno}"
        prompt, response = sft_pair(obj, where)
        if "id" in obj:
            if not isinstance(obj["id"], (str, int)):
                raise DataError(f"{where}: field 'id' must be a string or an integer")
            rid = str(obj["id"])
        else:
            digest = hashlib.sha1(f"{prompt}\x00{response}".encode()).hexdigest()[:10]
            rid = f"{lineno}-{digest}"
        if rid in seen:
            raise DataError(f"{where}: duplicate id {rid!r} (first on line {seen[rid]})")
        seen[rid] = lineno
        rows.append({"id": rid, "prompt": prompt, "response": response})
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


# ---------------------------------------------------------------------------- splitting

_FENCE = re.compile(
    r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?^[ \t]*\1[^\n]*$|^[ \t]*(`{3,}|~{3,}).*\Z", re.M | re.S
)
_PROTECT = re.compile(
    r"`[^`\n]+`"  # inline code
    r"|\b(?:https?|ftp)://[^\s<>\"')\]]+[^\s<>\"')\].,;:!?]"  # URL
    r"|\bwww\.[^\s<>\"')\]]+[^\s<>\"')\].,;:!?]"
    r"|\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"  # e-mail
)
_LINE = re.compile(r"^(\s*(?:(?:[-*+•]|\d+[.)]|#{1,6}|>)\s+)*)(.*?)(\s*)$", re.S)
_SENT_END = re.compile(r"[.!?…。！？]+[\"'”’)\]]*\s+")
_ABBREV = {"mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "e.g", "i.e", "no", "fig", "approx"}
_TITLE_END = re.compile(
    r"\b(?:Dr|Mr|Mrs|Ms|Mx|Prof|Sen|Rep|Gov|Gen|Lt|Col|Capt|Cpt|Sgt|Rev|Hon|Pres|Adm|Maj|Cmdr|Fr)\.\s*$"
)
_PLACEHOLDER = "[[{}]]"
_PLACEHOLDER_RE = re.compile(r"\[\s*\[\s*(\d+)\s*\]\s*\]")


@dataclass
class Piece:
    text: str
    translate: bool


def needs_translation(text: str) -> bool:
    """Whether `text` has words to translate once URLs, code and e-mails are taken out."""
    return any(c.isalpha() for c in _PROTECT.sub(" ", text))


def _regex_sentences(text: str) -> list[str]:
    parts, start = [], 0
    for m in _SENT_END.finditer(text):
        before = text[start : m.start()].split()
        word = before[-1].lower().rstrip(".") if before else ""
        nxt = text[m.end() : m.end() + 1]
        if word in _ABBREV or (nxt and nxt.islower()):
            continue
        parts.append(text[start : m.end()])
        start = m.end()
    if start < len(text):
        parts.append(text[start:])
    return parts


def sentences(text: str) -> list[str]:
    """Sentences of one line of prose, as slices of it (`"".join` gives `text` back).

    sentencex finds the boundaries (it knows "U.S. Sen. Warren" is one sentence), except after
    a title that only ever precedes a name ("Dr. Who"); its pieces are located in `text` rather
    than used as they are, so no character can change. Should a piece not be found, the line
    falls back to a plain punctuation rule.
    """
    from sentencex import segment

    starts, pos = [0], 0
    for seg in segment("en", text):
        core = seg.strip()
        if not core:
            continue
        k = text.find(core, pos)
        if k < 0:
            return _regex_sentences(text)
        if k > 0 and k not in starts and not _TITLE_END.search(text, 0, k):
            starts.append(k)
        pos = k + len(core)
    # a piece starts where its sentence does; the whitespace before it stays with the previous
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True) if text[a:b]]


def _split_sentences(text: str, max_chars: int) -> list[str]:
    parts = sentences(text)
    out = []
    for p in parts:  # overlong sentences: cut at clause breaks, then at spaces
        while len(p) > max_chars:
            cut = max(p.rfind(sep, 0, max_chars) for sep in ("; ", ", ", ": "))
            cut = cut + 2 if cut > max_chars // 4 else p.rfind(" ", 0, max_chars) + 1
            if cut <= 0:
                cut = max_chars
            out.append(p[:cut])
            p = p[cut:]
        out.append(p)
    return out


def _split_line(line: str, max_chars: int) -> list[Piece]:
    m = _LINE.match(line)
    prefix, content, trail = m.group(1), m.group(2), m.group(3)
    pieces = [Piece(prefix, False)] if prefix else []
    if content.startswith("|"):  # markdown table row: translate cells, keep the pipes
        for cell in re.split(r"(\s*\|\s*)", content):
            if cell:
                pieces.append(Piece(cell, needs_translation(cell)))
    elif needs_translation(content):
        for sent in _split_sentences(content, max_chars):
            core = sent.rstrip()
            if needs_translation(core):
                pieces.append(Piece(core, True))
            elif core:
                pieces.append(Piece(core, False))
            if len(core) < len(sent):
                pieces.append(Piece(sent[len(core) :], False))
    elif content:
        pieces.append(Piece(content, False))
    if trail:
        pieces.append(Piece(trail, False))
    return pieces


def split_text(text: str, max_chars: int = 400) -> list[Piece]:
    """Split `text` into pieces to translate and pieces to keep; `"".join` restores it."""
    pieces: list[Piece] = []
    pos = 0
    for m in _FENCE.finditer(text):
        pieces += _split_prose(text[pos : m.start()], max_chars)
        pieces.append(Piece(m.group(0), False))
        pos = m.end()
    pieces += _split_prose(text[pos:], max_chars)
    return pieces


def _split_prose(text: str, max_chars: int) -> list[Piece]:
    pieces = []
    for part in re.split(r"(\n+)", text):
        if not part:
            continue
        if part.startswith("\n"):
            pieces.append(Piece(part, False))
        else:
            pieces += _split_line(part, max_chars)
    return pieces


def protect(text: str) -> tuple[str, list[str]]:
    """Replace URLs, inline code and e-mails with `[[i]]` placeholders."""
    spans: list[str] = []

    def sub(m: re.Match) -> str:
        spans.append(m.group(0))
        return _PLACEHOLDER.format(len(spans) - 1)

    return _PROTECT.sub(sub, text), spans


def restore(text: str, spans: list[str]) -> str | None:
    """Put protected spans back; None when a placeholder was lost or duplicated."""
    if not spans:
        return text
    found = [int(m.group(1)) for m in _PLACEHOLDER_RE.finditer(text)]
    if sorted(found) != list(range(len(spans))):
        return None
    return _PLACEHOLDER_RE.sub(lambda m: spans[int(m.group(1))], text)


# ---------------------------------------------------------------------------- filters


def digit_runs(text: str) -> Counter:
    """Multiset of digit runs, any script's digits mapped to ASCII ("3,5" and "3.5" agree)."""
    norm = "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text)
    return Counter(re.findall(r"\d+", norm))


def check_field(src: str, tgt: str, lang: str, filters: Filters) -> tuple[str, str] | None:
    """First failed check as (reason, detail) for translated text `tgt` of source `src`."""
    return check_pair(src, tgt, lang, filters)


# ---------------------------------------------------------------------------- rows


@dataclass
class _Field:
    pieces: list[Piece]
    masked: list[tuple[int, str, list[str]]] = field(default_factory=list)  # (piece, text, spans)


def _prepare(text: str, max_chars: int) -> _Field:
    f = _Field(split_text(text, max_chars))
    for i, p in enumerate(f.pieces):
        if p.translate:
            masked, spans = protect(p.text)
            f.masked.append((i, masked, spans))
    return f


def _assemble(f: _Field, done: dict[str, str]) -> tuple[str, str, str, str | None]:
    """(full translation, translated-part source, translated-part target, problem or None)."""
    texts = [p.text for p in f.pieces]
    src_parts, tgt_parts, problem = [], [], None
    for i, masked, spans in f.masked:
        out = done[masked].strip()
        if not out:
            problem = problem or "empty"
        restored = restore(out, spans)
        if restored is None:
            problem = problem or "lost_protected"
            restored = out
        texts[i] = restored
        src_parts.append(f.pieces[i].text)
        tgt_parts.append(restored)
    return "".join(texts), " ".join(src_parts), " ".join(tgt_parts), problem


def translate_rows(
    rows: list[dict],
    translate_fn: TranslateFn,
    lang: str,
    filters: Filters | None = None,
    max_chars: int = 400,
    back_fn: TranslateFn | None = None,
) -> list[tuple[dict, tuple[str, str] | None]]:
    """Translate SFT rows; each result is (parallel row, None) or (parallel row, (reason, detail)).

    With `back_fn` (the translator from `lang` back to English) and `filters.min_back_chrf`,
    the rows that pass every other check are back-translated, a field at a time."""
    filters = filters or Filters()
    prepared = [
        (_prepare(r["prompt"], max_chars), _prepare(r["response"], max_chars)) for r in rows
    ]
    unique = list(dict.fromkeys(m for pair in prepared for f in pair for _, m, _ in f.masked))
    outputs = translate_fn(unique) if unique else []
    if len(outputs) != len(unique):
        raise RuntimeError(f"translator returned {len(outputs)} texts for {len(unique)} inputs")
    # A translator may return (text, mean token log-prob) pairs: the confidence check uses them.
    scores = {u: o[1] for u, o in zip(unique, outputs, strict=True) if isinstance(o, tuple)}
    done = {u: o[0] if isinstance(o, tuple) else o for u, o in zip(unique, outputs, strict=True)}
    results = []
    for row, (fp, fr) in zip(rows, prepared, strict=True):
        out = {
            "id": row["id"],
            "lang": lang,
            "prompt_en": row["prompt"],
            "response_en": row["response"],
        }
        verdict = None
        for name, f in (("prompt", fp), ("response", fr)):
            full, src, tgt, problem = _assemble(f, done)
            out[f"{name}_tgt"] = full
            if verdict is None and problem is not None:
                detail = (
                    "translation is empty"
                    if problem == "empty"
                    else "a URL/code placeholder was lost"
                )
                verdict = (problem, f"{name}: {detail}")
            if verdict is None and f.masked:
                bad = check_field(src, tgt, lang, filters)
                if bad is None and filters.min_logprob is not None:
                    low = min((scores[m] for _, m, _ in f.masked if m in scores), default=None)
                    if low is not None and low < filters.min_logprob:
                        bad = ("low_confidence", f"mean token log-prob {low:.2f} < {filters.min_logprob}")  # fmt: skip
                if bad is not None:
                    verdict = (bad[0], f"{name}: {bad[1]}")
        results.append((out, verdict))
    if back_fn is not None and filters.min_back_chrf is not None:
        _back_translate(results, prepared, done, back_fn, filters)
    return results


def _back_translate(results: list, prepared: list, done: dict, back_fn, filters: Filters) -> None:
    """Reject (in place) kept rows whose fields do not translate back close to the source."""
    todo = [
        (k, name, f)
        for k, ((_, verdict), pair) in enumerate(zip(results, prepared, strict=True))
        if verdict is None
        for name, f in zip(("prompt", "response"), pair, strict=True)
        if f.masked
    ]
    unique = list(dict.fromkeys(done[m] for _, _, f in todo for _, m, _ in f.masked))
    outputs = back_fn(unique) if unique else []
    if len(outputs) != len(unique):
        raise RuntimeError(
            f"back-translator returned {len(outputs)} texts for {len(unique)} inputs"
        )
    back = {u: o[0] if isinstance(o, tuple) else o for u, o in zip(unique, outputs, strict=True)}
    for k, name, f in todo:
        if results[k][1] is not None:  # the prompt failed already
            continue
        src = " ".join(m for _, m, _ in f.masked)
        bad = check_back_translation(src, " ".join(back[done[m]] for _, m, _ in f.masked), filters)
        if bad is not None:
            results[k] = (results[k][0], (bad[0], f"{name}: {bad[1]}"))


# ---------------------------------------------------------------------------- files


def side_paths(output: str | Path) -> tuple[Path, Path]:
    """(rejected rows file, summary file) next to `output`."""
    output = Path(output)
    stem = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(stem + ".rejected.jsonl"), output.with_name(stem + ".summary.json")


def report_path(output: str | Path) -> Path:
    """The human-readable report of rejected rows next to `output`."""
    output = Path(output)
    stem = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(stem + ".report.md")


def _clip(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def write_report(path: str | Path, summary: dict, rejected: list[dict], per_reason: int = 50) -> Path:  # fmt: skip
    """A Markdown page to scan: counts per reason, then each rejected row with why."""
    lang = summary["lang"]
    out = [
        f"# translate report: {summary['output']}",
        "",
        f"language `{lang}` · rows {summary['rows']} · kept {summary['kept']} · "
        f"rejected {summary['rejected']}",
        "",
        "| reason | rows |",
        "|---|---|",
        *(f"| {r} | {n} |" for r, n in summary["reasons"].items() if n),
    ]
    by_reason: dict[str, list[dict]] = {}
    for row in rejected:
        by_reason.setdefault(row.get("reason", "?"), []).append(row)
    for reason, rows in by_reason.items():
        out += ["", f"## {reason} ({len(rows)})", ""]
        for row in rows[:per_reason]:
            detail = str(row.get("detail", ""))
            name = "response" if detail.startswith("response") else "prompt"
            out += [
                f"- `{row.get('id')}`: {detail}",
                f"  - en: {_clip(str(row.get(name + '_en', '')))}",
                f"  - {lang}: {_clip(str(row.get(name + '_tgt', '')))}",
            ]
        if len(rows) > per_reason:
            out.append(f"- ... {len(rows) - per_reason} more in {summary['rejected_file']}")
    return atomic_write_text(path, "\n".join(out) + "\n")


def _progress(total: int, enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.2f} rows/s" if speed else "-- rows/s")

    return Progress(
        TextColumn("[bold]translate"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def translate_file(
    source: str | Path,
    output: str | Path,
    lang: str,
    translate_fn: TranslateFn,
    batch_size: int = 16,
    filters: Filters | None = None,
    max_chars: int = 400,
    limit: int | None = None,
    show_progress: bool = True,
    generation: dict | None = None,
    split: str | None = None,
    columns: dict | str | None = None,
    rows: list[dict] | None = None,
    back_fn: TranslateFn | None = None,
) -> dict:
    """Translate an English SFT file into parallel rows at `output`, resuming a previous run.

    Rows are written a batch at a time; rejected rows (with `reason`, `detail`) go to
    `<output stem>.rejected.jsonl`; counts go to `<output stem>.summary.json` and are returned,
    and `<output stem>.report.md` lists the rejected rows by reason. `generation` (the decoding
    settings used, and where each came from) is recorded in the summary. `rows`: read_sft's rows
    of `source`, when the caller has read them already.
    Data-parallel (`mlx.launch`): rank r translates batches r, r + size, ...; after each round
    rank 0 appends the round's batches in source order, so the files equal a single-process run's.
    """
    check_language(lang, where="--lang")
    if lang == "en":
        raise ValueError("--lang names the target language; it cannot be 'en'")
    output = Path(output)
    rejected_path, summary_path = side_paths(output)
    rows = read_sft(source, split, columns) if rows is None else rows
    if limit is not None:
        rows = rows[:limit]
    main, n_ranks = distributed.is_main(), distributed.size()
    todo_idx, error = None, None
    if main:  # only rank 0 reads and writes the files (other machines need not have them)
        output.parent.mkdir(parents=True, exist_ok=True)
        try:
            kept = read_finished(output, lang)
            rejected = read_finished(rejected_path, lang)
            todo_idx = [
                i for i, r in enumerate(rows) if r["id"] not in kept and r["id"] not in rejected
            ]
        except DataError as e:
            error = str(e)
    todo_idx, error = distributed.broadcast_json([todo_idx, error])
    if error is not None:
        raise DataError(error if main else f"rank 0: {error}")
    todo = [rows[i] for i in todo_idx]
    chunks = [todo[s : s + batch_size] for s in range(0, len(todo), batch_size)]
    start, n_kept, n_rej = time.perf_counter(), 0, 0
    with _progress(len(rows), show_progress and main) as progress:
        task = progress.add_task("rows", total=len(rows), completed=len(rows) - len(todo))
        for first in range(0, len(chunks), n_ranks):
            mine = first + distributed.rank()
            chunk = chunks[mine] if mine < len(chunks) else []
            results = (
                translate_rows(chunk, translate_fn, lang, filters, max_chars, back_fn)
                if chunk
                else []
            )
            good = [row for row, verdict in results if verdict is None]
            bad = [
                {**row, "reason": verdict[0], "detail": verdict[1]}
                for row, verdict in results
                if verdict is not None
            ]
            for kept_rows, bad_rows in distributed.gather_json([good, bad]) or []:
                n_kept += append_jsonl_lines(output, kept_rows)
                n_rej += append_jsonl_lines(rejected_path, bad_rows)
            progress.advance(task, sum(len(c) for c in chunks[first : first + n_ranks]))
    elapsed = time.perf_counter() - start
    if not main:
        return distributed.broadcast_json()
    if not output.exists():
        output.touch()
    ids = {r["id"] for r in rows}
    kept = read_finished(output, lang)
    rejected = read_finished(rejected_path, lang)
    reasons = Counter(r.get("reason", "?") for i, r in rejected.items() if i in ids)
    summary = {
        "source": str(source),
        "output": str(output),
        "rejected_file": str(rejected_path),
        "report_file": str(report_path(output)),
        "lang": lang,
        "rows": len(rows),
        "kept": sum(i in ids for i in kept),
        "rejected": sum(reasons.values()),
        "reasons": {r: reasons.get(r, 0) for r in dict.fromkeys([*REASONS, *reasons])},
        "this_run": {
            "rows": len(todo),
            "skipped_finished": len(rows) - len(todo),
            "kept": n_kept,
            "rejected": n_rej,
            "seconds": round(elapsed, 3),
            "rows_per_s": round(len(todo) / elapsed, 3) if todo and elapsed > 0 else None,
        },
    }
    if generation is not None:
        summary["generation"] = generation
    atomic_write_json(summary_path, summary)
    write_report(report_path(output), summary, [r for i, r in rejected.items() if i in ids])
    return distributed.broadcast_json(summary)
