"""Trainable parameters: exactly the LoRA weights of q/k/v/o; adapters in mlx-lm's format."""

from dataclasses import replace

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm import load

from clo_mlx.adapters import AdapterError, apply_trainable, save_adapters, trainable_weights
from clo_mlx.batching import PairData, micro_batches
from clo_mlx.config import build_config
from clo_mlx.data import Pair
from clo_mlx.losses import nll_weights
from clo_mlx.tokens import encode_pairs
from clo_mlx.trainer import make_loss_fn

PAIRS = [
    Pair(0, "en", "en", "How many legs?", "Eight legs.", "Miguu minane."),
    Pair(0, "tgt", "sw", "Miguu mingapi?", "Miguu minane.", "Eight legs."),
]
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")


def clo_batch(tok, cfg):
    """One micro-batch holding the whole batch, and the batch totals the loss divides by."""
    encoded, _ = encode_pairs(tok, PAIRS, 256)
    zeros = np.zeros(len(encoded), np.float32)
    data = PairData(encoded, zeros - 20, zeros - 20, nll_weights(encoded, "target"))
    cfg = replace(cfg, micro_batch_size=len(encoded), max_seq_length=256)
    (part,), totals = micro_batches(data, list(range(len(encoded))), cfg)
    return (*part, totals)


def perturb(model, which=("lora_a", "lora_b", "m", "weight")):
    """Add noise to trainable tensors, so adapters change outputs and every gradient is non-zero."""
    noisy = [
        (k, v + mx.random.normal(v.shape) * 0.05)
        for k, v in trainable_weights(model).items()
        if k.rsplit(".", 1)[1] in which
    ]
    model.update(tree_unflatten(noisy))


def test_gradients_exactly_on_attention_lora(tiny_llama):
    model, tok = load(str(tiny_llama))
    cfg = build_config(overrides={"lora_parameters": {"rank": 4}})
    apply_trainable(model, cfg)
    perturb(model, which=("lora_b",))
    names = set(trainable_weights(model))
    n_layers = len(model.layers)
    expected = {
        f"model.layers.{i}.self_attn.{p}.{w}"
        for i in range(n_layers)
        for p in ATTN
        for w in ("lora_a", "lora_b")
    }
    assert names == expected
    loss_and_grad = nn.value_and_grad(model, make_loss_fn(cfg))
    (_, _), grads = loss_and_grad(model, *clo_batch(tok, cfg))
    grads = dict(tree_flatten(grads))
    assert set(grads) == expected
    for name, g in grads.items():
        assert float(mx.abs(g).max()) > 0, f"zero gradient for {name}"


def test_num_layers_full_and_dora(tiny_llama):
    model, _ = load(str(tiny_llama))
    apply_trainable(model, build_config(overrides={"num_layers": 1}))
    last = len(model.layers) - 1
    assert {n.split(".")[2] for n in trainable_weights(model)} == {str(last)}

    model, _ = load(str(tiny_llama))
    apply_trainable(model, build_config(overrides={"fine_tune_type": "full"}))
    names = set(trainable_weights(model))
    assert names == {
        f"model.layers.{i}.self_attn.{p}.weight" for i in range(len(model.layers)) for p in ATTN
    }

    model, _ = load(str(tiny_llama))
    apply_trainable(model, build_config(overrides={"fine_tune_type": "dora"}))
    assert {n.rsplit(".", 1)[1] for n in trainable_weights(model)} == {"lora_a", "lora_b", "m"}

    model, _ = load(str(tiny_llama))
    with pytest.raises(AdapterError, match="match no module"):
        apply_trainable(
            model, build_config(overrides={"lora_parameters": {"keys": ["self_attn.qproj"]}})
        )
    with pytest.raises(AdapterError, match="only 2 layers"):
        apply_trainable(model, build_config(overrides={"num_layers": 5}))


@pytest.mark.parametrize("fine_tune_type", ["lora", "dora", "full"])
def test_saved_adapters_load_in_mlx_lm_with_same_logits(tiny_llama, tmp_path, fine_tune_type):
    model, tok = load(str(tiny_llama))
    cfg = build_config(
        overrides={
            "fine_tune_type": fine_tune_type,
            "adapter_path": str(tmp_path),
            "lora_parameters": {"rank": 4, "scale": 5.0},
        }
    )
    apply_trainable(model, cfg)
    # Perturb every trainable tensor so the adapters change the outputs.
    perturb(model)
    save_adapters(model, tmp_path, cfg)
    x = mx.array([[1, 5, 9, 22, 40, 3]])
    ours = model(x)
    reloaded, _ = load(str(tiny_llama), adapter_path=str(tmp_path))
    base, _ = load(str(tiny_llama))
    np.testing.assert_allclose(np.array(reloaded(x)), np.array(ours), atol=1e-5)
    assert float(mx.abs(base(x) - ours).max()) > 1e-3
