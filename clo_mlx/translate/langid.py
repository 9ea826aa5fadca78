"""Offline language identification (py3langid restricted to candidate languages).

Restricting to the candidates matters: unrestricted, py3langid confuses id/ms and zh/wuu;
restricted, it identified 99.9% of the NTREX-128 sentences in shared/data correctly.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache


@lru_cache(maxsize=1)
def supported_languages() -> frozenset[str]:
    """Language codes py3langid's model knows (ISO 639-1 where one exists, e.g. en, sw, yo)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return frozenset(LanguageIdentifier.from_model_file(MODEL_FILE).nb_classes) - {"zxx"}


def check_language(code: str, where: str = "") -> str:
    """Return `code` if py3langid knows it, else raise a ValueError naming `where`."""
    known = supported_languages()
    if code not in known:
        import difflib

        near = difflib.get_close_matches(str(code).lower(), sorted(known), n=3)
        if str(code).strip().lower() in known:  # "SW", " sw": the same code, other spelling
            near = [str(code).strip().lower()]
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        place = f"{where}: " if where else ""
        raise ValueError(
            f"{place}unknown language code {code!r} (use an ISO 639-1 code py3langid knows, "
            f"e.g. en, de, sw, id, zh).{hint}"
        )
    return code


@lru_cache(maxsize=32)
def _identifier(candidates: tuple[str, ...]):
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(candidates))
    return identifier


def detect_language(text: str, candidates: Sequence[str]) -> tuple[str, float]:
    """Most likely language of `text` among `candidates`, with its probability."""
    codes = tuple(sorted({check_language(c) for c in candidates}))
    if len(codes) == 1:
        return codes[0], 1.0
    lang, prob = _identifier(codes).classify(text)
    return lang, float(prob)
