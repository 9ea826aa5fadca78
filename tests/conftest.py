"""Shared fixtures: tiny models in Hugging Face layout and a small parallel CLO dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clo_mlx.tiny import DEFAULT_TEXT, build_tiny_model

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

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
