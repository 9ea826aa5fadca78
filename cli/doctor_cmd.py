"""`clo-mlx doctor`: which backend, device and BLAS MLX uses here, and how fast its matmul is."""

from __future__ import annotations

import os
import platform
import sys

import typer

from cli.main import app


@app.command()
def doctor(
    matmul_size: int = typer.Option(1024, help="Size n of the n x n matmul that is timed."),
    bench: bool = typer.Option(True, help="Time an fp32 (and bf16) matmul."),
) -> None:
    """Show MLX's backend, device and BLAS library, and the measured matmul GFLOP/s."""
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
    if bench:
        n = matmul_size
        line("fp32 matmul", f"{blas.matmul_gflops(n, 'float32'):.1f} GFLOP/s ({n}x{n})")
        line("bf16 matmul", f"{blas.matmul_gflops(n, 'bfloat16', repeats=2):.1f} GFLOP/s ({n}x{n})")
