"""Fast-BLAS detection and re-exec (clo_mlx/blas.py) and `clo-mlx doctor`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clo_mlx import blas
from clo_mlx.blas import Decision, Facts, Probe, decide

REF = "/site/mlx_cpu.libs/libblas-abc.so.3"
LIB_A = "/opt/a/libopenblas.so.0"
LIB_B = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"
ROOT = Path(__file__).resolve().parents[1]
LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux-only feature")


def facts(**kw) -> Facts:
    base = dict(
        platform="linux",
        mlx_distributions=frozenset({"mlx", "mlx-cpu"}),
        reference_blas=REF,
        env={},
        candidates=(LIB_A, LIB_B),
    )
    base.update(kw)
    return Facts(**base)


class Recorder:
    """A probe with canned results that records which libraries it was asked about."""

    def __init__(self, results: dict[str, Probe]):
        self.results, self.calls = results, []

    def __call__(self, lib: str) -> Probe:
        self.calls.append(lib)
        return self.results[lib]


def never(lib: str) -> Probe:
    raise AssertionError(f"probe must not run here (asked about {lib})")


@pytest.mark.parametrize(
    "kw, action, reason_part",
    [
        (dict(platform="darwin", reference_blas=None), "fast", "platform BLAS"),
        (dict(mlx_distributions=frozenset({"mlx", "mlx-cuda-12"})), "fast", "CUDA"),
        (dict(reference_blas=None), "fast", "does not bundle"),
        (dict(env={"CLO_MLX_NO_FAST_BLAS": "1"}), "slow", "turned off"),
        (dict(env={"CLO_MLX_BLAS_REEXEC": LIB_A}), "fast", "already re-executed"),
        (dict(env={"LD_PRELOAD": "/x/libfoo.so:" + LIB_B}), "fast", "already in LD_PRELOAD"),
    ],
)
def test_decide_without_probing(kw, action, reason_part):
    d = decide(facts(**kw), never)
    assert d.action == action and reason_part in d.reason
    assert d.env == {}


def test_opt_out_values():
    # "0"/"false" do not opt out: the first candidate is used.
    for value in ("0", "false", ""):
        d = decide(facts(env={"CLO_MLX_NO_FAST_BLAS": value}), lambda lib: Probe(True))
        assert d.action == "reexec" and d.library == LIB_A


def test_decide_skips_a_broken_library_and_builds_the_env():
    probe = Recorder({LIB_A: Probe(False, error="crashed with signal 4"), LIB_B: Probe(True)})
    env = {"LD_PRELOAD": "/x/libjemalloc.so", "MALLOC_TOP_PAD_": "1"}
    d = decide(facts(env=env), probe)
    assert probe.calls == [LIB_A, LIB_B]
    assert d.action == "reexec" and d.library == LIB_B
    assert d.env["LD_PRELOAD"] == LIB_B + ":/x/libjemalloc.so"
    assert d.env["CLO_MLX_BLAS_REEXEC"] == LIB_B
    assert d.env["MALLOC_TOP_PAD_"] == "1"  # the user's own setting wins
    assert d.env["MALLOC_MMAP_THRESHOLD_"] == blas.MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]


def test_decide_passes_the_probe_environment_on():
    probe = Recorder({LIB_A: Probe(True, {"LD_LIBRARY_PATH": "/cache/shim"})})
    d = decide(facts(env={"LD_LIBRARY_PATH": "/opt/lib"}), probe)
    assert d.env["LD_LIBRARY_PATH"] == "/cache/shim:/opt/lib"


def test_decide_slow_when_nothing_works():
    d = decide(facts(candidates=()), never)
    assert d.action == "slow" and "linux-fast" in d.reason
    probe = Recorder({LIB_A: Probe(False, error="boom"), LIB_B: Probe(False, error="bang")})
    d = decide(facts(), probe)
    assert d.action == "slow" and "boom" in d.reason and "bang" in d.reason
    assert d.library is None


def test_override_is_the_only_candidate():
    assert blas.find_candidates({"CLO_MLX_BLAS": "/my/libblas.so"}) == ("/my/libblas.so",)


def test_cached_probe_remembers_and_retries_with_gfortran_shim(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    lib = tmp_path / "libopenblas.so.0"
    lib.write_bytes(b"x")
    refdir = tmp_path / "mlx_cpu.libs"
    refdir.mkdir()
    (refdir / "libblas-1.so.3").write_bytes(b"")
    (refdir / "libgfortran-2.so.5.0.0").write_bytes(b"")
    calls = []

    def fake_run_probe(path, extra_env=None, timeout=120):
        calls.append(dict(extra_env or {}))
        if not extra_env:
            return Probe(False, error="libgfortran.so.5: cannot open shared object file")
        return Probe(True, dict(extra_env))

    monkeypatch.setattr(blas, "run_probe", fake_run_probe)
    first = blas.cached_probe(str(lib), str(refdir / "libblas-1.so.3"))
    shim = Path(first.extra_env["LD_LIBRARY_PATH"])
    assert first.ok and len(calls) == 2
    assert os.path.realpath(shim / "libgfortran.so.5") == str(refdir / "libgfortran-2.so.5.0.0")
    again = blas.cached_probe(str(lib), str(refdir / "libblas-1.so.3"))
    assert again == first and len(calls) == 2  # from the cache
    cache = json.loads(blas.cache_path().read_text())
    assert len(cache) == 1 and next(iter(cache.values()))["ok"] is True
    lib.write_bytes(b"changed")  # a different library file is probed again
    blas.cached_probe(str(lib), str(refdir / "libblas-1.so.3"))
    assert len(calls) == 4


@LINUX_ONLY
def test_probe_rejects_a_library_that_is_not_there():
    result = blas.run_probe("/nonexistent/libopenblas.so.0")
    assert not result.ok and result.error


def _real_decision() -> Decision:
    f = blas.gather_facts({k: v for k, v in os.environ.items() if not k.startswith("CLO_MLX")})
    return decide(f, lambda lib: blas.cached_probe(lib, f.reference_blas))


CHILD = """
import numpy as np
from clo_mlx.blas import ensure_fast_blas, active_blas
ensure_fast_blas()
import mlx.core as mx
a = np.random.default_rng(0).standard_normal((50, 70)).astype(np.float32)
b = np.random.default_rng(1).standard_normal((70, 30)).astype(np.float32)
err = float(np.abs(np.array(mx.array(a) @ mx.array(b)) - a @ b).max())
print("ACTIVE", active_blas())
print("ERR", err)
"""


def _run(code_or_args, tmp_path, **env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLO_MLX")}
    env.pop("LD_PRELOAD", None)
    env["XDG_CACHE_HOME"] = str(tmp_path)
    env.update(env_extra)
    args = code_or_args if isinstance(code_or_args, list) else ["-c", code_or_args]
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@LINUX_ONLY
def test_ensure_fast_blas_reexecs_when_an_openblas_works(tmp_path):
    decision = _real_decision()
    proc = _run(CHILD, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert float(out["ERR"]) < 1e-3
    if decision.action == "reexec":
        assert os.path.realpath(out["ACTIVE"]) == os.path.realpath(decision.library)
        assert "using OpenBLAS" in proc.stderr
    elif decision.action == "slow":
        assert blas.is_reference(out["ACTIVE"])
        assert "slow reference BLAS" in proc.stderr
    else:
        pytest.skip(f"nothing to do on this machine: {decision.reason}")


@LINUX_ONLY
def test_opt_out_keeps_the_reference_blas_quietly(tmp_path):
    if blas.reference_blas_path() is None:
        pytest.skip("mlx here does not bundle the reference BLAS")
    proc = _run(CHILD, tmp_path, CLO_MLX_NO_FAST_BLAS="1")
    assert proc.returncode == 0, proc.stderr
    assert "ACTIVE " + blas.reference_blas_path() in proc.stdout
    assert "clo-mlx:" not in proc.stderr


def test_doctor_reports_backend_and_blas(tmp_path):
    # `python -m cli.main` would import cli.main twice (as __main__ and as cli.main).
    args = ["-c", "from cli.main import main; main()", "doctor", "--matmul-size", "128"]
    proc = _run(args, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = dict(
        (k.strip(), v.strip()) for k, v in (ln.split(":", 1) for ln in proc.stdout.splitlines())
    )
    assert lines["backend"] in ("cpu", "metal", "cuda")
    assert float(lines["fp32 matmul"].split()[0]) > 0
    if sys.platform.startswith("linux"):
        decision = _real_decision()
        if decision.action == "reexec":
            assert lines["blas"].endswith("[optimized]")
            assert os.path.realpath(lines["blas"].split(" [")[0]) == os.path.realpath(
                decision.library
            )
            assert "MALLOC_TOP_PAD_=" in lines["malloc env"]
        elif decision.action == "slow":
            assert lines["blas"].endswith("[reference (slow)]")
    elif sys.platform == "darwin":
        assert lines["blas"] == "Accelerate (macOS)"


def test_only_computing_commands_look_for_a_blas():
    from cli.main import computes

    assert not computes([]) and not computes(["--help"]) and not computes(["train", "--help"])
    assert not computes(["data", "oasst", "--input", "x"])
    assert computes(["train", "--config", "c.yaml"]) and computes(["doctor"])


@LINUX_ONLY
def test_the_openblas_line_is_shown_once_and_never_for_help(tmp_path):
    cli = ["-c", "from cli.main import main; main()"]
    for args in (["--help"], ["train", "--help"]):
        proc = _run([*cli, *args], tmp_path)
        assert proc.returncode == 0 and "BLAS" not in proc.stderr, proc.stderr
    assert not (tmp_path / "clo-mlx" / "blas-probe.json").exists()  # no probe ran
    if _real_decision().action != "reexec":
        pytest.skip("no OpenBLAS to re-execute with on this machine")
    doctor = [*cli, "doctor", "--matmul-size", "64"]
    first, second = _run(doctor, tmp_path), _run(doctor, tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stderr.count("using OpenBLAS") == 1
    assert "using OpenBLAS" not in second.stderr
    assert "[optimized]" in second.stdout  # still re-executed with it
