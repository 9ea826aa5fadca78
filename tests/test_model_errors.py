"""Broken model folders: a clear error (file and field, exit status 2, no traceback) before any
work, from every command that loads a model."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import parallel_rows, write_jsonl

from clo_mlx.demo import DEMO_MODEL
from clo_mlx.models import ModelError, load_model


def _truncate(m: Path) -> None:
    with open(m / "model.safetensors", "r+b") as f:
        f.truncate(100_000)


def _edit_config(**changes):
    def edit(m: Path) -> None:
        config = json.loads((m / "config.json").read_text())
        for k, v in changes.items():
            if v is None:
                config.pop(k)
            else:
                config[k] = v
        (m / "config.json").write_text(json.dumps(config))

    return edit


def _dangling(m: Path) -> None:
    # As in a Hugging Face cache whose blob is missing: the snapshot link points nowhere.
    (m / "model.safetensors").unlink()
    (m / "model.safetensors").symlink_to(m / "blobs" / "missing")


BROKEN = {
    "truncated weights": (_truncate, r"model\.safetensors: truncated"),
    "empty weights": (lambda m: (m / "model.safetensors").write_bytes(b""),
                      r"model\.safetensors: not a safetensors file"),
    "garbage weights": (lambda m: (m / "model.safetensors").write_bytes(b"\x10" * 64 + b"x" * 99),
                        r"model\.safetensors: (truncated|not a safetensors)"),
    "unreadable weights": (_dangling, r"model\.safetensors: cannot be read"),
    "garbage tokenizer.json": (lambda m: (m / "tokenizer.json").write_text("not json {"),
                               r"tokenizer files cannot be loaded"),
    "empty-object tokenizer.json": (lambda m: (m / "tokenizer.json").write_text("{}"),
                                    r"tokenizer files cannot be loaded"),
    "config without hidden_size": (_edit_config(hidden_size=None), r"'hidden_size' missing"),
    "config without model_type": (_edit_config(model_type=None), r"'model_type' is missing"),
    "invalid config.json": (lambda m: (m / "config.json").write_text('{"model_type": "llama",'),
                            r"config\.json, line 1: invalid JSON"),
    "layer count": (_edit_config(num_hidden_layers=3),
                    r"'num_hidden_layers' is 3 but the weights hold 4 layers"),
    "wrong hidden_size": (_edit_config(hidden_size=64), r"cannot be built from its files"),
}  # fmt: skip


def broken_model(tmp_path: Path, case: str) -> Path:
    m = tmp_path / "m"
    shutil.copytree(DEMO_MODEL, m)
    BROKEN[case][0](m)
    return m


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_model_folder_is_a_clear_error(tmp_path, case):
    m = broken_model(tmp_path, case)
    with pytest.raises(ModelError, match=BROKEN[case][1]) as e:
        load_model(str(m))
    assert str(m) in str(e.value)


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """`clo-mlx ARGS` in this process, through main()'s error handling."""
    import cli.main
    import clo_mlx.blas

    monkeypatch.setattr(clo_mlx.blas, "ensure_fast_blas", lambda *a, **k: None)
    monkeypatch.setattr(sys, "argv", ["clo-mlx", *args])
    monkeypatch.delenv("CLO_MLX_DEBUG", raising=False)
    try:
        cli.main.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().err


def test_every_command_that_loads_a_model_exits_2(tmp_path, monkeypatch, capsys):
    m = broken_model(tmp_path, "truncated weights")
    data = write_jsonl(tmp_path / "d" / "train.jsonl", parallel_rows(4))
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    src = write_jsonl(tmp_path / "en.jsonl", [{"prompt": "Hi", "response": "Hello"}])
    ad = tmp_path / "ad"
    ad.mkdir()
    (ad / "adapters.safetensors").write_bytes(b"")
    lora = {"rank": 2, "scale": 1.0, "dropout": 0.0, "keys": ["self_attn.q_proj"]}
    (ad / "adapter_config.json").write_text(
        json.dumps({"fine_tune_type": "lora", "num_layers": 1, "lora_parameters": lora})
    )
    commands = {
        "train": ["train", "--model", str(m), "--data", str(data.parent), "--iters", "2",
                  "--adapter-path", str(tmp_path / "out")],
        "score": ["score", "--model", str(m), "--data", str(pairs), "--output",
                  str(tmp_path / "s.jsonl")],
        "eval": ["eval", "--model", str(m), "--data", str(data), "--no-base", "-a", str(ad),
                 "--out", str(tmp_path / "r")],
        "generate": ["generate", "--model", str(m), "-p", "Hi"],
        "fuse": ["fuse", "--model", str(m), "--adapter-path", str(ad), "--save-path",
                 str(tmp_path / "f")],
        "export-hf": ["export-hf", "--model", str(m), "--adapter-path", str(ad), "--output",
                      str(tmp_path / "e")],
        "export-hf --fused": ["export-hf", "--fused", "--model", str(m), "--adapter-path",
                              str(ad), "--output", str(tmp_path / "e2")],
        "translate --backend llm": ["translate", "--source", str(src), "--lang", "sw",
                                    "--output", str(tmp_path / "t.jsonl"), "--model", str(m),
                                    "--backend", "llm"],
        "doctor --model": ["doctor", "--model", str(m)],
    }  # fmt: skip
    for name, args in commands.items():
        code, err = run_cli(args, monkeypatch, capsys)
        assert code == 2, (name, code, err[-1500:])
        assert "Traceback" not in err and "model.safetensors: truncated" in err, (name, err)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_doctor_reports_a_model(monkeypatch, capsys, tmp_path):
    code, _ = run_cli(["doctor", "--model", str(DEMO_MODEL)], monkeypatch, capsys)
    assert code == 0
    code, err = run_cli(["doctor", "--model", str(tmp_path)], monkeypatch, capsys)
    assert code == 2 and "no config.json" in err and "Traceback" not in err
