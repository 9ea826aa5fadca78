"""Hugging Face datasets as inputs (clo_mlx/hf_data.py): files, save_to_disk, the local cache."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import parallel_rows, write_jsonl

datasets = pytest.importorskip("datasets", reason="datasets not installed (pip install datasets)")

from clo_mlx import hf_data  # noqa: E402
from clo_mlx.data import DataError, load_pairs, load_splits  # noqa: E402
from clo_mlx.translate.pipeline import read_sft  # noqa: E402

SFT = [
    {"question": "Name three colours.", "answer": "Red, green and blue."},
    {"question": "What is two plus two?", "answer": "Two plus two is four."},
]


@pytest.fixture(autouse=True)
def _offline_and_local(monkeypatch, tmp_path):
    # Nothing reaches the network; datasets' Arrow cache goes under tmp_path.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "ds-cache")


def test_parquet_file_with_a_column_mapping(tmp_path):
    src = tmp_path / "sft.parquet"
    datasets.Dataset.from_list(SFT).to_parquet(str(src))
    rows = read_sft(src, columns="prompt=question,response=answer")
    assert [(r["prompt"], r["response"]) for r in rows] == [
        (r["question"], r["answer"]) for r in SFT
    ]
    assert rows[0]["id"].startswith("row 0-")
    with pytest.raises(DataError, match=r"sft.parquet\[train\]: no column 'reply' for 'response'"):
        read_sft(src, columns="prompt=question,response=reply")
    with pytest.raises(DataError, match=r"expected NAME=COLUMN pairs, got 'prompt'"):
        read_sft(src, columns="prompt")


def test_bad_rows_are_reported_with_source_split_and_row(tmp_path):
    src = tmp_path / "bad.parquet"
    datasets.Dataset.from_list([*SFT, {"question": "Hi?", "answer": None}]).to_parquet(str(src))
    with pytest.raises(
        DataError, match=rf"{src}\[train\]:row 2: field 'response' must be a string"
    ):
        read_sft(src, columns={"prompt": "question", "response": "answer"})


def test_save_to_disk_folder_gives_the_same_pairs_as_jsonl(tmp_path):
    train, valid = parallel_rows(4), parallel_rows(2)
    folder = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(train),
            "validation": datasets.Dataset.from_list(valid),
        }
    ).save_to_disk(str(folder))
    splits = load_splits(folder)
    assert set(splits) == {"train", "valid"}

    def same(pairs):  # the pairs apart from where they came from
        return [dataclasses.replace(p, where="") for p in pairs]

    assert same(splits["train"]) == same(load_pairs(write_jsonl(tmp_path / "t.jsonl", train)))
    assert same(splits["valid"]) == same(load_pairs(write_jsonl(tmp_path / "v.jsonl", valid)))
    assert [p.where for p in splits["valid"]] == [
        f"{folder}[validation]:row {i // 2}" for i in range(4)
    ]
    # --split: that split only, as train.
    only = load_splits(folder, split="validation")
    assert list(only) == ["train"] and only["train"] == splits["valid"]
    with pytest.raises(DataError, match=r"no split 'dev' \(splits: train, validation\)"):
        load_splits(folder, split="dev")
    # A bad field names the split and the row.
    bad = [*train[:3], {**train[3], "lang": "xx"}]
    datasets.Dataset.from_list(bad).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError, match=r"bad\[train\]:row 3: field 'lang': unknown language"):
        load_splits(tmp_path / "bad")


def test_arrow_file_and_sharegpt_and_messages_rows(tmp_path):
    share = [
        {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
        for q, a in (("Name three colours.", "Red."), ("Say hello.", "Hello!"))
    ]
    datasets.Dataset.from_list(share).save_to_disk(str(tmp_path / "share"))
    (arrow,) = (tmp_path / "share").glob("*.arrow")
    rows = read_sft(arrow)
    assert [(r["prompt"], r["response"]) for r in rows] == [
        ("Name three colours.", "Red."),
        ("Say hello.", "Hello!"),
    ]
    msgs = [
        {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hi!"}]}
    ]
    datasets.Dataset.from_list(msgs).to_parquet(str(tmp_path / "m.parquet"))
    assert [(r["prompt"], r["response"]) for r in read_sft(tmp_path / "m.parquet")] == [
        ("Hi?", "Hi!")
    ]
    bad = [{"conversations": [{"from": "robot", "value": "x"}, {"from": "gpt", "value": "y"}]}]
    datasets.Dataset.from_list(bad).to_parquet(str(tmp_path / "b.parquet"))
    with pytest.raises(DataError, match=r"b.parquet\[train\]:row 0: conversations\[0\].from"):
        read_sft(tmp_path / "b.parquet")


def test_preference_rows_with_message_lists(tmp_path):
    def turn(role, text):
        return {"role": role, "content": text}

    rows = [
        {  # UltraFeedback-style: the prompt inside chosen/rejected
            "chosen": [turn("user", "Name a colour."), turn("assistant", "Red.")],
            "rejected": [turn("user", "Name a colour."), turn("assistant", "Seven.")],
        },
        {  # TRL's conversational form
            "prompt": [turn("user", "Say hello.")],
            "chosen": [turn("assistant", "Hello!")],
            "rejected": [turn("assistant", "No.")],
        },
    ]
    datasets.Dataset.from_list(rows[:1]).to_parquet(str(tmp_path / "a.parquet"))
    datasets.Dataset.from_list(rows[1:]).to_parquet(str(tmp_path / "b.parquet"))
    (a,) = load_splits(tmp_path / "a.parquet")["train"]
    (b,) = load_splits(tmp_path / "b.parquet")["train"]
    assert (a.kind, a.prompt, a.chosen, a.rejected) == ("pair", "Name a colour.", "Red.", "Seven.")
    assert (b.prompt, b.chosen, b.rejected) == ("Say hello.", "Hello!", "No.")


def test_dataset_id_from_the_local_hub_cache_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants

    hub = tmp_path / "hub"
    repo = hub / "datasets--someone--tiny-sft"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    data = repo / "snapshots" / commit / "data"
    data.mkdir(parents=True)
    ds = datasets.Dataset.from_list(
        [{"prompt": r["question"], "response": r["answer"]} for r in SFT]
    )
    ds.to_parquet(str(data / "train-00000-of-00001.parquet"))
    ds.select([0]).to_parquet(str(data / "test-00000-of-00001.parquet"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    assert hf_data.is_hf_source("someone/tiny-sft")
    assert [r["prompt"] for r in read_sft("someone/tiny-sft")] == [r["question"] for r in SFT]
    assert [r["prompt"] for r in read_sft("someone/tiny-sft", split="test")] == [SFT[0]["question"]]
    with pytest.raises(DataError, match="not a dataset in the local Hugging Face cache"):
        read_sft("someone/absent")


def test_jsonl_inputs_are_not_read_with_datasets(tmp_path):
    path = write_jsonl(tmp_path / "d" / "train.jsonl", parallel_rows(2))
    assert not hf_data.is_hf_source(path) and not hf_data.is_hf_source(path.parent)
    with pytest.raises(DataError, match="apply to Hugging Face datasets"):
        load_splits(path, split="train")


def test_cli_translate_and_train_take_hf_datasets(tmp_path, tiny_llama):
    pytest.importorskip("transformers", reason="the tiny M2M100 is built with transformers")
    from typer.testing import CliRunner

    from cli.main import app
    from clo_mlx.translate.m2m100 import build_tiny_m2m100

    src = tmp_path / "sft.parquet"
    datasets.Dataset.from_list(SFT).to_parquet(str(src))
    out = tmp_path / "sw.jsonl"
    args = ["translate", "--source", str(src), "--columns", "prompt=question,response=answer"]
    args += ["--lang", "sw", "--output", str(out), "--no-progress", "--max-new-tokens", "8"]
    args += ["--model", str(build_tiny_m2m100(tmp_path / "m2m", seed=0))]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "sw.summary.json").read_text())
    assert summary["rows"] == len(SFT)

    folder = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(parallel_rows(4)),
            "validation": datasets.Dataset.from_list(parallel_rows(2)),
        }
    ).save_to_disk(str(folder))
    args = ["train", "--model", str(tiny_llama), "--data", str(folder), "--iters", "2"]
    args += ["--batch-size", "4", "--adapter-path", str(tmp_path / "ad")]
    args += ["--cache-dir", str(tmp_path / "cache"), "--steps-per-report", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    metrics = [json.loads(x) for x in (tmp_path / "ad" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["type"] == "train"] == [1, 2]
    assert any("val/loss" in m for m in metrics)  # the validation split was used
