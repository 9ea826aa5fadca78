"""Translation quality filters: each rule on hand-written cases and on real human translations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clo_mlx.translate.filters import (
    Filters,
    check_language,
    check_length,
    check_numbers,
    check_pair,
    has_repetition,
    length_band,
    text_length,
)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
NTREX = DATA / "ntrex128_parallel_7lang.jsonl"
needs_data = pytest.mark.skipif(
    not NTREX.exists(), reason="../shared/data/ntrex128_parallel_7lang.jsonl not present"
)


def ntrex(lines: range) -> list[dict]:
    rows = [json.loads(x) for x in NTREX.open()]
    return [rows[i] for i in lines]


# ------------------------------------------------------------------ numbers, hand-written

LEGIT = [
    # (English, translation, lang): what translators do; no number changed
    ("The vote is in January.", "投票在1月举行。", "zh"),
    ("He won Pennsylvania's 12th district.", "그는 펜실베이니아 12번 선거구에서 이겼다.", "ko"),
    ("He is in his 40s now.", "Er ist jetzt in den Vierzigern.", "de"),
    ("The show starts at 02:30 BST.", "Kipindi kinaanza saa 8:30 BST.", "sw"),
    ("We met at 2:30 pm.", "Wir trafen uns um 14:30 Uhr.", "de"),
    ("We met at 5.30pm.", "Kami bertemu pukul 17.30.", "id"),
    ("She ate three eggs.", "她吃了3个鸡蛋。", "zh"),
    ("She ate 3 eggs.", "Alikula mayai matatu.", "sw"),
    ("What is 12 plus 30?", "Kumi na mbili jumlisha thelathini ni ngapi?", "sw"),
    ("It has 200 rooms.", "Ina vyumba mia mbili.", "sw"),
    ("It cost 1,000 dollars and 3.5 cents.", "Es kostete 1.000 Dollar und 3,5 Cent.", "de"),
    ("It raised $1.5 million.", "筹集了150万美元。", "zh"),
    ("It raised £120 million a year.", "연간 1억 2천만 파운드를 모았다.", "ko"),
    ("He paid $375,000.", "그는 37만 5,000달러를 지불했다.", "ko"),
    ("Since the 1990s it grew.", "自90年代以来它一直在增长。", "zh"),
    ("It was twenty-five years ago.", "Es war vor 25 Jahren.", "de"),
    ("On Monday, 30 September.", "Pada hari Senin, 30 September.", "id"),
    ("There were 12 of them.", "有十二个。", "zh"),
    ("It was 385 miles away, at 80 degrees.", "Es war 620 km entfernt, bei 27 °C.", "de"),
    ("The attack was at 7 a.m.", "Der Angriff war um 7:00 Uhr.", "de"),
    ("The man, 32, was held.", "Ọkùnrin ẹni ọdún méjìlélọ́gbọ̀n náà wà ní àhámọ́.", "yo"),
    ("Fifty-eight percent said no.", "58 Prozent sagten nein.", "de"),
    ("It rose from 1.7 million four years ago.", "4년 전의 170만보다 증가했다.", "ko"),
]
BROKEN = [
    # (English, translation, lang): a number changed or dropped
    ("There were 12 of them.", "Es waren 13.", "de"),
    ("It cost 1,000 dollars.", "Es kostete 1.001 Dollar.", "de"),
    ("It raised $1.5 million.", "筹集了160万美元。", "zh"),
    ("We met at 2:30 pm.", "Wir trafen uns um 14:40 Uhr.", "de"),
    ("He scored 27 points in 2019.", "Alifunga pointi 27.", "sw"),
    ("The vote is in January.", "投票在2月举行。", "zh"),
    ("He paid $375,000.", "그는 38만 5,000달러를 지불했다.", "ko"),
    ("It was 385 miles away.", "Es war 720 km entfernt.", "de"),
    ("Fifty-eight percent said no.", "50 Prozent sagten nein.", "de"),
    ("We met at 6 a.m.", "Wir trafen uns um 0 Uhr.", "de"),  # Swahili clock only for sw
    ("What is 12 plus 30?", "Kumi na tatu jumlisha thelathini ni ngapi?", "sw"),
]


@pytest.mark.parametrize("src,tgt,lang", LEGIT)
def test_numbers_accepts_translator_conventions(src, tgt, lang):
    assert check_numbers(src, tgt, lang) is None


@pytest.mark.parametrize("src,tgt,lang", BROKEN)
def test_numbers_catches_changed_or_dropped(src, tgt, lang):
    verdict = check_numbers(src, tgt, lang)
    assert verdict is not None and verdict[0] == "numbers"


def test_numbers_detail_names_the_numbers():
    reason, detail = check_numbers("He scored 27 points.", "Alifunga pointi 28.", "sw")
    assert reason == "numbers" and "'27'" in detail and "'28'" in detail


# ------------------------------------------------------------------ length, repetition, language


def test_text_length_ignores_spaces_and_combining_marks():
    assert text_length("a b\u00a0c") == 3
    assert text_length("ẹ̀ta") == text_length("eta") == 3  # decomposed tone marks


def test_length_band_is_calibrated_and_falls_back():
    low, soft, high = length_band("de", 100)
    assert 0.5 < low <= soft < 1.2 < high < 3
    assert length_band("zz", 100) == (0.33, 0.33, 3.0)  # an uncalibrated language
    assert length_band("ja", 100)[0] == 0.1


def test_length_rules_hand_written():
    src = "The committee met on Tuesday to discuss the proposal for a new bridge over the river."
    good = "Der Ausschuss traf sich am Dienstag, um den Vorschlag für eine neue Brücke zu beraten."
    assert check_length(src, good, "de", Filters()) is None
    assert check_length(src, "Der Ausschuss traf sich.", "de", Filters())[0] == "length_ratio"
    assert check_length(src, good * 3, "de", Filters())[0] == "length_ratio"
    # user overrides
    assert check_length(src, "Der Ausschuss traf sich.", "de", Filters(min_ratio=0.1)) is None


def test_truncated_rule(monkeypatch):
    import clo_mlx.translate.filters as tf

    table = {"de": [{"max_src": None, "low": 0.5, "soft": 0.9, "high": 2.0}]}
    monkeypatch.setattr(tf, "length_bands", lambda: table)
    src = "0123456789 0123456789."  # 21 characters of text (spaces do not count)
    assert check_length(src, "a" * 15, "de", Filters())[0] == "truncated"  # 0.71, no full stop
    assert check_length(src, "a" * 14 + ".", "de", Filters()) is None  # 0.71, full stop kept
    assert check_length(src.rstrip("."), "a" * 15, "de", Filters()) is None  # source had none
    assert check_length(src, "a" * 20, "de", Filters()) is None  # 0.95: above the soft edge
    assert check_length(src, "a" * 8 + ".", "de", Filters())[0] == "length_ratio"  # 9/21 < 0.5


def test_repetition_hand_written():
    assert has_repetition("na na na na na na")
    assert has_repetition("我们我们我们我们我们我们")  # 2 characters x 6, no spaces
    assert not has_repetition("Buibui ana miguu minane, na ni mdudu mdogo.")
    assert check_pair("Tell me a story.", "Niambie hadithi hadithi hadithi hadithi hadithi.", "sw")[0] == "repetition"  # fmt: skip


def test_language_check_short_texts_and_names():
    f = Filters()
    assert check_language("Good morning, friend.", "Good morning, friend.", "sw", f)[0] == "wrong_language"  # fmt: skip
    assert check_language("Thank you.", "Thank you.", "de", f)[0] == "wrong_language"
    assert check_language("Donald Trump", "Donald Trump", "sw", f) is None  # names only
    assert check_language("NASA, 2019", "NASA, 2019", "zh", f) is None  # codes and numbers
    assert check_language("Thank you.", "Asante sana.", "sw", f) is None
    assert check_language("Open the window please.", "Please open the window.", "sw", f)[0] == "wrong_language"  # fmt: skip


# ------------------------------------------------------------------ real human translations


@needs_data
@pytest.mark.parametrize("lang", ["de", "zh", "ko", "id", "sw", "yo"])
def test_real_references_mostly_pass_and_corruptions_are_caught(lang):
    # NTREX lines 1000-1099: held out from the band calibration (lines 0-999).
    rows = ntrex(range(1000, 1100))
    rejected = [r["line"] for r in rows if check_pair(r["en"], r[lang], lang) is not None]
    assert len(rejected) <= {"yo": 8}.get(lang, 3), rejected
    untranslated = sum(check_pair(r["en"], r["en"], lang) is not None for r in rows)
    assert untranslated >= 95
    long_rows = [r for r in rows if len(r["en"]) >= 40]
    cut = sum(
        check_pair(r["en"], r[lang][: int(0.4 * len(r[lang]))], lang) is not None for r in long_rows
    )
    assert cut >= 0.95 * len(long_rows)


@needs_data
def test_real_numbers_changed_are_caught():
    rows = [r for r in ntrex(range(1000, 1500)) if any(c.isdigit() for c in r["de"])]
    assert len(rows) > 50
    caught = 0
    for r in rows:
        i = max(i for i, c in enumerate(r["de"]) if c.isdigit())
        changed = r["de"][:i] + str((int(r["de"][i]) + 3) % 10) + r["de"][i + 1 :]
        caught += check_numbers(r["en"], changed, "de") is not None
    assert caught >= 0.95 * len(rows)


@needs_data
@pytest.mark.parametrize(
    "line,lang",
    [
        (1019, "zh"),  # January -> 1月
        (1161, "id"),  # 11:15 BST -> 11.15 BST
        (75, "zh"),  # £11million -> 1100 万英镑
        (75, "ko"),
        (299, "sw"),  # 19:30 BST -> saa 1:30 (Swahili clock)
        (299, "de"),  # 19:30 -> 19:30 Uhr
        (299, "ko"),  # 19:30 -> 오후 7시 30분
        (1164, "ko"),  # biennial, 12th -> 2년마다, 12번째
        (1164, "de"),  # 12th time -> zum 12. Mal
    ],
)
def test_real_sentences_numbers(line, lang):
    r = ntrex(range(line, line + 1))[0]
    assert check_numbers(r["en"], r[lang], lang) is None, (r["en"], r[lang])


@needs_data
def test_real_sentences_repetition_and_language():
    for r in ntrex(range(1000, 1060)):
        words = r["sw"].split()
        looped = " ".join(words[:3] + [" ".join(words[3:6])] * 6 + words[6:])
        assert check_pair(r["en"], looped, "sw")[0] == "repetition"
