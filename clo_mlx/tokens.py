"""The token convention shared by training, scoring and evaluation.

A (prompt, response) sequence is
    apply_chat_template([{"role": "user", "content": prompt},
                         {"role": "assistant", "content": response}])
and its response tokens are the tokens after the prefix
    apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True).
If the full tokenization does not start with the prefix tokens (a merge across the boundary, or a
template that renders the user turn differently once an answer follows), the response starts at
the first token where the two differ, and `encode_pairs` reports how many pairs that concerns. The
first token of a sequence is never a response token (nothing predicts it).

Tokenizers without a chat template use the plain fallback
    prefix = "User: {prompt}\n\nAssistant: "      sequence = prefix + response + eos_token
encoded with `tokenizer.encode` (which adds BOS where the tokenizer does).

A response's log-prob is the sum of the model's log-probs of its response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .data import Pair

PLAIN_PREFIX = "User: {prompt}\n\nAssistant: "


def _as_ids(out) -> list[int]:
    # transformers may return a list or a BatchEncoding-like mapping.
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return [int(t) for t in out]


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of the generation prefix for `prompt` (what a model sees before answering)."""
    if has_chat_template(tokenizer):
        messages = [{"role": "user", "content": prompt}]
        return _as_ids(
            tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        )
    return [int(t) for t in tokenizer.encode(PLAIN_PREFIX.format(prompt=prompt))]


def encode_pair(tokenizer, prompt: str, response: str) -> tuple[list[int], int]:
    """(ids of the whole sequence, index of its first response token)."""
    ids, start, _ = split_sequence(tokenizer, prompt, response)
    return ids, start


def split_sequence(tokenizer, prompt: str, response: str) -> tuple[list[int], int, bool]:
    """encode_pair plus whether the prompt's tokens are a true prefix of the sequence's."""
    prefix = prompt_ids(tokenizer, prompt)
    if has_chat_template(tokenizer):
        messages = [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": response},
        ]
        ids = _as_ids(tokenizer.apply_chat_template(messages, tokenize=True))
    else:
        eos = getattr(tokenizer, "eos_token", None) or ""
        ids = [
            int(t) for t in tokenizer.encode(PLAIN_PREFIX.format(prompt=prompt) + response + eos)
        ]
    start = 0
    for a, b in zip(prefix, ids, strict=False):
        if a != b:
            break
        start += 1
    is_prefix = start == len(prefix)
    start = max(start, 1)
    if start >= len(ids):
        raise ValueError(f"response {response[:40]!r} produced no tokens after the prompt prefix")
    return ids, start, is_prefix


@dataclass
class EncodedPair:
    pair: Pair
    chosen: list[int]
    chosen_start: int
    rejected: list[int]
    rejected_start: int


@dataclass
class TruncationReport:
    max_seq_length: int
    policy: str
    truncated: list[int] = field(default_factory=list)  # indices (into the input pairs)
    dropped: list[int] = field(default_factory=list)
    # rows (0-based) whose prompt tokens are not a prefix of the whole sequence's
    not_prefix: list[int] = field(default_factory=list)
    dropped_where: list[str] = field(default_factory=list)  # "file:line (kind)" of each drop

    def message(self, what: str = "pairs") -> str | None:
        notes = [m for m in (self._length_message(what), self._prefix_message(what)) if m]
        return " ".join(notes) or None

    def _prefix_message(self, what: str) -> str | None:
        if not self.not_prefix:
            return None
        shown = ", ".join(str(r + 1) for r in self.not_prefix[:5])
        more = " ..." if len(self.not_prefix) > 5 else ""
        return (
            f"{len(self.not_prefix)} {what} (rows {shown}{more}): the prompt's tokens are not a prefix "
            "of the prompt+response tokens, so the response is taken to start where they first "
            "differ and part of the chat template may count as response."
        )

    def _length_message(self, what: str) -> str | None:
        if not self.truncated and not self.dropped:
            return None
        parts = []
        if self.truncated:
            parts.append(f"{len(self.truncated)} had their prompt left-truncated")
        if self.dropped:
            why = "response alone too long" if self.policy != "drop" else "truncation: drop"
            where = [w for w in self.dropped_where if w]
            shown = ", ".join(where[:5]) + (f" and {len(where) - 5} more" if len(where) > 5 else "")
            parts.append(
                f"{len(self.dropped)} were dropped ({why})" + (f": {shown}" if where else "")
            )
        return (
            f"{len(self.truncated) + len(self.dropped)} {what} exceed max_seq_length="
            f"{self.max_seq_length}: " + "; ".join(parts) + ". Response ends are never cut."
        )


TRUNCATION_POLICIES = ("truncate_prompt", "drop")


def encode_pairs(
    tokenizer, pairs: list[Pair], max_seq_length: int, policy: str = "truncate_prompt"
) -> tuple[list[EncodedPair], TruncationReport]:
    """Encode pairs under the token convention, fitting each into `max_seq_length`.

    Over-long pairs lose tokens from the start of the prompt (the same number from the chosen and
    the rejected sequence, so both keep the same context), or are dropped when `policy="drop"` or
    when a response alone does not fit. Response tokens are never cut.
    """
    if policy not in TRUNCATION_POLICIES:
        raise ValueError(f"truncation must be one of {TRUNCATION_POLICIES}, got {policy!r}")
    report = TruncationReport(max_seq_length, policy)
    encoded = []
    for i, p in enumerate(pairs):
        chosen, cs, prefix_c = split_sequence(tokenizer, p.prompt, p.chosen)
        rejected, rs, prefix_r = split_sequence(tokenizer, p.prompt, p.rejected)
        if not (prefix_c and prefix_r):
            report.not_prefix.append(p.row)
        overflow = max(len(chosen), len(rejected)) - max_seq_length
        if overflow > 0:
            # At least one prompt token must stay to predict the first response token.
            if policy == "drop" or overflow >= min(cs, rs):
                report.dropped.append(i)
                report.dropped_where.append(f"{p.where} ({p.kind})" if p.where else "")
                continue
            chosen, rejected = chosen[overflow:], rejected[overflow:]
            cs, rs = cs - overflow, rs - overflow
            report.truncated.append(i)
        encoded.append(EncodedPair(p, chosen, cs, rejected, rs))
    return encoded, report
