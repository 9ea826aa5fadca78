"""PEFT export/import and fused Hugging Face export, checked against transformers + peft."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import make_mlx_lm_adapters, mlx_lm_logits

from clo_mlx.export.peft import (
    AdapterError,
    export_fused_hf,
    export_peft,
    import_peft,
    peft_selects,
    target_spec,
)
from clo_mlx.tiny import build_tiny_model

TOKENS = [[5, 17, 42, 99, 3, 250, 7, 64, 128, 11, 300, 2]]


def hf_logits(model) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor(TOKENS)).logits.float().numpy()


def hf_model(path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def peft_logits(base_dir: Path, peft_dir: Path) -> np.ndarray:
    from peft import PeftModel

    return hf_logits(PeftModel.from_pretrained(hf_model(base_dir), str(peft_dir)).eval())


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "llama": build_tiny_model(root / "llama", arch="llama"),
        "qwen2_tied": build_tiny_model(
            root / "qwen2_tied", arch="qwen2", num_layers=3, tie_word_embeddings=True, seed=3
        ),
        "llama_tied": build_tiny_model(root / "llama_tied", tie_word_embeddings=True, seed=4),
    }


ATTN = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
CASES = {
    # model, num_layers, keys, kind
    "llama-all-attn": ("llama", 2, ATTN, "lora"),
    "qwen2-tied-last2-qv-mlp": (
        "qwen2_tied",
        2,
        ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"],
        "lora",
    ),
    "llama-tied-last1-dora": (
        "llama_tied",
        1,
        ["self_attn.q_proj", "self_attn.o_proj", "mlp.up_proj"],
        "dora",
    ),
}


@pytest.mark.torch
@pytest.mark.parametrize("case", list(CASES))
def test_peft_and_fused_hf_match_mlx(models, tmp_path, case):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    arch, num_layers, keys, kind = CASES[case]
    base = models[arch]
    adapters = make_mlx_lm_adapters(base, tmp_path / "adapters", num_layers, keys, kind=kind)
    ref = mlx_lm_logits(base, TOKENS, adapters)
    assert np.abs(ref - mlx_lm_logits(base, TOKENS)).max() > 1e-2  # the adapters change the outputs

    peft_dir = export_peft(base, adapters, tmp_path / "peft", base_model_id="org/tiny")
    cfg = json.loads((peft_dir / "adapter_config.json").read_text())
    n_layers = json.loads((base / "config.json").read_text())["num_hidden_layers"]
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM"
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8.0 and cfg["bias"] == "none"
    assert cfg["use_dora"] is (kind == "dora")
    assert cfg["base_model_name_or_path"] == "org/tiny"
    assert sorted(cfg["target_modules"]) == sorted(k.split(".")[-1] for k in keys)
    expect_layers = None if num_layers == n_layers else list(range(n_layers - num_layers, n_layers))
    assert cfg["layers_to_transform"] == expect_layers
    got = peft_logits(base, peft_dir)
    assert np.abs(got - ref).max() < 1e-4

    fused = export_fused_hf(base, adapters, tmp_path / "fused")
    got = hf_logits(hf_model(fused))
    assert np.abs(got - ref).max() < 1e-4
    tied = "tied" in arch
    assert ("lm_head.weight" in mx.load(str(fused / "model.safetensors"))) is not tied
    assert (fused / "tokenizer.json").is_file()

    back = import_peft(peft_dir, base, tmp_path / "back")
    orig = mx.load(str(adapters / "adapters.safetensors"))
    again = mx.load(str(back / "adapters.safetensors"))
    assert sorted(orig) == sorted(again)
    for k in orig:
        np.testing.assert_array_equal(np.array(orig[k]), np.array(again[k]))
    bcfg = json.loads((back / "adapter_config.json").read_text())
    assert bcfg["fine_tune_type"] == kind and bcfg["num_layers"] == num_layers
    lp = bcfg["lora_parameters"]
    assert (lp["rank"], lp["scale"], lp["dropout"]) == (4, 2.0, 0.0)
    assert sorted(lp["keys"]) == sorted(keys)


@pytest.mark.torch
def test_lm_head_adapter_uses_an_exact_regex(models, tmp_path):
    pytest.importorskip("peft")
    base = models["llama"]
    # mlx-lm also applies keys at model level: "lm_head" adapts the output projection
    adapters = make_mlx_lm_adapters(base, tmp_path / "adapters", 1, ["self_attn.q_proj", "lm_head"])
    ref = mlx_lm_logits(base, TOKENS, adapters)
    peft_dir = export_peft(base, adapters, tmp_path / "peft", base_model_id="org/tiny")
    cfg = json.loads((peft_dir / "adapter_config.json").read_text())
    assert isinstance(cfg["target_modules"], str) and cfg["layers_to_transform"] is None
    assert np.abs(peft_logits(base, peft_dir) - ref).max() < 1e-4
    with pytest.raises(AdapterError, match="lm_head is not inside model.layers"):
        import_peft(peft_dir, base, tmp_path / "back")


def retype(model_dir: Path, arch: str) -> Path:
    """Turn a tiny Llama into a tiny Mistral or Qwen3 (Qwen3 adds per-head q/k RMSNorms)."""
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["model_type"] = arch
    cfg["architectures"] = ["MistralForCausalLM" if arch == "mistral" else "Qwen3ForCausalLM"]
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    cfg.update({"head_dim": head_dim, "sliding_window": None, "_name_or_path": f"org/tiny-{arch}"})
    (model_dir / "config.json").write_text(json.dumps(cfg))
    if arch == "qwen3":
        w = mx.load(str(model_dir / "model.safetensors"))
        rng = np.random.default_rng(7)
        for i in range(cfg["num_hidden_layers"]):
            for n in ("q_norm", "k_norm"):
                w[f"model.layers.{i}.self_attn.{n}.weight"] = mx.array(
                    1 + 0.3 * rng.standard_normal(head_dim).astype(np.float32)
                )
        mx.save_safetensors(str(model_dir / "model.safetensors"), w, metadata={"format": "pt"})
    return model_dir


@pytest.mark.torch
@pytest.mark.parametrize("arch", ["mistral", "qwen3"])
def test_other_architectures(tmp_path, arch):
    pytest.importorskip("peft")
    base = retype(build_tiny_model(tmp_path / arch, seed=5), arch)
    adapters = make_mlx_lm_adapters(
        base, tmp_path / "adapters", 2, ["self_attn.q_proj", "self_attn.k_proj", "mlp.gate_proj"]
    )
    ref = mlx_lm_logits(base, TOKENS, adapters)
    peft_dir = export_peft(base, adapters, tmp_path / "peft")
    # the default base id comes from the config's _name_or_path
    assert (
        json.loads((peft_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        == f"org/tiny-{arch}"
    )
    assert np.abs(peft_logits(base, peft_dir) - ref).max() < 1e-4
    fused = export_fused_hf(base, adapters, tmp_path / "fused")
    assert np.abs(hf_logits(hf_model(fused)) - ref).max() < 1e-4


def test_model_defaults_to_the_adapter_config(models, tmp_path):
    base = models["llama"]
    adapters = make_mlx_lm_adapters(base, tmp_path / "adapters", 1, ["self_attn.v_proj"])
    cfg = json.loads((adapters / "adapter_config.json").read_text())
    (adapters / "adapter_config.json").write_text(json.dumps({**cfg, "model": str(base)}))
    peft_dir = export_peft(None, adapters, tmp_path / "peft")
    pcfg = json.loads((peft_dir / "adapter_config.json").read_text())
    assert pcfg["base_model_name_or_path"] == str(base.resolve())  # no HF id known: the local path
    assert pcfg["target_modules"] == ["v_proj"] and pcfg["layers_to_transform"] == [1]
    back = import_peft(peft_dir, None, tmp_path / "back")  # model from base_model_name_or_path
    assert json.loads((back / "adapter_config.json").read_text())["model"] == str(base.resolve())
    with pytest.raises(ValueError, match="no --model given"):
        export_peft(
            None,
            make_mlx_lm_adapters(base, tmp_path / "a2", 1, ["self_attn.v_proj"]),
            tmp_path / "x",
        )


@pytest.fixture(scope="module")
def quantized(models, tmp_path_factory) -> Path:
    from mlx_lm.utils import load, quantize_model, save

    # Qwen2 with tied embeddings: the quantized embedding is also the output layer
    out = tmp_path_factory.mktemp("q") / "qwen2_q4"
    model, tok, config = load(str(models["qwen2_tied"]), return_config=True)
    model, config = quantize_model(model, config, group_size=64, bits=4)
    save(out, str(models["qwen2_tied"]), model, tok, config)
    return out


@pytest.mark.torch
def test_fused_hf_from_quantized_base(quantized, tmp_path):
    pytest.importorskip("torch")
    assert "model.embed_tokens.scales" in mx.load(str(quantized / "model.safetensors"))
    adapters = make_mlx_lm_adapters(quantized, tmp_path / "adapters", 2, ATTN, kind="dora")
    ref = mlx_lm_logits(quantized, TOKENS, adapters)
    fused = export_fused_hf(quantized, adapters, tmp_path / "fused")
    cfg = json.loads((fused / "config.json").read_text())
    assert "quantization" not in cfg and "quantization_config" not in cfg
    w = mx.load(str(fused / "model.safetensors"))
    assert all(v.dtype == mx.float32 for v in w.values())
    assert not any(k.endswith((".scales", ".biases")) for k in w)
    assert np.abs(hf_logits(hf_model(fused)) - ref).max() < 1e-4


@pytest.mark.torch
def test_full_fine_tune_exports_fused_but_not_peft(models, tmp_path):
    pytest.importorskip("torch")
    base = models["llama"]
    rng = np.random.default_rng(0)
    full = mx.load(str(base / "model.safetensors"))
    names = [k for k in full if k.startswith("model.layers.1.self_attn.") and k.endswith("weight")]
    weights = {
        k: full[k] + mx.array(rng.standard_normal(full[k].shape).astype(np.float32) * 0.1)
        for k in names
    }
    adapters = tmp_path / "full"
    adapters.mkdir()
    mx.save_safetensors(str(adapters / "adapters.safetensors"), weights)
    (adapters / "adapter_config.json").write_text(
        json.dumps({"fine_tune_type": "full", "num_layers": 1})
    )
    ref = mlx_lm_logits(base, TOKENS, adapters)
    fused = export_fused_hf(base, adapters, tmp_path / "fused")
    assert np.abs(hf_logits(hf_model(fused)) - ref).max() < 1e-4
    with pytest.raises(AdapterError, match="full.*--fused"):
        export_peft(base, adapters, tmp_path / "peft")
    assert not (tmp_path / "peft").exists()


def test_fused_hf_keeps_the_base_dtype(tmp_path):
    from clo_mlx.export.fuse import fuse

    base = build_tiny_model(tmp_path / "bf16", seed=6)
    cfg = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**cfg, "torch_dtype": "bfloat16"}))
    w = mx.load(str(base / "model.safetensors"))
    w = {k: v.astype(mx.bfloat16) for k, v in w.items()}
    mx.save_safetensors(str(base / "model.safetensors"), w, metadata={"format": "pt"})
    adapters = make_mlx_lm_adapters(base, tmp_path / "adapters", 2, ["self_attn.q_proj"])
    hf = export_fused_hf(base, adapters, tmp_path / "hf")
    assert json.loads((hf / "config.json").read_text())["torch_dtype"] == "bfloat16"
    hf_w = mx.load(str(hf / "model.safetensors"))
    mlx_w = mx.load(str(fuse(base, adapters, tmp_path / "mlx") / "model.safetensors"))
    assert sorted(hf_w) == sorted(mlx_w)
    for k, v in hf_w.items():
        assert v.dtype == mx.bfloat16
        assert mx.array_equal(v, mlx_w[k]).item(), k
    q = "model.layers.1.self_attn.q_proj.weight"
    assert not mx.array_equal(hf_w[q], w[q]).item()  # the update is merged


@pytest.mark.torch
def test_sharded_hf_weights_load_in_transformers(models, tmp_path):
    import shutil

    from clo_mlx.export.peft import write_hf_weights

    pytest.importorskip("torch")
    base = models["llama"]
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for f in base.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, sharded / f.name)
    weights = mx.load(str(base / "model.safetensors"))
    write_hf_weights(weights, sharded, max_shard_bytes=60_000)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3 and set(index["weight_map"]) == set(weights)
    assert np.abs(hf_logits(hf_model(sharded)) - hf_logits(hf_model(base))).max() == 0


def test_adapters_from_another_model_name_the_tensor(models, tmp_path):
    # 3-layer qwen2 adapters on the last 2 layers: layer 2 does not exist in the 2-layer llama
    adapters = make_mlx_lm_adapters(models["qwen2_tied"], tmp_path / "a", 2, ["self_attn.q_proj"])
    with pytest.raises(AdapterError, match=r"model\.layers\.2\.self_attn\.q_proj\.lora_"):
        export_peft(models["llama"], adapters, tmp_path / "out")
    # same layer count, different width
    other = build_tiny_model(tmp_path / "wide", hidden_size=128, intermediate_size=128)
    adapters = make_mlx_lm_adapters(other, tmp_path / "b", 2, ["self_attn.q_proj"])
    with pytest.raises(AdapterError, match=r"model\.layers\.\d\.self_attn\.q_proj\.lora_a.*shape"):
        export_fused_hf(models["llama"], adapters, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_target_spec_handles_shared_leaf_names():
    names = [
        f"model.layers.{i}.{k}" for i in range(3) for k in ("self_attn.out", "mlp.out", "mlp.up")
    ]
    names.append("lm_head")
    adapted = [f"model.layers.{i}.mlp.out" for i in (1, 2)] + [
        f"model.layers.{i}.mlp.up" for i in (1, 2)
    ]
    targets, layers = target_spec(names, adapted, 3)
    assert targets == ["mlp.out", "up"] and layers == [1, 2]
    assert {n for n in names if peft_selects(n, targets, layers)} == set(adapted)
    # not expressible as keys x layers: exact regex
    adapted = ["model.layers.0.mlp.up", "model.layers.2.self_attn.out"]
    targets, layers = target_spec(names, adapted, 3)
    assert isinstance(targets, str) and layers is None
    assert {n for n in names if peft_selects(n, targets, layers)} == set(adapted)


def _write_peft(
    out: Path, base: Path, cfg: dict, layers: list[int], keys: list[str], r: int = 4
) -> Path:
    dims = json.loads((base / "config.json").read_text())
    h, kv = (
        dims["hidden_size"],
        dims["num_key_value_heads"] * dims["hidden_size"] // dims["num_attention_heads"],
    )
    out_dims = {"q_proj": h, "k_proj": kv, "v_proj": kv, "o_proj": h}
    rng = np.random.default_rng(0)
    t = {}
    for i in layers:
        for k in keys:
            p = f"base_model.model.model.layers.{i}.self_attn.{k}"
            t[p + ".lora_A.weight"] = mx.array(rng.standard_normal((r, h)).astype(np.float32))
            t[p + ".lora_B.weight"] = mx.array(
                rng.standard_normal((out_dims[k], r)).astype(np.float32)
            )
    out.mkdir()
    mx.save_safetensors(str(out / "adapter_model.safetensors"), t, metadata={"format": "pt"})
    full = {"peft_type": "LORA", "r": r, "lora_alpha": 16, "lora_dropout": 0.05, "bias": "none"}
    (out / "adapter_config.json").write_text(json.dumps({**full, **cfg}))
    return out


def test_import_rslora_and_refusals(models, tmp_path):
    base = models["llama"]
    peft = _write_peft(tmp_path / "rs", base, {"use_rslora": True}, [0, 1], ["q_proj", "v_proj"])
    out = import_peft(peft, base, tmp_path / "rs_mlx")
    lp = json.loads((out / "adapter_config.json").read_text())["lora_parameters"]
    assert lp["scale"] == pytest.approx(16 / 2.0) and lp["rank"] == 4 and lp["dropout"] == 0.05
    assert lp["keys"] == ["self_attn.q_proj", "self_attn.v_proj"]
    a = mx.load(str(peft / "adapter_model.safetensors"))
    b = mx.load(str(out / "adapters.safetensors"))
    np.testing.assert_array_equal(
        np.array(b["model.layers.1.self_attn.v_proj.lora_b"]),
        np.array(a["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]).T,
    )

    peft = _write_peft(
        tmp_path / "ap", base, {"alpha_pattern": {"v_proj": 32}}, [0, 1], ["q_proj", "v_proj"]
    )
    with pytest.raises(AdapterError, match="varies per module"):
        import_peft(peft, base, tmp_path / "x")
    peft = _write_peft(tmp_path / "first", base, {}, [0], ["q_proj"])
    with pytest.raises(AdapterError, match="last N layers"):
        import_peft(peft, base, tmp_path / "x")
    peft = _write_peft(tmp_path / "fifo", base, {"fan_in_fan_out": True}, [1], ["q_proj"])
    with pytest.raises(AdapterError, match="fan_in_fan_out"):
        import_peft(peft, base, tmp_path / "x")
    other = build_tiny_model(tmp_path / "wide", hidden_size=128, intermediate_size=128)
    peft = _write_peft(tmp_path / "wide_peft", other, {}, [1], ["q_proj"])
    with pytest.raises(
        AdapterError, match=r"layers\.1\.self_attn\.q_proj\.lora_A\.weight has shape"
    ):
        import_peft(peft, base, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_outputs_are_atomic_and_guarded(models, tmp_path):
    base = models["llama"]
    adapters = make_mlx_lm_adapters(base, tmp_path / "adapters", 1, ["self_attn.q_proj"])
    out = tmp_path / "peft"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_peft(base, adapters, out)
    assert (out / "keep.txt").is_file()
    export_peft(base, adapters, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    with pytest.raises(ValueError, match="would overwrite the input"):
        export_peft(base, adapters, adapters, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapters", "peft"]  # no temp leftovers


def test_cli_export_import(models, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    base = models["llama"]
    adapters = make_mlx_lm_adapters(base, tmp_path / "adapters", 2, ATTN)
    run = CliRunner().invoke
    r = run(
        app,
        [
            "export-hf",
            "--model",
            str(base),
            "--adapter-path",
            str(adapters),
            "--output",
            str(tmp_path / "p"),
        ],
    )
    assert r.exit_code == 0, r.output
    r = run(
        app,
        [
            "import-hf",
            "--adapter",
            str(tmp_path / "p"),
            "--model",
            str(base),
            "--output",
            str(tmp_path / "m"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m" / "adapters.safetensors").is_file()
    r = run(
        app,
        [
            "export-hf",
            "--model",
            str(base),
            "--adapter-path",
            str(tmp_path / "nope"),
            "--output",
            str(tmp_path / "q"),
        ],
    )
    assert r.exit_code == 2 and "not found" in r.output
