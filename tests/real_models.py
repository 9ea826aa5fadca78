"""Tiny random models with the real Qwen2.5 / Llama 3.x / Mistral v0.3 tokenizers (test fixtures).

The vocabularies come from ../shared/data/tokenizers (see ../shared/data/DATA.md); the special
tokens, their ids, the config values that matter (tied embeddings, Qwen2's q/k/v bias, RoPE, eos
lists) are the families' public ones. The chat templates are written here from each family's
documented chat format. Weights are random (transformers' init, fixed seed), stored in bf16 as the
public checkpoints are; the layers are tiny (hidden size 64, 2 layers) so the tests stay fast
although the vocabularies are large.

Each family is saved in two config styles from the same weights:
- `hf5`: as transformers 5 saves it (`rope_parameters`, no top-level `rope_theta`/`rope_scaling`);
- `hf4`: top-level `rope_theta` / `rope_scaling`, as transformers 4 saves it and the public
  Hub checkpoints have it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

SHARED_TOKENIZERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tokenizers"
BUILD_VERSION = "1"  # bump when the fixtures change

# GPT-4-style pre-tokenizer patterns: Qwen splits digits singly, Llama 3 in groups of up to 3.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
# ChatML with Qwen2.5's default system prompt when the messages have none.
QWEN_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + QWEN_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Llama 3.1 / 3.2: BOS, a system block with the knowledge date, header tokens, <|eot_id|>.
LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}"
    "{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message + '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{- message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)
# Mistral v0.3: [INST] / [/INST] control tokens, the answer after a space, then </s>; a system
# message goes before the last user message; there is no generation prompt.
MISTRAL_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.last and system_message is defined %}"
    "{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST] ' + message['content'] + '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- ' ' + message['content'] | trim + eos_token }}"
    "{%- endif %}"
    "{%- endfor %}"
)


def _llama3_specials() -> list[str]:
    names = {
        0: "<|begin_of_text|>",
        1: "<|end_of_text|>",
        4: "<|finetune_right_pad_id|>",
        6: "<|start_header_id|>",
        7: "<|end_header_id|>",
        8: "<|eom_id|>",
        9: "<|eot_id|>",
        10: "<|python_tag|>",
    }
    out, reserved = [], 0
    for i in range(256):
        if i in names:
            out.append(names[i])
        else:
            out.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return out


LAYERS = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}  # fmt: skip

FAMILIES = {
    "qwen2.5": {
        "tokenizer": "qwen.tiktoken",
        "pattern": QWEN_PATTERN,
        "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "special_ids": {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645},
        "tokens": {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        "template": QWEN_TEMPLATE,
        "config": {
            "model_type": "qwen2",
            "architectures": ["Qwen2ForCausalLM"],
            "vocab_size": 151936,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True,
            "use_sliding_window": False,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
            "hidden_act": "silu",
        },
        "rope": {"rope_theta": 1000000.0, "rope_scaling": None},
        "generation": {"bos_token_id": 151643, "eos_token_id": [151645, 151643]},
        "eos_ids": [151645, 151643],
    },
    "llama3": {
        "tokenizer": "llama3.tiktoken",
        "pattern": LLAMA3_PATTERN,
        "specials": _llama3_specials(),
        "special_ids": {
            "<|begin_of_text|>": 128000,
            "<|end_of_text|>": 128001,
            "<|start_header_id|>": 128006,
            "<|end_header_id|>": 128007,
            "<|eom_id|>": 128008,
            "<|eot_id|>": 128009,
        },
        "tokens": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": None},
        "template": LLAMA3_TEMPLATE,
        "config": {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "vocab_size": 128256,
            "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": True,
            "attention_bias": False,
            "mlp_bias": False,
            "bos_token_id": 128000,
            "eos_token_id": [128001, 128008, 128009],
            "hidden_act": "silu",
        },
        "rope": {
            "rope_theta": 500000.0,
            "rope_scaling": {
                "factor": 32.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3",
            },
        },
        "generation": {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]},
        "eos_ids": [128001, 128008, 128009],
    },
    "mistral": {
        "tokenizer": "mistral-v3.model",
        "special_ids": {"<s>": 1, "</s>": 2, "[INST]": 3, "[/INST]": 4},
        "tokens": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
        "template": MISTRAL_TEMPLATE,
        "config": {
            "model_type": "mistral",
            "architectures": ["MistralForCausalLM"],
            "vocab_size": 32768,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
            "sliding_window": None,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu",
        },
        "rope": {"rope_theta": 1000000.0, "rope_scaling": None},
        "generation": {"bos_token_id": 1, "eos_token_id": 2},
        "eos_ids": [2],
    },
}


def shared_available() -> bool:
    return all((SHARED_TOKENIZERS / f["tokenizer"]).is_file() for f in FAMILIES.values())


def build_tokenizer(family: str, out: Path) -> None:
    """Save the family's Hugging Face tokenizer files (tokenizer.json, tokenizer_config.json)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    spec = FAMILIES[family]
    src = SHARED_TOKENIZERS / spec["tokenizer"]
    out.mkdir(parents=True, exist_ok=True)
    if family == "mistral":
        # As DATA.md says: tokenizer.model + a LlamaTokenizer config loads with AutoTokenizer;
        # [INST]/[/INST] are control pieces of the SentencePiece model, declared special here.
        tmp = Path(tempfile.mkdtemp(dir=out.parent))
        shutil.copy(src, tmp / "tokenizer.model")
        (tmp / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "LlamaTokenizer",
                    "legacy": False,
                    "add_bos_token": True,
                    "add_eos_token": False,
                    "extra_special_tokens": ["[INST]", "[/INST]"],
                    **spec["tokens"],
                }
            )
        )
        tok = AutoTokenizer.from_pretrained(tmp)
        shutil.rmtree(tmp)
    else:
        from tokenizers import AddedToken
        from transformers.convert_slow_tokenizer import TikTokenConverter

        raw = TikTokenConverter(vocab_file=str(src), pattern=spec["pattern"]).converted()
        raw.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t in spec["specials"]]
        )
        tok = PreTrainedTokenizerFast(tokenizer_object=raw, **spec["tokens"])
    tok.chat_template = spec["template"]
    tok.model_max_length = spec["config"]["max_position_embeddings"]
    tok.save_pretrained(out)
    for name, i in spec["special_ids"].items():
        assert tok.convert_tokens_to_ids(name) == i, (family, name, tok.convert_tokens_to_ids(name))


def _old_style(config: dict, rope: dict) -> dict:
    """The config with top-level rope_theta / rope_scaling (transformers 4 / Hub) instead of
    rope_parameters."""
    config = {k: v for k, v in config.items() if k != "rope_parameters"}
    config.update(rope)
    return config


def build_family(family: str, out: Path, seed: int = 0) -> dict[str, Path]:
    """{"hf5": folder, "hf4": folder}: the family's tiny model in both config styles."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = FAMILIES[family]
    tok_dir = out / "tokenizer"
    build_tokenizer(family, tok_dir)
    cfg = dict(spec["config"], **LAYERS)
    model_type = cfg.pop("model_type")
    rope = spec["rope"]
    cfg["rope_parameters"] = {"rope_type": "default", **(rope["rope_scaling"] or {}),
                              "rope_theta": rope["rope_theta"]}  # fmt: skip
    config = AutoConfig.for_model(model_type, **cfg)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # transformers' init (std 0.02) makes the logits nearly flat; larger weights make the
    # comparisons with transformers and between config styles meaningful.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.15 if "embed" in name or "lm_head" in name else 0.25)
    model = model.to(torch.bfloat16)
    hf5, hf4 = out / f"{family}-hf5", out / f"{family}-hf4"
    model.save_pretrained(hf5)
    for f in tok_dir.iterdir():
        shutil.copy(f, hf5 / f.name)
    (hf5 / "generation_config.json").write_text(json.dumps(spec["generation"], indent=2))
    saved = json.loads((hf5 / "config.json").read_text())
    assert "rope_parameters" in saved and "rope_theta" not in saved, saved
    hf4.mkdir()
    for f in hf5.iterdir():
        if f.name != "config.json":
            os.link(f, hf4 / f.name)  # same weights and tokenizer, only config.json differs
    (hf4 / "config.json").write_text(json.dumps(_old_style(saved, rope), indent=2))
    paths = {"hf5": hf5, "hf4": hf4}
    return paths


def _cache_key() -> str:
    h = hashlib.sha256(BUILD_VERSION.encode())
    h.update(Path(__file__).read_bytes())
    for spec in FAMILIES.values():
        st = (SHARED_TOKENIZERS / spec["tokenizer"]).stat()
        h.update(f"{spec['tokenizer']}:{st.st_size}".encode())
    return h.hexdigest()[:12]


def build_all(cache_root: Path) -> dict[str, dict[str, Path]]:
    """All families in both styles under `cache_root/<key>/`, built once (atomic rename)."""
    root = cache_root / _cache_key()
    if not (root / "done").is_file():
        cache_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_root))
        for i, family in enumerate(FAMILIES):
            build_family(family, tmp, seed=i)
        (tmp / "done").write_text("ok\n")
        try:
            os.replace(tmp, root)
        except OSError:  # built meanwhile by another session
            shutil.rmtree(tmp, ignore_errors=True)
    return {f: {s: root / f"{f}-{s}" for s in ("hf5", "hf4")} for f in FAMILIES}
