"""`clo-mlx doctor --model M`: what to know about a model folder before a long run on it.

Architecture, parameter count, dtype / quantization, vocabulary, RoPE as mlx-lm will compute it,
the chat template rendered on one example with the response tokens marked (the token convention
of `clo_mlx.tokens`), the end-of-sequence ids; and, when transformers and torch are installed,
one forward pass compared with transformers on the same weights.
"""

from __future__ import annotations

import math
from pathlib import Path

from .models import (
    ROPE_ARCHS,
    ModelError,
    load_model,
    read_config,
    resolve_model_path,
    resolve_rope,
    safetensors_header,
    weight_files,
)

EXAMPLE = ("What is the capital of Kenya?", "Nairobi is the capital of Kenya.")


def config_style(config: dict) -> str:
    """Which RoPE config style the config uses."""
    new = config.get("rope_parameters") is not None
    old = "rope_theta" in config or config.get("rope_scaling") is not None
    if new and old:
        return "both (rope_parameters and top-level rope_theta/rope_scaling)"
    if new:
        return "rope_parameters (as transformers >= 5 saves it)"
    if old:
        return "top-level rope_theta/rope_scaling (as transformers < 5 saves it)"
    return "none (transformers' default rope_theta)"


def weight_summary(path: Path) -> tuple[int, dict[str, int]]:
    """(number of stored values, {dtype: number of values}) from the safetensors headers."""
    total, by_dtype = 0, {}
    for f in weight_files(path):
        for name, info in safetensors_header(f).items():
            if name == "__metadata__":
                continue
            n = math.prod(info["shape"])
            total += n
            by_dtype[info["dtype"]] = by_dtype.get(info["dtype"], 0) + n
    return total, by_dtype


def describe_model(path_or_repo: str) -> dict:
    """The facts `doctor --model` prints; loads the model (errors are `ModelError`s)."""
    from mlx.utils import tree_flatten

    from .tokens import encode_pair, has_chat_template

    path = resolve_model_path(path_or_repo)
    config = read_config(path)
    model, tokenizer = load_model(str(path))
    if config.get("model_type") in ROPE_ARCHS:
        theta, scaling = resolve_rope(config, path / "config.json")
    else:  # mlx-lm reads this architecture's RoPE itself; not checked here
        theta, scaling = config.get("rope_theta"), config.get("rope_scaling")
    stored, dtypes = weight_summary(path)
    params = sum(v.size for _, v in tree_flatten(model.parameters()))
    quant = config.get("quantization") or config.get("quantization_config")
    prompt, response = EXAMPLE
    ids, start = encode_pair(tokenizer, prompt, response)
    eos = sorted(tokenizer.eos_token_ids)
    return {
        "path": str(path),
        "model_type": config.get("model_type"),
        "architectures": config.get("architectures"),
        "layers": config.get("num_hidden_layers"),
        "hidden_size": config.get("hidden_size"),
        "parameters": params,
        "stored_values": stored,
        "stored_dtypes": dtypes,
        "quantization": quant,
        "tie_word_embeddings": config.get("tie_word_embeddings"),
        "vocab_size": config.get("vocab_size"),
        "tokenizer_size": len(tokenizer.get_vocab()),
        "rope_config_style": config_style(config),
        "rope_theta": theta,
        "rope_scaling": scaling,
        "chat_template": has_chat_template(tokenizer),
        "example_prompt": tokenizer.decode(ids[:start]),
        "example_response": tokenizer.decode(ids[start:]),
        "example_tokens": (start, len(ids) - start),
        "eos": [(i, tokenizer.convert_ids_to_tokens(i)) for i in eos],
        "_model": model,
        "_ids": ids,
    }


def compare_with_transformers(path: str | Path, model, ids: list[int]) -> float:
    """max |logit difference| between `model` (MLX) and transformers on the same weights, fp32.

    Raises ImportError when transformers / torch are not installed.
    """
    import mlx.core as mx
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from .models import cast_floats

    try:
        hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    except Exception as e:  # transformers raises many kinds for models it cannot build
        raise ModelError(f"{path}: transformers cannot load this model: {e}") from e
    cast_floats(model, mx.float32)
    ours = np.array(model(mx.array([ids]))[0].astype(mx.float32))
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].float().numpy()
    return float(np.abs(ours - ref).max())
