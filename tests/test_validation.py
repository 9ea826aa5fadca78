"""Bad input through the CLI (issue 13): one clear message naming file, line or field, exit
status 2, no traceback, before any long work (loading a model, a reference pass, generating).

Commands run in-process through `cli.main.main` (the console script's entry point, with its
error handling); an exception other than a clean exit fails the test with its traceback.
"""

from __future__ import annotations

import json
import re
import sys

import pytest
from conftest import TEXTS, parallel_rows, write_jsonl

from cli.main import main

GOOD = parallel_rows(1)[0]


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """(exit status, stderr) of `clo-mlx ARGS`."""
    monkeypatch.setenv("CLO_MLX_NO_FAST_BLAS", "1")  # no re-exec of the test process
    monkeypatch.setattr(sys, "argv", ["clo-mlx", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main()
    code = e.value.code if isinstance(e.value.code, int) else (0 if e.value.code is None else 1)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, " ".join(re.sub("[│╭╮╰╯─]", " ", err).split())  # rich boxes and wraps lines


def forbid(monkeypatch, module, name: str) -> None:
    """Make `module.name` fail the test if it is called (it is the long work)."""

    def called(*args, **kwargs):
        raise AssertionError(f"{name} ran before the bad input was reported")

    monkeypatch.setattr(module, name, called)


@pytest.fixture(scope="module")
def lora_dir(tiny_llama, tmp_path_factory):
    """Untrained LoRA adapters (mlx-lm format) for the tiny Llama (2 layers)."""
    from mlx_lm import load

    from clo_mlx.adapters import apply_trainable, save_adapters
    from clo_mlx.config import build_config

    out = tmp_path_factory.mktemp("lora") / "ad"
    model, _ = load(str(tiny_llama))
    cfg = build_config(overrides={"model": str(tiny_llama), "lora_parameters": {"rank": 2}})
    apply_trainable(model, cfg)
    save_adapters(model, out, cfg)
    return out


# ----------------------------------------------------------------------------- train: config values


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--lora-dropout", "1.5"], "lora_parameters.dropout must be in [0, 1), got 1.5"),
        (["--num-layers", "0"], "num_layers must be >= 1 (the last N layers) or -1 (all), got 0"),
        (["--learning-rate", "-0.1"], "learning_rate must be a finite number >= 0, got -0.1"),
        (["--val-batches", "-3"], "val_batches must be >= 1 or -1 (all), got -3"),
        (["--logprob-chunk-size", "-5"], "logprob_chunk_size must be >= 1, 0 (off) or null"),
        (["--max-seq-length", "100000000"], "max_seq_length=100000000 is beyond any model's"),
    ],
)
def test_bad_flag_values_exit_2_before_any_work(tmp_path, monkeypatch, capsys, flags, message):
    args = ["train", "--model", "nowhere", "--data", "nowhere"]
    code, err = run_cli([*args, "--adapter-path", str(tmp_path / "a"), *flags], monkeypatch, capsys)
    assert code == 2 and f"clo-mlx: error: command line: {message}" in err
    assert not (tmp_path / "a").exists()


# ----------------------------------------------------------------------------- eval


def test_eval_with_another_models_adapters_fails_before_evaluating_the_base(
    tiny_llama, lora_dir, tmp_path, monkeypatch, capsys
):
    import clo_mlx.eval.compare
    from clo_mlx.tiny import build_tiny_model

    shallow = build_tiny_model(tmp_path / "shallow", texts=TEXTS, num_layers=1)
    data = write_jsonl(tmp_path / "heldout.jsonl", parallel_rows(2))
    forbid(monkeypatch, clo_mlx.eval.compare, "build_eval_set")  # the reference pass
    forbid(monkeypatch, clo_mlx.eval.compare, "evaluate_model")
    args = ["eval", "--model", str(shallow), "-a", str(lora_dir), "--data", str(data)]
    code, err = run_cli([*args, "--out", str(tmp_path / "rep")], monkeypatch, capsys)
    assert code == 2
    assert f"{lora_dir}: adapters do not fit this model" in err and "model.layers.1." in err
    assert not (tmp_path / "rep").exists()


def test_eval_name_count_must_match_the_adapter_paths(lora_dir, tmp_path, monkeypatch, capsys):
    import clo_mlx.models

    forbid(monkeypatch, clo_mlx.models, "load_model")
    base = ["eval", "--model", "nowhere", "--data", "nowhere", "-a", str(lora_dir)]
    code, err = run_cli([*base, "--name", "a", "--name", "b"], monkeypatch, capsys)
    assert code == 2
    assert "--name given 2 times for 1 --adapter-path; give one name per adapter folder" in err
    code, err = run_cli([*base, "-a", str(lora_dir)], monkeypatch, capsys)
    assert code == 2 and "adapter names ['ad'] are not unique" in err
    code, err = run_cli([*base, "--name", "base"], monkeypatch, capsys)
    assert code == 2 and "adapter names ['base'] are not unique" in err


# ----------------------------------------------------------------------------- generate / score


def test_generate_checks_languages_before_generating(monkeypatch, capsys):
    import clo_mlx.models

    forbid(monkeypatch, clo_mlx.models, "load_model")
    code, err = run_cli(["generate", "-p", "Hi", "--languages", "zz,sw"], monkeypatch, capsys)
    assert code == 2 and "unknown language code 'zz'" in err
    code, err = run_cli(["generate", "-p", "Hi", "--languages", "en,SW"], monkeypatch, capsys)
    assert code == 2 and "unknown language code 'SW'" in err and "Did you mean sw?" in err


def test_score_refuses_a_folder_as_output(tmp_path, monkeypatch, capsys):
    import clo_mlx.eval.score

    forbid(monkeypatch, clo_mlx.eval.score, "load_model")
    data = write_jsonl(tmp_path / "d.jsonl", parallel_rows(1))
    (tmp_path / "out").mkdir()
    args = ["score", "--model", "nowhere", "--data", str(data), "--output", str(tmp_path / "out")]
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and f"{tmp_path / 'out'}: --output is a folder" in err
    assert list((tmp_path / "out").iterdir()) == []


# ----------------------------------------------------------------------------- translate


@pytest.fixture
def sft_file(tmp_path):
    return write_jsonl(tmp_path / "en.jsonl", [{"id": 1, "prompt": "Hi", "response": "Hello."}])


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--output", "{tmp}"], "{tmp}: is a folder; give the JSONL file to write"),
        (["--lang", "en"], "names the target language; it cannot be 'en'"),
        # the m2m100 backend (the default) on a Llama folder
        ([], "model_type is 'llama'; the m2m100 backend loads M2M100 and NLLB-200"),
    ],
)
def test_translate_input_errors_exit_2_before_loading(
    tiny_llama, sft_file, tmp_path, monkeypatch, capsys, extra, message
):
    import clo_mlx.translate.backends

    if extra == []:  # loading the model is what fails here: only the weights must not load
        import clo_mlx.translate.m2m100

        forbid(monkeypatch, clo_mlx.translate.m2m100.ModelArgs, "from_dict")
    else:
        forbid(monkeypatch, clo_mlx.translate.backends, "make_m2m100")
    args = ["translate", "--source", str(sft_file), "--model", str(tiny_llama), "--no-progress"]
    args += ["--lang", "sw", "--output", str(tmp_path / "out.jsonl")]
    args += [x.format(tmp=tmp_path) for x in extra]
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and message.format(tmp=tmp_path) in err, err
    assert not (tmp_path / "out.jsonl").exists()


def test_translate_reads_its_source_before_loading_the_model(
    tiny_llama, tmp_path, monkeypatch, capsys
):
    import clo_mlx.translate.backends

    forbid(monkeypatch, clo_mlx.translate.backends, "make_m2m100")
    src = tmp_path / "en.jsonl"
    src.write_text(
        '{"prompt": "Hi", "response": "Hello."}\n{"prompt": "\\ud800", "response": "x"}\n'
    )
    args = ["translate", "--source", str(src), "--model", str(tiny_llama), "--lang", "sw"]
    code, err = run_cli([*args, "--output", str(tmp_path / "o.jsonl")], monkeypatch, capsys)
    assert code == 2
    assert f"{src}:2: field 'prompt' is not valid Unicode text (lone surrogate" in err


# ----------------------------------------------------------------------------- fuse / export-hf


@pytest.mark.parametrize("command,out_flag", [("fuse", "--save-path"), ("export-hf", "--output")])
def test_fuse_and_export_input_errors_exit_2(tmp_path, monkeypatch, capsys, command, out_flag):
    args = [command, "--adapter-path", str(tmp_path / "none"), out_flag, str(tmp_path / "o")]
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and f"{tmp_path / 'none'}: not found" in err


# ----------------------------------------------------------------------------- train: data and model


def test_lone_surrogate_in_a_data_field_names_file_and_line(tmp_path, monkeypatch, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "id": 1, "prompt_tgt": "\ud800"}))
    code, err = run_cli(["train", "--model", "nowhere", "--data", str(data)], monkeypatch, capsys)
    assert code == 2
    assert f"{data}:2: field 'prompt_tgt' is not valid Unicode text (lone surrogate" in err


def test_lora_rank_larger_than_the_model_fails_before_the_reference_pass(
    tiny_llama, parallel_data, tmp_path, monkeypatch, capsys
):
    import clo_mlx.run

    forbid(monkeypatch, clo_mlx.run, "reference_logps")
    args = ["train", "--model", str(tiny_llama), "--data", str(parallel_data)]
    args += ["--adapter-path", str(tmp_path / "a"), "--lora-rank", "33"]
    code, err = run_cli(args, monkeypatch, capsys)
    # The tiny Llama: hidden 64, 2 key/value heads of 64 / 4 = 16 dims, so k_proj is 64 -> 32.
    assert code == 2
    assert "lora_parameters.rank=33 is larger than self_attn.k_proj (64 -> 32) of this model" in err
    assert not (tmp_path / "a").exists()


def test_dropped_pairs_are_named_by_file_and_line(tiny_llama, tmp_path):
    from mlx_lm.utils import load_tokenizer

    from clo_mlx.data import load_pairs
    from clo_mlx.tokens import encode_pairs

    rows = parallel_rows(3)
    rows[1]["response_tgt"] = "Nyekundu. " * 80  # too long for 64 tokens on its own
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    _, report = encode_pairs(load_tokenizer(tiny_llama), load_pairs(path), 64)
    message = report.message()
    # Row 2's long Swahili answer is the chosen response of its "tgt" pair and the rejected one
    # of its "en" pair: both pairs go.
    assert f"2 were dropped (response alone too long): {path}:2 (en), {path}:2 (tgt)" in message


# ----------------------------------------------------------------------------- sweep


def test_sweep_typos_are_named_by_where_they_are(tmp_path):
    from clo_mlx.config import ConfigError
    from clo_mlx.eval.sweep import load_spec

    path = tmp_path / "s.yaml"
    path.write_text("model: m\ndata: d\nout: o\ntrain: {learning_rte: 0.1}\n")
    with pytest.raises(ConfigError) as e:
        load_spec(path)
    assert str(e.value).startswith(f"{path}: train: unknown config key 'learning_rte'")
    path.write_text(
        "model: m\ndata: d\nout: o\nmethods: [mine]\n"
        "custom_methods: {mine: [{loss: sft}, {loss: dpo, clo: {bta: 0.2}}]}\n"
    )
    with pytest.raises(ConfigError) as e:
        load_spec(path)
    assert str(e.value).startswith(
        f"{path}: train + method 'mine' stage 2: unknown key clo.bta. Did you mean 'beta'?"
    )


@pytest.mark.parametrize(
    "sizes,message",
    [
        ([1.5], "sizes: 1.5 is neither a fraction of the rows (<= 1.0) nor a row count"),
        ([0.5, -2], "sizes: -2 is not a positive number"),
        (["half"], "sizes: 'half' is not a positive number"),
        ([], "sizes must not be empty"),
    ],
)
def test_sweep_sizes_must_be_fractions_or_counts(sizes, message):
    from clo_mlx.config import ConfigError
    from clo_mlx.eval.sweep import load_spec

    with pytest.raises(ConfigError) as e:
        load_spec(overrides={"model": "m", "data": "d", "out": "o", "sizes": sizes})
    assert message in str(e.value)


def test_sweep_cli_sizes_with_a_dot_above_one_exit_2(tmp_path, monkeypatch, capsys):
    args = ["sweep", "--model", "m", "--data", "d", "--out", str(tmp_path / "o"), "--sizes", "1.5"]
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and "sizes: 1.5 is neither a fraction" in err
    assert not (tmp_path / "o").exists()


def test_demo_lora_rank_too_large_fails_before_measuring_fidelity(
    parallel_data, tmp_path, monkeypatch, capsys
):
    import clo_mlx.demo.run
    import clo_mlx.eval.fidelity

    write_jsonl(parallel_data / "test.jsonl", parallel_rows(60))  # the demo reads 60 prompts
    monkeypatch.setattr(clo_mlx.demo.run, "prepare_demo_data", lambda **kw: parallel_data)
    forbid(monkeypatch, clo_mlx.eval.fidelity, "language_fidelity")
    args = ["train", "--lora-rank", "100000", "--adapter-path", str(tmp_path / "a")]
    code, err = run_cli(args, monkeypatch, capsys)
    # The demo model: hidden size 128, 4 heads of 32, so q_proj is 128 -> 128.
    assert code == 2
    assert "lora_parameters.rank=100000 is larger than self_attn.q_proj (128 -> 128)" in err
