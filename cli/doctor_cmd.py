"""`clo-mlx doctor`: which backend, device and BLAS MLX uses here, and how fast its matmul is;
with `--model M`, what to know about a model before a long run on it."""

from __future__ import annotations

import os
import platform
import sys

import typer


def doctor(
    matmul_size: int = typer.Option(1024, help="Size n of the n x n matmul that is timed."),
    bench: bool = typer.Option(True, help="Time an fp32 (and bf16) matmul (not with --model)."),
    model: str | None = typer.Option(
        None, "--model", help="Also check this model (local folder or cached HF repo id)."
    ),
    compare: bool = typer.Option(
        True, help="With --model: one forward pass compared with transformers, if installed."
    ),
) -> None:
    """Show MLX's backend, device and BLAS library, and the measured matmul GFLOP/s; with
    --model, the model's architecture, RoPE, chat template, eos ids (and a transformers check)."""
    from importlib.metadata import PackageNotFoundError, version

    import mlx.core as mx

    from clo_mlx import blas

    def line(key: str, value: object) -> None:
        typer.echo(f"{key + ':':<16}{value}")

    try:
        mlx_version = version("mlx")
    except PackageNotFoundError:
        mlx_version = getattr(mx, "__version__", "?")
    line("python", f"{platform.python_version()} ({sys.executable})")
    line("platform", f"{sys.platform} {platform.machine()}")
    line("mlx", mlx_version)
    if mx.metal.is_available():
        backend = "metal"
    elif hasattr(mx, "cuda") and mx.cuda.is_available():
        backend = "cuda"
    else:
        backend = "cpu"
    line("backend", backend)
    line("device", mx.default_device())
    if sys.platform.startswith("linux"):
        active = blas.active_blas()
        kind = "reference (slow)" if blas.is_reference(active) else "optimized"
        line("blas", f"{active} [{kind}]" if active else "unknown")
        loaded = [p for p in blas.loaded_blas_libraries() if p != active]
        line("also loaded", ", ".join(loaded) if loaded else "-")
        line("LD_PRELOAD", os.environ.get("LD_PRELOAD", "-"))
        malloc = [f"{k}={os.environ[k]}" for k in blas.MALLOC_ENV if k in os.environ]
        line("malloc env", " ".join(malloc) if malloc else "-")
        if os.environ.get(blas.OPT_OUT_ENV):
            line("fast blas", f"turned off by {blas.OPT_OUT_ENV}")
        elif blas.is_reference(active):
            line("hint", f"install an OpenBLAS: {blas.INSTALL_HINT}")
    elif sys.platform == "darwin":
        line("blas", "Accelerate (macOS)")
    if model is not None:
        model_report(model, compare, line)
    elif bench:
        n = matmul_size
        line("fp32 matmul", f"{blas.matmul_gflops(n, 'float32'):.1f} GFLOP/s ({n}x{n})")
        line("bf16 matmul", f"{blas.matmul_gflops(n, 'bfloat16', repeats=2):.1f} GFLOP/s ({n}x{n})")


def model_report(model: str, compare: bool, line) -> None:
    from clo_mlx.doctor import compare_with_transformers, describe_model

    info = describe_model(model)
    typer.echo("")
    line("model", info["path"])
    line("architecture", f"{info['model_type']} {info['architectures'] or ''}".strip())
    line("layers", f"{info['layers']} (hidden size {info['hidden_size']})")
    line("parameters", f"{info['parameters'] / 1e6:.2f}M in MLX")
    dtypes = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in info["stored_dtypes"].items())
    line("stored", dtypes)
    q = info["quantization"]
    line("quantization", f"{q.get('bits')}-bit, group size {q.get('group_size')}" if q else "-")
    line("tied embeds", info["tie_word_embeddings"])
    line("vocab", f"{info['vocab_size']} rows (tokenizer: {info['tokenizer_size']} tokens)")
    line("rope config", info["rope_config_style"])
    scaling = info["rope_scaling"] or "none"
    line("rope (mlx-lm)", f"theta {info['rope_theta']}, scaling {scaling}")
    line(
        "chat template", "yes" if info["chat_template"] else "no (plain User:/Assistant: fallback)"
    )
    n_prompt, n_resp = info["example_tokens"]
    typer.echo(
        f"example (response tokens between [[ ]]; {n_prompt} prompt + {n_resp} response tokens):"
    )
    typer.echo(f"{info['example_prompt']}[[{info['example_response']}]]")
    line("eos ids", ", ".join(f"{i} {t}" for i, t in info["eos"]))
    if not compare:
        return
    try:
        d = compare_with_transformers(info["path"], info["_model"], info["_ids"])
    except ImportError:
        line("transformers", "not installed: no comparison (pip install transformers torch)")
        return
    verdict = "same model" if d < 1e-3 else "DIFFERENT: check the config before training"
    line("transformers", f"max |d logit| {d:.2e} on the example, fp32 ({verdict})")
