"""Reliability: exact resume after kill -9, Ctrl-C, atomic writes, non-finite losses, bad input."""

import json
import signal
import subprocess
import sys
import time

import mlx.core as mx
import numpy as np
import pytest
from conftest import parallel_rows, train_config, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clo_mlx.config import build_config
from clo_mlx.data import DataError, load_pairs
from clo_mlx.run import run_training
from clo_mlx.trainer import NonFiniteLoss

CLI = [sys.executable, "-c", "from cli.main import main; main()"]


def write_config(tmp_path, model, data, adapter_path, **extra):
    cfg = {
        "model": str(model),
        "data": str(data),
        "adapter_path": str(adapter_path),
        "cache_dir": str(tmp_path / "cache"),
        "iters": 60,
        "batch_size": 4,
        "save_every": 4,
        "steps_per_report": 4,
        "steps_per_eval": 1000,
        "learning_rate": 1e-3,
        "seed": 3,
        "lr_schedule": {"name": "cosine_decay", "arguments": [1e-3, 60], "warmup": 5},
        "lora_parameters": {"rank": 4, "scale": 10.0, "dropout": 0.1},
        **extra,
    }
    path = tmp_path / f"{adapter_path.name}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def wait_for_checkpoint(adapter_path, proc, timeout=120):
    latest = adapter_path / "checkpoints" / "latest.json"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if latest.exists() and json.loads(latest.read_text())["step"] >= 4:
            return
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.01)
    raise AssertionError("no checkpoint appeared")


def max_diff(a, b):
    wa, wb = mx.load(str(a)), mx.load(str(b))
    assert wa.keys() == wb.keys()
    return max(float(mx.abs(wa[k] - wb[k]).max()) for k in wa)


def test_kill_9_then_resume_matches_an_uninterrupted_run(tiny_llama, parallel_data, tmp_path):
    full = write_config(tmp_path, tiny_llama, parallel_data, tmp_path / "full")
    run = subprocess.run([*CLI, "train", "-c", str(full)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]

    killed = write_config(tmp_path, tiny_llama, parallel_data, tmp_path / "killed")
    proc = subprocess.Popen([*CLI, "train", "-c", str(killed)], stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(tmp_path / "killed", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = json.loads((tmp_path / "killed" / "checkpoints" / "latest.json").read_text())["step"]
    assert 4 <= step < 60, "the run must be killed part-way"

    run = subprocess.run(
        [*CLI, "train", "-c", str(killed), "--resume"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"resuming from the checkpoint at step {step}" in run.stderr
    diff = max_diff(
        tmp_path / "full" / "adapters.safetensors", tmp_path / "killed" / "adapters.safetensors"
    )
    assert diff <= 1e-6
    steps = [
        json.loads(x)["step"]
        for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(steps) and steps[-1] == 60


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tiny_llama, parallel_data, tmp_path):
    cfg = write_config(
        tmp_path, tiny_llama, parallel_data, tmp_path / "int", save_every=1000, iters=400
    )
    proc = subprocess.Popen([*CLI, "train", "-c", str(cfg)], stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "int" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and '"type": "train"' in metrics.read_text()):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Run the same command with --resume" in err and "Traceback" not in err
    step = json.loads((tmp_path / "int" / "checkpoints" / "latest.json").read_text())["step"]
    assert 4 <= step < 400


def test_atomic_save_survives_kill_9(tmp_path):
    """Kill a process that keeps rewriting a file; the file is always one complete version."""
    target = tmp_path / "w.safetensors"
    code = (
        "import sys, mlx.core as mx\n"
        "from clo_mlx.io import atomic_save_safetensors\n"
        "i = 0\n"
        "while True:\n"
        "    atomic_save_safetensors(sys.argv[1], {'x': mx.full((2_000_000,), float(i))})\n"
        "    i += 1\n"
    )
    for delay in (0.3, 0.45, 0.6):
        proc = subprocess.Popen([sys.executable, "-c", code, str(target)])
        time.sleep(delay)
        while not target.exists():
            time.sleep(0.01)
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        x = np.array(mx.load(str(target))["x"])
        assert x.shape == (2_000_000,) and (x == x[0]).all()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "w.safetensors"]
    assert all(name.startswith(".w.") for name in leftovers)  # temp files, never the target


def test_resume_accepts_memory_knobs_and_refuses_changes_to_the_math():
    from clo_mlx.checkpoint import config_differences
    from clo_mlx.config import TrainConfig

    saved = TrainConfig().to_dict()
    memory_only = TrainConfig(micro_batch_size=1, grad_checkpoint=True, logprob_chunk_size=8)
    assert config_differences(saved, memory_only) == []
    assert config_differences(saved, TrainConfig(learning_rate=2e-5)) == [
        "learning_rate: 1e-05 -> 2e-05"
    ]


def test_resume_from_an_older_version_checkpoint_fills_new_keys_with_defaults():
    from clo_mlx.checkpoint import config_differences
    from clo_mlx.config import TrainConfig

    # A checkpoint written before `clo.dpop_en` and `report_to` existed.
    saved = TrainConfig().to_dict()
    del saved["clo"]["dpop_en"], saved["report_to"]
    assert config_differences(saved, TrainConfig()) == []
    changed = TrainConfig(clo={**TrainConfig().clo, "dpop_en": 2.0})
    (diff,) = config_differences(saved, changed)
    assert diff.startswith("clo: {") and "'dpop_en': 0.0" in diff and "'dpop_en': 2.0" in diff


def test_non_finite_loss_stops_and_keeps_last_good_adapters(tiny_llama, parallel_data, tmp_path):
    cfg = train_config(
        tiny_llama,
        parallel_data,
        tmp_path,
        iters=6,
        batch_size=4,
        save_every=1,
        steps_per_report=1,
        learning_rate=1e30,
        optimizer="sgd",
    )
    with pytest.raises(NonFiniteLoss, match=r"at step \d"):
        run_training(cfg)
    saved = mx.load(str(tmp_path / "ad" / "adapters.safetensors"))
    assert all(bool(mx.isfinite(v).all()) for v in saved.values())

    skip = build_config(
        overrides={**cfg.to_dict(), "skip_nonfinite": True, "adapter_path": str(tmp_path / "b")}
    )
    _, result = run_training(skip)
    weights = mx.load(str(tmp_path / "b" / "adapters.safetensors"))
    assert all(bool(mx.isfinite(v).all()) for v in weights.values())
    assert result.reports[-1]["step"] == 6


# ----------------------------------------------------------------------------- bad input, via the CLI

GOOD = parallel_rows(1)[0]


def _cli(*args):
    return subprocess.run([*CLI, *args], capture_output=True, text=True)


BAD_DATA_IN_A_SUBPROCESS = ":1: malformed JSON"


def _cli_train(model, data, adapters, *extra, cli=_cli):
    return cli(
        *[
            "train",
            "--model",
            str(model),
            "--data",
            str(data),
            "--adapter-path",
            str(adapters),
            *extra,
        ]
    )


@pytest.mark.parametrize(
    "content,expected",
    [
        (b'{"lang": "sw", "prompt_en": \n', ":1: malformed JSON"),
        (
            json.dumps({**GOOD, "response_tgt": None}).encode(),
            ":1: field 'response_tgt' must be a string",
        ),
        (
            json.dumps({k: v for k, v in GOOD.items() if k != "prompt_tgt"}).encode(),
            ":1: missing field 'prompt_tgt'",
        ),
        (json.dumps({**GOOD, "response_en": "  "}).encode(), ":1: field 'response_en' is empty"),
        (b'{"lang": "sw", "prompt_en": "\xc3\x28"}', ":1: invalid UTF-8"),
        (
            json.dumps({**GOOD, "lang": "xx"}).encode(),
            ":1: field 'lang': unknown language code 'xx'",
        ),
    ],
)
def test_bad_data_is_reported_with_file_line_field(
    tiny_llama, tmp_path, cli_run, content, expected
):
    data = tmp_path / "d.jsonl"
    data.write_bytes(content + b"\n")
    # The first case through the console script's process, the others in this process.
    cli = _cli if expected == BAD_DATA_IN_A_SUBPROCESS else cli_run
    run = _cli_train(tiny_llama, data, tmp_path / "a", cli=cli)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert f"{data}{expected}" in run.stderr
    assert not (tmp_path / "a").exists()  # nothing started


def test_bad_config_model_and_adapters_are_reported(tiny_llama, parallel_data, tmp_path, cli_run):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {tiny_llama}\ndata: {parallel_data}\nlearning_rte: 0.1\n")
    run = cli_run(*["train", "-c", str(cfg)])
    assert run.returncode == 2 and "unknown config key 'learning_rte'" in run.stderr
    assert "Did you mean 'learning_rate'?" in run.stderr

    no_weights = tmp_path / "m"
    no_weights.mkdir()
    (no_weights / "config.json").write_text("{}")
    run = cli_run(*["train", "--model", str(no_weights), "--data", str(parallel_data)])
    assert run.returncode == 2 and f"{no_weights}: no *.safetensors weights" in run.stderr
    (no_weights / "model.safetensors").write_bytes((tiny_llama / "model.safetensors").read_bytes())
    run = cli_run(*["train", "--model", str(no_weights), "--data", str(parallel_data)])
    assert run.returncode == 2 and "no tokenizer files" in run.stderr

    run = cli_run(*["train", "--model", str(tmp_path / "nope"), "--data", str(parallel_data)])
    assert run.returncode == 2 and "not in the local Hugging Face cache" in run.stderr

    # Adapters trained on the tiny Llama, applied to models of other shapes.
    from conftest import TEXTS

    from clo_mlx.tiny import build_tiny_model

    narrow = build_tiny_model(
        tmp_path / "narrow", texts=TEXTS, hidden_size=32, num_heads=2, num_kv_heads=1
    )
    shallow = build_tiny_model(tmp_path / "shallow", texts=TEXTS, num_layers=1)
    train_cfg = train_config(tiny_llama, parallel_data, tmp_path, iters=1, batch_size=4)
    run_training(train_cfg)
    out = tmp_path / "s.jsonl"
    run = cli_run(
        *[
            "score",
            "--model",
            str(narrow),
            "--data",
            str(parallel_data / "valid.jsonl"),
            "--output",
            str(out),
            "--adapter-path",
            str(tmp_path / "ad"),
        ]
    )
    assert run.returncode == 2 and "adapters do not fit this model" in run.stderr, run.stderr
    assert "shape" in run.stderr and not out.exists()
    run = cli_run(
        *[
            "generate",
            "--model",
            str(shallow),
            "--adapter-path",
            str(tmp_path / "ad"),
            "--prompt",
            "Hi",
        ]
    )
    assert run.returncode == 2 and "adapters do not fit this model" in run.stderr, run.stderr
    assert "model.layers.1." in run.stderr


def test_too_long_rows_are_counted_and_reported(tiny_llama, tmp_path, cli_run):
    rows = parallel_rows(6)
    rows[0]["prompt_en"] = "Name three colours. " * 40
    rows[1]["response_tgt"] = "Nyekundu. " * 80
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    run = _cli_train(
        tiny_llama,
        data,
        tmp_path / "a",
        "--iters",
        "1",
        "--batch-size",
        "2",
        "--max-seq-length",
        "64",
        "--cache-dir",
        str(tmp_path / "c"),
        cli=cli_run,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    err = " ".join(run.stderr.split())
    assert (
        "3 pairs exceed max_seq_length=64: 1 had their prompt left-truncated; 2 were dropped" in err
    )


# ----------------------------------------------------------------------------- fuzz

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
field_names = st.sampled_from(
    [
        "lang",
        "prompt_en",
        "response_en",
        "prompt_tgt",
        "response_tgt",
        "prompt",
        "chosen",
        "rejected",
        "id",
        "x",
    ]
)
rows = st.dictionaries(
    field_names,
    st.one_of(st.text(max_size=12), st.sampled_from(["sw", "de", "en"]), json_values),
    max_size=7,
)
lines = st.lists(
    st.one_of(rows.map(json.dumps).map(str.encode), st.binary(max_size=20)), max_size=5
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=lines)
def test_fuzz_loader_returns_pairs_or_a_data_error(tmp_path, lines):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines))
    before = path.read_bytes()
    try:
        pairs = load_pairs(path)
    except DataError as e:
        assert str(path) in str(e)
    else:
        assert pairs and all(p.kind in ("en", "tgt", "pair") for p in pairs)
        for p in pairs:
            assert isinstance(p.prompt, str) and p.prompt.strip() and p.chosen.strip()
    assert path.read_bytes() == before  # reading never changes the input
