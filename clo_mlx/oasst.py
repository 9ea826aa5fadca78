"""The paper's English SFT rows from an OpenAssistant export (oasst1 / oasst2).

Input: a message-tree export (`*.trees.jsonl` or `.jsonl.gz`, one tree per line with nested
`replies`), a flat messages export (`*.messages.jsonl(.gz)`), or the flat messages parquet of the
Hugging Face dataset. Output: single-turn `{"id", "prompt", "response"}` rows: each initial prompt
with its top-ranked assistant reply (lowest `rank`), both in the language asked for by the
dataset's `lang` and by the language identifier, deleted / synthetic / review-failed messages and
trees not ready for export left out; ordered by the prompt's creation time, cut at `limit`.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from .data import DataError, iter_jsonl
from .io import atomic_write_json, atomic_write_text
from .translate.langid import check_language, detect_language

READY = "ready_for_export"
# Why a prompt is left out, in the order the checks run (a prompt counts under its first).
REASONS = (
    "tree_not_ready",
    "deleted",
    "synthetic",
    "review_failed",
    "lang",
    "no_reply",
    "no_eligible_reply",
    "langid",
)
REPLY_REASONS = ("deleted", "synthetic", "review_failed", "lang", "unranked")


def _message(obj: dict, where: str, tree_state: str | None = None) -> dict:
    for key in ("message_id", "role", "text"):
        if not isinstance(obj.get(key), str):
            raise DataError(f"{where}: field {key!r} must be a string, got {obj.get(key)!r}")
    if obj["role"] not in ("prompter", "assistant"):
        raise DataError(f"{where}: field 'role' must be 'prompter' or 'assistant'")
    return {
        "id": obj["message_id"],
        "parent": obj.get("parent_id"),
        "role": obj["role"],
        "text": obj["text"],
        "lang": obj.get("lang"),
        "deleted": bool(obj.get("deleted")),
        "synthetic": bool(obj.get("synthetic")),
        "review_result": obj.get("review_result"),
        "rank": obj.get("rank"),
        "created": str(obj.get("created_date") or ""),
        "tree_state": tree_state if tree_state is not None else obj.get("tree_state"),
    }


def _flatten_tree(tree: dict, where: str) -> list[dict]:
    root = tree.get("prompt")
    if not isinstance(root, dict):
        raise DataError(f"{where}: field 'prompt' must be a message object")
    state = tree.get("tree_state")
    out, stack = [], [root]
    while stack:
        node = stack.pop()
        out.append(_message(node, where, state))
        replies = node.get("replies") or []
        if not isinstance(replies, list):
            raise DataError(f"{where}: field 'replies' must be a list")
        stack.extend(reversed(replies))
    return out


def read_messages(path: str | Path) -> list[dict]:
    """Every message of an export, flat; errors name the file and line (or parquet row)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise DataError(
                f"{path}: reading parquet needs pyarrow (pip install 'clo-mlx[datasets]')"
            ) from e
        rows = pq.read_table(path).to_pylist()
        return [_message(r, f"{path}:row {i}") for i, r in enumerate(rows)]
    messages = []
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        if "message_tree_id" in obj and "prompt" in obj:
            messages += _flatten_tree(obj, where)
        elif "message_id" in obj:
            messages.append(_message(obj, where))
        else:
            raise DataError(
                f"{where}: neither a message tree ('message_tree_id', 'prompt') nor a "
                f"message ('message_id'); keys {sorted(obj)}"
            )
    return messages


def _why_not(m: dict, lang: str) -> str | None:
    if m["deleted"]:
        return "deleted"
    if m["synthetic"]:
        return "synthetic"
    if m["review_result"] is not True:  # False, or never reviewed
        return "review_failed"
    if m["lang"] != lang:
        return "lang"
    return None


def build_rows(
    messages: list[dict], lang: str = "en", limit: int | None = 6400
) -> tuple[list, dict]:
    """(rows, summary): single-turn SFT rows the paper's way (see the module docstring)."""
    check_language(lang, where="--lang")
    replies: dict[str, list[dict]] = defaultdict(list)
    for m in messages:
        if m["role"] == "assistant" and m["parent"] is not None:
            replies[m["parent"]].append(m)
    prompts = sorted(
        (m for m in messages if m["parent"] is None and m["role"] == "prompter"),
        key=lambda m: (m["created"], m["id"]),
    )
    # The identifier chooses among the languages of the export itself.
    candidates = sorted({m["lang"] for m in messages if isinstance(m["lang"], str)} | {lang})
    candidates = [c for c in candidates if _known(c)]
    dropped, reply_dropped, rows = Counter(), Counter(), []
    for p in prompts:
        reason = None if p["tree_state"] in (None, READY) else "tree_not_ready"
        reason = reason or _why_not(p, lang)
        best = None
        if reason is None:
            ranked = []
            for r in replies.get(p["id"], []):
                why = _why_not(r, lang) or (None if r["rank"] is not None else "unranked")
                if why:
                    reply_dropped[why] += 1
                else:
                    ranked.append(r)
            if not replies.get(p["id"]):
                reason = "no_reply"
            elif not ranked:
                reason = "no_eligible_reply"
            else:
                best = min(ranked, key=lambda r: (r["rank"], r["created"], r["id"]))
        if reason is None and not all(
            detect_language(t, candidates)[0] == lang for t in (p["text"], best["text"])
        ):
            reason = "langid"
        if reason:
            dropped[reason] += 1
            continue
        rows.append({"id": p["id"], "prompt": p["text"], "response": best["text"]})
    eligible = len(rows)
    if limit:
        rows = rows[:limit]
    summary = {
        "messages": len(messages),
        "prompts": len(prompts),
        "eligible": eligible,
        "kept": len(rows),
        "over_limit": eligible - len(rows),
        "limit": limit,
        "lang": lang,
        "dropped_prompts": {r: dropped.get(r, 0) for r in REASONS},
        "dropped_replies": {r: reply_dropped.get(r, 0) for r in REPLY_REASONS},
        "langid_candidates": candidates,
    }
    return rows, summary


def _known(code: str) -> bool:
    try:
        check_language(code)
        return True
    except ValueError:
        return False


def oasst_to_sft(
    source: str | Path,
    output: str | Path,
    lang: str = "en",
    limit: int | None = 6400,
    overwrite: bool = False,
) -> dict:
    """Write the SFT rows of an OASST export to `output` (JSONL, atomically) and a summary to
    `<output stem>.summary.json`; an existing output is kept unless `overwrite`."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise DataError(f"{output}: already exists (pass --overwrite to replace it)")
    rows, summary = build_rows(read_messages(source), lang, limit)
    if not rows:
        raise DataError(f"{source}: no rows left after filtering ({summary['dropped_prompts']})")
    atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    stem = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    summary = {"source": str(source), "output": str(output), **summary}
    atomic_write_json(output.with_name(stem + ".summary.json"), summary)
    return summary
