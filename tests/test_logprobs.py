"""Batched, compiled, chunked log-probs against a plain per-sequence computation and transformers."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from conftest import np_response_logp
from mlx.utils import tree_flatten
from mlx_lm import load

from clo_mlx.batching import collate
from clo_mlx.data import Pair
from clo_mlx.logprobs import sequence_logps
from clo_mlx.reference import make_logp_fn, score_pairs
from clo_mlx.tokens import encode_pair, encode_pairs

PAIRS = [
    Pair(
        0,
        "en",
        "en",
        "How many legs does a spider have?",
        "A spider has eight legs.",
        "Buibui ana miguu minane.",
    ),
    Pair(
        0,
        "tgt",
        "sw",
        "Buibui ana miguu mingapi?",
        "Buibui ana miguu minane.",
        "A spider has eight legs.",
    ),
    Pair(
        1,
        "en",
        "en",
        "Name three colours.",
        "Red, green and blue. Red, green and blue again.",
        "Nyekundu.",
    ),
]


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_qwen2"])
def test_batched_compiled_matches_per_sequence(arch, request):
    model, tok = load(str(request.getfixturevalue(arch)))
    encoded, _ = encode_pairs(tok, PAIRS, max_seq_length=512)
    scores = score_pairs(model, encoded, batch_size=2, max_seq_length=512)
    for i, e in enumerate(encoded):
        ref_c, n_c = np_response_logp(model, e.chosen, e.chosen_start)
        ref_r, n_r = np_response_logp(model, e.rejected, e.rejected_start)
        assert scores["chosen_tokens"][i] == n_c and scores["rejected_tokens"][i] == n_r
        np.testing.assert_allclose(scores["chosen_logp"][i], ref_c, rtol=1e-4)
        np.testing.assert_allclose(scores["rejected_logp"][i], ref_r, rtol=1e-4)


def lora_llama(path, noisy: str):
    """The tiny Llama with LoRA on q/v, frozen base; `noisy` (q_proj or v_proj) gets a non-zero
    lora_b, so gradients reach lora_a too."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, tok = load(str(path))
    model.freeze()
    keys = ["self_attn.q_proj", "self_attn.v_proj"]
    linear_to_lora_layers(model, -1, {"rank": 4, "scale": 10.0, "dropout": 0.0, "keys": keys})
    for layer in model.layers:
        proj = getattr(layer.self_attn, noisy)
        proj.lora_b = mx.random.normal(proj.lora_b.shape) * 0.1
    return model, tok


def logp_value_and_grad(model, inputs, targets, mask, chunk, start=0):
    """Value and gradients of the summed response log-probs."""

    def f(m):
        return sequence_logps(m, inputs, targets, mask, chunk, start=start)[0].sum()

    return nn.value_and_grad(model, f)(model)


def test_chunked_head_equals_full_in_values_and_gradients(tiny_llama):
    model, tok = lora_llama(tiny_llama, "q_proj")
    seqs = [encode_pair(tok, p.prompt, p.chosen) for p in PAIRS]
    inputs, targets, mask = (mx.array(a) for a in collate(seqs, 512))

    def grads(chunk):
        return logp_value_and_grad(model, inputs, targets, mask, chunk)

    (v_full, g_full), (v_chunk, g_chunk) = grads(0), grads(5)
    assert v_full.item() == pytest.approx(v_chunk.item(), rel=1e-5)
    gf, gc = dict(tree_flatten(g_full)), dict(tree_flatten(g_chunk))
    assert gf.keys() == gc.keys() and len(gf) == 8
    for k in gf:
        np.testing.assert_allclose(np.array(gf[k]), np.array(gc[k]), rtol=1e-4, atol=1e-6)


def test_compiled_fn_sees_updated_weights(tiny_llama):
    model, tok = load(str(tiny_llama))
    fn = make_logp_fn(model)
    inputs, targets, mask = (
        mx.array(a) for a in collate([encode_pair(tok, "Hi", "Hello there.")], 64)
    )
    before = fn(inputs, targets, mask)[0].item()
    model.update({"model": {"norm": {"weight": model.model.norm.weight * 2}}})
    after = fn(inputs, targets, mask)[0].item()
    assert before != pytest.approx(after)


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_qwen2"])
def test_against_transformers(arch, request):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = request.getfixturevalue(arch)
    model, tok = load(str(path))
    encoded, _ = encode_pairs(tok, PAIRS, max_seq_length=512)
    scores = score_pairs(model, encoded, batch_size=3, max_seq_length=512)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    hf.eval()
    for i, e in enumerate(encoded):
        for ids, start, got in (
            (e.chosen, e.chosen_start, scores["chosen_logp"][i]),
            (e.rejected, e.rejected_start, scores["rejected_logp"][i]),
        ):
            with torch.no_grad():
                logits = hf(torch.tensor([ids[:-1]])).logits[0].double()
            logsm = torch.log_softmax(logits, -1)
            want = sum(logsm[t - 1, ids[t]].item() for t in range(start, len(ids)))
            np.testing.assert_allclose(got, want, rtol=1e-4)


def test_head_skipping_prompt_positions_changes_nothing(tiny_llama):
    """Starting the output head at the first response position (rounded down) gives the same
    log-probs and gradients as running it over every position, with and without chunks."""
    from clo_mlx.batching import response_start

    model, tok = lora_llama(tiny_llama, "v_proj")
    long_prompt = " ".join(p.prompt for p in PAIRS)
    seqs = [encode_pair(tok, long_prompt + " " + p.prompt, p.chosen) for p in PAIRS]
    arrays = collate(seqs, 512)
    start = response_start(arrays[2])
    assert start > 0
    inputs, targets, mask = (mx.array(a) for a in arrays)

    def grads(chunk, start):
        return logp_value_and_grad(model, inputs, targets, mask, chunk, start)

    v0, g0 = grads(0, 0)
    for chunk in (0, 3):
        v, g = grads(chunk, start)
        assert v.item() == pytest.approx(v0.item(), rel=1e-5)
        for k, a in dict(tree_flatten(g0)).items():
            np.testing.assert_allclose(
                np.array(dict(tree_flatten(g))[k]), np.array(a), rtol=1e-4, atol=1e-6
            )


def test_head_index_gathers_the_response_positions_after_start():
    from clo_mlx.batching import head_index

    mask = np.zeros((2, 16), np.float32)
    mask[0, 5:9] = 1  # row 0: positions 5-8
    mask[1, 3:5] = 1  # row 1: positions 3-4
    start, positions = head_index(mask)
    assert start == 2  # first response position 3, steps of 16 / 8 = 2
    # flat indices into mask[:, 2:] ([2, 14]): row 0 -> 3..6, row 1 -> 14 + 1, 14 + 2;
    # 6 positions padded to the bucket of 6 (step 8 -> 8, capped at 28) with the sentinel 28
    assert np.array(positions).tolist() == [3, 4, 5, 6, 15, 16, 28, 28]


@pytest.mark.parametrize("chunk", [None, 0, 3])
def test_gathered_head_equals_the_full_head_in_values_and_gradients(tiny_llama, chunk):
    """The head over the gathered response positions: the same log-probs, bit for bit (the
    reference cache and step-0 rewards depend on it), and the same gradients as the plain path."""
    from clo_mlx.batching import head_index

    model, tok = lora_llama(tiny_llama, "v_proj")
    seqs = [encode_pair(tok, "Hi " * (3 * i) + p.prompt, p.chosen) for i, p in enumerate(PAIRS)]
    arrays = collate(seqs, 512)
    index = head_index(arrays[2])
    inputs, targets, mask = (mx.array(a) for a in arrays)
    v0, g0 = logp_value_and_grad(model, inputs, targets, mask, chunk, index[0])
    v, g = logp_value_and_grad(model, inputs, targets, mask, chunk, index)
    per_row = sequence_logps(model, inputs, targets, mask, chunk, start=index)[0]
    per_row0 = sequence_logps(model, inputs, targets, mask, chunk, start=index[0])[0]
    assert mx.array_equal(per_row, per_row0).item()
    assert v.item() == pytest.approx(v0.item(), rel=1e-6)
    for k, a in dict(tree_flatten(g0)).items():
        np.testing.assert_allclose(
            np.array(dict(tree_flatten(g))[k]), np.array(a), rtol=1e-4, atol=1e-6
        )
    for i, (ids, s) in enumerate(seqs):  # and against numpy, per sequence
        want, _ = np_response_logp(model, ids, s)
        np.testing.assert_allclose(np.array(per_row)[i], want, rtol=1e-4)
