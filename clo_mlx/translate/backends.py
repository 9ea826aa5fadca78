"""Translation backends for `clo-mlx translate`: an M2M100/NLLB model or an mlx-lm chat model.

Each `make_*` returns a function mapping a list of English strings to their translations.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

LANGUAGE_NAMES = {
    "ar": "Arabic", "bn": "Bengali", "de": "German", "es": "Spanish", "fa": "Persian",
    "fr": "French", "ha": "Hausa", "hi": "Hindi", "id": "Indonesian", "ig": "Igbo",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "ms": "Malay", "nl": "Dutch",
    "pl": "Polish", "pt": "Portuguese", "ru": "Russian", "sw": "Swahili", "ta": "Tamil",
    "te": "Telugu", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu",
    "vi": "Vietnamese", "yo": "Yoruba", "zh": "Chinese (Simplified)", "zu": "Zulu",
    "am": "Amharic", "so": "Somali", "xh": "Xhosa", "el": "Greek", "he": "Hebrew",
    "cs": "Czech", "sv": "Swedish", "fi": "Finnish", "da": "Danish", "hu": "Hungarian",
    "ro": "Romanian", "bg": "Bulgarian", "tl": "Tagalog", "ne": "Nepali", "mr": "Marathi",
}  # fmt: skip

LLM_PROMPT = (
    "Translate the following text from English to {language}. Keep the meaning, formatting, "
    "numbers and any code unchanged. Reply with the translation only.\n\n{text}"
)


def make_m2m100(
    model_path: str | Path,
    lang: str,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    num_beams: int | None = None,
    model_lang: str | None = None,
    dtype: str | None = None,
    length_penalty: float | None = None,
    early_stopping: bool | None = None,
    with_scores: bool = False,
) -> Callable[[list[str]], list[str]]:
    """An M2M100/NLLB-200 translator (MLX) from a local checkpoint folder.

    Decoding settings left as None come from the checkpoint's generation_config.json (as in
    transformers); the returned function's `settings` says which value was used and from where.
    `with_scores`: it returns (translation, mean token log-prob) pairs, for `--min-logprob`.
    Its `back` translates from `lang` into English with the same model (`--min-back-chrf`).
    """
    from .m2m100 import Translator, generation_settings

    tr = Translator(model_path, dtype=dtype)
    target = model_lang or lang
    tr.lang_token_id(target)  # fail early on an unknown language
    settings = generation_settings(
        model_path,
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
    )
    kw = {k: v["value"] for k, v in settings.items()}

    def translate(texts: list[str]) -> list[str]:
        return tr.translate(texts, target, batch_size=batch_size, with_scores=with_scores, **kw)

    def back(texts: list[str]) -> list[str]:  # the same model, from `lang` into English
        return tr.translate(texts, "en", src_lang=target, batch_size=batch_size, **kw)

    translate.settings = settings
    translate.back = back
    return translate


def llm_prompts(tokenizer, texts: list[str], lang: str) -> list[list[int]]:
    """Chat-formatted translation prompts as token ids (the model's own chat template)."""
    from ..tokens import prompt_ids

    language = LANGUAGE_NAMES.get(lang, lang)
    return [prompt_ids(tokenizer, LLM_PROMPT.format(language=language, text=t)) for t in texts]


def answer_text(tokenizer, ids: list[int]) -> str:
    """The answer in generated `ids`: the tokens before the first end-of-sequence or other
    special token (a model that runs past its turn goes on with e.g. `<|im_start|>assistant`),
    decoded, without surrounding whitespace."""
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    stop = set(tokenizer.eos_token_ids) | {i for i, t in added.items() if t.special}
    end = next((k for k, t in enumerate(ids) if t in stop), len(ids))
    return tokenizer.decode(ids[:end]).strip()


def make_llm(
    model_path: str | Path,
    lang: str,
    batch_size: int = 16,
    max_tokens: int = 512,
    dtype: str = "auto",
) -> Callable[[list[str]], list[str]]:
    """A translator that prompts a local mlx-lm chat model (greedy, batched)."""
    from mlx_lm.generate import batch_generate

    from ..models import load_model

    model, tokenizer = load_model(str(model_path), dtype=dtype)

    def translate(texts: list[str]) -> list[str]:
        prompts = llm_prompts(tokenizer, texts, lang)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out = [""] * len(texts)
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            res = batch_generate(
                model,
                tokenizer,
                [prompts[i] for i in chunk],
                max_tokens=max_tokens,
                completion_batch_size=batch_size,
                prefill_batch_size=batch_size,
                return_token_ids=True,
            )
            for i, ids in zip(chunk, res.token_ids, strict=True):
                out[i] = answer_text(tokenizer, ids)
        return out

    translate.settings = {"decoding": {"value": "greedy", "from": "default"}, "max_tokens": {"value": max_tokens, "from": "flag"}}  # fmt: skip
    return translate
