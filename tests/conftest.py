"""Shared fixtures: tiny models in Hugging Face layout and a small parallel CLO dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clo_mlx.tiny import DEFAULT_TEXT, build_tiny_model

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config) -> None:
    """Run the tests with the BLAS `clo-mlx` itself runs with (clo_mlx/blas.py): on Linux CPUs
    the process re-executes itself with OpenBLAS preloaded, before any output or any import of
    mlx. The in-process training and scoring tests are BLAS-bound (the demo test: 130 s with
    mlx-cpu's reference BLAS, 25 s with OpenBLAS). Only when this process is pytest itself, not
    pytest.main() inside another program; CLO_MLX_NO_FAST_BLAS=1 turns it off."""
    # One BLAS thread (as the 2-rank tests use): the tests share the cores with torch and with
    # subprocesses, and a 2-thread OpenBLAS splits a matmul's sums by shape, which moves the
    # micro-batch equivalence test (1, 3 or 8 pairs per pass) past its 1e-4 tolerance.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    entry = Path(sys.argv[0])  # `pytest`, `py.test` or `python -m pytest` (.../pytest/__main__.py)
    if entry.name.startswith(("pytest", "py.test")) or entry.parent.name == "pytest":
        from clo_mlx.blas import ensure_fast_blas

        ensure_fast_blas()


def pytest_pyfunc_call(pyfuncitem):
    """A test marked `reference_blas` asserts results that are exact on mlx-cpu's own reference
    BLAS only (OpenBLAS rounds a matmul differently by shape): while this process runs with
    OpenBLAS, it runs in a child pytest on the reference BLAS instead."""
    from clo_mlx import blas

    lib = os.environ.get(blas.MARKER_ENV)
    if pyfuncitem.get_closest_marker("reference_blas") is None or not lib:
        return None
    env = blas.reference_blas_env(os.environ)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", pyfuncitem.nodeid]
    run = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, f"on the reference BLAS:\n{run.stdout[-5000:]}{run.stderr[-2000:]}"
    return True


EN_PROMPTS = [
    "How many legs does a spider have?",
    "Name three colours.",
    "What is two plus two?",
    "Say hello to a friend.",
]
EN_ANSWERS = [
    "A spider has eight legs.",
    "Red, green and blue.",
    "Two plus two is four.",
    "Hello, my friend!",
]
SW_PROMPTS = [
    "Buibui ana miguu mingapi?",
    "Taja rangi tatu.",
    "Mbili jumlisha mbili ni ngapi?",
    "Msalimie rafiki.",
]
SW_ANSWERS = [
    "Buibui ana miguu minane.",
    "Nyekundu, kijani na bluu.",
    "Mbili jumlisha mbili ni nne.",
    "Habari yako, rafiki yangu!",
]


def parallel_rows(n: int = 8, lang: str = "sw") -> list[dict]:
    return [
        {
            "id": i,
            "lang": lang,
            "prompt_en": EN_PROMPTS[i % 4],
            "response_en": EN_ANSWERS[i % 4],
            "prompt_tgt": SW_PROMPTS[i % 4],
            "response_tgt": SW_ANSWERS[i % 4],
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


TEXTS = DEFAULT_TEXT + EN_PROMPTS + EN_ANSWERS + SW_PROMPTS + SW_ANSWERS


def train_config(model: Path, data: Path, out: Path, **overrides):
    """A TrainConfig for `model` and `data` writing adapters to out/ad and the cache to out/cache."""
    from clo_mlx.config import build_config

    paths = {"adapter_path": str(out / "ad"), "cache_dir": str(out / "cache")}
    return build_config(overrides={"model": str(model), "data": str(data), **paths, **overrides})


def set_random_trainable(model, seed: int, std: float = 0.3, suffix: str = "") -> None:
    """Replace the trainable tensors whose names end with `suffix` by N(0, std) draws."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten, tree_unflatten

    rng = np.random.default_rng(seed)
    model.update(
        tree_unflatten(
            [
                (k, mx.array(rng.normal(0, std, v.shape).astype(np.float32)))
                for k, v in tree_flatten(model.trainable_parameters())
                if k.endswith(suffix)
            ]
        )
    )


def write_random_adapters(model_dir: Path, out: Path, cfg, seed: int, std: float = 0.3) -> Path:
    """`cfg`'s adapters on `model_dir` with N(0, std) trainable tensors, written by save_adapters."""
    import mlx.core as mx

    from clo_mlx.adapters import apply_trainable, save_adapters
    from clo_mlx.models import load_model

    model, _ = load_model(str(model_dir), dtype="float32")
    mx.random.seed(0)  # the init is overwritten below; fixed anyway, whatever ran before
    apply_trainable(model, cfg)
    set_random_trainable(model, seed=seed, std=std)
    return save_adapters(model, out, cfg)


def make_mlx_lm_adapters(
    model_dir: Path,
    out: Path,
    num_layers: int,
    keys: list[str],
    *,
    rank: int = 4,
    scale: float = 2.0,
    kind: str = "lora",
    seed: int = 1,
) -> Path:
    """mlx-lm adapters (its own linear_to_lora_layers) with random, non-zero lora_b (and m)."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = load(str(model_dir))
    params = {"rank": rank, "scale": scale, "dropout": 0.0, "keys": keys}
    linear_to_lora_layers(model, num_layers, params, use_dora=kind == "dora")
    rng = np.random.default_rng(seed)
    weights = {}
    for name, p in tree_flatten(model.parameters()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("lora_a", "lora_b"):
            weights[name] = mx.array(rng.standard_normal(p.shape).astype(np.float32) * 0.2)
        elif leaf == "m":
            weights[name] = p * mx.array(1 + 0.3 * rng.random(p.shape).astype(np.float32))
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), weights)
    cfg = {"fine_tune_type": kind, "num_layers": num_layers, "lora_parameters": params}
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def mlx_lm_logits(model_dir: Path, tokens: list[list[int]], adapter_dir: Path | None = None):
    """float32 numpy logits of `tokens` from mlx-lm's own loader (with `adapter_dir` applied)."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm import load

    model, _ = load(str(model_dir), adapter_path=str(adapter_dir) if adapter_dir else None)
    return np.array(model(mx.array(tokens)).astype(mx.float32))


def np_response_logp(model, ids: list[int], start: int) -> tuple[float, int]:
    """Sum of log p(ids[t] | ids[:t]) for t >= start, and the number of those tokens: one
    unpadded, uncompiled forward pass of the single sequence and a float64 numpy log-softmax."""
    import mlx.core as mx
    import numpy as np

    logits = np.array(model(mx.array([ids[:-1]]))[0].astype(mx.float32), dtype=np.float64)
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    return float(sum(logp[t - 1, ids[t]] for t in range(start, len(ids)))), len(ids) - start


def np_pair_logps(model, tokenizer, pairs):
    """np_response_logp of each pair's (chosen, rejected): log-probs [P, 2] and token counts [P, 2]."""
    import numpy as np

    from clo_mlx.tokens import encode_pair

    logps, counts = np.zeros((len(pairs), 2)), np.zeros((len(pairs), 2))
    for i, p in enumerate(pairs):
        for j, response in enumerate((p.chosen, p.rejected)):
            ids, start = encode_pair(tokenizer, p.prompt, response)
            logps[i, j], counts[i, j] = np_response_logp(model, ids, start)
    return logps, counts


@pytest.fixture
def cli_run(monkeypatch, capsys):
    """`cli_run(*args)`: `clo-mlx ARGS` in this process through `cli.main.main` (the console
    script's entry point, with its error handling), as a CompletedProcess. No interpreter start
    and no torch/transformers import per call; an exception other than a clean exit fails the
    test with its traceback. The real console script is run as a subprocess by a few tests."""
    import cli.main
    import clo_mlx.blas

    # This process already has its BLAS (see pytest_configure): no re-exec, no line about it.
    monkeypatch.setattr(clo_mlx.blas, "ensure_fast_blas", lambda *a, **k: None)
    monkeypatch.delenv("CLO_MLX_DEBUG", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # what main() sets, undone after the test

    def run(*args) -> subprocess.CompletedProcess:
        args = [str(a) for a in args]
        monkeypatch.setattr(sys, "argv", ["clo-mlx", *args])
        capsys.readouterr()
        try:
            cli.main.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["clo-mlx", *args], code, out.out, out.err)

    return run


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), "llama", texts=TEXTS, seed=1)


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny_qwen2"),
        "qwen2",
        texts=TEXTS,
        seed=2,
        tie_word_embeddings=True,
    )


@pytest.fixture(scope="session")
def learnable_llama(tmp_path_factory) -> Path:
    """A tiny Llama with larger initial weights: attention LoRA moves its outputs within a few steps."""
    return build_tiny_model(
        tmp_path_factory.mktemp("learnable_llama"), "llama", texts=TEXTS, seed=1, init_std=0.1
    )


@pytest.fixture
def parallel_data(tmp_path) -> Path:
    """A data folder with train.jsonl (8 rows) and valid.jsonl (4 rows)."""
    write_jsonl(tmp_path / "data" / "train.jsonl", parallel_rows(8))
    write_jsonl(tmp_path / "data" / "valid.jsonl", parallel_rows(4))
    return tmp_path / "data"
