"""Language fidelity: the share of responses written in the language of their prompt.

Responses are generated greedily in batches (mlx-lm's `batch_generate`, KV cache) from the
chat-templated prompt, and judged by `clo_mlx.translate.langid` restricted to the candidate languages.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..memory import with_wired_limit
from ..translate.langid import check_language, detect_language


def chat_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of `prompt` as a user turn followed by the assistant generation prompt."""
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
    )
    if isinstance(ids, dict):  # transformers >= 5 may return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


@with_wired_limit
def generate_responses(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_tokens: int = 48,
    batch_size: int = 32,
    chat_template: bool = True,
) -> list[str]:
    """Greedy responses to `prompts` (chat template unless turned off; batched, KV cache)."""
    from mlx_lm.generate import batch_generate

    def encode(p: str) -> list[int]:
        return chat_prompt_ids(tokenizer, p) if chat_template else tokenizer.encode(p)

    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        ids = [encode(p) for p in prompts[i : i + batch_size]]
        res = batch_generate(model, tokenizer, ids, max_tokens=max_tokens)
        out.extend(t.strip() for t in res.texts)
    return out


def judge(texts: Sequence[str], lang: str, candidates: Sequence[str]) -> list[str | None]:
    """Detected language of each text among `candidates` (+ `lang`); None for empty text."""
    cands = sorted({*candidates, lang})
    return [detect_language(t, cands)[0] if t.strip() else None for t in texts]


def language_fidelity(
    model,
    tokenizer,
    prompts_by_lang: dict[str, Sequence[str]],
    candidates: Sequence[str] | None = None,
    max_tokens: int = 48,
    batch_size: int = 32,
) -> dict:
    """Share of greedy responses written in each prompt language.

    Returns `{lang: {"fidelity": share, "n": count, "samples": [{"prompt", "response",
    "detected"}, ...]}}`. Empty responses count as not in the language.
    """
    candidates = list(candidates) if candidates is not None else list(prompts_by_lang)
    for c in [*candidates, *prompts_by_lang]:
        check_language(c, "language_fidelity")
    result = {}
    for lang, prompts in prompts_by_lang.items():
        prompts = list(prompts)
        if not prompts:
            raise ValueError(f"language_fidelity: no prompts for {lang!r}")
        responses = generate_responses(model, tokenizer, prompts, max_tokens, batch_size)
        detected = judge(responses, lang, candidates)
        hits = sum(d == lang for d in detected)
        result[lang] = {
            "fidelity": hits / len(prompts),
            "n": len(prompts),
            "samples": [
                {"prompt": p, "response": r, "detected": d}
                for p, r, d in zip(prompts, responses, detected, strict=True)
            ],
        }
    return result
