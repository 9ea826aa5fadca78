"""Tiny models in Hugging Face layout, built offline (tests, benchmarks, the demo).

A tiny model is a directory with `config.json`, `model.safetensors` (HF tensor names, fp32),
`tokenizer.json` (byte-level BPE trained here on the given text), `tokenizer_config.json`
(with a ChatML chat template) and `special_tokens_map.json`. `mlx_lm.load` and
`transformers.AutoModelForCausalLM` both open it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

DEFAULT_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Mbweha mwepesi wa kahawia anaruka juu ya mbwa mvivu.",
    "How many legs does a spider have? A spider has eight legs.",
    "Wie viele Beine hat eine Spinne? Eine Spinne hat acht Beine.",
    "Buibui ana miguu mingapi? Buibui ana miguu minane.",
    "Write a short list of three colours: red, green, blue.",
    "Schreibe eine kurze Liste mit drei Farben: rot, grün, blau.",
    "Andika orodha fupi ya rangi tatu: nyekundu, kijani, bluu.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 100 2025.",
]


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path) -> int:
    """Train a byte-level BPE on `texts`, save HF tokenizer files in `out_dir`; return its size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHATML_TEMPLATE,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    special = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return tok.get_vocab_size()


def model_config(
    arch: str = "llama",
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    tie_word_embeddings: bool = False,
    max_position_embeddings: int = 2048,
) -> dict:
    """A Hugging Face `config.json` for a tiny Llama or Qwen2 model."""
    if arch not in ("llama", "qwen2"):
        raise ValueError(f"arch must be 'llama' or 'qwen2', got {arch!r}")
    config = {
        "architectures": ["LlamaForCausalLM" if arch == "llama" else "Qwen2ForCausalLM"],
        "model_type": arch,
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": max_position_embeddings,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tie_word_embeddings,
        "torch_dtype": "float32",
        "bos_token_id": None,
        "eos_token_id": 2,
        "pad_token_id": 0,
    }
    if arch == "llama":
        config.update({"attention_bias": False, "mlp_bias": False})
    else:
        config.update({"use_sliding_window": False, "sliding_window": None})
    return config


def random_weights(config: dict, seed: int = 0, std: float = 0.02) -> dict[str, np.ndarray]:
    """Random fp32 weights with Hugging Face tensor names for `config`."""
    rng = np.random.default_rng(seed)
    h = config["hidden_size"]
    n_heads, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = h // n_heads
    inter, vocab = config["intermediate_size"], config["vocab_size"]

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    w: dict[str, np.ndarray] = {"model.embed_tokens.weight": normal(vocab, h)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = normal(n_heads * head_dim, h)
        w[p + "self_attn.k_proj.weight"] = normal(n_kv * head_dim, h)
        w[p + "self_attn.v_proj.weight"] = normal(n_kv * head_dim, h)
        w[p + "self_attn.o_proj.weight"] = normal(h, n_heads * head_dim)
        if config["model_type"] == "qwen2":
            w[p + "self_attn.q_proj.bias"] = normal(n_heads * head_dim)
            w[p + "self_attn.k_proj.bias"] = normal(n_kv * head_dim)
            w[p + "self_attn.v_proj.bias"] = normal(n_kv * head_dim)
        w[p + "mlp.gate_proj.weight"] = normal(inter, h)
        w[p + "mlp.up_proj.weight"] = normal(inter, h)
        w[p + "mlp.down_proj.weight"] = normal(h, inter)
        w[p + "input_layernorm.weight"] = (1 + normal(h)).astype(np.float32)
        w[p + "post_attention_layernorm.weight"] = (1 + normal(h)).astype(np.float32)
    w["model.norm.weight"] = (1 + normal(h)).astype(np.float32)
    if not config["tie_word_embeddings"]:
        w["lm_head.weight"] = normal(vocab, h)
    return w


def save_weights(weights: dict[str, np.ndarray], path: str | Path) -> None:
    """Save HF-named weights as safetensors with the metadata transformers expects."""
    import mlx.core as mx

    arrays = {k: mx.array(v) for k, v in weights.items()}
    mx.save_safetensors(str(path), arrays, metadata={"format": "pt"})


def build_tiny_model(
    out_dir: str | Path,
    arch: str = "llama",
    texts: Iterable[str] | None = None,
    vocab_size: int = 512,
    seed: int = 0,
    init_std: float = 0.02,
    **config_overrides,
) -> Path:
    """Build a tiny random model with a freshly trained tokenizer in `out_dir` (HF layout)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    actual_vocab = train_tokenizer(
        texts if texts is not None else DEFAULT_TEXT, vocab_size, out_dir
    )
    config = model_config(arch=arch, vocab_size=actual_vocab, **config_overrides)
    special_ids = json.loads((out_dir / "tokenizer.json").read_text())["added_tokens"]
    ids = {t["content"]: t["id"] for t in special_ids}
    config["eos_token_id"] = ids["<|im_end|>"]
    config["pad_token_id"] = ids["<|endoftext|>"]
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    save_weights(random_weights(config, seed=seed, std=init_std), out_dir / "model.safetensors")
    return out_dir
