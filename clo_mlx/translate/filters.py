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
  source explains. What translators legitimately do is allowed: months as numbers, number
  words either way (Yoruba's read by value), ordinals, decades, 12/24-hour and Swahili clock
  times, rounded unit conversions, digit grouping, decimal commas, scale words (1.5 million =
  150万) and CJK numerals;
- `back_translation` (optional, `check_back_translation`): the translation put back into
  English by the same model is too far (chrF) from the source.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
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
    "back_translation",
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
    min_back_chrf: float | None = None  # chrF of the back-translation below which it is

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
# Weekdays are not here: they are written as words (星期一, Jumatatu), never as digits, and
# as values (Sunday = 7, or 2 in Swahili) they explained changed numbers.
_MONTH_VALUE = {
    **{m: i + 1 for i, m in enumerate(_MONTHS)},
    **{m: i + 1 for i, m in enumerate(_MONTH_ABBR)},
    "sept": 9,
}
# Nouns after which "a"/"an" means 1 to a translator ("a year ago" = 1년 전).
_A_UNITS = set(
    "year month week day hour minute second decade century mile kilometre kilometer metre "
    "meter foot feet inch yard pound kilo kilogram ton tonne litre liter gallon percent "
    "point goal dollar euro cent penny quarter half third".split()
)

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
    month: bool = False  # 6월, 6月: explained only by a month name or a number of the source


@dataclass
class Numbers:
    """Numbers in a text: `required` items, values that only explain, and (Yoruba) number
    words that could not be read."""

    required: list[Item]
    optional: set[float]
    unknown: int = 0
    months: set[float] = field(default_factory=set)
    converted: set[float] = field(default_factory=set)

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
# Factors to metric, with the rounder ones translators also use (1 inch = 2.5 cm).
_TO_METRIC: dict[str, tuple[float, ...]] = {
    "mile": (1.609344, 1.6), "mph": (1.609344, 1.6), "pound": (0.45359237, 0.45, 0.5),
    "lb": (0.45359237, 0.45, 0.5), "inch": (2.54, 2.5), "in": (2.54, 2.5),
    "feet": (0.3048, 30.48, 0.3), "foot": (0.3048, 30.48, 0.3), "ft": (0.3048, 30.48, 0.3),
    "yard": (0.9144, 0.9), "gallon": (3.785,), "ounce": (28.35,), "oz": (28.35,),
    "acre": (0.4047,), "degree": (_FAHRENHEIT,), "°f": (_FAHRENHEIT,),
}  # fmt: skip
_UNIT_NAMES = (
    r"miles?|mph|pounds?|lbs?\.?|inch(?:es)?|in\.|feet|foot|ft\.?|yards?|gallons?|"
    r"ounces?|oz\.?|acres?|degrees?|°F"
)
_UNIT = re.compile(rf"\s*-?\s*({_UNIT_NAMES})(?![^\W\d_])", re.I)
# "2 to 4 inches", "1-2 miles": the first number has the unit too
_RANGE_UNIT = re.compile(
    rf"\s*(?:to|-|–|or|and)\s*[\d.,]+\s*-?\s*({_UNIT_NAMES})(?![^\W\d_])", re.I
)
_FEET_INCHES = re.compile(r"(\d+)(?:-|\s)(?:foot|feet|ft)(?:-|\s)(\d+)(?![\d])", re.I)  # 6-foot-6
_AMPM_RANGE = re.compile(
    r"\b(\d{1,2})\s*(?:to|-|–|and|until)\s*(?=\d{1,2}(?:[:.]\d{2})?\s*([ap])\.?\s?m\b)", re.I
)
_EXTRA_EN = {"biennial": 2, "triennial": 3, "freshman": 1, "sophomore": 2, "junior": 3,
             "senior": 4, "top": 1, "teen": 10, "teens": 10, "teenage": 10, "teenager": 10,
             "teenagers": 10, "annual": 1, "yearly": 1, "weekly": 7, "fortnight": 14,
             "duo": 2, "trio": 3, "thirds": 3, "quarters": 4, "fifths": 5, "tenths": 10}  # fmt: skip
_TENS_VALUES = {20 + 10 * i for i in range(8)}
# "100 percent" as a degree ("100 percent certain"): translators write "completely".
_CERTAIN = re.compile(
    r"\s*(?:%|per\s?cent)\s+(?:sure|certain|confident|convinced|committed|behind|right|"
    r"correct|true|honest|fit|focused|clear|safe|accurate|guaranteed)\b",
    re.I,
)


def _metric(values: set[float], unit: str) -> set[float]:
    """`values` in `unit` converted to metric (all the factors translators use)."""
    name = unit.lower().rstrip(".")
    factors = next(f for k, f in _TO_METRIC.items() if name.startswith(k))
    if factors == (_FAHRENHEIT,):
        return {(v - 32) * 5 / 9 for v in values} | {v * 5 / 9 for v in values}
    return {v * f for v in values for f in factors}


def source_numbers(text: str, lang: str = "") -> Numbers:
    """Numbers of an English text: digits (required) and words, months (optional; months are
    required in Chinese, Japanese and Korean, which write them as numbers).

    `lang` is the target language (Swahili reads clock times 6 hours off)."""
    text = _norm_digits(text)
    required: list[Item] = []
    optional: set[float] = set()
    converted: set[float] = set()  # number words with a unit ("a mile" = 1.6 km)
    for m in _FEET_INCHES.finditer(text):  # 6-foot-6 = 1.98 m
        inches = int(m.group(1)) * 12 + int(m.group(2))
        metric = {inches * 2.54, inches * 0.0254}
        required += [Item(m.group(i), {float(int(m.group(i)))}, converted=metric) for i in (1, 2)]
        text = _blank(text, m.start(), m.end())
    for m in _AMPM_RANGE.finditer(text):  # "from 1 to 4 PM" = 13 bis 16 Uhr
        required.append(Item(m.group(1), _hours(int(m.group(1)), m.group(2) + "m", lang == "sw")))
        text = _blank(text, m.start(1), m.end(1))
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
        years = {float(v), float(v % 100), float(v % 100 + 1900), float(v % 100 + 2000)}
        optional |= years | {y + 9 for y in years}  # "the 1980s" = "1980 to 1989"
        if v >= 1000:
            optional.add(float(v // 100 + 1))  # "the 1930s" = 20 世纪 30 年代
        # A decade with its century is written in digits; "the 2000s" may be "this century".
        if len(m.group(1)) == 4 and v % 100:
            required.append(Item(m.group(1), {float(v), float(v % 100)}))
        text = _blank(text, m.start(1), m.end(1))
    for m in _NUM.finditer(text):
        tok = m.group(1)
        vals = _scaled(_readings(tok), _SCALES.get(_next_word(text, m.end())))
        if tok.isdigit() and len(tok) == 2:
            year = re.search(r"((?:19|20)\d\d)\s*[-–]\s*$", text[: m.start()])
            if year:  # 1950-53 = 1950 bis 1953
                vals.add(float(int(year.group(1)[:2] + tok)))
            elif re.search(r"(?:[A-Za-z]|')$", text[: m.start()]):  # SS19, '19 = 2019
                vals.add(float(2000 + int(tok)))
        if tok == "100" and _CERTAIN.match(text, m.end()):
            optional.add(100.0)  # "100 percent certain" = "sure in every way"
            continue
        unit = _UNIT.match(text, m.end()) or _RANGE_UNIT.match(text, m.end())
        # 385 miles = 620 km, 80 degrees = 27 °C: translators convert
        conv = _metric(vals, unit.group(1)) if unit else set()
        required.append(Item(tok, vals, converted=conv))
    total, current, words = 0.0, 0.0, []  # a run of number words: "twenty five" = 25 only
    tokens, months = _TOKEN.findall(text) + [""], set()
    for i, (orig, w) in enumerate((t, t.casefold()) for t in tokens):
        nxt = tokens[i + 1].casefold() if i + 1 < len(tokens) else ""
        if w in _MONTH_VALUE:
            optional.add(float(_MONTH_VALUE[w]))
            months.add(float(_MONTH_VALUE[w]))
            # A capitalised month name is written as a number in Chinese, Japanese, Korean
            # ("May" is left out: mostly Theresa May).
            if lang in _DENSE and orig[0].isupper() and w != "may":
                required.append(Item(orig, {float(_MONTH_VALUE[w])}))
        if w in ("a", "an") and lang not in _DENSE and nxt.rstrip("s") not in _A_UNITS:
            w = "_"  # "a" is 1 before a unit ("a year" = 1 Jahr); CJK counters: "a bogey" = 1개
        if w in ("quarter", "half") and nxt in ("hour", "an"):
            optional |= {15.0, 30.0, 45.0}  # a quarter-hour = 15분
        if w in _EXTRA_EN:
            optional.add(float(_EXTRA_EN[w]))
        if (w in EN_WORDS or w == "_") and _UNIT.match(" " + nxt):  # "a mile", "two feet"
            converted |= _metric({float(EN_WORDS.get(w, 1))}, nxt)
        if w in _MULTIPLIERS and not words:  # "1.5 million", "a thousand": on its own
            optional.add(_MULTIPLIERS[w])
        elif w in _MULTIPLIERS:  # "two hundred", "three million"
            scale = _MULTIPLIERS[w]
            if scale == 100:
                current = (current or 1) * 100
            else:
                total, current = total + (current or 1) * scale, 0.0
            words.append(w)
        elif w in _CARDINALS and not (
            words and not (words[-1] in _MULTIPLIERS or (current in _TENS_VALUES and _CARDINALS[w] < 10))
        ):  # fmt: skip
            current += _CARDINALS[w]
            words.append(w)
        elif w == "and" and words and words[-1] in _MULTIPLIERS:  # "two hundred and five"
            pass
        else:
            if words:
                optional.add(total + current)
                if lang in _DENSE and total + current >= 11:  # "fourteen people" = 14人
                    required.append(Item(" ".join(words), {total + current}))
            total, current, words = 0.0, 0.0, []
            if w in _CARDINALS:  # "one and three": a new run
                current, words = float(_CARDINALS[w]), [w]
            elif w in EN_WORDS:
                optional.add(float(EN_WORDS[w]))
    return Numbers(required, optional, months=months, converted=converted)


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


# ---------------------------------------------------------------------------- Yoruba numbers
# Yoruba counts in twenties, adding (le: mejilelogbon = 2 + 30), subtracting (din:
# merindinlogun = 20 - 4, irinwodinmedogun = 400 - 15) and multiplying (egberun lona ogorun
# = 1000 x 100), in one word or several. Spelled forms are matched without tone marks and with
# doubled letters collapsed (references write ogoorun, ogorun-un and ọgọ́rùn-ún alike).
_YO_UNITS = (  # (plain, counting "m-", ordinal "k-") forms of 1..10
    ("okan kan eni", "mokan", "kini ikini kinni akoko"), ("eji", "meji", "keji ekeji ikeji"),
    ("eta", "meta", "keta iketa"), ("erin", "merin", "kerin ikerin"),
    ("arun", "marun", "karun ikarun"), ("efa", "mefa", "kefa ikefa"),
    ("eje", "meje", "keje ikeje"), ("ejo", "mejo", "kejo ikejo"),
    ("esan", "mesan", "kesan ikesan"), ("ewa", "mewa", "kewa ikewa"),
)  # fmt: skip
_YO_ATOMS: dict[str, float] = {
    **{w: i + 1 for i, forms in enumerate(_YO_UNITS) for f in forms for w in f.split()},
    "mokanla": 11, "kokanla": 11, "mejila": 12, "kejila": 12, "metala": 13, "ketala": 13,
    "merinla": 14, "kerinla": 14, "medogun": 15, "kedogun": 15, "edogun": 15, "ogun": 20,
    "medogbon": 25, "kedogbon": 25, "ogbon": 30, "ogoji": 40, "adota": 50, "ogota": 60,
    "adorin": 70, "ogorin": 80, "orin": 80, "adorun": 90, "ogorun": 100, "adofa": 110,
    "ogofa": 120, "adoje": 130, "ogoje": 140, "adojo": 150, "ogojo": 160, "adosan": 170,
    "ogosan": 180, "adowa": 190, "igba": 200, "odunrun": 300, "odurun": 300, "odun": 300,
    "irinwo": 400, "edegbeta": 500, "egbeta": 600, "edegberin": 700, "egberin": 800,
    "edegberun": 900, "egberun": 1e3, "edegbefa": 1100, "egbefa": 1200, "edegbeje": 1300,
    "egbeje": 1400, "edegbejo": 1500, "egbejo": 1600, "edegbesan": 1700, "egbesan": 1800,
    "edegba": 1900, "egba": 2e3, "oke": 2e4, "milionu": 1e6,
    "bilionu": 1e9, "abo": 0.5,
}  # fmt: skip
# ordinals: ikeji, ekeji, elekeji (the second), ikerinla (14th)
_YO_ATOMS.update({p + w: v for w, v in list(_YO_ATOMS.items()) if w[0] == "k" for p in ("i", "e", "ele")})  # fmt: skip
_YO_SCALES = {"egberun": 1e3, "oke": 2e4, "milionu": 1e6, "bilionu": 1e9}  # oke: ọ̀kẹ́ méjì = 40,000
_YO_ALONE_NOT = {"odun", "oke", "orin", "abo"}  # alone: "year", "hill", "song", "female"
_YO_JOINS = ("le", "din", "lona", "ku", "ati", "o")
# le l-ogun, le n-igba (ní elided); ku iseju marun (minutes); ogbon-ojo (day); aago mejo owuro ku (morning)
_YO_FILLERS = ("l", "n", "ni", "iseju", "jo", "ojo", "owuro", "osan", "irole", "ale")
_YO_MORPHEMES = sorted({*_YO_ATOMS, *_YO_JOINS, *_YO_FILLERS}, key=len, reverse=True)


def _yo_norm(word: str) -> str:
    w = re.sub(r"[^a-z]", "", _strip_marks(word.casefold()))
    if w == "oodun":  # ọ̀ọ́dún (300), not ọdún (year)
        return "odunrun"
    w = re.sub(r"(un|an)\1", r"\1", w)  # márùn-ún, mẹ́sàn-án
    return re.sub(r"(.)\1+", r"\1", w)


@lru_cache(maxsize=65536)
def _yo_split(w: str) -> tuple[tuple[str, ...], ...]:
    """Every way to write `w` as number morphemes (at most 8)."""
    if not w:
        return ((),)
    out: list[tuple[str, ...]] = []
    for m in _YO_MORPHEMES:
        if w.startswith(m):
            out += [(m, *rest) for rest in _yo_split(w[len(m) :])]
            if len(out) >= 8:
                break
    return tuple(out[:8])


def _yo_clean(seq: tuple[str, ...]) -> tuple[str, ...]:
    """The morphemes that carry value: fillers dropped where they belong."""
    return tuple(
        m for i, m in enumerate(seq)
        if not (m in ("l", "n", "ni") and (i == 0 or seq[i - 1] in ("le", "din")))
        and not (m == "iseju" and i and seq[i - 1] == "ku")
        and not (m in ("jo", "ojo") and i == len(seq) - 1 and i)
        and not (m in ("owuro", "osan", "irole", "ale") and seq[i + 1 : i + 2] == ("ku",))
        and not (m == "o" and seq[i + 1 : i + 2] == ("le",))
    )  # fmt: skip


@lru_cache(maxsize=16384)
def _yo_eval(seq: tuple[str, ...]) -> frozenset[float]:
    """Values of a cleaned morpheme sequence under every bracketing (egberun lona (irinwo din
    ogun) = 380,000; (milionu ogun) ati (egberun lona irinwo) = 20.4 million)."""
    if len(seq) == 1:
        return frozenset({_YO_ATOMS[seq[0]]} if seq[0] in _YO_ATOMS else ())
    out: set[float] = set()
    for k in range(1, len(seq)):
        if seq[k] in _YO_JOINS and k < len(seq) - 1:
            left, right = _yo_eval(seq[:k]), _yo_eval(seq[k + 1 :])
            for a in left:
                for b in right:
                    out |= {
                        "le": {a + b}, "ati": {a + b}, "din": {abs(b - a)}, "lona": {a * b},
                        "ku": {(a - 1) or 12, 60 - b},  # aago mẹ́jọ ku ìṣẹ́jú márùn-ún = 7:55
                    }.get(seq[k], set())  # fmt: skip
        elif seq[k] not in _YO_JOINS and seq[k - 1] not in _YO_JOINS:
            # egberun marun = 5000, ogorun milionu = 100 million: a scale word multiplies
            if (k == 1 and seq[0] in _YO_SCALES) or (k == len(seq) - 1 and seq[k] in _YO_SCALES):
                out |= {a * b for a in _yo_eval(seq[:k]) for b in _yo_eval(seq[k:])}
    return frozenset(out)


def _yo_values(w: str, alone: bool) -> set[float]:
    out: set[float] = set()
    for seq in _yo_split(w):
        seq = _yo_clean(seq)
        if seq and len(seq) <= 12 and not (alone and len(seq) == 1 and seq[0] in _YO_ALONE_NOT):
            out |= _yo_eval(seq)
    return out


def yoruba_numbers(text: str) -> tuple[set[float], int]:
    """Values of the spelled-out numbers in a Yoruba text, and how many number words in it
    could not be read (a garbled or unusual form)."""
    words = [_yo_norm(w) for w in re.findall(r"(?:[^\W\d_]|[\u0300-\u036f])+(?:-(?:[^\W\d_]|[\u0300-\u036f])+)*", text)]  # fmt: skip
    values: set[float] = set()
    read = [False] * len(words)
    for i in range(len(words)):
        if not _yo_split(words[i]):
            continue
        for j in range(i + 1, min(i + 6, len(words)) + 1):
            if not _yo_split(words[j - 1]):
                break
            found = _yo_values("".join(words[i:j]), alone=j == i + 1)
            if found:
                values |= found
                read[i:j] = [True] * (j - i)
    # a counted noun inside the number: ọgbọ̀n ọdún ó lé mẹ́rin = 30 years and 4 = 34
    for k in range(1, len(words) - 1):
        rest = 2 if words[k + 1 : k + 3] == ["o", "le"] else int(words[k + 1] in ("le", "ole"))
        if not rest or not _yo_split(words[k - 1]) or words[k] in _YO_JOINS:
            continue
        tail = k + 1 + rest
        for i in range(max(0, k - 5), k):
            for j in range(tail + 1, min(tail + 5, len(words)) + 1):
                if not all(_yo_split(w) for w in words[i:k] + words[tail:j]):
                    break
                values |= _yo_values("".join(words[i:k] + ["le"] + words[tail:j]), alone=False)
    if re.search(r"\bati aabo\b", _strip_marks(text.casefold())):  # "and a half": 9:30
        values |= {0.5, 30.0}
    stems = "ogun|ogbon|ogoji|adota|ogota|adorin|ogorin|adorun|ogorun|egberun|irinwo|egbeta|egberin"
    unknown = sum(
        1
        for w, r in zip(words, read, strict=True)
        if not r and re.search("din|le", w) and re.search(stems, w)
    )
    return values, unknown


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


_KO_NATIVE = re.compile(
    r"(열|스물|스무|서른|마흔|쉰)\s?(하나|한|둘|두|셋|세|넷|네|다섯|여섯|일곱|여덟|아홉)"
)
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
        if tok.isdigit() and len(tok) == 2 and (after in "年년'" or text[m.start() - 1 : m.start()] in ("'", "’")):  # fmt: skip
            vals |= {float(int(tok) + 1900), float(int(tok) + 2000)}  # 90年代, '90s, '19
        required.append(Item(tok, vals, month=lang in _DENSE and after in "月월"))
    for m in _CJK_RE.finditer(text):
        v = _cjk_value(m.group(0))
        if v is not None:
            optional.add(v)
            if text[m.end() : m.end() + 1] == "折":  # 七折 = 70% of the price = 30% off
                tenths = _cjk_value(m.group(0)[0]) or 0
                pct = float(int("".join(str(_CJK_DIGITS.get(c, 0)) for c in m.group(0)))) if len(m.group(0)) == 2 else tenths * 10  # fmt: skip
                optional |= {pct, 100 - pct}
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
    if lang == "yo":
        values, unknown = yoruba_numbers(text)
        optional |= values
    if lang == "ko":  # native numbers: 열 다섯 = 15, 스물두 = 22
        for m in _KO_NATIVE.finditer(text):
            optional.add(float(words[m.group(1)] + words[m.group(2)]))
    for w in re.findall(r"(?:[^\W\d_]|[\u0300-\u036f])+(?:-[^\W\d_]+)?", text):
        key = _strip_marks(w.casefold()) if lang == "yo" else w.casefold()
        if key in words:
            optional.add(float(words[key]))
        elif lang == "sw" and key[:2] in ("wa", "ma", "vi", "mi", "ki", "ji"):  # class prefixes
            if key[2:] in words:
                optional.add(float(words[key[2:]]))
        elif lang == "ko":
            for k, v in words.items():
                if len(k) > 1 and key.startswith(k):
                    optional.add(float(v))
            if key[:1] in _SINO_KO and key[1:2] in ("월", "일", "시"):
                optional.add(float(_SINO_KO[key[0]]))
    return Numbers(required, optional, unknown)


def _close(a: set[float], b: set[float]) -> bool:
    return any(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) for x in a for y in b)


def _rounds_to(x: float, y: float) -> bool:
    """Whether `x` is a translator's rounding of the converted amount `y`: within 0.5%
    (another conversion factor), or `y` rounded (to >= 2 significant digits) or cut off (to
    >= 3) at some decimal place (385 miles = 619.6 km -> 620; 85 mph = 136.8 km/h -> 136)."""
    if abs(x - y) <= 0.005 * abs(y) or math.isclose(x, round(y)):
        return True
    if abs(y) >= 20 and any(math.isclose(x, round(y / k) * k) for k in (5, 10)):
        return True  # "about 60 cm" for two feet (61 cm)
    if y == 0:
        return False
    digits = math.floor(math.log10(abs(y))) + 1  # digits before the decimal point
    for places in range(2 - digits, 3):  # keeps >= 2 significant digits
        step = 10.0**-places
        if math.isclose(x, round(y / step) * step, abs_tol=1e-9):
            return True
        if digits + places >= 3 and any(
            math.isclose(x, f(y / step) * step, abs_tol=1e-9) for f in (math.floor, math.ceil)
        ):
            return True
    return False


def _near(a: set[float], b: set[float]) -> bool:
    return any(_rounds_to(x, y) for x in a for y in b)


def _explained(item: Item, values: set[float], converted: set[float] = frozenset()) -> bool:
    if _close(item.readings, values) or _near(item.readings, converted):
        return True
    if item.converted and _near(values, item.converted):
        return True
    return bool(item.parts) and all(_close(p, values) for p in item.parts)


def check_numbers(src: str, tgt: str, lang: str) -> tuple[str, str] | None:
    """A source number missing from the translation, or a translated number nothing explains.

    In languages without a number-word list a missing number 0-10 is allowed (it may be spelled
    out); in Yoruba, as many missing numbers as the translation has number words it cannot read.
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
    s_conv = set().union(s.converted, *(it.converted for it in s.required))
    s_req = set().union(*(it.readings for it in s.required)) | s.months
    extra = [
        it.tok for it in t.required if not _explained(it, s_req if it.month else s_all, s_conv)
    ]
    if not missing:  # "72 per cent ... 72 per cent": both, not one
        counts = Counter(it.tok for it in s.required if it.tok.isdigit() and len(it.tok) >= 2)
        for tok, k in counts.items():
            v = float(int(tok))
            if k > 1 and sum(v in it.readings for it in t.required) < k:
                missing.append(tok)
    if not missing and not extra:
        return None
    parts = []
    if missing:
        parts.append(f"missing {sorted(set(missing))}")
    if extra:
        parts.append(f"unexplained {sorted(set(extra))}")
    return "numbers", "numbers differ (" + ", ".join(parts) + ")"


# ---------------------------------------------------------------------------- back-translation


def _char_ngrams(text: str, n: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in range(len(text) - n + 1):
        out[text[i : i + n]] = out.get(text[i : i + n], 0) + 1
    return out


def chrf(hypothesis: str, reference: str, order: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF (Popović 2015), 0-100: the F-beta of character n-gram precision and
    recall for n = 1..order, averaged over the orders both texts have, whitespace removed."""
    hyp, ref = "".join(hypothesis.split()), "".join(reference.split())
    scores = []
    for n in range(1, order + 1):
        h, r = _char_ngrams(hyp, n), _char_ngrams(ref, n)
        if not h or not r:
            continue
        match = sum(min(c, r.get(g, 0)) for g, c in h.items())
        p, rec = match / sum(h.values()), match / sum(r.values())
        scores.append((1 + beta**2) * p * rec / (beta**2 * p + rec) if match else 0.0)
    return 100 * sum(scores) / len(scores) if scores else 0.0


def check_back_translation(src: str, back: str, filters: Filters) -> tuple[str, str] | None:
    """`back_translation`: the translation put back into English is too far from `src`."""
    if filters.min_back_chrf is None:
        return None
    score = chrf(back, src)
    if score < filters.min_back_chrf:
        return "back_translation", f"back-translation chrF {score:.1f} < {filters.min_back_chrf:g}"
    return None


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
