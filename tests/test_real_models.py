"""The workflow on tiny models with the real Qwen2.5 / Llama 3.x / Mistral v0.3 tokenizers, in both
config styles (transformers 5 `rope_parameters`, transformers 4 / Hub top-level `rope_theta`),
against independent references: transformers, peft, tiktoken, sentencepiece, mlx_lm.load."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import write_jsonl
from real_models import FAMILIES, SHARED_TOKENIZERS, build_all, shared_available

from clo_mlx.models import ModelError, load_model

NTREX = SHARED_TOKENIZERS.parent / "ntrex128_parallel_7lang.jsonl"
STYLES = ("hf5", "hf4")
CASES = [(f, s) for f in FAMILIES for s in STYLES]
ATTN = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]

pytestmark = pytest.mark.torch


@pytest.fixture(scope="session")
def real(request, tmp_path_factory) -> dict[str, dict[str, Path]]:
    if not shared_available():
        pytest.skip(f"the real tokenizers are not here: {SHARED_TOKENIZERS} (../shared is absent)")
    pytest.importorskip("torch", reason="torch builds the fixtures and is the reference")
    pytest.importorskip("transformers", reason="transformers builds the fixtures")
    pytest.importorskip("tiktoken", reason="transformers' TikTokenConverter needs tiktoken")
    try:
        root = Path(request.config.cache.mkdir("clo-mlx-real-models"))
    except AttributeError:  # cache plugin turned off
        root = tmp_path_factory.mktemp("real-models")
    return build_all(root)


_CACHE: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _tokenizers_loaded_once_per_folder():
    """The real vocabularies take seconds per tokenizer load (transformers parses the 8-19 MB
    tokenizer.json about ten times): clo-mlx's own loader runs once per folder and file state,
    and later loads of the same files (run_training, score, fuse, eval, load_model) get its
    result. Nothing in clo-mlx changes a loaded tokenizer."""
    import clo_mlx.models

    real = clo_mlx.models.load_tokenizer_checked
    loaded: dict = {}

    def once(path, trust_remote_code=False):
        path = Path(path).resolve()
        files = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                      for f in sorted(path.iterdir()) if f.suffix != ".safetensors")  # fmt: skip
        key = (str(path), trust_remote_code, files)
        if key not in loaded:
            loaded[key] = real(path, trust_remote_code)
        return loaded[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(clo_mlx.models, "load_tokenizer_checked", once)
        yield


def cached(kind: str, path: Path):
    """Load once per session (the real vocabularies make tokenizer loading take seconds)."""
    key = (kind, str(path))
    if key not in _CACHE:
        if kind == "mlx":
            _CACHE[key] = load_model(str(path))
        elif kind == "hf_tok":
            from transformers import AutoTokenizer

            _CACHE[key] = AutoTokenizer.from_pretrained(str(path))
        else:
            import torch
            from transformers import AutoModelForCausalLM

            _CACHE[key] = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return _CACHE[key]


def texts(lang: str, n: int = 3) -> list[str]:
    """The first `n` NTREX-128 sentences in `lang` (real news text)."""
    rows = [json.loads(line) for line in NTREX.read_text(encoding="utf-8").splitlines()[:n]]
    return [r[lang] for r in rows]


# --- independent reference tokenizers -------------------------------------------------------


def reference_encoder(family: str):
    """str -> ids with the family's own tokenizer library, special tokens written as text."""
    spec = FAMILIES[family]
    specials = spec["special_ids"]
    if family == "mistral":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(SHARED_TOKENIZERS / spec["tokenizer"]))
        # mistral-common (v3): text segments are encoded as sentencepiece encodes them alone.
        encode = lambda s: sp.encode(s.strip(" "))  # noqa: E731
    else:
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        enc = tiktoken.Encoding(
            family,
            pat_str=spec["pattern"],
            mergeable_ranks=load_tiktoken_bpe(str(SHARED_TOKENIZERS / spec["tokenizer"])),
            special_tokens={},
        )
        encode = enc.encode_ordinary
    pattern = "(" + "|".join(re.escape(t) for t in specials) + ")"

    def run(text: str) -> list[int]:
        ids = []
        for piece in re.split(pattern, text):
            if piece in specials:
                ids.append(specials[piece])
            elif piece:
                ids.extend(encode(piece))
        return ids

    return run


def documented_format(family: str, prompt: str, response: str | None) -> str:
    """The family's documented chat format, written out by hand."""
    if family == "qwen2.5":
        s = (
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            f"assistant.<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n"
        )
        return s + ("<|im_start|>assistant\n" if response is None else
                    f"<|im_start|>assistant\n{response}<|im_end|>\n")  # fmt: skip
    if family == "llama3":
        s = (
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge "
            "Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user"
            f"<|end_header_id|>\n\n{prompt}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        )
        return s if response is None else s + f"{response}<|eot_id|>"
    s = f"<s>[INST] {prompt}[/INST]"
    return s if response is None else s + f" {response}</s>"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tokenizer_template_and_response_boundary(real, family):
    """The converted tokenizer, the chat template and the response-boundary rule, on zh/ko/sw/de
    text, against the family's own tokenizer library and the documented chat format."""
    from clo_mlx.tokens import encode_pair, prompt_ids

    _, tok = cached("mlx", real[family]["hf5"])
    ref = reference_encoder(family)
    for lang in ("zh", "ko", "sw", "de"):
        for prompt, response in zip(texts("en"), texts(lang), strict=True):
            assert tok.encode(response, add_special_tokens=False) == ref(response)
            ids, start = encode_pair(tok, prompt, response)
            assert ids == ref(documented_format(family, prompt, response))
            assert prompt_ids(tok, prompt) == ref(documented_format(family, prompt, None))
            # The response tokens are the answer's own tokens and the end-of-turn tokens.
            tail = {"qwen2.5": "<|im_end|>\n", "llama3": "<|eot_id|>", "mistral": "</s>"}[family]
            assert ids[start:] == ref(response + tail)
            assert tok.decode(ids[start:], skip_special_tokens=True).strip() == response
    if family == "mistral":
        # SentencePiece: the answer after [/INST] starts with a leading-space piece; it belongs
        # to the response, and the prompt ends with the [/INST] control token (id 4).
        ids, start = encode_pair(tok, "Habari?", "Nzuri sana.")
        assert ids[start - 1] == 4 and ids[start:] == ref("Nzuri sana.") + [2]
        assert tok.convert_ids_to_tokens(ids[start]).startswith("▁")


def torch_logps(path: Path, ids: list[int], start: int) -> float:
    import torch

    with torch.no_grad():
        logits = cached("torch", path)(torch.tensor([ids])).logits[0].double()
    lp = torch.log_softmax(logits, -1)[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    return float(lp[start - 1 :].sum())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_score_matches_transformers(real, family, tmp_path):
    """`score` (transformers-5-style config) vs transformers on the same weights and ids."""
    from clo_mlx.eval.score import score_file

    path = real[family]["hf5"]
    rows = [{"prompt": p, "chosen": c, "rejected": r}
            for p, c, r in zip(texts("en", 2), texts("sw", 2), texts("zh", 2), strict=True)]  # fmt: skip
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    scores = score_file(str(path), data, tmp_path / "scores.jsonl")
    hf_tok = cached("hf_tok", path)
    for row, s in zip(rows, scores, strict=True):
        for side in ("chosen", "rejected"):
            msgs = [{"role": "user", "content": row["prompt"]}]
            prefix = hf_tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=False)
            msgs.append({"role": "assistant", "content": row[side]})
            ids = hf_tok.apply_chat_template(msgs, return_dict=False)
            start = next(
                i for i, (a, b) in enumerate(zip(prefix + [-1], ids, strict=False)) if a != b
            )
            ref = torch_logps(path, ids, start)
            assert s[f"{side}_tokens"] == len(ids) - start
            assert abs(s[f"{side}_logp"] - ref) / abs(ref) < 1e-4, (side, s, ref)
            print(f"MEASURED score {family} rel {abs(s[f'{side}_logp'] - ref) / abs(ref):.1e}")


@pytest.mark.parametrize("family,style", CASES)
def test_both_config_styles_give_transformers_logits(real, family, style):
    """Each style as clo-mlx loads it vs transformers; plain mlx_lm.load misreads the
    transformers-5 style for Llama (rope_type llama3) and Mistral (rope_theta 1e6)."""
    from mlx_lm.utils import load_model as mlx_lm_load_model

    from clo_mlx.models import load_mlx_model

    path = real[family][style]
    _, tok = cached("mlx", real[family]["hf5"])
    ids = tok.encode(" ".join(texts("ko", 2) + texts("de", 1)))[:48]
    ref = torch_logits(path, ids)
    model, _ = load_mlx_model(path)
    d = np.abs(mlx_logits(model, ids) - ref).max()
    assert d < 1e-4, d
    plain, _ = mlx_lm_load_model(path)
    d_plain = np.abs(mlx_logits(plain, ids) - ref).max()
    print(f"MEASURED logits {family} {style} clo-mlx {d:.1e} plain-mlx_lm {d_plain:.1e}")
    if style == "hf5" and family != "qwen2.5":  # Qwen's 1e6 happens to be mlx-lm's default
        assert d_plain > 1e-2, d_plain
    else:
        assert d_plain < 1e-4, d_plain


def mlx_logits(model, ids) -> np.ndarray:
    from clo_mlx.models import cast_floats

    cast_floats(model, mx.float32)  # the checkpoints are bf16; compare in fp32
    return np.array(model(mx.array([ids]))[0].astype(mx.float32))


def torch_logits(path: Path, ids) -> np.ndarray:
    import torch

    with torch.no_grad():
        return cached("torch", path)(torch.tensor([ids])).logits[0].float().numpy()


def with_config(src: Path, dst: Path, edit) -> Path:
    """A copy of the model folder `src` (files linked) with config.json edited by `edit`."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "config.json":
            (dst / f.name).symlink_to(f)
    config = json.loads((src / "config.json").read_text())
    edit(config)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


ROPE_VARIANTS = {
    "linear": ({"rope_type": "linear", "factor": 2.0}, {}),
    # max_position_embeddings below the sequence length, so the dynamic scaling is active
    "dynamic": ({"rope_type": "dynamic", "factor": 2.0}, {"max_position_embeddings": 24}),
    "yarn": (
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
        {"max_position_embeddings": 64},
    ),
    "yarn-mscale": (
        {
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 16,
            "mscale": 0.8,
            "mscale_all_dim": 0.5,
            "beta_fast": 16,
            "beta_slow": 2,
        },
        {"max_position_embeddings": 64},
    ),  # fmt: skip
    "default-theta": ({"rope_type": "default"}, {}),  # no rope_theta anywhere: 10000
}


def rope_config(variant: str, style: str):
    scaling, extra = ROPE_VARIANTS[variant]
    theta = None if variant == "default-theta" else 250000.0

    def edit(config):
        config.pop("rope_parameters", None)
        config.update(extra)
        if style == "hf5":
            config["rope_parameters"] = {**scaling, **({"rope_theta": theta} if theta else {})}
        else:
            config["rope_scaling"] = scaling
            if theta:
                config["rope_theta"] = theta

    return edit


@pytest.mark.parametrize("variant", list(ROPE_VARIANTS))
def test_rope_types_match_transformers(real, tmp_path, variant):
    from clo_mlx.models import load_mlx_model, resolve_rope

    paths = {
        s: with_config(real["llama3"]["hf5"], tmp_path / s, rope_config(variant, s)) for s in STYLES
    }
    configs = [json.loads((p / "config.json").read_text()) for p in paths.values()]
    assert resolve_rope(configs[0]) == resolve_rope(configs[1])  # both styles, one RoPE
    _, tok = cached("mlx", real["llama3"]["hf5"])
    ids = tok.encode(" ".join(texts("de", 2)))[:40]
    model, _ = load_mlx_model(paths["hf5"])
    d = np.abs(mlx_logits(model, ids) - torch_logits(paths["hf5"], ids)).max()
    print(f"MEASURED rope {variant} {d:.1e}")
    assert d < 1e-4, d


@pytest.mark.parametrize(
    "edit,key",
    [
        (lambda c: c["rope_parameters"].update(rope_type="longrope"), "rope_type"),
        (lambda c: c.update(rope_theta=10000.0), "disagree"),
        (lambda c: c["rope_parameters"].update(partial_rotary_factor=0.5), "partial_rotary_factor"),
        (lambda c: c["rope_parameters"].pop("low_freq_factor"), "low_freq_factor"),
        (
            lambda c: c.update(
                rope_parameters={"rope_type": "yarn", "factor": 2.0, "attention_factor": 1.2}
            ),
            "attention_factor",
        ),
        (lambda c: c["rope_parameters"].update(typo_factor=2), "typo_factor"),
        (
            lambda c: c.update(rope_parameters={"full_attention": {"rope_type": "default"}}),
            "nested",
        ),
    ],  # fmt: skip
)
def test_unmappable_rope_is_an_error_naming_the_key(real, tmp_path, edit, key):
    from clo_mlx.models import load_mlx_model

    path = with_config(real["llama3"]["hf5"], tmp_path / "m", edit)
    with pytest.raises(ModelError, match=key):
        load_mlx_model(path)


# --- the workflow: train -> export-hf (PEFT, fused) -> fuse -> mlx_lm.load; eval ---------------


def parallel_rows(n: int, offset: int = 0) -> list[dict]:
    """Short en/sw rows cut from NTREX-128 (prompt: the first words, response: the next ones)."""
    rows = [json.loads(line) for line in NTREX.read_text(encoding="utf-8").splitlines()]
    out = []
    for r in rows[offset : offset + n]:
        en, sw = r["en"].split(), r["sw"].split()
        out.append({"id": r["line"], "lang": "sw",
                    "prompt_en": " ".join(en[:4]), "response_en": " ".join(en[4:9]),
                    "prompt_tgt": " ".join(sw[:4]), "response_tgt": " ".join(sw[4:9])})  # fmt: skip
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_train_export_fuse_eval(real, family, tmp_path):
    from conftest import train_config
    from mlx_lm import load as mlx_lm_load
    from peft import PeftModel

    from clo_mlx.eval.compare import EvalOptions, compare_models
    from clo_mlx.export.fuse import fuse
    from clo_mlx.export.peft import export_fused_hf, export_peft
    from clo_mlx.run import run_training

    path = real[family]["hf5"]
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", parallel_rows(2))
    write_jsonl(data / "valid.jsonl", parallel_rows(1, offset=10))
    cfg = train_config(path, data, tmp_path, iters=2, batch_size=2, learning_rate=1e-2,
                       steps_per_report=1, steps_per_eval=100, save_every=100,
                       lora_parameters={"rank": 2, "scale": 4.0, "dropout": 0.0, "keys": ATTN})  # fmt: skip
    prep, _ = run_training(cfg)
    ad = tmp_path / "ad"
    assert (ad / "adapters.safetensors").is_file()
    ids = prep.tokenizer.encode(texts("sw", 1)[0] + " " + texts("zh", 1)[0])[:40]
    prep.model.eval()
    ours = mlx_logits(prep.model, ids)
    base = cached("torch", path)
    assert np.abs(ours - torch_logits(path, ids)).max() > 1e-3  # training moved the model

    import torch

    export_peft(str(path), ad, tmp_path / "peft")
    peft_model = PeftModel.from_pretrained(
        __import__("transformers").AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch.float32
        ),
        str(tmp_path / "peft"),
    ).eval()
    with torch.no_grad():
        d_peft = np.abs(peft_model(torch.tensor([ids])).logits[0].numpy() - ours).max()
    assert d_peft < 1e-4, d_peft
    print(f"MEASURED peft {family} {d_peft:.1e}")

    # Fused outputs keep the base's bf16, so they are compared with each other (same weights):
    # mlx_lm.load on `fuse`'s output and transformers on `export-hf --fused` must agree.
    fuse(str(path), ad, tmp_path / "fused")
    export_fused_hf(str(path), ad, tmp_path / "fused_hf")
    for out in ("fused", "fused_hf"):
        saved = json.loads((tmp_path / out / "config.json").read_text())
        theta = FAMILIES[family]["rope"]["rope_theta"]
        assert saved["rope_theta"] == theta and saved["rope_parameters"]["rope_theta"] == theta
        scaling = FAMILIES[family]["rope"]["rope_scaling"]
        assert saved["rope_scaling"] == scaling
        assert saved["rope_parameters"]["rope_type"] == (scaling or {}).get("rope_type", "default")
    m, _ = mlx_lm_load(str(tmp_path / "fused"))
    m.update(
        __import__("mlx.utils", fromlist=["tree_map"]).tree_map(
            lambda a: a.astype(mx.float32), m.parameters()
        )
    )
    fused_mlx = mlx_logits(m, ids)
    fused_hf = torch_logits(tmp_path / "fused_hf", ids)
    print(f"MEASURED fused {family} mlx_lm-vs-hf {np.abs(fused_mlx - fused_hf).max():.1e}")
    assert np.abs(fused_mlx - fused_hf).max() < 1e-4
    assert np.abs(fused_mlx - ours).max() < 0.1 * np.abs(ours).max()  # bf16 rounding only
    del base

    opts = EvalOptions(
        fidelity_prompts=1, max_tokens=3, batch_size=2, cache_dir=str(tmp_path / "c")
    )
    results = compare_models(str(path), [ad], data=data / "valid.jsonl", opts=opts, names=["clo"])
    assert [r["name"] for r in results] == ["base", "clo"]
    assert {"rewards/accuracies", "ppl/sw", "fidelity/sw"} <= set(results[1]["metrics"])


# --- generation stops at every eos id; translate's llm backend --------------------------------


def scripted(path: Path, chain: list[int]):
    """The family's model rewired to answer greedily with the tokens `chain`, then repeat its
    last token: attention and MLP outputs are zeroed (the residual stream is the token's
    embedding), every token outside the chain embeds to one direction, chain token i to its own
    direction, and the (untied) output head maps each direction to the next chain token."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten, tree_unflatten
    from mlx_lm.utils import load_model as mlx_lm_load_model

    model, _ = mlx_lm_load_model(path)  # RoPE does not matter: attention outputs are zeroed
    vocab, dim = model.model.embed_tokens.weight.shape
    basis = np.eye(dim, dtype=np.float32)
    embed = np.tile(basis[0], (vocab, 1))
    head = np.zeros((vocab, dim), np.float32)
    head[chain[0]] = basis[0]
    for i, t in enumerate(chain):
        embed[t] = basis[i + 1]
        head[chain[min(i + 1, len(chain) - 1)]] += basis[i + 1]
    zeroed = [(k, mx.zeros_like(v)) for k, v in tree_flatten(model.parameters())
              if k.endswith(("o_proj.weight", "down_proj.weight"))]  # fmt: skip
    model.update(tree_unflatten(zeroed))
    model.model.embed_tokens.weight = mx.array(embed)
    model.args.tie_word_embeddings = False
    model.lm_head = nn.Linear(dim, vocab, bias=False)
    model.lm_head.weight = mx.array(head)
    from clo_mlx.models import cast_floats

    cast_floats(model, mx.float32)
    return model


def word_ids(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


EOS_CASES = [(f, e) for f in FAMILIES for e in FAMILIES[f]["eos_ids"]]


@pytest.mark.parametrize("family,eos", EOS_CASES)
def test_generation_stops_at_every_eos_id(real, family, eos):
    """generate / fidelity (batched greedy) end the answer at each eos id of the model:
    config.json and generation_config.json ids, Llama 3's <|eom_id|> included."""
    from clo_mlx.eval.fidelity import generate_responses

    path = real[family]["hf5"]
    _, tok = cached("mlx", path)
    assert set(FAMILIES[family]["eos_ids"]) <= set(tok.eos_token_ids)
    words = word_ids(tok, "Jambo rafiki")
    after = word_ids(tok, " zaidi")
    model = scripted(path, [*words, eos, *after])
    out = generate_responses(model, tok, ["Habari?", "你好"], max_tokens=12)
    assert out == ["Jambo rafiki"] * 2


@pytest.mark.parametrize("family", list(FAMILIES))
def test_translate_llm_backend_sends_the_template_and_strips_the_answer(real, family, monkeypatch):
    import clo_mlx.models
    from clo_mlx.translate.backends import LLM_PROMPT, llm_prompts, make_llm

    path = real[family]["hf5"]
    _, tok = cached("mlx", path)
    prompt = LLM_PROMPT.format(language="Swahili", text="Good morning, friend.")
    sent = llm_prompts(tok, ["Good morning, friend."], "sw")
    assert sent == [reference_encoder(family)(documented_format(family, prompt, None))]

    # A model that runs past its turn: the answer, then the next turn's special tokens and text.
    nxt = {"qwen2.5": "<|im_start|>", "llama3": "<|start_header_id|>", "mistral": "[INST]"}
    answer = word_ids(tok, "Habari za asubuhi, rafiki.")
    chain = [*answer, FAMILIES[family]["special_ids"][nxt[family]], *word_ids(tok, "assistant")]
    model = scripted(path, chain)
    monkeypatch.setattr(clo_mlx.models, "load_model", lambda *a, **k: (model, tok))
    translate = make_llm(path, "sw", batch_size=2, max_tokens=len(chain) + 2)
    assert translate(["Good morning, friend.", "Hi"]) == ["Habari za asubuhi, rafiki."] * 2


TF4_SCRIPT = """
import sys, json, numpy as np, torch, transformers
from transformers import AutoModelForCausalLM
assert transformers.__version__.startswith("4."), transformers.__version__
path, ids = sys.argv[1], json.loads(sys.argv[2])
m = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
with torch.no_grad():
    np.save(sys.argv[3], m(torch.tensor([ids])).logits[0].numpy())
"""


@pytest.mark.parametrize("family", list(FAMILIES))
def test_exported_config_reads_the_same_in_transformers_4(real, family, tmp_path):
    """Optional: CLO_MLX_TRANSFORMERS4=<folder with transformers 4.x, e.g. pip install --target>."""
    import os
    import subprocess
    import sys

    from clo_mlx.models import hf_rope_config, load_mlx_model

    tf4 = os.environ.get("CLO_MLX_TRANSFORMERS4")
    if not tf4:
        pytest.skip("set CLO_MLX_TRANSFORMERS4 to a folder holding transformers 4.x")
    src = real[family]["hf5"]
    path = with_config(src, tmp_path / "both", lambda c: c.update(hf_rope_config(dict(c))))
    ids = list(range(1000, 1040))
    env = {**os.environ, "PYTHONPATH": tf4}
    for p, same in ((path, True), (src, False)):
        out = tmp_path / "tf4.npy"
        subprocess.run([sys.executable, "-c", TF4_SCRIPT, str(p), json.dumps(ids), str(out)],
                       env=env, check=True)  # fmt: skip
        model, _ = load_mlx_model(src)
        d = np.abs(np.load(out) - mlx_logits(model, ids)).max()
        print(f"MEASURED transformers4 {family} {'both-styles' if same else 'hf5-only'} {d:.1e}")
        assert (d < 1e-4) if same else (d > 1e-2), d


def test_eos_ids_of_config_and_generation_config_count(real, tmp_path):
    """config.json lists <|eom_id|> but generation_config.json does not (mlx-lm alone would take
    only the latter's): generation stops at <|eom_id|> too."""
    from clo_mlx.eval.fidelity import generate_responses

    path = with_config(real["llama3"]["hf5"], tmp_path / "m", lambda c: None)
    (path / "generation_config.json").unlink()
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [128001, 128009]}))
    model, tok = load_model(str(path))
    assert {128001, 128008, 128009} <= set(tok.eos_token_ids)
    words = word_ids(tok, "Jambo rafiki")
    model = scripted(path, [*words, 128008, *word_ids(tok, " zaidi")])
    assert generate_responses(model, tok, ["Habari?"], max_tokens=12) == ["Jambo rafiki"]


def test_doctor_describes_a_real_model(real):
    from clo_mlx.doctor import compare_with_transformers, describe_model

    info = describe_model(str(real["llama3"]["hf5"]))
    assert info["model_type"] == "llama" and info["vocab_size"] == 128256
    assert info["rope_config_style"].startswith("rope_parameters")
    assert info["rope_theta"] == 500000.0 and info["rope_scaling"]["rope_type"] == "llama3"
    assert info["stored_dtypes"] == {"BF16": info["stored_values"]}
    assert info["eos"] == [
        (128001, "<|end_of_text|>"),
        (128008, "<|eom_id|>"),
        (128009, "<|eot_id|>"),
    ]
    assert info["example_response"] == "Nairobi is the capital of Kenya.<|eot_id|>"
    assert info["example_prompt"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    d = compare_with_transformers(info["path"], info["_model"], info["_ids"])
    assert d < 1e-4, d
