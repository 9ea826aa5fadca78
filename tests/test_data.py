"""Data loading: formats, pairs, splits, and errors that name file, line and field."""

import json

import pytest
from conftest import parallel_rows, write_jsonl

from clo_mlx.data import DataError, load_pairs, load_splits


def test_parallel_rows_give_two_cross_lingual_pairs(tmp_path):
    rows = parallel_rows(2)
    pairs = load_pairs(write_jsonl(tmp_path / "d.jsonl", rows))
    assert [(p.row, p.kind, p.lang) for p in pairs] == [
        (0, "en", "en"),
        (0, "tgt", "sw"),
        (1, "en", "en"),
        (1, "tgt", "sw"),
    ]
    en, tgt = pairs[0], pairs[1]
    r = rows[0]
    assert (en.prompt, en.chosen, en.rejected) == (
        r["prompt_en"],
        r["response_en"],
        r["response_tgt"],
    )
    assert (tgt.prompt, tgt.chosen, tgt.rejected) == (
        r["prompt_tgt"],
        r["response_tgt"],
        r["response_en"],
    )


def test_preference_rows_and_folders(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 3)
    write_jsonl(tmp_path / "valid.jsonl", parallel_rows(1))
    splits = load_splits(tmp_path)
    assert set(splits) == {"train", "valid"}
    assert [p.kind for p in splits["train"]] == ["pair"] * 3
    assert len(splits["valid"]) == 2


@pytest.mark.parametrize(
    "line,expected",
    [
        ("{not json", "malformed JSON"),
        ('["a"]', "expected a JSON object"),
        (json.dumps({**parallel_rows(1)[0], "prompt_tgt": ""}), "field 'prompt_tgt' is empty"),
        (
            json.dumps({**parallel_rows(1)[0], "response_en": 3}),
            "field 'response_en' must be a string",
        ),
        (
            json.dumps({k: v for k, v in parallel_rows(1)[0].items() if k != "response_en"}),
            "missing field 'response_en'",
        ),
        (
            json.dumps({**parallel_rows(1)[0], "lang": "swh"}),
            "field 'lang': unknown language code 'swh'",
        ),
        (json.dumps({**parallel_rows(1)[0], "lang": "en"}), "names the target language"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, line, expected):
    good = [json.dumps(r) for r in parallel_rows(3)[1:]]  # ids 1, 2; the bad line has id 0
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good[0]}\n\n{good[1]}\n{line}\n")
    with pytest.raises(DataError) as e:
        load_pairs(path)
    assert f"{path}:4" in str(e.value) and expected in str(e.value)


def test_invalid_utf8_and_unknown_format(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(parallel_rows(1)[0]).encode() + b"\n" + b'{"prompt": "\xff"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid UTF-8"):
        load_pairs(path)
    path.write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: unrecognised row"):
        load_pairs(path)
    with pytest.raises(DataError, match="no train.jsonl"):
        load_splits(tmp_path)


# ----------------------------------------------------------------------------- issue 13 (item 9, 5, 22)

GOOD = parallel_rows(1)[0]


@pytest.mark.parametrize(
    "line,expected",
    [
        # a misspelled field next to the right ones would be ignored silently
        (json.dumps({**GOOD, "respons_tgt": "x"}), "unknown field 'respons_tgt'. Did you mean 'response_tgt'?"),
        # a misspelled field instead of the right one: the message points at the typo
        (
            json.dumps({**{k: v for k, v in GOOD.items() if k != "lang"}, "lnag": "sw"}),
            "missing field 'lang'; found unknown field 'lnag' (a typo?)",
        ),
        # json.loads would keep the last of two values
        ('{"lang": "sw", "lang": "de"}', "duplicate key 'lang' in one object"),
        ('{"x": {"a": 1, "a": 2}}', "duplicate key 'a' in one object"),
        # "\ud800" is valid JSON but not text a tokenizer can take
        (json.dumps({**GOOD, "response_tgt": "Habari \ud800"}), "field 'response_tgt' is not valid Unicode text (lone surrogate '\\ud800' at character 7)"),
        ('{"lang": "sw", "prompt_en": "unterminated', "malformed JSON (Unterminated string starting at column 29)"),
        (json.dumps({**GOOD, "id": [1]}), "field 'id' must be a string or an integer"),
    ],
)  # fmt: skip
def test_rows_that_used_to_pass_or_crash_later(tmp_path, line, expected):
    good = json.dumps({**GOOD, "id": "first"})
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n{line}\n")
    with pytest.raises(DataError) as e:
        load_pairs(path)
    assert str(e.value) == f"{path}:2: {expected}"


def test_duplicate_ids_name_both_lines(tmp_path):
    rows = parallel_rows(3)
    rows[2]["id"] = 0
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError) as e:
        load_pairs(path)
    assert str(e.value) == f"{path}:3: duplicate id 0 for lang 'sw' (first on line 1)"
    rows[2]["id"] = "0"  # the same id as text: ids are compared as written by `translate`
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError, match="duplicate id '0'"):
        load_pairs(path)
    # One English row translated into two languages keeps its id in both.
    rows[2]["lang"] = "de"
    assert len(load_pairs(write_jsonl(tmp_path / "d.jsonl", rows))) == 6
    pref = [{"id": 1, "prompt": "p", "chosen": "a", "rejected": "b"}] * 2
    with pytest.raises(DataError, match=r"p.jsonl:2: duplicate id 1 \(first on line 1\)"):
        load_pairs(write_jsonl(tmp_path / "p.jsonl", pref))


def test_other_extra_fields_are_ignored(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{**GOOD, "source": "alpaca", "category": "qa"}])
    assert len(load_pairs(path)) == 2


def test_identical_chosen_and_rejected_are_kept_with_a_warning(tmp_path, capsys):
    rows = parallel_rows(4)
    rows[1]["response_tgt"] = rows[1]["response_en"]  # e.g. an untranslated answer
    rows[3]["response_tgt"] = rows[3]["response_en"]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert len(load_pairs(path)) == 8
    err = capsys.readouterr().err
    assert (
        f"warning: {path}: 2 of 4 rows have response_en == response_tgt (lines 2, 4); "
        "they carry no preference signal"
    ) in err
    pref = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "c"}])
    load_pairs(pref)
    assert f"{pref}: 1 of 1 rows have chosen == rejected (lines 1)" in capsys.readouterr().err
    load_pairs(write_jsonl(tmp_path / "ok.jsonl", parallel_rows(2)))
    assert "warning" not in capsys.readouterr().err


def test_pairs_know_their_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n" + json.dumps(GOOD) + "\n")
    assert [p.where for p in load_pairs(path)] == [f"{path}:2", f"{path}:2"]


def test_language_code_in_capitals_gets_a_suggestion(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{**GOOD, "lang": "SW"}])
    with pytest.raises(
        DataError, match=r"d.jsonl:1: field 'lang': unknown language code 'SW'.*Did you mean sw\?"
    ):
        load_pairs(path)


# ----------------------------------------------------------------------------- one JSONL reader


def test_iter_jsonl_streams_and_reads_gzip(tmp_path):
    import gzip

    from clo_mlx.data import iter_jsonl

    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": 2}\n{broken\n')
    rows = iter_jsonl(path)
    assert next(rows) == (1, {"a": 1})  # yielded before the bad line 4 is read
    assert next(rows) == (3, {"a": 2})
    with pytest.raises(DataError, match=rf"{path}:4: malformed JSON"):
        next(rows)
    gz = tmp_path / "d.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"a": 1}\n\n{"a": 2}\n'))
    assert list(iter_jsonl(gz)) == [(1, {"a": 1}), (3, {"a": 2})]
    gz.write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:-20])  # truncated download
    with pytest.raises(DataError, match=rf"{gz}: cannot read data file"):
        list(iter_jsonl(gz))
    with pytest.raises(DataError, match=rf"{tmp_path / 'nope.jsonl'}: cannot read data file"):
        list(iter_jsonl(tmp_path / "nope.jsonl"))


def test_every_jsonl_input_names_the_line_of_bad_bytes_and_repeated_keys(tmp_path):
    """oasst exports and multiple-choice files go through the same reader as training data."""
    from clo_mlx.eval.multiple_choice import MCDataError, load_mc
    from clo_mlx.oasst import read_messages

    mc = tmp_path / "mc.jsonl"
    good = json.dumps({"lang": "en", "question": "q", "choices": ["a", "b"], "label": 0})
    mc.write_bytes(good.encode() + b'\n{"lang": "en", "question": "\xff"}\n')
    with pytest.raises(MCDataError, match=rf"{mc}:2: invalid UTF-8 at byte 28 of the line"):
        load_mc(mc)
    mc.write_text(good + '\n{"lang": "en", "label": 0, "label": 1}\n')
    with pytest.raises(MCDataError, match=rf"{mc}:2: duplicate key 'label' in one object"):
        load_mc(mc)
    export = tmp_path / "x.messages.jsonl"
    export.write_bytes(b'{"message_id": "m", "text": "\xff"}\n')
    with pytest.raises(DataError, match=rf"{export}:1: invalid UTF-8 at byte 29 of the line"):
        read_messages(export)
    export.write_text('{"message_id": "m", "text": "a", "text": "b"}\n')
    with pytest.raises(DataError, match=rf"{export}:1: duplicate key 'text' in one object"):
        read_messages(export)
