"""Fast-BLAS detection and re-exec (clo_mlx/blas.py) and `clo-mlx doctor`."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clo_mlx import blas
from clo_mlx.blas import Facts, Probe, decide

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


# Found by the test itself (not by blas.find_candidates): Debian/Ubuntu's and Fedora's OpenBLAS.
SYSTEM_OPENBLAS = [
    p
    for p in [
        *sorted(glob.glob("/usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0")),
        "/usr/lib64/libopenblasp.so.0",
    ]
    if os.path.exists(p)
]


def bundled_reference_blas() -> list[str]:
    """mlx-cpu's own reference BLAS files (`site-packages/mlx_cpu.libs/libblas*`)."""
    import mlx

    site = Path(next(iter(mlx.__path__))).parent
    return [os.path.realpath(p) for p in glob.glob(str(site / "mlx_cpu.libs" / "libblas*"))]


CHILD = """
import os, sys
import numpy as np
from clo_mlx.blas import ensure_fast_blas, active_blas
ensure_fast_blas()
import mlx.core as mx
a = np.random.default_rng(0).standard_normal((50, 70)).astype(np.float32)
b = np.random.default_rng(1).standard_normal((70, 30)).astype(np.float32)
err = float(np.abs(np.array(mx.array(a) @ mx.array(b)) - a @ b).max())
print("ACTIVE", os.path.realpath(active_blas()))
print("ERR", err)
lib = os.environ.get("CLO_MLX_BLAS")
print("MAPPED", bool(lib) and os.path.realpath(lib) in open("/proc/self/maps").read())
"""


def _child_output(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)


def _run(code_or_args, tmp_path, **env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLO_MLX")}
    env.pop("LD_PRELOAD", None)
    env["XDG_CACHE_HOME"] = str(tmp_path)
    env.update(env_extra)
    args = code_or_args if isinstance(code_or_args, list) else ["-c", code_or_args]
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


NEEDS_OPENBLAS = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and SYSTEM_OPENBLAS and bundled_reference_blas()),
    reason="needs Linux, mlx-cpu's reference BLAS and a system OpenBLAS "
    "(apt-get install libopenblas0-pthread)",
)


@NEEDS_OPENBLAS
def test_ensure_fast_blas_reexecs_with_an_installed_openblas(tmp_path):
    lib = SYSTEM_OPENBLAS[0]
    out = _child_output(proc := _run(CHILD, tmp_path, CLO_MLX_BLAS=lib))
    assert float(out["ERR"]) < 1e-3
    assert out["MAPPED"] == "True" and out["ACTIVE"] == os.path.realpath(lib)
    assert f"using OpenBLAS {lib}" in proc.stderr
    # Without the override it finds an OpenBLAS by itself (this one, or the linux-fast wheel's).
    # A fresh cache: the line is shown once per library and machine.
    out = _child_output(proc := _run(CHILD, tmp_path / "fresh"))
    assert "using OpenBLAS" in proc.stderr and float(out["ERR"]) < 1e-3
    assert out["ACTIVE"] not in bundled_reference_blas()
    assert "openblas" in Path(out["ACTIVE"]).name


@pytest.mark.skipif(not bundled_reference_blas(), reason="mlx here has no reference BLAS")
@LINUX_ONLY
def test_a_broken_library_leaves_the_reference_blas(tmp_path):
    broken = tmp_path / "libopenblas.so.0"
    broken.write_bytes(b"not an ELF file")
    out = _child_output(proc := _run(CHILD, tmp_path, CLO_MLX_BLAS=str(broken)))
    assert float(out["ERR"]) < 1e-3
    assert out["MAPPED"] == "False" and out["ACTIVE"] in bundled_reference_blas()
    assert "slow reference BLAS" in proc.stderr


@LINUX_ONLY
def test_opt_out_keeps_the_reference_blas_quietly(tmp_path):
    if blas.reference_blas_path() is None:
        pytest.skip("mlx here does not bundle the reference BLAS")
    proc = _run(CHILD, tmp_path, CLO_MLX_NO_FAST_BLAS="1")
    assert proc.returncode == 0, proc.stderr
    assert "ACTIVE " + blas.reference_blas_path() in proc.stdout
    assert "clo-mlx:" not in proc.stderr


def _doctor(tmp_path, **env) -> dict:
    # `python -m cli.main` would import cli.main twice (as __main__ and as cli.main).
    args = ["-c", "from cli.main import main; main()", "doctor", "--matmul-size", "128"]
    proc = _run(args, tmp_path, **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(
        (k.strip(), v.strip()) for k, v in (ln.split(":", 1) for ln in proc.stdout.splitlines())
    )


def test_doctor_reports_backend_and_blas(tmp_path):
    lines = _doctor(tmp_path)
    assert lines["backend"] in ("cpu", "metal", "cuda")
    assert float(lines["fp32 matmul"].split()[0]) > 0
    if sys.platform == "darwin":
        assert lines["blas"] == "Accelerate (macOS)"


@NEEDS_OPENBLAS
def test_doctor_names_the_blas_in_use(tmp_path):
    lib = SYSTEM_OPENBLAS[0]
    lines = _doctor(tmp_path, CLO_MLX_BLAS=lib)
    assert lines["blas"] == f"{os.path.realpath(lib)} [optimized]"
    assert "MALLOC_TOP_PAD_=268435456" in lines["malloc env"]  # the documented setting
    lines = _doctor(tmp_path, CLO_MLX_NO_FAST_BLAS="1")
    assert lines["blas"].endswith("[reference (slow)]")
    assert os.path.realpath(lines["blas"].split(" [")[0]) in bundled_reference_blas()


def test_only_computing_commands_look_for_a_blas():
    from cli.main import computes

    assert not computes([]) and not computes(["--help"]) and not computes(["train", "--help"])
    assert not computes(["data", "oasst", "--input", "x"])
    assert computes(["train", "--config", "c.yaml"]) and computes(["doctor"])


@LINUX_ONLY
def test_help_looks_for_no_blas(tmp_path):
    for args in (["--help"], ["train", "--help"]):
        proc = _run(["-c", "from cli.main import main; main()", *args], tmp_path)
        assert proc.returncode == 0 and "BLAS" not in proc.stderr, proc.stderr
    assert not (tmp_path / "clo-mlx" / "blas-probe.json").exists()  # no probe ran


@NEEDS_OPENBLAS
def test_the_openblas_line_is_shown_once(tmp_path):
    doctor = ["-c", "from cli.main import main; main()", "doctor", "--matmul-size", "64"]
    lib = SYSTEM_OPENBLAS[0]
    first = _run(doctor, tmp_path, CLO_MLX_BLAS=lib)
    second = _run(doctor, tmp_path, CLO_MLX_BLAS=lib)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stderr.count("using OpenBLAS") == 1
    assert "using OpenBLAS" not in second.stderr
    assert "[optimized]" in second.stdout  # still re-executed with it


@NEEDS_OPENBLAS
def test_the_tests_run_with_openblas_like_the_cli(tmp_path):
    """conftest.py re-executes `python -m pytest` with the OpenBLAS the CLI would preload (the
    in-process training tests are BLAS-bound): a test sees it mapped."""
    test = tmp_path / "test_which_blas.py"
    test.write_text(
        "from clo_mlx.blas import active_blas\n"
        "def test_blas():\n"
        "    print('ACTIVE', active_blas())\n"
    )
    (tmp_path / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    proc = _run(["-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", str(test)], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    active = next(ln.split()[-1] for ln in proc.stdout.splitlines() if "ACTIVE" in ln)
    assert "openblas" in Path(active).name and active not in bundled_reference_blas()
    assert proc.stdout.count("passed") == 1  # one session: the re-exec came before any output


@pytest.mark.reference_blas
def test_a_reference_blas_test_runs_on_the_reference_blas():
    """conftest.py runs a test marked `reference_blas` in a child on mlx-cpu's own BLAS while
    the test process runs with OpenBLAS."""
    if blas.reference_blas_path() is None:
        pytest.skip("mlx here does not bundle the reference BLAS")
    assert blas.is_reference(blas.active_blas()), blas.active_blas()
