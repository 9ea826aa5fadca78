"""Translation quality filters: each rule on hand-written cases and on real human translations."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clo_mlx.translate.filters import (
    Filters,
    check_back_translation,
    check_language,
    check_length,
    check_numbers,
    check_pair,
    chrf,
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
    # Yoruba numbers read by value: 380,000 = 1000 x (400 - 20); 44 = 4 + 40; 7:55 = 8 less 5
    ("The city has 380,000 people.", "Ìlú náà ní ẹgbẹ̀rún-lọ́nà-irinwódínlógún eniyan.", "yo"),
    ("The 44-year-old was found.", "Ẹni ọdún mẹ́rìnlélógójì náà ni wọ́n rí.", "yo"),
    ("He came at 7.55am.", "Ó dé ní aago mẹ́jọ òwúrọ̀ ku ìṣẹ́jú máàrún.", "yo"),
    ("It holds 500 prisoners.", "Ó ńtọ́jú àwọn ẹlẹ́wọn ẹ̀ẹ́dẹ̀gbẹ̀ta.", "yo"),
    (
        "They took $26,750.",
        "Wọ́n gba ẹgbẹ́rùn lọ́nà mẹ́rìndínlọ́gbọ̀n àti ẹgbẹ̀rindínláàádọ́ta dọ́là.",
        "yo",
    ),
    ("It sold 110 units.", "Ó ta ọgọ́rùn-ún ó lé mẹ́wàá.", "yo"),
    ("In the 1980s he worked there.", "Ní àwọn ọdún 1980 sí 1989 ó ṣiṣẹ́ níbẹ̀.", "yo"),
    # ranges carry units and times; conversions are rounded, not exact
    ("He sails from 1 to 4 PM.", "Er segelt von 13 bis 16 Uhr.", "de"),
    ("Expect 2 to 4 inches of rain.", "Erwartet werden 5 bis 10 Zentimeter Regen.", "de"),
    ("The 6-foot-6 forward", "Der 1,98 m große Flügelspieler", "de"),
    ("It is about a mile away.", "Es ist etwa 1,6 Kilometer entfernt.", "de"),
    ("The 1950-53 war", "Der Krieg von 1950 bis 1953", "de"),
    ("He gets a 30% discount.", "他打了七折。", "zh"),
    ("He sold 15 pigs.", "그는 돼지 열 다섯 마리를 팔았다.", "ko"),
    ("A bogey and two doubles", "보기 1개와 더블 2개", "ko"),  # CJK counters: "a" = 1
    ("It moved out in the 1930s.", "它在 20 世纪 30 年代搬走了。", "zh"),
    ("72 per cent passed and 72 per cent stayed.", "72% 通过，72% 留下。", "zh"),
    ("Fourteen people were treated.", "有14人接受了治疗。", "zh"),
    ("Fourteen people were treated.", "열네 명이 치료를 받았다.", "ko"),
    # a counted noun inside a Yoruba number: thirty years and four = 34
    ("The 34-year-old spoke.", "Ẹni ọgbọ̀n ọdún ó lé mẹ́rin náà sọ̀rọ̀.", "yo"),
    ("He has 22 cars.", "Ó ní ogún ọkọ̀ lé méjì.", "yo"),
    # hundreds above 1000 count in 200s: ẹgbẹ̀jọ = 200 x 8, ẹ̀ẹ́dẹ́gbẹ̀je = 1400 - 100
    ("It flew 1,600 km and 1,300 km.", "Ó fò kìlómítà ẹgbẹ̀jọ àti kìlómítà ẹ̀ẹ́dẹ́gbẹ̀je.", "yo"),
    ("The town has 40,000 people.", "Ìlú náà ní ènìyàn ọ̀kẹ́ méjì.", "yo"),  # ọ̀kẹ́ = 20,000
    # "100 percent" as a degree: "completely sure"
    ("She is 100 percent certain.", "Ó dá a lójú ní gbogbo ọ̀nà.", "yo"),
    ("I am 100% sure of it.", "Ich bin mir dessen völlig sicher.", "de"),
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
    # weekdays are not numbers: "Sunday" (7th day) does not explain a changed 7
    ("They trail by eight points, next Sunday.", "다음주 일요일 7점 뒤처진다.", "ko"),
    ("They trail by eight points on Sunday.", "Wako nyuma kwa pointi 7 Jumapili.", "sw"),
    # an article is not the number 1; a month is written as a number in CJK
    ("In June, the Commission published a report.", "1월, 위원회는 보고서를 발표했다.", "ko"),
    ("Votes are cast in November.", "월에 투표가 실시된다.", "ko"),
    # a conversion is rounded, not changed: 550 lb = 249.5 kg
    ("The 550 pound hog", "Das 252 Kilo schwere Schwein", "de"),
    ("It was 2 to 3 inches.", "Es waren 5 bis 7 Zentimeter.", "de"),  # 7.6 cm is 8, not 7
    # a decade with its century must be there; a year is not its last two digits
    ("It moved out in the 1930s.", "Es zog in den er-Jahren aus.", "de"),
    ("It was 34 percent in 2016, 16 percent now.", "于 年为 34%，现在为 16%。", "zh"),
    # in zh/ja/ko a number word of 11 or more is written out: it must be there
    ("Fourteen people were treated.", "有 人接受了治疗。", "zh"),
    # a number the source has twice must be there twice
    ("72 per cent passed and 72 per cent stayed.", "% 通过，72% 留下。", "zh"),
    # Yoruba: a spelled number with another value, or a number gone
    ("West, 41, spoke.", "West, ẹni ọdún mẹ́rinlélógójì, sọ̀rọ̀.", "yo"),
    ("It began in 2016.", "Ó bẹ̀rẹ̀ ní ọdún .", "yo"),
    ("It has 500 prisoners and 24 guards.", "Ó ní ẹlẹ́wọn ẹ̀ẹ́dẹ̀gbẹ̀ta.", "yo"),
    ("The 35-year-old spoke.", "Ẹni ọgbọ̀n ọdún ó lé mẹ́rin náà sọ̀rọ̀.", "yo"),  # 34
    ("It moved at 800 kph.", "Ó ń lọ ní kìlómítà ẹgbẹ̀jọ̀ ní wákàtí kan.", "yo"),  # 1600
    # "100 percent" is a number where it is not a degree, and 100 is not any number
    ("She won 100 percent of the vote.", "Sie gewann alle Stimmen.", "de"),
    ("She is 90 percent certain.", "Sie ist sich ziemlich sicher.", "de"),
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


def test_truncated_rule_spares_complete_short_translations():
    # Yoruba, 30-80 characters of source: a complete translation that only lacks the final
    # full stop (31/38 = 0.82) is kept; one that stopped early (23/38 = 0.61, above the hard
    # edge) is still caught.
    src = "I don't know what happened to her and my child."
    assert check_length(src, "Mi o mo ohun ti o sele si iyawo ati omo mi", "yo", Filters()) is None
    assert check_length(src, "Mi o mo ohun ti o sele si iyawo", "yo", Filters())[0] == "truncated"


def _filter_quality():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "filter_quality.py"
    spec = importlib.util.spec_from_file_location("filter_quality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_soft_edge_no_wider_than_what_catches_more():
    soft_edge = _filter_quality().soft_edge
    import numpy as np

    ratio = np.linspace(0.5, 1.5, 101)  # quantiles 2/5/10/20%: 0.52, 0.55, 0.60, 0.70
    # 97 of 100 truncations at 0.58 are caught from the 10% quantile on
    trunc = [(0.58, True)] * 97 + [(0.58, False)] * 3
    assert soft_edge(ratio, trunc, 0.45) == pytest.approx(0.60)
    # 10 of 100 come from sources without final punctuation: 97% is out of reach, and any
    # edge above 0.58 catches the same 90%, so the lowest such edge is taken, not the widest
    trunc = [(0.58, True)] * 90 + [(0.58, False)] * 10
    assert soft_edge(ratio, trunc, 0.45) == pytest.approx(0.60)
    assert soft_edge(ratio, [(0.3, True)] * 10, 0.45) == 0.45  # the hard band alone


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
    # yo: 8 of 100, most of them reference defects: 1021 writes 16 for "26", 1030 drops
    # "July 20", 1006 adds "2020", 1028/1035/1063 leave out clauses (ratio 0.61-0.67); 1017
    # misspells 48 (méjìdíláàdọ́ta) and 1045 is a condensed translation (0.60).
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
        # calibration part: Yoruba spelled numbers, ranges with units, conversions
        (147, "yo"),  # 380,000 -> ẹgbẹ̀rún-lọ́nà-irinwódínlógún
        (150, "yo"),  # 44, 32 -> mẹ́rìnlélógójì, méjilélọ́gbọ̀n; 7.55am -> aago mẹ́jọ ku ìṣẹ́jú máàrún
        (186, "yo"),  # 4.40 am -> aago máàrún-ku-ogún
        (262, "yo"),  # $350,000 -> ẹgbẹ̀rún-lọ́ná-irinwódínláàádọ́ta
        (347, "yo"),  # 09:30 -> aago mẹ́ẹ̀sán àti ààbọ̀
        (353, "yo"),  # 500 -> ẹ̀ẹ́dẹ̀gbẹ̀ta
        (441, "yo"),  # $26,750
        (206, "de"),  # 1 to 4 inches -> 2,5 bis 10 Zentimeter
        (208, "de"),  # 2 to 4 inches -> 5 bis 10 Zentimeter
        (267, "de"),  # 6-foot-6 -> 1,98 m
        (342, "de"),  # about a mile -> etwa 1,6 Kilometer
        (751, "de"),  # 1950-53 -> 1950 bis 1953
        (181, "ko"),  # 15 pigs -> 열 다섯 마리
        (725, "ko"),  # A bogey and two doubles -> 보기 1개와 더블 2개
        (32, "zh"),  # 1930s -> 20 世纪 30 年代
        (228, "yo"),  # 100 percent certain -> ní gbogbo ọ̀nà (in every way)
        (229, "yo"),
        (1272, "yo"),  # 34-year-old -> ẹni ọgbọ̀n ọdún ó lé mẹ́rin (thirty years and four)
    ],
)
def test_real_sentences_numbers(line, lang):
    r = ntrex(range(line, line + 1))[0]
    assert check_numbers(r["en"], r[lang], lang) is None, (r["en"], r[lang])


@needs_data
@pytest.mark.parametrize("line", [626, 1052, 1188])
def test_real_complete_yoruba_without_full_stop_is_kept(line):
    r = ntrex(range(line, line + 1))[0]
    assert not r["yo"].rstrip().endswith((".", '"'))
    assert check_length(r["en"], r["yo"], "yo", Filters()) is None, (r["en"], r["yo"])


@needs_data
def test_real_yoruba_without_tone_marks_is_judged_alike():
    # Yoruba is often written without tone marks or underdots: the verdicts must not change.
    import unicodedata

    def bare(t):
        d = unicodedata.normalize("NFD", t)
        return "".join(c for c in d if unicodedata.category(c)[0] != "M")

    for r in ntrex(range(0, 100)):
        assert check_pair(r["en"], bare(r["yo"]), "yo") == check_pair(r["en"], r["yo"], "yo"), r


@needs_data
def test_real_sentences_repetition_and_language():
    for r in ntrex(range(1000, 1060)):
        words = r["sw"].split()
        looped = " ".join(words[:3] + [" ".join(words[3:6])] * 6 + words[6:])
        assert check_pair(r["en"], looped, "sw")[0] == "repetition"


@needs_data
def test_real_discounts_zh():
    # MGSM: "a 30% discount" -> 打七折 (pay 70%); 24, 36, 79 and 246 use 折
    rows = [json.loads(x) for x in (DATA / "mgsm_parallel_en_de_zh_sw.jsonl").open()]
    with_zhe = [r for r in rows if "折" in r["zh"]]
    assert len(with_zhe) == 4
    assert all(check_numbers(r["en"], r["zh"], "zh") is None for r in with_zhe)


@needs_data
@pytest.mark.parametrize("lang", ["de", "zh", "ko", "id", "sw", "yo"])
def test_real_numbers_changed_or_dropped_are_caught(lang):
    # held-out lines 1000-1499: a digit changed, or a whole number (> 10) taken out
    rows = [r for r in ntrex(range(1000, 1500)) if re.search(r"\d", r[lang])]
    changed = dropped = n_dropped = 0
    for r in rows:
        runs = list(re.finditer(r"\d+", r[lang]))
        m = runs[-1]
        d = str((int(m.group(0)[-1]) + 5) % 10)
        changed += check_numbers(r["en"], r[lang][: m.end() - 1] + d + r[lang][m.end() :], lang) is not None  # fmt: skip
        big = [m for m in runs if int(m.group(0)) > 10]
        if big:
            n_dropped += 1
            cut = r[lang][: big[0].start()] + r[lang][big[0].end() :]
            dropped += check_numbers(r["en"], cut, lang) is not None
    assert changed >= 0.95 * len(rows)
    assert dropped >= 0.90 * n_dropped


# ------------------------------------------------------------------ back-translation


def test_chrf_hand_computed():
    assert chrf("abc", "abc") == 100.0
    assert chrf("abc", "xyz") == 0.0
    # 1-grams: 2 of 3 match (F = 2/3); 2-grams: ab of {ab, bc} (1/2); 3-grams: none (0);
    # longer n-grams do not exist, so the mean is over 3 orders
    assert chrf("abc", "abd") == pytest.approx(100 * (2 / 3 + 1 / 2 + 0) / 3)
    assert chrf("a b c", "abc") == 100.0  # whitespace is ignored
    # recall counts twice as much as precision (beta = 2): a short hypothesis scores low
    p, r = 1.0, 1 / 3
    assert chrf("a", "abc") == pytest.approx(100 * 5 * p * r / (4 * p + r))


def test_back_translation_check_is_off_by_default():
    assert check_back_translation("Good morning.", "Bad evening.", Filters()) is None
    bad = check_back_translation("Good morning.", "Bad evening.", Filters(min_back_chrf=50))
    assert bad[0] == "back_translation" and "chrF" in bad[1]
    assert check_back_translation("Good morning.", "Good morning!", Filters(min_back_chrf=50)) is None  # fmt: skip
