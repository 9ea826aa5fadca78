"""`clo-mlx fuse`: the fused MLX model computes what base + adapters computes in mlx-lm."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import make_mlx_lm_adapters, mlx_lm_logits

from clo_mlx.adapters import AdapterError
from clo_mlx.export.fuse import fuse
from clo_mlx.tiny import build_tiny_model

TOKENS = [[5, 17, 42, 99, 3, 250, 7, 64, 128, 11, 300, 2]]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuse_models")
    return {
        "llama": build_tiny_model(root / "llama", arch="llama"),
        "qwen2_tied": build_tiny_model(
            root / "qwen2", arch="qwen2", num_layers=3, tie_word_embeddings=True, seed=2
        ),
    }


@pytest.mark.parametrize(
    "arch,num_layers,keys,kind",
    [
        ("llama", 1, ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"], "lora"),
        ("qwen2_tied", 2, ["self_attn.q_proj", "self_attn.o_proj"], "dora"),
    ],
)
def test_fused_model_matches_base_plus_adapters(models, tmp_path, arch, num_layers, keys, kind):
    from mlx_lm import load

    base = models[arch]
    adapters = make_mlx_lm_adapters(base, tmp_path / "adapters", num_layers, keys, kind=kind)
    ref = mlx_lm_logits(base, TOKENS, adapters)
    assert np.abs(ref - mlx_lm_logits(base, TOKENS)).max() > 1e-2  # the adapters change the outputs
    out = fuse(base, adapters, tmp_path / "fused")
    assert np.abs(mlx_lm_logits(out, TOKENS) - ref).max() < 1e-4
    weights = mx.load(str(out / "model.safetensors"))
    assert not any(k.rsplit(".", 1)[-1] in ("lora_a", "lora_b", "m") for k in weights)
    _, tok = load(str(out))
    _, base_tok = load(str(base))
    assert tok.chat_template == base_tok.chat_template
    msgs = [{"role": "user", "content": "Habari?"}]
    assert tok.apply_chat_template(
        msgs, add_generation_prompt=True
    ) == base_tok.apply_chat_template(msgs, add_generation_prompt=True)


@pytest.fixture(scope="module")
def quantized(models, tmp_path_factory) -> Path:
    from mlx_lm.utils import load, quantize_model, save

    out = tmp_path_factory.mktemp("fuse_q") / "llama_q4"
    model, tok, config = load(str(models["llama"]), return_config=True)
    model, config = quantize_model(model, config, group_size=64, bits=4)
    save(out, str(models["llama"]), model, tok, config)
    return out


def test_fuse_quantized_base(quantized, tmp_path):
    adapters = make_mlx_lm_adapters(
        quantized, tmp_path / "adapters", 2, ["self_attn.q_proj", "self_attn.v_proj"]
    )
    ref = mlx_lm_logits(quantized, TOKENS, adapters)
    deq = fuse(quantized, adapters, tmp_path / "deq", dequantize=True)
    assert np.abs(mlx_lm_logits(deq, TOKENS) - ref).max() < 1e-4
    cfg = json.loads((deq / "config.json").read_text())
    assert "quantization" not in cfg and "quantization_config" not in cfg
    assert not any(k.endswith(".scales") for k in mx.load(str(deq / "model.safetensors")))

    q = fuse(quantized, adapters, tmp_path / "q")  # stays 4-bit: the merged weight is re-rounded
    assert json.loads((q / "config.json").read_text())["quantization"]["bits"] == 4
    assert "model.layers.0.self_attn.q_proj.scales" in mx.load(str(q / "model.safetensors"))
    got = mlx_lm_logits(q, TOKENS)
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.9


def test_fuse_full_fine_tune_and_errors(models, tmp_path):
    base = models["llama"]
    full = mx.load(str(base / "model.safetensors"))
    rng = np.random.default_rng(0)
    key = "model.layers.0.mlp.up_proj.weight"
    adapters = tmp_path / "full"
    adapters.mkdir()
    new = full[key] + mx.array(rng.standard_normal(full[key].shape).astype(np.float32) * 0.1)
    mx.save_safetensors(str(adapters / "adapters.safetensors"), {key: new})
    (adapters / "adapter_config.json").write_text(
        json.dumps({"fine_tune_type": "full", "num_layers": 2})
    )
    out = fuse(base, adapters, tmp_path / "fused")
    np.testing.assert_array_equal(
        np.array(mx.load(str(out / "model.safetensors"))[key]), np.array(new)
    )
    assert np.abs(mlx_lm_logits(out, TOKENS) - mlx_lm_logits(base, TOKENS, adapters)).max() < 1e-5

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapters.safetensors").write_bytes((adapters / "adapters.safetensors").read_bytes())
    (bad / "adapter_config.json").write_text('{"fine_tune_type": "lora",\n "num_layers": "two"}')
    with pytest.raises(AdapterError, match="adapter_config.json: field 'num_layers'"):
        fuse(base, bad, tmp_path / "x")
    (bad / "adapter_config.json").write_text('{"fine_tune_type": "lora",\n "num_layers": 2,,}')
    with pytest.raises(AdapterError, match="adapter_config.json, line 2: invalid JSON"):
        fuse(base, bad, tmp_path / "x")
    # adapters of a 3-layer model do not fit the 2-layer base
    other = make_mlx_lm_adapters(models["qwen2_tied"], tmp_path / "other", 3, ["self_attn.q_proj"])
    with pytest.raises(AdapterError, match=r"model\.layers\.2\.self_attn\.q_proj\.lora_"):
        fuse(base, other, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cli_fuse(models, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    base = models["llama"]
    adapters = make_mlx_lm_adapters(base, tmp_path / "adapters", 2, ["self_attn.k_proj"])
    args = [
        "fuse",
        "--model",
        str(base),
        "--adapter-path",
        str(adapters),
        "--save-path",
        str(tmp_path / "f"),
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert (
        np.abs(mlx_lm_logits(tmp_path / "f", TOKENS) - mlx_lm_logits(base, TOKENS, adapters)).max()
        < 1e-4
    )
    r = CliRunner().invoke(app, args)  # refuses to replace a non-empty output
    assert r.exit_code == 2 and "--overwrite" in r.output
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0
