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
    good = json.dumps(parallel_rows(1)[0])
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n\n{good}\n{line}\n")
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
