"""Multiple-choice accuracy by log-likelihood (XCOPA / BELEBELE style), on the training token path.

Each choice is scored as the *response* to the item's prompt under the token convention of
`clo_mlx.tokens` (chat template; the response tokens include the template's end-of-turn tokens,
exactly as in training), batched with `clo_mlx.batching.collate` and scored with
`clo_mlx.reference.make_logp_fn`. The prediction is the choice with the highest
- summed log-likelihood (`acc`), or
- length-normalised log-likelihood, i.e. mean log-prob per response token (`acc_norm`).

Item formats (JSONL, one item per line; `lang` is the item's language):
- XCOPA: `{"lang", "premise", "question": "cause"|"effect", "choice1", "choice2", "label": 0|1,
  "idx"?, "split"?, "en_mt"?: {"premise", "choice1", "choice2"}}`. The prompt is the premise
  followed by the question in the item's language (`COPA_QUESTIONS`), e.g. for English
  "The man turned on the tap. What happened as a result?". Rows with `en_mt` (XCOPA's
  machine-translated English, "translate-test") also give an English item (`lang: "en"`,
  `source: <row lang>`).
- Generic / BELEBELE: `{"lang", "passage"|"premise"|"context"|"flores_passage"?, "question",
  "choices": [...], "label": <0-based>}`, or BELEBELE's own `mc_answer1..4` +
  `correct_answer_num` (1-based). The prompt is the passage, a blank line, then the question.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import distributed
from ..batching import length_sorted_batches
from ..data import iter_jsonl
from ..reference import collated_logps, make_logp_fn
from ..tokens import encode_pair

# COPA's two question types, asked after the premise in the item's language.
COPA_QUESTIONS: dict[str, dict[str, str]] = {
    "en": {"cause": "What was the cause?", "effect": "What happened as a result?"},
    "id": {"cause": "Apa penyebabnya?", "effect": "Apa yang terjadi sebagai akibatnya?"},
    "sw": {"cause": "Chanzo chake kilikuwa nini?", "effect": "Nini kilitokea kama matokeo?"},
    "zh": {"cause": "原因是什么？", "effect": "结果发生了什么？"},
    "de": {"cause": "Was war die Ursache?", "effect": "Was geschah daraufhin?"},
}
NO_SPACE_LANGS = {"zh", "ja"}  # premise and question are joined without a space


class MCDataError(ValueError):
    """Bad multiple-choice data; the message names the file, line and field."""


@dataclass(frozen=True)
class MCItem:
    id: str
    lang: str  # language of prompt and choices
    prompt: str
    choices: tuple[str, ...]
    label: int
    source: str = ""  # for translate-test items: the language of the original row


def copa_prompt(premise: str, question: str, lang: str) -> str:
    """`premise` + the COPA question (`cause` | `effect`) in `lang`."""
    if lang not in COPA_QUESTIONS:
        raise ValueError(
            f"no COPA question template for language {lang!r} (have {sorted(COPA_QUESTIONS)}); "
            "add one to clo_mlx.eval.multiple_choice.COPA_QUESTIONS"
        )
    if question not in ("cause", "effect"):
        raise ValueError(f"COPA question must be 'cause' or 'effect', got {question!r}")
    sep = "" if lang in NO_SPACE_LANGS else " "
    return premise.strip() + sep + COPA_QUESTIONS[lang][question]


def _text(obj: dict, field: str, where: str) -> str:
    if field not in obj:
        raise MCDataError(f"{where}: missing field {field!r}")
    if not isinstance(obj[field], str) or not obj[field].strip():
        raise MCDataError(f"{where}: field {field!r} must be a non-empty string")
    return obj[field]


def _label(value, n: int, where: str, field: str = "label", one_based: bool = False) -> int:
    try:
        label = int(value)
    except (TypeError, ValueError):
        raise MCDataError(f"{where}: field {field!r} must be an integer, got {value!r}") from None
    label -= int(one_based)
    if not 0 <= label < n:
        raise MCDataError(f"{where}: field {field!r}={value!r} is out of range for {n} choices")
    return label


def parse_item(obj: dict, where: str, english: bool = True) -> list[MCItem]:
    """The item(s) of one JSON row (an XCOPA row with `en_mt` gives a second, English one)."""
    lang = _text(obj, "lang", where)
    base_id = str(obj.get("id", f"{lang}-{obj.get('split', '')}-{obj.get('idx', where)}"))
    if "choice1" in obj and obj.get("question") in ("cause", "effect"):
        choices = (_text(obj, "choice1", where), _text(obj, "choice2", where))
        label = _label(obj.get("label"), 2, where)
        q = obj["question"]
        try:
            prompt = copa_prompt(_text(obj, "premise", where), q, lang)
        except ValueError as e:
            raise MCDataError(f"{where}: field 'lang': {e}") from None
        items = [MCItem(base_id, lang, prompt, choices, label)]
        mt = obj.get("en_mt")
        if english and isinstance(mt, dict):
            w = f"{where}: field 'en_mt'"
            items.append(
                MCItem(
                    f"{base_id}-en",
                    "en",
                    copa_prompt(_text(mt, "premise", w), q, "en"),
                    (_text(mt, "choice1", w), _text(mt, "choice2", w)),
                    label,
                    source=lang,
                )
            )
        return items
    if "mc_answer1" in obj:  # BELEBELE's own field names
        choices = tuple(
            _text(obj, f"mc_answer{i}", where) for i in range(1, 5) if f"mc_answer{i}" in obj
        )
        label = _label(
            obj.get("correct_answer_num"), len(choices), where, "correct_answer_num", True
        )
    elif "choices" in obj:
        raw = obj["choices"]
        if not isinstance(raw, list) or len(raw) < 2:
            raise MCDataError(f"{where}: field 'choices' must be a list of at least 2 strings")
        if not all(isinstance(c, str) and c.strip() for c in raw):
            raise MCDataError(f"{where}: field 'choices' must hold non-empty strings")
        choices = tuple(raw)
        label = _label(obj.get("label"), len(choices), where)
    else:
        raise MCDataError(
            f"{where}: unrecognised item (keys {sorted(obj)}); expected XCOPA fields "
            "(premise, question: cause|effect, choice1, choice2, label) or "
            "(passage?, question, choices, label)"
        )
    question = _text(obj, "question", where)
    passage = next(
        (obj[k] for k in ("passage", "flores_passage", "premise", "context") if obj.get(k)), None
    )
    prompt = f"{passage.strip()}\n\n{question.strip()}" if passage else question.strip()
    return [MCItem(base_id, lang, prompt, choices, label)]


def load_mc(
    path: str | Path,
    langs: Sequence[str] | None = None,
    split: str | None = None,
    english: bool = True,
    limit: int | None = None,
) -> list[MCItem]:
    """Items of a JSONL file. `langs`/`split` filter rows by their `lang`/`split` fields; `english`
    adds the translate-test English items of XCOPA rows; `limit` keeps the first N rows per lang."""
    path = Path(path)
    items: list[MCItem] = []
    per_lang: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path, error=MCDataError):
        where = f"{path}:{lineno}"
        if langs is not None and obj.get("lang") not in langs:
            continue
        if split is not None and obj.get("split") != split:
            continue
        lang = obj.get("lang")
        if limit is not None and per_lang.get(lang, 0) >= limit:
            continue
        per_lang[lang] = per_lang.get(lang, 0) + 1
        items.extend(parse_item(obj, where, english))
    if not items:
        raise MCDataError(
            f"{path}: no items"
            + (f" for langs={list(langs)}" if langs is not None else "")
            + (f" in split={split!r}" if split is not None else "")
        )
    return items


def encode_choices(
    tokenizer, items: Sequence[MCItem], max_seq_length: int
) -> tuple[list[tuple[list[int], int]], list[tuple[int, int]], list[int]]:
    """(sequences, (item, choice) of each, indices of skipped items).

    Too-long sequences lose prompt tokens from the left (choice tokens are never cut); an item
    with a choice that alone does not fit is skipped whole.
    """
    seqs, owners, skipped = [], [], []
    for i, item in enumerate(items):
        encoded = [encode_pair(tokenizer, item.prompt, c) for c in item.choices]
        fitted = []
        for ids, start in encoded:
            over = len(ids) - max_seq_length
            if over > 0:
                if over >= start:
                    break
                ids, start = ids[over:], start - over
            fitted.append((ids, start))
        if len(fitted) < len(encoded):
            skipped.append(i)
            continue
        for c, seq in enumerate(fitted):
            seqs.append(seq)
            owners.append((i, c))
    return seqs, owners, skipped


def score_choices(
    model,
    tokenizer,
    items: Sequence[MCItem],
    batch_size: int = 16,
    max_seq_length: int = 2048,
    chunk_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Per-item choice scores: `{"logp": [[..] per item], "tokens": [[..]], "skipped": [ids]}`.

    `logp[i][c]` is the summed log-prob of choice c's response tokens; skipped items get None.
    """
    was_training = model.training
    model.eval()
    seqs, owners, skipped = encode_choices(tokenizer, items, max_seq_length)
    logp_fn = make_logp_fn(model, chunk_size)
    lp = np.zeros(len(seqs), np.float64)
    nt = np.zeros(len(seqs), np.int64)
    batches = length_sorted_batches([len(s[0]) for s in seqs], batch_size)
    for idx in distributed.shard(batches):  # data-parallel: every size-th batch, then gathered
        lp[idx], nt[idx] = collated_logps(logp_fn, [seqs[j] for j in idx], max_seq_length)
        if progress is not None:
            progress(len(idx))
    model.train(was_training)
    lp, nt = distributed.sum_np(lp), distributed.sum_np(nt)
    logp: list = [None] * len(items)
    tokens: list = [None] * len(items)
    for j, (i, c) in enumerate(owners):
        if logp[i] is None:
            logp[i] = [0.0] * len(items[i].choices)
            tokens[i] = [0] * len(items[i].choices)
        logp[i][c], tokens[i][c] = float(lp[j]), int(nt[j])
    return {"logp": logp, "tokens": tokens, "skipped": [items[i].id for i in skipped]}


def mc_accuracy(items: Sequence[MCItem], scores: dict) -> dict:
    """Accuracy per item language (and `all`): `{lang: {"acc", "acc_norm", "n", "skipped"}}`.

    Ties go to the first choice with the highest score (argmax)."""
    groups: dict[str, dict] = {}
    for item, lp, nt in zip(items, scores["logp"], scores["tokens"], strict=True):
        for key in (item.lang, "all"):
            g = groups.setdefault(key, {"correct": 0, "correct_norm": 0, "n": 0, "skipped": 0})
            if lp is None:
                g["skipped"] += 1
                continue
            lp_arr, nt_arr = np.asarray(lp), np.maximum(np.asarray(nt), 1)
            g["correct"] += int(np.argmax(lp_arr) == item.label)
            g["correct_norm"] += int(np.argmax(lp_arr / nt_arr) == item.label)
            g["n"] += 1
    return {
        k: {
            "acc": g["correct"] / g["n"] if g["n"] else float("nan"),
            "acc_norm": g["correct_norm"] / g["n"] if g["n"] else float("nan"),
            "n": g["n"],
            "skipped": g["skipped"],
        }
        for k, g in sorted(groups.items())
    }


def evaluate_mc(
    model,
    tokenizer,
    items: Sequence[MCItem],
    batch_size: int = 16,
    max_seq_length: int = 2048,
    chunk_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """`mc_accuracy` of the model on `items`."""
    scores = score_choices(
        model, tokenizer, items, batch_size, max_seq_length, chunk_size, progress
    )
    return mc_accuracy(items, scores)
