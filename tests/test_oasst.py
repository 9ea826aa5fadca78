"""`clo-mlx data oasst` (clo_mlx/oasst.py) on a small synthetic export in OASST's real format."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from clo_mlx.data import DataError
from clo_mlx.oasst import build_rows, oasst_to_sft, read_messages
from clo_mlx.translate.pipeline import read_sft

CLI = [sys.executable, "-c", "from cli.main import main; main()"]

EN_Q = [
    "How do I keep basil plants healthy on a windowsill during the winter?",
    "What is the difference between a list and a tuple in Python?",
    "Can you explain why the sky looks blue during the day?",
    "Write a short poem about the sea and the wind.",
    "What should I pack for a weekend hiking trip in the mountains?",
    "Why do cats purr when they are happy?",
    "How can I improve my sleep without taking any medication?",
    "Explain what a black hole is to a ten year old child.",
    "Give me three ideas for a healthy breakfast before work.",
    "What is the best way to learn to play the guitar as an adult?",
]
EN_A = [
    "Give it as much light as you can, water it only when the soil is dry and keep it warm.",
    "A list can be changed after it is created, while a tuple cannot be changed at all.",
    "Sunlight is scattered by the air, and blue light is scattered much more than red light.",
    "The wind is singing over the waves, and the sea is dancing under the grey sky.",
    "Take warm clothes, a rain jacket, good boots, water, food, a map and a first aid kit.",
    "Cats purr when they feel safe and relaxed, and sometimes also to calm themselves down.",
    "Go to bed at the same time every night, avoid screens late and keep your room dark.",
    "It is a place in space where gravity is so strong that not even light can get out.",
    "Oatmeal with fruit, yogurt with nuts, or eggs with whole grain toast and vegetables.",
    "Practice a little every day, learn a few simple chords first and play songs you love.",
]
ES_TEXT = "¿Cuál es la mejor manera de aprender a cocinar platos tradicionales en casa?"
DE_TEXT = "Wie kann ich meine Zimmerpflanzen im Winter am besten gesund halten?"


def msg(mid, text, role, tree, parent=None, lang="en", rank=None, created="2023-02-01", **kw):
    """One message with every field of the oasst1/oasst2 exports."""
    base = {
        "message_id": mid,
        "parent_id": parent,
        "user_id": f"user-{mid}",
        "created_date": f"{created}T10:00:00.000000+00:00",
        "text": text,
        "role": role,
        "lang": lang,
        "review_count": 3,
        "review_result": True,
        "deleted": False,
        "rank": rank,
        "synthetic": False,
        "model_name": None,
        "detoxify": {"toxicity": 0.001},
        "message_tree_id": tree,
        "tree_state": "ready_for_export",
        "emojis": {"name": ["+1"], "count": [2]},
        "labels": {"name": ["quality"], "value": [0.8], "count": [3]},
    }
    return {**base, **kw}


def trees() -> list[dict]:
    """Trees covering every rule; the rows expected from them are in EXPECTED."""

    def tree(tid, prompt, replies, state="ready_for_export"):
        root = {**prompt, "tree_state": state, "replies": replies}
        for r in replies:
            r.setdefault("replies", [])
            r["tree_state"] = state
        return {"message_tree_id": tid, "tree_state": state, "prompt": root, "origin": None}

    def a(mid, text, tree_id, parent, rank, **kw):
        return msg(mid, text, "assistant", tree_id, parent=parent, rank=rank, **kw)

    out = []
    # t0 (created third): rank 0 wins over rank 1; the follow-up turn under it is ignored.
    follow_up = msg("p0b", "Thanks! And in summer?", "prompter", "t0", parent="a0x", lang="en")
    follow_up["replies"] = [a("a0c", "Water it more often.", "t0", "p0b", 0)]
    out.append(
        tree(
            "t0",
            msg("p0", EN_Q[0], "prompter", "t0", created="2023-02-03"),
            [
                a("a0y", EN_A[1], "t0", "p0", 1),
                {**a("a0x", EN_A[0], "t0", "p0", 0), "replies": [follow_up]},
            ],
        )
    )
    # t1 (created first): the top-ranked reply is synthetic, the next one is deleted: rank 2.
    out.append(
        tree(
            "t1",
            msg("p1", EN_Q[1], "prompter", "t1", created="2023-02-01"),
            [
                a("a1x", EN_A[0], "t1", "p1", 0, synthetic=True),
                a("a1y", EN_A[2], "t1", "p1", 1, deleted=True),
                a("a1z", EN_A[1], "t1", "p1", 2),
            ],
        )
    )
    # t2 (created second): fine.
    out.append(
        tree(
            "t2",
            msg("p2", EN_Q[2], "prompter", "t2", created="2023-02-02"),
            [a("a2x", EN_A[2], "t2", "p2", 0), a("a2y", EN_A[3], "t2", "p2", 1, lang="de")],
        )
    )
    drops = [
        ("t3", dict(deleted=True)),
        ("t4", dict(synthetic=True)),
        ("t5", dict(review_result=False)),
        ("t6", dict(lang="de", text=DE_TEXT)),
        ("t7", dict(text=ES_TEXT)),  # labelled en, identified as Spanish: langid
    ]
    for i, (tid, changes) in enumerate(drops):
        p = {**msg(f"p{tid}", EN_Q[3 + i], "prompter", tid), **changes}
        out.append(tree(tid, p, [a(f"a{tid}", EN_A[3 + i], tid, p["message_id"], 0)]))
    out.append(  # a Spanish tree: Spanish is among the identifier's candidates
        tree("t8", msg("pt8", ES_TEXT, "prompter", "t8", lang="es"), [])
    )
    out.append(  # one reply, never ranked
        tree("t9", msg("pt9", EN_Q[8], "prompter", "t9"), [a("at9", EN_A[8], "t9", "pt9", None)])
    )
    out.append(
        tree(
            "t10",
            msg("pt10", EN_Q[9], "prompter", "t10"),
            [a("at10", EN_A[9], "t10", "pt10", 0)],
            state="aborted_low_grade",
        )
    )
    return out


EXPECTED = [
    {"id": "p1", "prompt": EN_Q[1], "response": EN_A[1]},
    {"id": "p2", "prompt": EN_Q[2], "response": EN_A[2]},
    {"id": "p0", "prompt": EN_Q[0], "response": EN_A[0]},
]
DROPPED = {
    "tree_not_ready": 1,
    "deleted": 1,
    "synthetic": 1,
    "review_failed": 1,
    "lang": 2,  # t6 (de) and t8 (es)
    "no_reply": 0,
    "no_eligible_reply": 1,  # t9
    "langid": 1,  # t7
}


def write_trees(path, rows) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def flat(rows: list[dict]) -> list[dict]:
    out, stack = [], [r["prompt"] for r in reversed(rows)]
    while stack:
        m = stack.pop()
        out.append({k: v for k, v in m.items() if k != "replies"})
        stack.extend(reversed(m.get("replies", [])))
    return out


def test_trees_export_gives_the_paper_rows(tmp_path):
    src = tmp_path / "2023-04-12_oasst_ready.trees.jsonl.gz"
    write_trees(src, trees())
    out = tmp_path / "oasst_en.jsonl"
    summary = oasst_to_sft(src, out)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows == EXPECTED
    assert summary["dropped_prompts"] == DROPPED
    assert summary["prompts"] == 11 and summary["kept"] == 3 and summary["over_limit"] == 0
    # Replies passed over: a1x synthetic, a1y deleted, a2y German, at9 unranked.
    assert summary["dropped_replies"] == {
        "deleted": 1, "synthetic": 1, "review_failed": 0, "lang": 1, "unranked": 1,
    }  # fmt: skip
    assert json.loads((tmp_path / "oasst_en.summary.json").read_text())["kept"] == 3
    # The rows are English SFT rows for `clo-mlx translate`.
    assert [r["prompt"] for r in read_sft(out)] == [r["prompt"] for r in EXPECTED]


def test_flat_parquet_and_messages_jsonl_give_the_same_rows(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow not installed (pip install pyarrow)")
    import pyarrow.parquet as pq

    messages = flat(trees())
    parquet = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(messages), parquet)
    jsonl = tmp_path / "2023-04-12_oasst_all.messages.jsonl"
    jsonl.write_text("".join(json.dumps(m) + "\n" for m in messages))
    for src in (parquet, jsonl):
        rows, summary = build_rows(read_messages(src))
        assert rows == EXPECTED and summary["dropped_prompts"] == DROPPED, src


def test_limit_keeps_the_earliest_prompts(tmp_path):
    write_trees(tmp_path / "t.trees.jsonl.gz", trees())
    rows, summary = build_rows(read_messages(tmp_path / "t.trees.jsonl.gz"), limit=2)
    assert rows == EXPECTED[:2] and summary["eligible"] == 3 and summary["over_limit"] == 1


def test_cli_writes_rows_and_an_output_is_only_replaced_when_asked(tmp_path):
    src = tmp_path / "x.trees.jsonl.gz"
    write_trees(src, trees())
    out = tmp_path / "sft.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [*CLI, "data", "oasst", "--input", str(src), "--output", str(out)]
    run = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env)
    assert run.returncode == 0, run.stderr
    assert "dropped: langid" in run.stderr and "BLAS" not in run.stderr
    assert [json.loads(x) for x in out.read_text().splitlines()] == EXPECTED
    out.write_text("keep me\n")
    with pytest.raises(DataError, match="already exists \\(pass --overwrite"):
        oasst_to_sft(src, out)
    assert out.read_text() == "keep me\n"
    oasst_to_sft(src, out, overwrite=True)
    assert out.read_text().startswith('{"id": "p1"')


def test_bad_export_lines_name_file_and_line(tmp_path):
    good = json.dumps(trees()[0])
    bad = tmp_path / "bad.trees.jsonl"
    bad.write_text(good + "\n" + '{"message_tree_id": "t", "prompt": \n')
    with pytest.raises(DataError, match=rf"{bad}:2: malformed JSON"):
        read_messages(bad)
    no_text = json.loads(good)
    del no_text["prompt"]["text"]
    bad.write_text(good + "\n\n" + json.dumps(no_text) + "\n")
    with pytest.raises(DataError, match=rf"{bad}:3: field 'text' must be a string"):
        read_messages(bad)
    bad.write_text('{"hello": 1}\n')
    with pytest.raises(DataError, match=rf"{bad}:1: neither a message tree"):
        read_messages(bad)
