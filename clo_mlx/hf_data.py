"""Hugging Face datasets as inputs (`train --data`, `translate --source`), read with `datasets`.

A source is a parquet or arrow file, a `Dataset.save_to_disk` folder, a folder of parquet/arrow
files (e.g. a downloaded dataset repo), or a dataset id in the local Hugging Face cache (never
downloaded). Rows come back as `(row index, dict)` with a label such as `x.parquet[train]`, so
errors read `x.parquet[train]:row 3: field 'response' ...` like the JSONL ones.

Column mapping (`prompt=question,response=answer`) renames the dataset's columns to the names
clo-mlx reads. ShareGPT rows (`conversations` with `from`/`value`) become `messages`; preference
rows whose `chosen`/`rejected` (and `prompt`) are message lists become plain strings.
"""

from __future__ import annotations

import re
from pathlib import Path

from .data import DataError

FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}
SAVED_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")
VALID_NAMES = ("valid", "validation", "dev")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "system": "system",
}
_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


class HFDataError(DataError):
    """A bad Hugging Face dataset input; the message names the source, split, row and field."""


class Row(int):
    """A 0-based row index that prints as `row N` (where JSONL errors print a line number)."""

    def __str__(self) -> str:
        return f"row {int(self)}"

    def __format__(self, spec: str) -> str:
        return str(self) if not spec else int.__format__(self, spec)


def is_hf_source(source: str | Path) -> bool:
    """Whether `source` is read with `datasets` (checked without importing it)."""
    p = Path(source)
    if p.is_file():
        return p.suffix in FILE_BUILDERS
    if p.is_dir():
        if any((p / m).is_file() for m in SAVED_MARKERS):
            return True
        if (p / "train.jsonl").is_file():
            return False
        # A dataset repo keeps its files at the top or one folder down (data/train-*.parquet).
        files = [*p.glob("*"), *p.glob("*/*")]
        return any(f.suffix in FILE_BUILDERS and f.is_file() for f in files)
    return bool(_ID.match(str(source))) and not str(source).endswith(".jsonl")


def parse_columns(spec: str | dict | None, where: str = "--columns") -> dict[str, str]:
    """`prompt=question,response=answer` (or a mapping) -> {name clo-mlx reads: dataset column}."""
    if not spec:
        return {}
    if isinstance(spec, dict):
        pairs = list(spec.items())
    else:
        pairs = []
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            dst, eq, src = part.partition("=")
            if not eq or not dst.strip() or not src.strip():
                raise HFDataError(f"{where}: expected NAME=COLUMN pairs, got {part!r}")
            pairs.append((dst.strip(), src.strip()))
    for dst, src in pairs:
        if not isinstance(dst, str) or not isinstance(src, str):
            raise HFDataError(f"{where}: names and columns must be strings, got {dst!r}: {src!r}")
    return dict(pairs)


def _datasets():
    try:
        import datasets
    except ImportError as e:
        raise HFDataError(
            "reading Hugging Face datasets needs the `datasets` library: "
            "pip install 'clo-mlx[datasets]'"
        ) from e
    datasets.disable_progress_bars()
    return datasets


def load_splits(source: str | Path) -> dict[str, object]:
    """{split name: datasets.Dataset} of a source (offline: a cached id is never downloaded)."""
    p = Path(source)
    snapshot = None if p.exists() else _cached_snapshot(str(source))
    ds_lib = _datasets()
    try:
        if p.is_file():
            loaded = ds_lib.load_dataset(FILE_BUILDERS[p.suffix], data_files={"train": str(p)})
        elif p.is_dir() and any((p / m).is_file() for m in SAVED_MARKERS):
            loaded = ds_lib.load_from_disk(str(p))
        elif p.is_dir():
            loaded = ds_lib.load_dataset(str(p))
        else:
            loaded = ds_lib.load_dataset(snapshot)
    except HFDataError:
        raise
    except Exception as e:  # datasets raises many kinds; the user needs the message
        raise HFDataError(f"{source}: cannot read as a Hugging Face dataset ({e})") from e
    if isinstance(loaded, ds_lib.Dataset):
        return {"train": loaded}
    return dict(loaded)


def _cached_snapshot(repo_id: str) -> str:
    """The local folder of dataset `repo_id` in the Hugging Face cache (no network)."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, repo_type="dataset", local_files_only=True)
    except Exception as e:
        raise HFDataError(
            f"{repo_id}: no such file or folder, and not a dataset in the local Hugging Face "
            "cache (clo-mlx never downloads; fetch it first, e.g. `hf download "
            f"{repo_id} --repo-type dataset`)"
        ) from e


def choose_split(splits: dict, source, split: str | None) -> str:
    """The split to read: `split`, else `train`, else the only one."""
    if split is not None:
        if split not in splits:
            raise HFDataError(f"{source}: no split {split!r} (splits: {', '.join(splits)})")
        return split
    if "train" in splits:
        return "train"
    if len(splits) == 1:
        return next(iter(splits))
    raise HFDataError(f"{source}: several splits ({', '.join(splits)}); choose one with --split")


def rows(dataset, label: str, columns: dict[str, str] | None = None) -> list[tuple[Row, dict]]:
    """(row index, row) of a Dataset, columns renamed and conversations normalised."""
    columns = columns or {}
    names = list(dataset.column_names)
    for dst, src in columns.items():
        if src not in names:
            raise HFDataError(f"{label}: no column {src!r} for {dst!r} (columns: {names})")
    out = []
    for i, obj in enumerate(dataset):
        where = f"{label}:{Row(i)}"
        obj = dict(obj)
        for dst, src in columns.items():
            obj[dst] = obj.pop(src)
        out.append((Row(i), normalise(obj, where)))
    return out


def read_source(
    source: str | Path, split: str | None = None, columns: dict | str | None = None
) -> tuple[str, list[tuple[Row, dict]]]:
    """(label, rows) of one split of a source (for `translate --source`)."""
    splits = load_splits(source)
    name = choose_split(splits, source, split)
    label = f"{source}[{name}]"
    return label, rows(splits[name], label, parse_columns(columns))


def training_splits(
    source: str | Path, split: str | None = None, columns: dict | str | None = None
) -> dict[str, tuple[str, list[tuple[Row, dict]]]]:
    """{train/valid/test: (label, rows)}: `split` as train only, else the dataset's train,
    validation (valid, dev) and test splits."""
    splits = load_splits(source)
    mapping = parse_columns(columns)
    if split is not None:
        chosen = {"train": choose_split(splits, source, split)}
    else:
        if "train" not in splits:
            raise HFDataError(
                f"{source}: no 'train' split (splits: {', '.join(splits)}); choose one with --split"
            )
        chosen = {"train": "train"}
        valid = next((n for n in VALID_NAMES if n in splits), None)
        if valid:
            chosen["valid"] = valid
        if "test" in splits:
            chosen["test"] = "test"
    out = {}
    for ours, theirs in chosen.items():
        label = f"{source}[{theirs}]"
        out[ours] = (label, rows(splits[theirs], label, mapping))
    return out


# ----------------------------------------------------------------------------- row forms


def sharegpt_messages(conversations, where: str) -> list[dict]:
    """ShareGPT turns [{"from": "human", "value": ...}, ...] as messages [{"role", "content"}]."""
    if not isinstance(conversations, list) or not all(isinstance(t, dict) for t in conversations):
        raise HFDataError(f"{where}: field 'conversations' must be a list of objects")
    out = []
    for k, turn in enumerate(conversations):
        who = turn.get("from")
        if who not in SHAREGPT_ROLES:
            raise HFDataError(
                f"{where}: conversations[{k}].from must be one of {sorted(SHAREGPT_ROLES)}, "
                f"got {who!r}"
            )
        out.append({"role": SHAREGPT_ROLES[who], "content": turn.get("value")})
    return out


def _last_assistant(msgs, where: str, field: str) -> tuple[str | None, str]:
    """(the single user prompt or None, the final assistant reply) of a message list."""
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
        raise HFDataError(f"{where}: field {field!r} must be a non-empty list of messages")
    roles = [m.get("role") for m in msgs]
    if roles[-1] != "assistant" or roles[:-1] not in ([], ["user"]):
        raise HFDataError(
            f"{where}: field {field!r} must be single-turn (an optional user turn, then one "
            f"assistant turn), got roles {roles}"
        )
    prompt = msgs[0].get("content") if len(msgs) == 2 else None
    return prompt, msgs[-1].get("content")


def normalise(obj: dict, where: str) -> dict:
    """A dataset row in the forms clo-mlx's JSONL readers take."""
    if "conversations" in obj and "messages" not in obj:
        obj["messages"] = sharegpt_messages(obj.pop("conversations"), where)
    if isinstance(obj.get("chosen"), list) or isinstance(obj.get("rejected"), list):
        prompt = obj.get("prompt")
        if isinstance(prompt, list):  # TRL's conversational form: prompt = [user turn]
            roles = [m.get("role") if isinstance(m, dict) else None for m in prompt]
            if roles != ["user"]:
                raise HFDataError(f"{where}: field 'prompt' must be one user turn, got {roles}")
            obj["prompt"] = prompt[0].get("content")
        for field in ("chosen", "rejected"):
            if isinstance(obj.get(field), list):
                user, obj[field] = _last_assistant(obj[field], where, field)
                if obj.get("prompt") is None and user is not None:
                    obj["prompt"] = user
    return obj
