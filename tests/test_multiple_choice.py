"""Multiple-choice scoring against a plain per-sequence log-prob computation (numpy)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SHARED_DATA, np_response_logp, write_jsonl
from mlx_lm import load

from clo_mlx.eval.multiple_choice import (
    COPA_QUESTIONS,
    MCDataError,
    MCItem,
    copa_prompt,
    encode_choices,
    load_mc,
    mc_accuracy,
    score_choices,
)
from clo_mlx.tokens import encode_pair

XCOPA = SHARED_DATA / "xcopa_mc_id_sw_zh.jsonl"


ITEMS = [
    MCItem(
        "a", "en", "How many legs does a spider have?", ("Eight legs.", "Red, green and blue."), 0
    ),
    MCItem(
        "b", "sw", "Buibui ana miguu mingapi?", ("Nyekundu.", "Buibui ana miguu minane.", "Nne."), 1
    ),
    MCItem("c", "en", "Say hello to a friend.", ("Hello, my friend!", "Two plus two is four."), 1),
]


@pytest.fixture(scope="module")
def llama(tiny_llama):
    return load(str(tiny_llama))


def test_scores_match_per_sequence_numpy(llama):
    model, tok = llama
    scores = score_choices(model, tok, ITEMS, batch_size=3, max_seq_length=256)
    assert scores["skipped"] == []
    for item, lp, nt in zip(ITEMS, scores["logp"], scores["tokens"], strict=True):
        for c, choice in enumerate(item.choices):
            ids, start = encode_pair(tok, item.prompt, choice)
            ref, n = np_response_logp(model, ids, start)
            assert nt[c] == n
            assert lp[c] == pytest.approx(ref, abs=2e-4)

    # Accuracy from the independent scores: argmax of the sum, and of the per-token mean.
    expect = {}
    for item in ITEMS:
        refs = [np_response_logp(model, *encode_pair(tok, item.prompt, c)) for c in item.choices]
        s = np.array([r[0] for r in refs])
        m = np.array([r[0] / r[1] for r in refs])
        g = expect.setdefault(item.lang, [0, 0, 0])
        g[0] += int(np.argmax(s) == item.label)
        g[1] += int(np.argmax(m) == item.label)
        g[2] += 1
    acc = mc_accuracy(ITEMS, scores)
    for lang, (a, an, n) in expect.items():
        assert acc[lang]["n"] == n
        assert acc[lang]["acc"] == pytest.approx(a / n)
        assert acc[lang]["acc_norm"] == pytest.approx(an / n)
    assert acc["all"]["n"] == 3


def test_accuracy_hand_computed_summed_vs_normalised():
    items = [
        MCItem("x", "sw", "p", ("a", "b"), 0),
        MCItem("y", "sw", "p", ("a", "b", "c"), 2),
        MCItem("z", "en", "p", ("a", "b"), 1),
    ]
    scores = {
        # x: summed picks b (wrong), per token -1.0 vs -2.0 picks a (right)
        # y: summed picks c (right), per token -1, -1.5, -3 picks a (wrong)
        # z: skipped (did not fit)
        "logp": [[-10.0, -8.0], [-4.0, -6.0, -3.0], None],
        "tokens": [[10, 4], [4, 4, 1], None],
        "skipped": ["z"],
    }
    acc = mc_accuracy(items, scores)
    assert acc["sw"] == {"acc": 0.5, "acc_norm": 0.5, "n": 2, "skipped": 0}
    assert acc["en"]["n"] == 0 and acc["en"]["skipped"] == 1
    assert acc["all"]["acc"] == 0.5 and acc["all"]["n"] == 2


def test_long_prompts_are_left_truncated_and_scored_like_the_truncated_ids(llama):
    model, tok = llama
    item = MCItem("long", "en", "Name three colours. " * 12, ("Red, green and blue.", "Hello."), 0)
    full = [encode_pair(tok, item.prompt, c) for c in item.choices]
    max_len = max(len(ids) for ids, _ in full) - 5
    seqs, owners, skipped = encode_choices(tok, [item], max_len)
    assert skipped == [] and owners == [(0, 0), (0, 1)]
    scores = score_choices(model, tok, [item], batch_size=2, max_seq_length=max_len)
    for c, (ids, start) in enumerate(full):
        over = max(0, len(ids) - max_len)
        ref, _ = np_response_logp(model, ids[over:], start - over)
        assert seqs[c][0] == ids[over:]
        assert scores["logp"][0][c] == pytest.approx(ref, abs=2e-4)
    # A choice that alone does not fit skips the item.
    assert score_choices(model, tok, [item], max_seq_length=3)["skipped"] == ["long"]


def test_copa_templates_and_loader(tmp_path):
    assert set(COPA_QUESTIONS) >= {"en", "id", "sw", "zh"}
    assert copa_prompt("It rained.", "effect", "en") == "It rained. What happened as a result?"
    assert copa_prompt("下雨了。", "cause", "zh") == "下雨了。原因是什么？"
    rows = [
        {"lang": "sw", "split": "val", "idx": 0, "question": "cause", "label": 1,
         "premise": "Mvua ilinyesha.", "choice1": "A.", "choice2": "B.",
         "en_mt": {"premise": "It rained.", "choice1": "A.", "choice2": "B."}},
        {"lang": "de", "question": "Was ist richtig?", "passage": "Text.",
         "choices": ["eins", "zwei", "drei"], "label": 2},
        {"lang": "en", "flores_passage": "P.", "question": "Q?", "mc_answer1": "a",
         "mc_answer2": "b", "mc_answer3": "c", "mc_answer4": "d", "correct_answer_num": "4"},
    ]  # fmt: skip
    items = load_mc(write_jsonl(tmp_path / "mc.jsonl", rows))
    assert [i.lang for i in items] == ["sw", "en", "de", "en"]
    assert items[0].prompt == "Mvua ilinyesha. " + COPA_QUESTIONS["sw"]["cause"]
    assert items[1].prompt == "It rained. What was the cause?" and items[1].source == "sw"
    assert items[0].label == items[1].label == 1
    assert items[2].prompt == "Text.\n\nWas ist richtig?" and items[2].label == 2
    assert items[3].choices == ("a", "b", "c", "d") and items[3].label == 3
    assert len(load_mc(tmp_path / "mc.jsonl", english=False)) == 3
    assert [i.lang for i in load_mc(tmp_path / "mc.jsonl", langs=["de"])] == ["de"]


@pytest.mark.parametrize(
    "row,message",
    [
        ({"lang": "sw", "question": "cause", "premise": "x", "choice1": "a", "choice2": "b",
          "label": 2}, "field 'label'=2 is out of range"),
        ({"lang": "sw", "question": "effect", "premise": "x", "choice1": "a", "label": 0},
         "missing field 'choice2'"),
        ({"lang": "xx", "question": "effect", "premise": "x", "choice1": "a", "choice2": "b",
          "label": 0}, "no COPA question template"),
        ({"lang": "en", "question": "q", "choices": ["only one"], "label": 0},
         "field 'choices' must be a list of at least 2"),
        ({"lang": "en", "text": "?"}, "unrecognised item"),
    ],
)  # fmt: skip
def test_bad_items_name_file_line_and_field(tmp_path, row, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"lang": "en", "question": "q", "choices": ["a", "b"], "label": 0})
                    + "\n" + json.dumps(row) + "\n")  # fmt: skip
    with pytest.raises(MCDataError, match=rf"bad.jsonl:2: .*{message}"):
        load_mc(path)


@pytest.mark.skipif(not XCOPA.is_file(), reason=f"shared XCOPA items not present at {XCOPA}")
def test_xcopa_loads_all_items_and_scores_a_few(llama):
    rows = [json.loads(line) for line in XCOPA.read_text().splitlines() if line.strip()]
    items = load_mc(XCOPA)
    assert len(items) == 2 * len(rows)  # every row in its language and in English (translate-test)
    for lang in ("id", "sw", "zh"):
        n = sum(r["lang"] == lang for r in rows)
        assert sum(i.lang == lang for i in items) == n
        assert sum(i.lang == "en" and i.source == lang for i in items) == n
    assert all(len(i.choices) == 2 and i.label in (0, 1) for i in items)
    first = rows[0]
    assert items[0].prompt == copa_prompt(first["premise"], first["question"], first["lang"])

    few = load_mc(XCOPA, split="val", limit=2)
    assert len(few) == 12  # 2 rows per language, each also in English
    model, tok = llama
    scores = score_choices(model, tok, few, batch_size=8, max_seq_length=512)
    acc = mc_accuracy(few, scores)
    assert {"id", "sw", "zh", "en", "all"} <= set(acc) and acc["all"]["n"] == 12
    ids, start = encode_pair(tok, few[0].prompt, few[0].choices[1])
    assert scores["logp"][0][1] == pytest.approx(np_response_logp(model, ids, start)[0], abs=3e-4)
