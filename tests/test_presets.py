"""The shipped presets are valid configs (they need models not available offline, so only parsed)."""

from pathlib import Path

import pytest

from clo_mlx.config import build_config

PRESETS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_parses_and_trains_attention_with_clo(path):
    cfg = build_config(path)
    assert cfg.loss == "clo" and cfg.model
    assert cfg.lora_parameters["keys"] == [f"self_attn.{p}_proj" for p in "qkvo"]
    assert cfg.iters * cfg.batch_size == 12_800  # one epoch of the paper's 6,400 rows


def test_there_are_presets():
    assert len(PRESETS) >= 6
