"""The MLX M2M100/NLLB port against transformers on tiny random checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from clo_mlx.translate.m2m100 import (
    Translator,
    build_tiny_m2m100,
    generate,
    load_model,
    sinusoidal_positions,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXTS = [
    "How many legs does a spider have?",
    "Red, green, blue.",
    "The quick brown fox jumps over the lazy dog and 2025 numbers.",
    "Please explain.",
    "Mbweha mwepesi wa kahawia",
    "2 3 4",
]
FLAVORS = {
    # M2M100: `__sw__` tokens, scaled and tied embeddings.
    "m2m100": dict(flavor="m2m100", seed=0),
    # NLLB-style: `swh_Latn` codes in tokenizer.json, unscaled embeddings, untied output head.
    "nllb": dict(flavor="nllb", seed=1, scale_embedding=False, tie_word_embeddings=False),
}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # Tiny models: torch's thread pool only adds contention on a shared CPU.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module", params=list(FLAVORS))
def tiny(request, tmp_path_factory):
    path = build_tiny_m2m100(tmp_path_factory.mktemp(request.param), **FLAVORS[request.param])
    hf = transformers.M2M100ForConditionalGeneration.from_pretrained(str(path)).eval()
    return request.param, path, hf, Translator(path)


def _hf_batch(tr: Translator, texts: list[str]):
    tr.tokenizer.src_lang = tr.lang_code("en")
    return tr.tokenizer(texts, padding=True, return_tensors="pt")


def _trim(rows: list[list[int]], eos: int = 2) -> list[list[int]]:
    out = []
    for row in rows:
        seq = row[:1]
        for t in row[1:]:
            seq.append(t)
            if t == eos:
                break
        out.append(seq)
    return out


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_positions_match_transformers():
    from transformers.models.m2m_100.modeling_m2m_100 import M2M100SinusoidalPositionalEmbedding

    for dim in (32, 33):
        ref = M2M100SinusoidalPositionalEmbedding.get_embedding(40, dim, padding_idx=1).numpy()
        np.testing.assert_allclose(sinusoidal_positions(40, dim, 1), ref, atol=1e-6)


def test_encoder_and_decoder_logits_match(tiny):
    name, _, hf, tr = tiny
    batch = _hf_batch(tr, TEXTS)  # padded batch: masks matter
    forced = tr.lang_token_id("sw")
    dec = torch.tensor([[2, forced, 5, 9, 11, 7, 1, 30]] * len(TEXTS))  # includes a pad id
    with torch.no_grad():
        out = hf(**batch, decoder_input_ids=dec)
    ids = mx.array(batch["input_ids"].numpy())
    mask = mx.array(batch["attention_mask"].numpy())
    enc = np.array(tr.model.encode(ids, mask))
    real = batch["attention_mask"].numpy().astype(bool)
    ref_enc = out.encoder_last_hidden_state.numpy()
    assert _rel(enc[real], ref_enc[real]) < 1e-4, name
    logits = np.array(tr.model(ids, mask, mx.array(dec.numpy())))
    assert _rel(logits, out.logits.numpy()) < 1e-4, name


def test_kv_cache_decoding_matches_full_pass(tiny):
    _, _, _, tr = tiny
    m = tr.model
    src = tr.encode(TEXTS[:3])
    from clo_mlx.translate.m2m100 import pad_batch

    ids, mask = pad_batch(src, 1)
    dec = mx.array([[2, 250, 5, 9, 11, 7]] * 3)
    full = m(ids, mask, dec)
    state = m.start(m.encode(ids, mask), mask)
    steps = [m.decode(dec[:, :2], state)] + [
        m.decode(dec[:, i : i + 1], state) for i in range(2, 6)
    ]
    np.testing.assert_allclose(np.array(mx.concatenate(steps, 1)), np.array(full), atol=1e-4)


@pytest.mark.parametrize("num_beams,early_stopping", [(1, False), (3, False), (3, True)])
def test_generate_matches_transformers(tiny, num_beams, early_stopping):
    name, _, hf, tr = tiny
    forced = tr.lang_token_id("sw")
    batch = _hf_batch(tr, TEXTS)
    with torch.no_grad():
        ref = hf.generate(
            **batch,
            forced_bos_token_id=forced,
            max_new_tokens=24,
            num_beams=num_beams,
            early_stopping=early_stopping,
            do_sample=False,
        )
    ours = generate(
        tr.model,
        tr.encode(TEXTS),
        forced_bos_token_id=forced,
        max_new_tokens=24,
        num_beams=num_beams,
        early_stopping=early_stopping,
    )
    assert ours == _trim(ref.tolist()), (name, num_beams)
    assert all(seq[1] == forced for seq in ours)
    if num_beams == 1:  # the tiny models stop at varied lengths: both EOS and max-length paths run
        lengths = {len(s) for s in ours}
        assert min(lengths) < 25 and len(lengths) > 1, lengths


def test_batched_translation_equals_one_by_one(tiny):
    _, _, _, tr = tiny
    batched = tr.translate(TEXTS, "sw", batch_size=4, max_new_tokens=16)
    single = [tr.translate([t], "sw", batch_size=1, max_new_tokens=16)[0] for t in TEXTS]
    assert batched == single


def test_language_codes(tiny):
    name, _, _, tr = tiny
    if name == "nllb":
        assert tr.lang_code("sw") == "swh_Latn"
        assert tr.lang_token_id("sw") == tr.tokenizer.convert_tokens_to_ids("swh_Latn")
        assert tr.lang_token_id("yor_Latn") == tr.tokenizer.convert_tokens_to_ids("yor_Latn")
        with pytest.raises(ValueError, match="no NLLB-200 code"):
            tr.lang_code("xx")
    else:
        assert tr.lang_token_id("sw") == tr.tokenizer.get_lang_id("sw")
        assert tr.encode(["Red."])[0][0] == tr.tokenizer.get_lang_id("en")
        with pytest.raises(ValueError, match="no language"):
            tr.lang_token_id("xx")


def test_load_errors(tmp_path, tiny):
    _, path, _, _ = tiny
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="--backend llm"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_model(tmp_path)


def test_generation_config_is_the_default(tiny, tmp_path):
    import shutil

    from clo_mlx.translate.m2m100 import generation_settings

    name, path, _, _ = tiny
    ckpt = Path(shutil.copytree(path, tmp_path / "ckpt"))
    gen = {"num_beams": 3, "early_stopping": True, "max_length": 14, "length_penalty": 0.6}
    ids = {"bos_token_id": 0, "decoder_start_token_id": 2, "eos_token_id": 2, "pad_token_id": 1}
    (ckpt / "generation_config.json").write_text(json.dumps({**gen, **ids}))
    settings = generation_settings(ckpt)
    assert settings["num_beams"] == {"value": 3, "from": "generation_config.json"}
    assert settings["max_new_tokens"] == {"value": 13, "from": "generation_config.json"}
    assert generation_settings(ckpt, num_beams=1)["num_beams"] == {"value": 1, "from": "flag"}
    assert generation_settings(path)["num_beams"] == {"value": 1, "from": "default"}

    # transformers reads the same file: with no arguments both decode alike
    hf = transformers.M2M100ForConditionalGeneration.from_pretrained(str(ckpt)).eval()
    tr = Translator(ckpt)
    forced = tr.lang_token_id("sw")
    with torch.no_grad():
        ref = hf.generate(**_hf_batch(tr, TEXTS), forced_bos_token_id=forced)
    kw = {k: v["value"] for k, v in settings.items()}
    ours = generate(tr.model, tr.encode(TEXTS), forced_bos_token_id=forced, **kw)
    assert ours == _trim(ref.tolist()), name
    greedy = generate(tr.model, tr.encode(TEXTS), forced_bos_token_id=forced, max_new_tokens=13)
    assert greedy != ours  # the stored beam settings made a difference


def test_beam_sources_that_are_done_leave_the_batch(tiny, monkeypatch):
    import clo_mlx.translate.m2m100 as m2m

    name, _, hf, tr = tiny
    forced = tr.lang_token_id("sw")
    texts = TEXTS + ["Red.", "Say hello to a friend today, please, and then say it again."]
    rows, select = [], m2m.DecoderState.select

    def counting(self, r, cross_rows=None):
        rows.append(r.shape[0])
        return select(self, r, cross_rows)

    monkeypatch.setattr(m2m.DecoderState, "select", counting)
    ours = generate(
        tr.model, tr.encode(texts), forced_bos_token_id=forced, max_new_tokens=30,
        num_beams=3, early_stopping=True,
    )  # fmt: skip
    with torch.no_grad():
        ref = hf.generate(
            **_hf_batch(tr, texts), forced_bos_token_id=forced, max_new_tokens=30,
            num_beams=3, early_stopping=True, do_sample=False,
        )  # fmt: skip
    assert ours == _trim(ref.tolist()), name
    assert rows[0] == 3 * len(texts) and min(rows) < rows[0], rows  # some left early


def test_mean_logprobs_match_transformers(tiny):
    from clo_mlx.translate.m2m100 import mean_logprobs

    name, _, hf, tr = tiny
    forced = tr.lang_token_id("sw")
    seqs = generate(tr.model, tr.encode(TEXTS), forced_bos_token_id=forced, max_new_tokens=12)
    ours = mean_logprobs(tr.model, tr.encode(TEXTS), seqs)
    batch = _hf_batch(tr, TEXTS)
    for b, seq in enumerate(seqs):
        with torch.no_grad():
            logits = hf(
                input_ids=batch["input_ids"][b : b + 1],
                attention_mask=batch["attention_mask"][b : b + 1],
                decoder_input_ids=torch.tensor([seq[:-1]]),
            ).logits[0]
        logp = torch.log_softmax(logits.double(), -1)
        ref = np.mean([logp[t, seq[t + 1]].item() for t in range(1, len(seq) - 1)])
        assert abs(ours[b] - ref) < 1e-4, (name, b)
    pairs = tr.translate(TEXTS, "sw", max_new_tokens=12, with_scores=True)
    assert [p[0] for p in pairs] == tr.translate(TEXTS, "sw", max_new_tokens=12)
    assert [p[1] for p in pairs] == pytest.approx(ours, abs=1e-5)
    from clo_mlx.translate.backends import make_m2m100

    fn = make_m2m100(tr.path, "sw", max_new_tokens=12, with_scores=True)
    assert fn(TEXTS) == pairs


@pytest.mark.parametrize("beams", [1, 3])
def test_decode_step_equals_decode(tiny, beams):
    # The generation path (folded weights, beams sharing their source) against the plain one,
    # on padded sources, through a cache that grows past its first buffer, with a pad token.
    from clo_mlx.translate.m2m100 import pad_batch

    name, _, _, tr = tiny
    m = tr.model
    ids, mask = pad_batch(tr.encode(TEXTS), 1)
    assert not bool(mx.all(mask).item())  # padded: the cross-attention mask matters
    enc = m.encode(ids, mask)
    rows = mx.array(np.repeat(np.arange(len(TEXTS)), beams))
    plain = m.start(enc[rows], mask[rows])
    fast = m.start(enc, mask, beams=beams)
    rng = np.random.default_rng(0)
    for step in range(36):
        y = rng.integers(0, m.args.vocab_size, len(TEXTS) * beams).astype(np.int32)
        y[step % len(y)] = m.args.pad_token_id
        want = np.array(m.decode(mx.array(y)[:, None], plain)[:, -1, :])
        got = np.array(m.decode_step(mx.array(y), fast))
        assert _rel(got, want) < 1e-5, (name, step)
        if step % 5 == 4:  # reorder beams within their sources, as beam search does
            parent = rng.integers(0, beams, (len(TEXTS), beams)) + np.arange(len(TEXTS))[:, None] * beams  # fmt: skip
            plain.select(mx.array(parent.reshape(-1)))
            fast.select(mx.array(parent.reshape(-1)), False)


def test_decode_step_in_half_precision(tiny):
    # float16 takes the fused LayerNorm (float32 statistics) instead of the float32 CPU one.
    from clo_mlx.translate.m2m100 import pad_batch

    _, path, _, _ = tiny
    m = load_model(path, dtype="float16")
    ids, mask = pad_batch([[5, 6, 7, 2], [9, 2]], 1)
    enc = m.encode(ids, mask)
    plain, fast = m.start(enc, mask), m.start(enc, mask)
    for y in ([2, 2], [7, 1], [30, 4]):
        want = np.array(m.decode(mx.array(y)[:, None], plain)[:, -1, :].astype(mx.float32))
        got = m.decode_step(mx.array(y), fast)
        assert got.dtype == mx.float16
        assert _rel(np.array(got.astype(mx.float32)), want) < 1e-2


def test_step_weights_follow_new_weights(tiny):
    from mlx.utils import tree_flatten

    from clo_mlx.translate.m2m100 import pad_batch

    _, path, _, _ = tiny
    m = load_model(path)
    ids, mask = pad_batch([[5, 6, 7, 2]], 1)
    enc = m.encode(ids, mask)
    before = np.array(m.decode_step(mx.array([2]), m.start(enc, mask)))
    scaled = [(k, v * 1.5) for k, v in tree_flatten(m.decoder.layers[0].parameters())]
    m.decoder.layers[0].load_weights(scaled)
    after = np.array(m.decode_step(mx.array([2]), m.start(enc, mask)))
    want = np.array(m.decode(mx.array([[2]]), m.start(enc, mask))[:, -1, :])
    assert _rel(after, want) < 1e-5 and _rel(after, before) > 1e-2


def test_beam_candidates_host_and_device_agree():
    from clo_mlx.translate.m2m100 import _candidates

    rng = np.random.default_rng(0)
    B, nb, V, K = 5, 3, 40, 6
    logits = rng.standard_normal((B * nb, V)).astype(np.float32) * 3
    logits[0, [9, 7]] = 10.0  # a tie at the top: the lower index comes first
    run_scores = rng.standard_normal((B, nb)).astype(np.float32)
    run_scores[:, 1:] = -1e9  # the first step: only beam 0 is live
    run_scores[0] = [0.0, -1e9, -1e9]
    logp = logits - np.log(np.exp(logits.astype(np.float64)).sum(-1, keepdims=True))
    acc = (logp.reshape(B, nb, V) + run_scores[:, :, None]).reshape(B, nb * V)
    want = np.argsort(-acc, axis=1, kind="stable")[:, :K]
    for host in (True, False):
        top, lp = _candidates(mx.array(logits), run_scores, None, K, host=host)
        np.testing.assert_array_equal(top, want)
        np.testing.assert_allclose(lp, np.take_along_axis(acc, want, 1), atol=1e-5)
        assert list(top[0, :2]) == [7, 9]
        top, lp = _candidates(mx.array(logits), run_scores, 11, K, host=host)
        assert (top[:, 0] == 11).all() and np.all(lp[:, 0] == run_scores[:, 0])


def test_cpu_attention_equals_the_fused_kernel():
    # `_attend` takes the fused kernel on a GPU; its CPU formulation must compute the same.
    from clo_mlx.translate.m2m100 import _attend

    rng = np.random.default_rng(1)
    q, k, v = (mx.array(rng.standard_normal(s).astype(np.float32)) for s in [(3, 2, 4, 8), (3, 2, 7, 8), (3, 2, 7, 8)])  # fmt: skip
    keep = np.ones((3, 1, 1, 7), bool)
    keep[1, ..., 5:] = False
    bias = mx.where(mx.array(keep), 0.0, -mx.inf)
    for b in (None, bias):
        fused = mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0, mask=b)
        np.testing.assert_allclose(np.array(_attend(q, k, v, b)), np.array(fused), atol=1e-5)
    s = np.einsum("bhqd,bhkd->bhqk", np.array(q), np.array(k)) + np.where(keep, 0.0, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    want = (p / p.sum(-1, keepdims=True)) @ np.array(v)
    np.testing.assert_allclose(np.array(_attend(q, k, v, bias)), want, atol=1e-5)
