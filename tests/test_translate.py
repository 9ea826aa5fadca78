"""`clo-mlx translate`: SFT readers, splitting, filters, resumable writing, backends, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clo_mlx.data import DataError
from clo_mlx.translate.pipeline import (
    Filters,
    append_jsonl_lines,
    digit_runs,
    has_repetition,
    protect,
    read_sft,
    repair_jsonl_tail,
    restore,
    side_paths,
    split_text,
    translate_file,
)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


# ------------------------------------------------------------------ readers


def test_read_sft_formats(tmp_path):
    src = write_jsonl(
        tmp_path / "en.jsonl",
        [
            {"prompt": "Hi?", "response": "Hello.", "id": 7},
            {"instruction": "Add.", "input": "2 and 3", "output": "5"},
            {"instruction": "Say hi.", "input": "", "output": "Hi."},
            {
                "messages": [
                    {"role": "user", "content": "Q?"},
                    {"role": "assistant", "content": "A."},
                ]
            },
        ],
    )
    rows = read_sft(src)
    assert [(r["prompt"], r["response"]) for r in rows] == [
        ("Hi?", "Hello."),
        ("Add.\n\n2 and 3", "5"),
        ("Say hi.", "Hi."),
        ("Q?", "A."),
    ]
    assert rows[0]["id"] == "7" and rows[1]["id"].startswith("2-")
    assert read_sft(src)[1]["id"] == rows[1]["id"]  # ids are stable across reads


@pytest.mark.parametrize(
    "row,match",
    [
        ({"text": "x"}, r"en.jsonl:2: unrecognised SFT row"),
        ({"prompt": "x"}, r"en.jsonl:2: missing field 'response'"),
        ({"prompt": "x", "response": 3}, r"en.jsonl:2: field 'response' must be a string"),
        ({"messages": [{"role": "user", "content": "a"}]}, r"en.jsonl:2: .*single-turn"),
        (
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}]},
            r"en.jsonl:2: .*roles \['system', 'user'\]",
        ),
        ({"instruction": "x", "output": " "}, r"en.jsonl:2: field 'output' is empty"),
        ({"prompt": "a", "response": "b", "id": 1}, r"en.jsonl:2: duplicate id '1'"),
    ],
)
def test_read_sft_errors(tmp_path, row, match):
    src = write_jsonl(tmp_path / "en.jsonl", [{"prompt": "a", "response": "b", "id": 1}, row])
    with pytest.raises(DataError, match=match):
        read_sft(src)


def test_read_sft_bad_json(tmp_path):
    src = tmp_path / "en.jsonl"
    src.write_text('{"prompt": "a", "response": "b"}\n{"prompt": \n')
    with pytest.raises(DataError, match=r"en.jsonl:2: malformed JSON"):
        read_sft(src)


# ------------------------------------------------------------------ splitting


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab .!?\n`~-#|:/1 Xé")), max_size=120))
def test_split_rejoins_exactly(text):
    assert "".join(p.text for p in split_text(text, max_chars=30)) == text


def test_split_keeps_code_urls_numbers():
    text = (
        "# Title\n\nFirst sentence. Second one? Dr. Who stays.\n"
        "```python\nprint('do not translate')\n```\n"
        "- 42\n- https://example.com/x\n| a cell | 3.5 |\n"
    )
    pieces = split_text(text)
    assert "".join(p.text for p in pieces) == text
    todo = [p.text for p in pieces if p.translate]
    assert todo == ["Title", "First sentence.", "Second one?", "Dr. Who stays.", "a cell"]
    kept = "".join(p.text for p in pieces if not p.translate)
    for s in ("```python\nprint('do not translate')\n```", "42", "https://example.com/x", "3.5"):
        assert s in kept


def test_split_keeps_abbreviations_together():
    # The old punctuation rule sent "U.S.", "Sen." and "The U.S." to the model as sentences.
    text = "U.S. Sen. Elizabeth Warren says she will run. The U.S. Navy said it was ready."
    todo = [p.text for p in split_text(text) if p.translate]
    assert todo == [
        "U.S. Sen. Elizabeth Warren says she will run.",
        "The U.S. Navy said it was ready.",
    ]
    assert [p.text for p in split_text("Hi. Dr. Who stays.") if p.translate] == [
        "Hi.",
        "Dr. Who stays.",
    ]


@pytest.mark.skipif(
    not (
        Path(__file__).parents[1] / ".." / "shared" / "data" / "ntrex128_parallel_7lang.jsonl"
    ).exists(),
    reason="../shared/data/ntrex128_parallel_7lang.jsonl not present",
)
def test_split_real_paragraphs_rejoin_exactly():
    path = Path(__file__).parents[1] / ".." / "shared" / "data" / "ntrex128_parallel_7lang.jsonl"
    en = [json.loads(x)["en"] for x in path.open()]
    for i in range(0, 600, 6):
        text = "  ".join(en[i : i + 6]) + "\n\n- " + en[i]
        pieces = split_text(text, max_chars=120)
        assert "".join(p.text for p in pieces) == text
        assert all(len(p.text) <= 120 for p in pieces if p.translate)


def test_long_sentence_is_cut():
    text = ", ".join(["word " * 8] * 10)
    pieces = [p.text for p in split_text(text, max_chars=100)]
    assert "".join(pieces) == text and max(map(len, pieces)) <= 100 and len(pieces) > 3


def test_protect_restore():
    masked, spans = protect("See https://a.org/x?y=1 and `ls -l`, mail me@x.com.")
    assert masked == "See [[0]] and [[1]], mail [[2]]."
    assert (
        restore("Ona [[0]] na [ [1] ], [[2]].", spans)
        == "Ona https://a.org/x?y=1 na `ls -l`, me@x.com."
    )
    assert restore("Ona [[0]] na [[2]].", spans) is None
    assert restore("Ona [[0]] [[0]] [[1]] [[2]].", spans) is None


def test_repetition_and_numbers_helpers():
    assert has_repetition("na na na na na na")
    assert has_repetition("abcabcabcabcabcabc")
    assert not has_repetition("Buibui ana miguu minane, na ni mdudu mdogo.")
    assert digit_runs("3.5 and 1,000") == digit_runs("3,5 na 1.000") == digit_runs("٣.٥ 1 000")


# ------------------------------------------------------------------ filters

GOOD_SW = {
    "How many legs does a spider have?": "Buibui ana miguu mingapi?",
    "A spider has 8 legs.": "Buibui ana miguu 8.",
    "Run this:": "Endesha hii:",
    "See [[0]] now.": "Tazama [[0]] sasa.",
    # wrong language: left in English
    "Please describe the weather in the mountains today.": (
        "Please describe the weather in the mountains today."
    ),
    "Name three colours that you like very much.": "Rangi.",  # far too short
    "Tell me a story about a lion.": "Simba simba simba simba simba simba simba.",
    "Say hello.": "",
    "What is 12 plus 30?": "Kumi na tatu jumlisha thelathini ni ngapi?",  # 12 became 13
    "Visit [[0]] for the news today.": "Tembelea kwa habari za leo.",  # placeholder lost
    "Answer briefly.": "Jibu kwa ufupi.",
}
FILTER_ROWS = [
    ("good", "How many legs does a spider have?", "A spider has 8 legs."),
    ("code", "Answer briefly.", "Run this:\n\n```\nprint(1)\n```\nSee https://x.org now."),
    ("wrong_language", "Please describe the weather in the mountains today.", "Answer briefly."),
    ("length_ratio", "Name three colours that you like very much.", "Answer briefly."),
    ("repetition", "Tell me a story about a lion.", "Answer briefly."),
    ("empty", "Answer briefly.", "Say hello."),
    ("numbers", "What is 12 plus 30?", "Answer briefly."),
    ("lost_protected", "Answer briefly.", "Visit https://news.example.org for the news today."),
]


def fake_translate(texts: list[str]) -> list[str]:
    return [GOOD_SW[t] for t in texts]


def test_filters_count_every_rejection(tmp_path):
    src = write_jsonl(
        tmp_path / "en.jsonl",
        [{"id": i, "prompt": p, "response": r} for i, p, r in FILTER_ROWS],
    )
    out = tmp_path / "sw.jsonl"
    summary = translate_file(src, out, "sw", fake_translate, batch_size=3, show_progress=False)
    rejected_path, summary_path = side_paths(out)
    kept, rejected = lines(out), lines(rejected_path)
    assert [r["id"] for r in kept] == ["good", "code"]
    assert kept[0]["prompt_tgt"] == "Buibui ana miguu mingapi?"
    assert kept[1]["response_tgt"] == (
        "Endesha hii:\n\n```\nprint(1)\n```\nTazama https://x.org sasa."
    )
    assert set(kept[0]) == {"id", "lang", "prompt_en", "response_en", "prompt_tgt", "response_tgt"}
    assert {r["id"]: r["reason"] for r in rejected} == {name: name for name, *_ in FILTER_ROWS[2:]}
    assert all(r["detail"] for r in rejected)
    assert summary["kept"] == 2 and summary["rejected"] == 6 and summary["rows"] == 8
    assert all(summary["reasons"][name] == 1 for name, *_ in FILTER_ROWS[2:])
    assert json.loads(summary_path.read_text()) == summary
    # the kept rows are valid parallel CLO data for the training core
    from clo_mlx.data import load_rows

    assert load_rows(out)[0] == "parallel"


def test_filters_can_be_turned_off(tmp_path):
    src = write_jsonl(
        tmp_path / "en.jsonl",
        [{"id": 1, "prompt": FILTER_ROWS[6][1], "response": "Answer briefly."}],
    )
    filters = Filters(numbers=False)
    s = translate_file(
        src, tmp_path / "o.jsonl", "sw", fake_translate, filters=filters, show_progress=False
    )
    assert s["kept"] == 1


def test_low_confidence_is_off_by_default_and_rejects_when_set(tmp_path):
    src = write_jsonl(
        tmp_path / "en.jsonl",
        [{"id": 1, "prompt": "Answer briefly.", "response": "How many legs does a spider have?"}],
    )

    def scored(texts):  # the response is translated with low confidence
        return [(GOOD_SW[t], -3.0 if "spider" in t else -0.2) for t in texts]

    s = translate_file(src, tmp_path / "a.jsonl", "sw", scored, show_progress=False)
    assert (
        s["kept"] == 1
        and lines(tmp_path / "a.jsonl")[0]["response_tgt"]
        == GOOD_SW["How many legs does a spider have?"]
    )
    s = translate_file(
        src, tmp_path / "b.jsonl", "sw", scored, filters=Filters(min_logprob=-1.0),
        show_progress=False,
    )  # fmt: skip
    bad = lines(side_paths(tmp_path / "b.jsonl")[0])
    assert s["reasons"]["low_confidence"] == 1 and bad[0]["detail"].startswith("response:")


def test_back_translation_is_off_by_default_and_rejects_when_set(tmp_path):
    src = write_jsonl(
        tmp_path / "en.jsonl",
        [{"id": i, "prompt": p, "response": r} for i, p, r in FILTER_ROWS[:2]],
    )
    english = {v: k for k, v in GOOD_SW.items()}
    calls = []

    def back(texts):  # the good row comes back word for word, the code row garbled
        calls.append(list(texts))
        return ["Nothing like it." if t == "Endesha hii:" else english[t] for t in texts]

    s = translate_file(src, tmp_path / "a.jsonl", "sw", fake_translate, show_progress=False, back_fn=back)  # fmt: skip
    assert s["kept"] == 2 and not calls  # no threshold: not called
    s = translate_file(
        src, tmp_path / "b.jsonl", "sw", fake_translate, filters=Filters(min_back_chrf=60),
        show_progress=False, back_fn=back,
    )  # fmt: skip
    bad = lines(side_paths(tmp_path / "b.jsonl")[0])
    assert s["kept"] == 1 and s["reasons"]["back_translation"] == 1
    assert bad[0]["id"] == "code" and bad[0]["detail"].startswith("response: back-translation chrF")
    assert "back_translation (1)" in Path(s["report_file"]).read_text()
    # one call for the batch, each distinct translated piece once
    assert len(calls) == 1 and len(calls[0]) == len(set(calls[0])) == 5


def test_bad_language_and_mismatched_output(tmp_path):
    src = write_jsonl(
        tmp_path / "en.jsonl", [{"prompt": "Answer briefly.", "response": "Say hello."}]
    )
    with pytest.raises(ValueError, match="unknown language code 'swa'"):
        translate_file(src, tmp_path / "o.jsonl", "swa", fake_translate, show_progress=False)
    with pytest.raises(ValueError, match="cannot be 'en'"):
        translate_file(src, tmp_path / "o.jsonl", "en", fake_translate, show_progress=False)
    write_jsonl(tmp_path / "de.jsonl", [{"id": "x", "lang": "de"}])
    with pytest.raises(DataError, match=r"de.jsonl:1: row is for language 'de', not 'sw'"):
        translate_file(src, tmp_path / "de.jsonl", "sw", fake_translate, show_progress=False)


# ------------------------------------------------------------------ resumable writing

SW = [
    "Habari za asubuhi rafiki yangu mpendwa",
    "Simba ni mnyama mkubwa sana msituni",
    "Buibui ana miguu minane kila siku",
    "Tembelea soko la mji wetu leo",
]
RESUME_ROWS = [
    {
        "prompt": f"Question {i}: how are you today, friend?",
        "response": f"I am fine, thank you {i}.",
    }
    for i in range(24)
]


def deterministic_translate(texts: list[str]) -> list[str]:
    """Swahili-looking output with the source's numbers; every 5th text stays English."""
    out = []
    for t in texts:
        h = int(hashlib.md5(t.encode()).hexdigest(), 16)
        nums = " ".join(sorted(digit_runs(t).elements()))
        out.append(t if h % 5 == 0 else f"{SW[h % 4]} {nums}.")
    return out


RUNNER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_translate import deterministic_translate
    from clo_mlx.translate.pipeline import translate_file

    def slow(texts):
        time.sleep(0.15)
        return deterministic_translate(texts)

    translate_file(sys.argv[1], sys.argv[2], "sw", slow, batch_size=1, show_progress=False)
    """
)


def _count_lines(*paths: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in paths if p.exists())


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    src = write_jsonl(tmp_path / "en.jsonl", RESUME_ROWS)
    ref = tmp_path / "ref" / "sw.jsonl"
    translate_file(src, ref, "sw", deterministic_translate, batch_size=1, show_progress=False)
    assert 0 < len(lines(ref)) < len(RESUME_ROWS)  # both files get rows

    out = tmp_path / "run" / "sw.jsonl"
    out.parent.mkdir()
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(tests=str(Path(__file__).parent)))
    proc = subprocess.Popen([sys.executable, str(script), str(src), str(out)])
    rejected = side_paths(out)[0]
    deadline = time.monotonic() + 60
    while _count_lines(out, rejected) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _count_lines(out, rejected)
    assert 4 <= done < len(RESUME_ROWS), "the run was not killed mid-way"
    for p in (out, rejected):  # only whole lines on disk
        assert not p.exists() or p.read_bytes().endswith(b"\n") or p.stat().st_size == 0
        lines(p)

    summary = translate_file(
        src, out, "sw", deterministic_translate, batch_size=1, show_progress=False
    )
    assert summary["this_run"]["skipped_finished"] == done
    assert out.read_bytes() == ref.read_bytes()
    assert rejected.read_bytes() == side_paths(ref)[0].read_bytes()


def test_torn_tail_is_repaired_and_redone(tmp_path):
    src = write_jsonl(tmp_path / "en.jsonl", RESUME_ROWS[:6])
    ref = tmp_path / "ref.jsonl"
    translate_file(src, ref, "sw", deterministic_translate, batch_size=2, show_progress=False)
    out = tmp_path / "out.jsonl"
    whole = ref.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(whole[:2]) + whole[2][:17])  # crash in the middle of a line
    assert repair_jsonl_tail(out) == 17 and out.read_bytes() == b"".join(whole[:2])
    out.write_bytes(b"".join(whole[:2]) + whole[2][:17])
    translate_file(src, out, "sw", deterministic_translate, batch_size=2, show_progress=False)
    assert sorted(lines(out), key=lambda r: r["id"]) == sorted(lines(ref), key=lambda r: r["id"])


def test_append_jsonl_lines(tmp_path):
    p = tmp_path / "a.jsonl"
    assert append_jsonl_lines(p, []) == 0 and not p.exists()
    assert append_jsonl_lines(p, [{"a": "ü\n"}, {"b": 2}]) == 2
    assert append_jsonl_lines(p, iter([{"c": 3}])) == 1
    assert lines(p) == [{"a": "ü\n"}, {"b": 2}, {"c": 3}]


# ------------------------------------------------------------------ backends and CLI


@pytest.fixture(scope="module")
def tiny_m2m100(tmp_path_factory):
    pytest.importorskip("transformers")
    from clo_mlx.translate.m2m100 import build_tiny_m2m100

    return build_tiny_m2m100(tmp_path_factory.mktemp("m2m100"), seed=0)


def test_cli_m2m100_end_to_end(tmp_path, tiny_m2m100):
    from typer.testing import CliRunner

    from cli.main import app

    src = write_jsonl(
        tmp_path / "en.jsonl",
        [{"id": i, "prompt": p, "response": r} for i, p, r in FILTER_ROWS],
    )
    out = tmp_path / "sw.jsonl"
    args = ["translate", "--source", str(src), "--lang", "sw", "--output", str(out)]
    args += ["--model", str(tiny_m2m100), "--max-new-tokens", "12", "--no-progress"]
    res = CliRunner().invoke(app, args + ["--beams", "2", "--batch-size", "3"])
    assert res.exit_code == 0, res.output
    summary = json.loads(side_paths(out)[1].read_text())
    rejected = lines(side_paths(out)[0])
    assert (
        summary["kept"] + summary["rejected"] == len(FILTER_ROWS) == len(lines(out)) + len(rejected)
    )
    assert sum(summary["reasons"].values()) == len(rejected)
    assert "kept" in res.output
    # decoding settings: the flag, else the checkpoint (no generation_config.json), else defaults
    assert summary["generation"]["num_beams"] == {"value": 2, "from": "flag"}
    assert summary["generation"]["length_penalty"] == {"value": 1.0, "from": "default"}
    assert "num_beams=2 (flag)" in res.output
    report = Path(summary["report_file"]).read_text()
    assert all(r["id"] in report for r in rejected)
    # a second run has nothing left to do
    res = CliRunner().invoke(app, args)
    assert (
        res.exit_code == 0 and json.loads(side_paths(out)[1].read_text())["this_run"]["rows"] == 0
    )
    bad = CliRunner().invoke(app, args[:4] + ["xx"] + args[5:])
    assert bad.exit_code != 0 and "unknown language code 'xx'" in bad.output


def test_cli_reads_the_source_once(tmp_path, monkeypatch):
    """The early check of the source (before the model loads) is the read the translation uses:
    a Hugging Face dataset is not read twice."""
    from typer.testing import CliRunner

    import clo_mlx.translate.backends
    import clo_mlx.translate.pipeline
    from cli.main import app

    reads = []
    real = clo_mlx.translate.pipeline.read_sft

    def counted(*a, **k):
        reads.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(clo_mlx.translate.pipeline, "read_sft", counted)
    monkeypatch.setattr(
        clo_mlx.translate.backends, "make_m2m100", lambda *a, **k: lambda texts: list(texts)
    )
    src = write_jsonl(tmp_path / "en.jsonl", [{"prompt": "Hi?", "response": "Hello."}])
    model = tmp_path / "m2m"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "m2m_100"}')
    args = [
        "translate",
        "--source",
        str(src),
        "--lang",
        "sw",
        "--output",
        str(tmp_path / "o.jsonl"),
    ]
    res = CliRunner().invoke(app, [*args, "--model", str(model), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert reads == [src]


def test_cli_back_translation_with_the_same_model(tmp_path, tiny_m2m100):
    from typer.testing import CliRunner

    from cli.main import app

    src = write_jsonl(tmp_path / "en.jsonl", [{"id": i, "prompt": p, "response": r} for i, p, r in FILTER_ROWS])  # fmt: skip
    args = ["translate", "--source", str(src), "--lang", "sw", "--model", str(tiny_m2m100)]
    args += ["--max-new-tokens", "3", "--no-progress", "--no-check-language", "--no-check-numbers"]
    args += ["--min-ratio", "0", "--max-ratio", "1000"]
    runs = {}
    for name, threshold in (("off", None), ("zero", "0"), ("all", "100.1")):
        out = tmp_path / f"{name}.jsonl"
        extra = ["--min-back-chrf", threshold] if threshold else []
        res = CliRunner().invoke(app, [*args, "--output", str(out), *extra])
        runs[name] = (
            res,
            json.loads(side_paths(out)[1].read_text()) if res.exit_code == 0 else None,
        )
    assert runs["all"][0].exit_code == 2 and "between 0 and 100" in runs["all"][0].output
    off, zero = runs["off"][1], runs["zero"][1]
    assert off["reasons"]["back_translation"] == zero["reasons"]["back_translation"] == 0
    assert zero["kept"] == off["kept"]  # chrF >= 0 always: nothing more rejected
    res = CliRunner().invoke(app, [*args, "--output", str(tmp_path / "h.jsonl"), "--min-back-chrf", "100"])  # fmt: skip
    high = json.loads(side_paths(tmp_path / "h.jsonl")[1].read_text())
    # a random tiny model does not give the English back: every row that passed is rejected
    assert res.exit_code == 0 and high["kept"] == 0
    assert high["reasons"]["back_translation"] == off["kept"] > 0


def test_llm_backend_batched_equals_unbatched_greedy(tiny_llama, tmp_path):
    from mlx_lm import generate

    from clo_mlx.models import load_model
    from clo_mlx.translate.backends import llm_prompts, make_llm

    texts = ["How many legs does a spider have?", "Red.", "Name three colours, please.", "Hi"]
    batched = make_llm(tiny_llama, "sw", batch_size=3, max_tokens=12)(texts)
    model, tokenizer = load_model(str(tiny_llama))
    single = [
        generate(model, tokenizer, p, max_tokens=12, verbose=False).strip()
        for p in llm_prompts(tokenizer, texts, "sw")
    ]
    assert batched == single
    assert any(batched)

    src = write_jsonl(
        tmp_path / "en.jsonl",
        [{"prompt": t, "response": "A spider has 8 legs."} for t in texts],
    )
    fn = make_llm(tiny_llama, "sw", batch_size=4, max_tokens=12)
    summary = translate_file(src, tmp_path / "o.jsonl", "sw", fn, show_progress=False)
    assert summary["kept"] + summary["rejected"] == 4
    assert (
        summary["rejected"]
        == sum(summary["reasons"].values())
        == len(lines(side_paths(tmp_path / "o.jsonl")[0]))
    )


def test_m2m100_back_translates_with_the_same_model(tiny_m2m100):
    # `.back` is the same checkpoint from sw into English: the ids transformers generates
    torch = pytest.importorskip("torch")
    import transformers

    from clo_mlx.translate.backends import make_m2m100

    texts = ["Answer briefly.", "lulu", "Say hello."]  # non-empty output from the tiny model
    fn = make_m2m100(tiny_m2m100, "sw", max_new_tokens=8)
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_m2m100))
    tok.src_lang = "sw"
    hf = transformers.M2M100ForConditionalGeneration.from_pretrained(str(tiny_m2m100)).eval()
    with torch.no_grad():
        out = hf.generate(
            **tok(texts, return_tensors="pt", padding=True),
            forced_bos_token_id=tok.get_lang_id("en"), max_new_tokens=8, num_beams=1,
        )  # fmt: skip
    drop = set(tok.all_special_ids) | set(tok.id_to_lang_token)
    ref = [tok.decode([i for i in row if i not in drop]).strip() for row in out.tolist()]
    assert fn.back(texts) == ref and any(ref)
    assert fn.back(texts) != fn(texts)  # the other direction
