"""Quality checks on machine-translated text: which translated rows may become training data.

Each check takes the English source and its translation (the translated parts of one field) and
returns a `(reason, detail)` for the first rule it breaks, or None:

- `empty`, `repetition` (a phrase looping, not in the source);
- `length_ratio`: target/source length outside a per-language band calibrated on human
  translations (`assets/length_bands.json`, made by `bench/filter_quality.py --calibrate`),
  plus `truncated`: a short translation (below the band's soft edge) that lost the source's
  sentence-final punctuation;
- `wrong_language`: English left as it was, or py3langid preferring English over the target;
- `numbers`: a number of the source missing, or a number in the translation that nothing in the
  source explains. What translators legitimately do is allowed: months and weekdays as numbers,
  number words either way, ordinals, decades, 12/24-hour and Swahili clock times, digit grouping,
  decimal commas, scale words (1.5 million = 150万) and CJK numerals.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .langid import detect_language

REASONS = (
    "empty",
    "lost_protected",
    "repetition",
    "length_ratio",
    "truncated",
    "wrong_language",
    "numbers",
    "low_confidence",
)
BANDS_FILE = Path(__file__).parents[1] / "assets" / "length_bands.json"
_DENSE = {"zh", "ja", "yue", "wuu", "ko"}  # scripts needing far fewer characters than English


@dataclass
class Filters:
    """Which checks run, and their settings (None = the calibrated per-language default)."""

    min_ratio: float | None = None  # overrides the band's lower edge
    max_ratio: float | None = None  # overrides the band's upper edge
    min_chars: int = 20  # below this many source characters, no length check
    langid: bool = True
    numbers: bool = True
    candidates: tuple[str, ...] = ("en",)
    min_logprob: float | None = None  # mean per-token log-prob below which a row is rejected

    def ratio_bounds(self, lang: str, src_len: float = 100.0) -> tuple[float, float]:
        low, _, high = length_band(lang, src_len)
        return (
            self.min_ratio if self.min_ratio is not None else low,
            self.max_ratio if self.max_ratio is not None else high,
        )


# ---------------------------------------------------------------------------- length


def text_length(text: str) -> int:
    """Characters that carry text: NFKC, no whitespace, no combining marks (Yoruba tone marks
    are written both precomposed and combining)."""
    norm = unicodedata.normalize("NFKC", text)
    return sum(1 for c in norm if not c.isspace() and unicodedata.category(c)[0] != "M")


@lru_cache(maxsize=1)
def length_bands() -> dict:
    """The shipped table: {lang: [{"max_src": n, "low", "soft", "high"}, ...]}."""
    return json.loads(BANDS_FILE.read_text())["bands"]


def length_band(lang: str, src_len: float) -> tuple[float, float, float]:
    """(low, soft, high) target/source length ratios for a source of `src_len` characters."""
    bins = length_bands().get(lang)
    if not bins:  # uncalibrated language: the old wide bounds
        low = 0.1 if lang in _DENSE else 0.33
        return low, low, 3.0
    for b in bins:
        if b["max_src"] is None or src_len < b["max_src"]:
            return b["low"], b["soft"], b["high"]
    b = bins[-1]
    return b["low"], b["soft"], b["high"]


_FINAL = re.compile(r"[.!?…。！？]\W*$")


def _ends_sentence(text: str) -> bool:
    return _FINAL.search(text.rstrip()) is not None


def check_length(src: str, tgt: str, lang: str, filters: Filters) -> tuple[str, str] | None:
    n_src = text_length(src)
    if len(src) < filters.min_chars or n_src == 0:
        return None
    low, high = filters.ratio_bounds(lang, n_src)
    _, soft, _ = length_band(lang, n_src)
    ratio = text_length(tgt) / n_src
    if not low <= ratio <= high:
        return "length_ratio", f"length ratio {ratio:.2f} outside [{low:.2f}, {high:.2f}]"
    if ratio < soft and _ends_sentence(src) and not _ends_sentence(tgt):
        return "truncated", (
            f"length ratio {ratio:.2f} below {soft:.2f} and the sentence-final punctuation is gone"
        )
    return None


# ---------------------------------------------------------------------------- repetition

_REPEAT_CHARS = re.compile(r"(\S.{1,29}?)\1{4,}", re.S)
_REPEAT_WORDS = re.compile(r"((?:\S+\s+){1,8}?)\1{3,}")


def has_repetition(text: str) -> bool:
    """A unit of 2-30 characters 5+ times in a row (>= 12 chars), or a word n-gram 4+ times."""
    for m in _REPEAT_CHARS.finditer(text):
        if len(m.group(0)) >= 12 and not m.group(1).isspace():
            return True
    return _REPEAT_WORDS.search(text + " ") is not None


# ---------------------------------------------------------------------------- language

_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")


def _is_names_only(text: str) -> bool:
    """Names, codes and numbers: no lowercase word of 3+ letters (e.g. "Donald Trump", "NASA")."""
    return not any(w[0].islower() and len(w) >= 3 for w in _WORD.findall(text))


def _fold(text: str) -> str:
    return " ".join(_WORD.findall(unicodedata.normalize("NFKC", text).casefold()))


def check_language(src: str, tgt: str, lang: str, filters: Filters) -> tuple[str, str] | None:
    """English left as it is, or py3langid preferring English over `lang`.

    Text with no lowercase word of 3+ letters (names, codes, numbers) is not judged; short
    texts (< 40 letters) are judged only when the identifier is sure (p >= 0.9).
    """
    if _is_names_only(tgt):
        return None
    if _fold(tgt) == _fold(src):
        return "wrong_language", "left untranslated (same words as the source)"
    letters = sum(c.isalpha() for c in tgt)
    if letters < 6:
        return None
    found, prob = detect_language(tgt, [*filters.candidates, lang])
    if found != lang and (letters >= 40 or prob >= 0.9):
        return "wrong_language", f"identified as {found!r} (p={prob:.2f}), not {lang!r}"
    return None


# ---------------------------------------------------------------------------- numbers

_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()  # fmt: skip
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORD = "zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth".split()  # fmt: skip
_ORD_TENS = "twentieth thirtieth fortieth fiftieth sixtieth seventieth eightieth ninetieth".split()
_SCALES = {
    "hundred": 100, "hundredth": 100, "thousand": 1e3, "thousandth": 1e3, "million": 1e6,
    "millionth": 1e6, "billion": 1e9, "trillion": 1e12, "k": 1e3, "m": 1e6, "bn": 1e9, "mn": 1e6,
}  # fmt: skip
EN_WORDS: dict[str, float] = {
    **{w: i for i, w in enumerate(_UNITS)},
    **{w: 20 + 10 * i for i, w in enumerate(_TENS)},
    **{w: i for i, w in enumerate(_ORD)},
    **{w: 20 + 10 * i for i, w in enumerate(_ORD_TENS)},
    **{w + "s": 20 + 10 * i for i, w in enumerate(_TENS)},  # "in their thirties"
    "dozen": 12, "dozens": 12, "once": 1, "twice": 2, "thrice": 3, "half": 0.5, "quarter": 0.25,
    "single": 1, "both": 2, "pair": 2, "couple": 2, "decade": 10, "decades": 10, "century": 100,
    "noon": 12, "midday": 12, "midnight": 12, "triple": 3, "double": 2, "a": 1, "an": 1,
    "hundreds": 100, "thousands": 1e3, "millions": 1e6, "billions": 1e9,
}  # fmt: skip
_MONTHS = "january february march april may june july august september october november december".split()  # fmt: skip
_MONTH_ABBR = "jan feb mar apr may jun jul aug sep oct nov dec".split()
_WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
EN_NAMED = {
    **{m: i + 1 for i, m in enumerate(_MONTHS)},
    **{m: i + 1 for i, m in enumerate(_MONTH_ABBR)},
    "sept": 9,
    **{d: i + 1 for i, d in enumerate(_WEEKDAYS)},
}
# Weekdays as numbers: zh 星期一 (Monday = 1) ... 星期日/天 (7); Swahili Jumatatu = "day 3"
# after Saturday (Jumamosi = 1), so Monday..Friday are 3..7 and Saturday, Sunday 1, 2.
_SW_WEEKDAY = {1: 3, 2: 4, 3: 5, 4: 6, 5: 7, 6: 1, 7: 2}

# Number words in target languages: they explain a source number the translator spelled out.
TARGET_WORDS: dict[str, dict[str, float]] = {
    "de": {
        "null": 0, "ein": 1, "eine": 1, "einen": 1, "einem": 1, "einer": 1, "eines": 1,
        "eins": 1, "zwei": 2, "drei": 3, "vier": 4, "fünf": 5, "sechs": 6, "sieben": 7,
        "acht": 8, "neun": 9, "zehn": 10, "elf": 11, "zwölf": 12, "zwanzig": 20, "dreißig": 30,
        "vierzig": 40, "fünfzig": 50, "hundert": 100, "tausend": 1e3, "erste": 1, "ersten": 1,
        "erster": 1, "zweite": 2, "zweiten": 2, "dritte": 3, "dritten": 3, "vierte": 4,
        "vierten": 4, "fünfte": 5, "fünften": 5, "beide": 2, "beiden": 2, "halb": 0.5,
        "hälfte": 0.5, "dutzend": 12, "million": 1e6, "millionen": 1e6, "milliarde": 1e9,
        "milliarden": 1e9, "mio": 1e6, "mrd": 1e9,
    },
    "id": {
        "nol": 0, "satu": 1, "se": 1, "dua": 2, "tiga": 3, "empat": 4, "lima": 5, "enam": 6,
        "tujuh": 7, "delapan": 8, "sembilan": 9, "sepuluh": 10, "sebelas": 11, "belas": 10,
        "puluh": 10, "seratus": 100, "ratus": 100, "ribu": 1e3, "seribu": 1e3, "juta": 1e6,
        "miliar": 1e9, "triliun": 1e12, "pertama": 1, "kedua": 2, "ketiga": 3, "keempat": 4,
        "kelima": 5, "setengah": 0.5, "separuh": 0.5, "lusin": 12,
    },
    "sw": {
        "sifuri": 0, "moja": 1, "mmoja": 1, "kwanza": 1, "mbili": 2, "wawili": 2, "pili": 2,
        "tatu": 3, "watatu": 3, "nne": 4, "wanne": 4, "tano": 5, "watano": 5, "sita": 6,
        "saba": 7, "nane": 8, "tisa": 9, "kenda": 9, "kumi": 10, "ishirini": 20,
        "thelathini": 30, "arobaini": 40, "hamsini": 50, "sitini": 60, "sabini": 70,
        "themanini": 80, "tisini": 90, "mia": 100, "elfu": 1e3, "milioni": 1e6,
        "bilioni": 1e9, "nusu": 0.5, "robo": 0.25, "dazeni": 12,
    },
    "yo": {  # written without tone marks (they are stripped before lookup)
        "kan": 1, "okan": 1, "ookan": 1, "eni": 1, "kinni": 1, "kini": 1, "eji": 2, "meji": 2,
        "keji": 2, "eta": 3, "meta": 3, "keta": 3, "erin": 4, "merin": 4, "kerin": 4,
        "arun": 5, "marun": 5, "karun": 5, "efa": 6, "mefa": 6, "kefa": 6, "eje": 7,
        "meje": 7, "keje": 7, "ejo": 8, "mejo": 8, "kejo": 8, "esan": 9, "mesan": 9,
        "kesan": 9, "ewa": 10, "mewa": 10, "kewa": 10, "ogun": 20, "ogbon": 30, "ogoji": 40,
        "aadota": 50, "ogota": 60, "ogorun": 100, "egberun": 1e3, "milionu": 1e6,
        "milionu-un": 1e6, "bilionu": 1e9, "idaji": 0.5, "kesaan": 9, "mesaan": 9,
        "kewaa": 10, "mewaa": 10, "kokanla": 11, "mokanla": 11, "kejila": 12, "mejila": 12,
    },
    "ko": {
        "하나": 1, "한": 1, "첫": 1, "첫째": 1, "둘": 2, "두": 2, "둘째": 2, "셋": 3, "세": 3,
        "셋째": 3, "넷": 4, "네": 4, "넷째": 4, "다섯": 5, "여섯": 6, "일곱": 7, "여덟": 8,
        "아홉": 9, "열": 10, "스물": 20, "스무": 20, "서른": 30, "마흔": 40, "쉰": 50,
        "절반": 0.5, "반": 0.5, "백": 100, "천": 1e3, "만": 1e4, "억": 1e8,
    },
    "zh": {"半": 0.5, "首": 1, "头": 1, "双": 2, "俩": 2, "仨": 3, "倍": 2, "成": 10},
}  # fmt: skip
# Scale words that follow (or, in Swahili and Yoruba, precede) a number in the translation.
_TGT_SCALES = {
    "万": 1e4, "萬": 1e4, "亿": 1e8, "億": 1e8, "千": 1e3, "百": 100, "만": 1e4, "억": 1e8,
    "천": 1e3, "백": 100, "조": 1e12, "million": 1e6, "millionen": 1e6, "mio": 1e6,
    "milliarde": 1e9, "milliarden": 1e9, "mrd": 1e9, "tausend": 1e3, "juta": 1e6, "miliar": 1e9,
    "ribu": 1e3, "triliun": 1e12, "milioni": 1e6, "bilioni": 1e9, "elfu": 1e3, "mia": 100,
    "milionu": 1e6, "bilionu": 1e9, "billion": 1e9, "bn": 1e9, "k": 1e3, "m": 1e6,
}  # fmt: skip
_CJK_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "兩": 2, "三": 3, "四": 4, "五": 5,
               "六": 6, "七": 7, "八": 8, "九": 9}  # fmt: skip
_CJK_UNITS = {"十": 10, "拾": 10, "百": 100, "千": 1000}
_CJK_BIG = {"万": 1e4, "萬": 1e4, "亿": 1e8, "億": 1e8}
_CJK_RE = re.compile(r"[零〇一二两兩三四五六七八九十拾百千万萬亿億]+")
_SINO_KO = {"일": 1, "이": 2, "삼": 3, "사": 4, "오": 5, "육": 6, "칠": 7, "팔": 8, "구": 9}

_NUM = re.compile(
    r"(?<![\d])(\d{1,3}(?:([,.'\u00a0\u202f\u2009])\d{3})(?:\2\d{3})*(?:[.,]\d+)?|\d+(?:[.,]\d+)?)"
)
_TIME = re.compile(
    r"\b(\d{1,2})(?:[:.h](\d{2}))?\s*(a\.?\s?m\b\.?|p\.?\s?m\b\.?)|\b(\d{1,2})[:h](\d{2})\b",
    re.I,
)
_DECADE = re.compile(r"(?:\b|')(\d{2,4})['’]?s\b")
_TOKEN = re.compile(r"[^\W\d_]+")
_CARDINALS = {
    **{w: i for i, w in enumerate(_UNITS)},
    **{w: 20 + 10 * i for i, w in enumerate(_TENS)},
}
_MULTIPLIERS = {"hundred": 100.0, "thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _readings(tok: str) -> set[float]:
    """Values a written number can mean: "1,000" = 1000 or 1.0; "3,5" = 3.5 or 35."""
    seps = [c for c in tok if not c.isdigit()]
    if not seps:
        return {float(int(tok))}
    digits = "".join(c for c in tok if c.isdigit())
    out = {float(int(digits))}  # every separator groups digits
    i = max(tok.rfind(c) for c in set(seps))
    whole = "".join(c for c in tok[:i] if c.isdigit()) or "0"
    out.add(float(f"{int(whole)}.{tok[i + 1 :]}"))  # the last separator is a decimal point
    return out


def _norm_digits(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text)


def _strip_marks(word: str) -> str:
    return "".join(
        c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c)[0] != "M"
    )


def _scaled(values: set[float], scale: float | None) -> set[float]:
    return values | ({v * scale for v in values} if scale else set())


def _next_word(text: str, end: int) -> str:
    m = re.match(r"\s*([^\W\d_]+)", text[end:])
    return m.group(1).casefold().rstrip(".") if m else ""


def _prev_word(text: str, start: int) -> str:
    m = re.search(r"([^\W\d_]+)\.?\s*$", text[:start])
    return m.group(1).casefold() if m else ""


@dataclass
class Item:
    """One written number: what it can mean, or (a clock time) parts that must all match."""

    tok: str
    readings: set[float]
    parts: list[set[float]] = field(default_factory=list)
    converted: set[float] = field(default_factory=set)  # in metric units (rounded by translators)


@dataclass
class Numbers:
    """Numbers in a text: `required` items, values that only explain, and (Yoruba) spelled
    numbers whose value is not parsed."""

    required: list[Item]
    optional: set[float]
    unknown: int = 0

    def values(self) -> set[float]:
        out = set(self.optional)
        for it in self.required:
            out |= it.readings
            for p in it.parts:
                out |= p
        return out


def _hours(h: int, ampm: str | None, swahili: bool) -> set[float]:
    """Clock readings of hour `h`: 12/24-hour, and in Swahili also Swahili time (6 hours off)."""
    out = {float(h)}
    if ampm and ampm[0].lower() == "p" and h < 12:
        out.add(float(h + 12))
    if ampm and ampm[0].lower() == "a" and h == 12:
        out.add(0.0)
    if not ampm and h < 12:
        out.add(float(h + 12))
    for base in list(out):
        out |= {base % 12, (base % 12) or 12.0}
        if swahili:
            out |= {(base - 6) % 12, ((base - 6) % 12) or 12.0}
    return out


def _blank(text: str, start: int, end: int) -> str:
    return text[:start] + " " * (end - start) + text[end:]


_FAHRENHEIT = -1.0
_TO_METRIC = {
    "mile": 1.609344, "mph": 1.609344, "pound": 0.45359237, "lb": 0.45359237, "inch": 2.54,
    "in": 2.54, "feet": 0.3048, "foot": 0.3048, "ft": 0.3048, "yard": 0.9144, "gallon": 3.785,
    "ounce": 28.35, "oz": 28.35, "acre": 0.4047, "degree": _FAHRENHEIT, "°f": _FAHRENHEIT,
}  # fmt: skip
_UNIT = re.compile(
    r"\s*-?\s*(miles?|mph|pounds?|lbs?\.?|inch(?:es)?|in\.|feet|foot|ft\.?|yards?|gallons?|"
    r"ounces?|oz\.?|acres?|degrees?|°F)(?![^\W\d_])",
    re.I,
)
_EXTRA_EN = {"biennial": 2, "triennial": 3, "freshman": 1, "sophomore": 2, "junior": 3,
             "senior": 4, "top": 1, "teen": 10, "teens": 10, "teenage": 10, "teenager": 10, "teenagers": 10, "annual": 1, "yearly": 1, "weekly": 7, "fortnight": 14}  # fmt: skip


def source_numbers(text: str, lang: str = "") -> Numbers:
    """Numbers of an English text: digits (required) and words, months, weekdays (optional).

    `lang` is the target language (Swahili reads clock times 6 hours off)."""
    text = _norm_digits(text)
    required: list[Item] = []
    optional: set[float] = set()
    for m in _TIME.finditer(text):  # "2:30 pm", "5.30pm", "14:00", "9 a.m."
        h, mm = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(5))
        if int(h) > 24 or (mm and int(mm) >= 60):
            continue
        required.append(Item(h, _hours(int(h), m.group(3), lang == "sw")))
        if mm and int(mm):
            required.append(Item(mm, {float(int(mm))}))
        elif mm:
            optional.add(0.0)
        text = _blank(text, m.start(), m.end())
    for m in _DECADE.finditer(text):  # "the 1990s" -> 90年代; "his 40s" -> "Vierzigern"
        v = int(m.group(1))
        optional |= {float(v), float(v % 100), float(v % 100 + 1900), float(v % 100 + 2000)}
        text = _blank(text, m.start(1), m.end(1))
    for m in _NUM.finditer(text):
        tok = m.group(1)
        vals = _scaled(_readings(tok), _SCALES.get(_next_word(text, m.end())))
        if tok.isdigit() and len(tok) == 4 and 1900 <= int(tok) <= 2099:
            vals.add(float(int(tok) % 100))  # a year written '19
        unit = _UNIT.match(text, m.end())
        converted = set()
        if unit:  # 385 miles = 620 km, 80 degrees = 27 °C: translators convert
            name = unit.group(1).lower().rstrip(".")
            factor = next(f for k, f in _TO_METRIC.items() if name.startswith(k))
            converted = {v * factor for v in vals}
            if factor == _FAHRENHEIT:
                converted = {(v - 32) * 5 / 9 for v in vals} | {v * 5 / 9 for v in vals}
        required.append(Item(tok, vals, converted=converted))
    total, current, words = 0.0, 0.0, []  # a run of number words: "twenty five" = 25 only
    for w in [w.casefold() for w in _TOKEN.findall(text)] + [""]:
        if w in EN_NAMED:
            optional.add(float(EN_NAMED[w]))
            if w in _WEEKDAYS:
                optional.add(float(_SW_WEEKDAY[EN_NAMED[w]]))
        if w in _EXTRA_EN:
            optional.add(float(_EXTRA_EN[w]))
        if w in _MULTIPLIERS and not words:  # "1.5 million", "a thousand": on its own
            optional.add(_MULTIPLIERS[w])
        elif w in _MULTIPLIERS:  # "two hundred", "three million"
            scale = _MULTIPLIERS[w]
            if scale == 100:
                current = (current or 1) * 100
            else:
                total, current = total + (current or 1) * scale, 0.0
            words.append(w)
        elif w in _CARDINALS:
            current += _CARDINALS[w]
            words.append(w)
        elif not (w == "and" and words):
            if w in EN_WORDS:
                optional.add(float(EN_WORDS[w]))
            if words:
                optional.add(total + current)
            total, current, words = 0.0, 0.0, []
    return Numbers(required, optional)


def _cjk_value(s: str) -> float | None:
    """Value of a CJK numeral string (一百二十 = 120, 两万 = 20000, 二〇一九 = 2019)."""
    if all(c in _CJK_DIGITS for c in s):
        return float(int("".join(str(_CJK_DIGITS[c]) for c in s)))
    total, section, digit = 0.0, 0.0, None
    for c in s:
        if c in _CJK_DIGITS:
            digit = _CJK_DIGITS[c]
        elif c in _CJK_UNITS:
            section += (digit if digit is not None else 1) * _CJK_UNITS[c]
            digit = None
        elif c in _CJK_BIG:
            total = (total + section + (digit or 0)) * _CJK_BIG[c]
            section, digit = 0.0, None
    return total + section + (digit or 0)


_SMALL_UNITS = {"十": 10, "百": 100, "千": 1e3, "천": 1e3, "백": 100}
_BIG_UNITS = {"万": 1e4, "萬": 1e4, "亿": 1e8, "億": 1e8, "만": 1e4, "억": 1e8, "조": 1e12}
_NUM_SIMPLE = r"\d+(?:[.,]\d{3})*(?:[.,]\d+)?"
# Digits with CJK/Korean units: 7만 6천 = 76,000; 1억 4천 2백만 = 142,000,000; 37万5千.
_COMPOUND = re.compile(
    rf"(?:(?:{_NUM_SIMPLE})?\s?[十百千천백万萬亿億만억조]\s?)+(?:{_NUM_SIMPLE})?(?![\d])"
)
_TIME_LIKE = re.compile(r"(?<![\d])(?<![\d][.,])(\d{1,2})[:.h](\d{2})(?![\d]|[.,]\d)")
_YO_SPELLED = re.compile(
    r"^\w*(?:din|dil|kanla|ejila|etala|erinla|edogun|ogun|ogoji|aadota|ogota|ogorin|aadorun|"
    r"ogorun|egberun|ogbon|edogbon|irinwo|egberin|aadorin|lelo|lela|aabo)\w*$|^igba$"
)


def _compound_value(s: str) -> float:
    total, section = 0.0, 0.0
    for m in re.finditer(rf"({_NUM_SIMPLE})?\s?([十百千천백万萬亿億만억조])?", s):
        num, unit = m.group(1), m.group(2)
        if not num and not unit:
            continue
        n = (
            max(_readings(num))
            if num and re.fullmatch(r"\d{1,3}(?:[.,]\d{3})+", num)
            else (float(num.replace(",", ".")) if num else None)
        )
        if unit in _SMALL_UNITS:
            section += (n if n is not None else 1) * _SMALL_UNITS[unit]
        elif unit in _BIG_UNITS:
            total += (section + (n or 0)) * _BIG_UNITS[unit] if (section or n) else _BIG_UNITS[unit]
            section = 0.0
        elif n is not None:
            section += n
    return total + section


_SW_TENS = "kumi|ishirini|thelathini|arobaini|hamsini|sitini|sabini|themanini|tisini"
_SW_COMPOUND = re.compile(rf"\b(?:(?P<tens>{_SW_TENS})\s+na|(?P<scale>mia|elfu))\s+(?P<unit>\w+)")


def _sw_unit(word: str) -> float | None:
    units = TARGET_WORDS["sw"]
    for key in (word, word[2:], word[1:]):  # noun-class prefixes: wawili, mbili, matatu
        if key in units and units[key] < 10:
            return float(units[key])
    return None


def target_numbers(text: str, lang: str) -> Numbers:
    """Numbers of a translation: digits (each must be explained) and number words."""
    text = _norm_digits(text)
    required: list[Item] = []
    optional: set[float] = set()
    if lang in ("zh", "ja", "ko"):
        for m in _COMPOUND.finditer(text):
            if len(re.findall(r"\d+", m.group(0))) >= 1 and re.search(r"[十百千천백万萬亿億만억조]", m.group(0)):  # fmt: skip
                parts = re.findall(rf"{_NUM_SIMPLE}", m.group(0))
                if len(parts) >= 2 or not re.search(rf"{_NUM_SIMPLE}\s?[十百千천백万萬亿億만억조]\s*$", m.group(0)):  # fmt: skip
                    value = _compound_value(m.group(0))
                    if value:
                        first = _readings(parts[0]) if parts else set()
                        required.append(Item(m.group(0).strip(), {value} | first))
                        text = _blank(text, m.start(), m.end())
    for m in _TIME_LIKE.finditer(text):  # 11.15 or 11:15: a time, or (with '.') a decimal
        h, mm = int(m.group(1)), int(m.group(2))
        if h <= 24 and mm < 60:
            readings = _readings(m.group(0)) if ":" not in m.group(0) else set()
            parts = [{float(h)}, {float(mm)}] if mm else [{float(h)}]  # 7 a.m. = 7:00 Uhr
            required.append(Item(m.group(0), readings, parts))
            text = _blank(text, m.start(), m.end())
    for m in _NUM.finditer(text):
        tok = m.group(1)
        after = text[m.end() : m.end() + 1]
        unit = text[m.end() :].lstrip()[:1]  # 1100 万
        scale = _TGT_SCALES.get(unit) or _TGT_SCALES.get(_next_word(text, m.end()))
        before = _TGT_SCALES.get(_prev_word(text, m.start()))
        vals = _scaled(_scaled(_readings(tok), scale), before)
        if tok.isdigit() and len(tok) == 2 and after in "年년'":  # 90年代, '90s
            vals |= {float(int(tok) + 1900), float(int(tok) + 2000)}
        required.append(Item(tok, vals))
    for m in _CJK_RE.finditer(text):
        v = _cjk_value(m.group(0))
        if v is not None:
            optional.add(v)
            optional |= {float(_CJK_DIGITS[c]) for c in m.group(0) if c in _CJK_DIGITS}
    words = TARGET_WORDS.get(lang, {})
    unknown = 0
    if lang == "sw":  # kumi na mbili = 12, mia mbili = 200, elfu tatu = 3000
        for m in _SW_COMPOUND.finditer(text.casefold()):
            unit = _sw_unit(m.group("unit"))
            if unit is not None and m.group("tens"):
                optional.add(words[m.group("tens")] + unit)
            elif unit is not None:
                optional.add(words[m.group("scale")] * unit)
    for w in re.findall(r"(?:[^\W\d_]|[\u0300-\u036f])+(?:-[^\W\d_]+)?", text):
        key = _strip_marks(w.casefold()) if lang == "yo" else w.casefold()
        if key in words:
            optional.add(float(words[key]))
        elif lang == "sw" and key[:2] in ("wa", "ma", "vi", "mi", "ki", "ji"):  # class prefixes
            if key[2:] in words:
                optional.add(float(words[key[2:]]))
        elif lang == "yo" and _YO_SPELLED.match(key):
            unknown += 1
        elif lang == "ko":
            for k, v in words.items():
                if len(k) > 1 and key.startswith(k):
                    optional.add(float(v))
            if key[:1] in _SINO_KO and key[1:2] in ("월", "일", "시"):
                optional.add(float(_SINO_KO[key[0]]))
    return Numbers(required, optional, unknown)


def _close(a: set[float], b: set[float]) -> bool:
    return any(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) for x in a for y in b)


def _near(a: set[float], b: set[float]) -> bool:
    """As close as a translator's rounding of a unit conversion: 1 unit or 3%."""
    return any(abs(x - y) <= max(1.0, 0.03 * abs(y)) for x in a for y in b)


def _explained(item: Item, values: set[float], converted: set[float] = frozenset()) -> bool:
    if _close(item.readings, values) or _near(item.readings, converted):
        return True
    if item.converted and _near(values, item.converted):
        return True
    return bool(item.parts) and all(_close(p, values) for p in item.parts)


def check_numbers(src: str, tgt: str, lang: str) -> tuple[str, str] | None:
    """A source number missing from the translation, or a translated number nothing explains.

    In languages without a number-word list a missing number 0-10 is allowed (it may be spelled
    out); in Yoruba, as many missing numbers as the translation has spelled-out number words.
    """
    s, t = source_numbers(src, lang), target_numbers(tgt, lang)
    t_all, s_all = t.values(), s.values()
    if lang == "sw":  # number words with a clock: "six in the morning" = saa 12 asubuhi
        s_all |= {((v - 6) % 12) or 12.0 for v in s.optional if 1 <= v <= 24 and v == int(v)}
    missing = [
        it.tok
        for it in s.required
        if not _explained(it, t_all)
        and not (lang not in TARGET_WORDS and 0 <= min(it.readings) and max(it.readings) <= 10)
    ]
    missing = missing[t.unknown :]
    s_conv = set().union(*(it.converted for it in s.required))
    extra = [it.tok for it in t.required if not _explained(it, s_all, s_conv)]
    if not missing and not extra:
        return None
    parts = []
    if missing:
        parts.append(f"missing {sorted(set(missing))}")
    if extra:
        parts.append(f"unexplained {sorted(set(extra))}")
    return "numbers", "numbers differ (" + ", ".join(parts) + ")"


# ---------------------------------------------------------------------------- all checks


def check_pair(src: str, tgt: str, lang: str, filters: Filters | None = None) -> tuple[str, str] | None:  # fmt: skip
    """First failed check as (reason, detail) for translated text `tgt` of source `src`."""
    filters = filters or Filters()
    if not tgt.strip():
        return "empty", "translation is empty"
    if has_repetition(tgt) and not has_repetition(src):
        return "repetition", "degenerate repetition in the translation"
    bad = check_length(src, tgt, lang, filters)
    if bad is None and filters.langid:
        bad = check_language(src, tgt, lang, filters)
    if bad is None and filters.numbers:
        bad = check_numbers(src, tgt, lang)
    return bad
