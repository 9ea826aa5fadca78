"""Fast BLAS for MLX on Linux CPUs, without user effort.

The `mlx-cpu` Linux wheel links a reference BLAS (fp32 matmul of a few GFLOP/s). Preloading an
OpenBLAS makes it 20-50x faster. `ensure_fast_blas()` (called first thing by the CLI) finds a
working OpenBLAS and re-executes the same command with it in `LD_PRELOAD` (plus glibc malloc
settings that save about 10% of a training step). It never re-executes on macOS (Accelerate) or
with the CUDA backend.

Where the library comes from, in order:
- `CLO_MLX_BLAS=/path/to/libopenblas.so.0` (an explicit choice);
- the `ngsolve-openblas` wheel (`pip install 'clo-mlx[linux-fast]'`): a DYNAMIC_ARCH OpenBLAS
  with plain `cblas_*` names; it needs `libgfortran.so.5`, taken from the system or else from the
  copy bundled in the `mlx-cpu` wheel;
- the system's OpenBLAS (Debian/Ubuntu `libopenblas0-pthread`, Fedora `openblas-threads`, ...);
- `cmeel-openblas` (built for AVX-512 only: the probe drops it on other CPUs).

Each candidate is first tried in a subprocess (a tiny matmul and matrix inverse), so a library
that crashes (e.g. "Illegal instruction") is skipped; results are cached per library and CPU in
`~/.cache/clo-mlx/blas-probe.json`. `CLO_MLX_NO_FAST_BLAS=1` turns all of this off.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

OPT_OUT_ENV = "CLO_MLX_NO_FAST_BLAS"
OVERRIDE_ENV = "CLO_MLX_BLAS"
MARKER_ENV = "CLO_MLX_BLAS_REEXEC"
# glibc malloc: keep freed buffers instead of returning them to the kernel at every step.
MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "4294967296",
    "MALLOC_TOP_PAD_": "268435456",
}
INSTALL_HINT = "pip install 'clo-mlx[linux-fast]' or apt-get install libopenblas0-pthread"

_SYSTEM_PATTERNS = [
    "/usr/lib/{multiarch}/openblas-pthread/libopenblas.so.0",
    "/usr/lib/{multiarch}/openblas-openmp/libopenblas.so.0",
    "/usr/lib/{multiarch}/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib64/libopenblaso.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
    "/usr/local/lib/libopenblas.so.0",
]

_PROBE_CODE = r"""
import sys
import mlx.core as mx
a = mx.ones((64, 64))
assert (a @ a)[0, 0].item() == 64.0
m = mx.array([[4.0, 1.0], [2.0, 3.0]])
inv = mx.linalg.inv(m, stream=mx.cpu)
assert abs((m @ inv)[0, 0].item() - 1.0) < 1e-5
maps = open("/proc/self/maps").read()
assert sys.argv[1] in maps, "not loaded (ld.so could not preload it)"
print("ok")
"""


@dataclass(frozen=True)
class Facts:
    """What the decision depends on (all gathered by `gather_facts`, injectable in tests)."""

    platform: str
    mlx_distributions: frozenset[str]
    reference_blas: str | None
    env: Mapping[str, str]
    candidates: tuple[str, ...] = ()


@dataclass(frozen=True)
class Probe:
    """Whether a library works as MLX's BLAS, and the extra environment it needs."""

    ok: bool
    extra_env: dict[str, str] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class Decision:
    """`action` is "reexec" (preload `library`), "fast" (already fast or not applicable), or
    "slow" (MLX stays on the reference BLAS)."""

    action: str
    reason: str
    library: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no")


def decide(facts: Facts, probe: Callable[[str], Probe]) -> Decision:
    """Decide whether to re-execute with a preloaded BLAS. Pure apart from `probe`."""
    if not facts.platform.startswith("linux"):
        return Decision("fast", f"{facts.platform}: MLX uses the platform BLAS")
    if any(d.startswith("mlx-cuda") for d in facts.mlx_distributions):
        return Decision("fast", "CUDA backend: no re-exec")
    if facts.reference_blas is None:
        return Decision("fast", "MLX does not bundle the reference BLAS")
    if _truthy(facts.env.get(OPT_OUT_ENV)):
        return Decision("slow", f"turned off by {OPT_OUT_ENV}")
    if facts.env.get(MARKER_ENV):
        return Decision("fast", "already re-executed", library=facts.env[MARKER_ENV])
    preloaded = [p for p in facts.env.get("LD_PRELOAD", "").split(":") if "blas" in Path(p).name]
    if preloaded:
        return Decision("fast", "a BLAS is already in LD_PRELOAD", library=preloaded[0])
    errors = []
    for lib in facts.candidates:
        result = probe(lib)
        if result.ok:
            env = {MARKER_ENV: lib, "LD_PRELOAD": _join(lib, facts.env.get("LD_PRELOAD"))}
            for key, value in result.extra_env.items():
                env[key] = _join(value, facts.env.get(key)) if key.endswith("PATH") else value
            for key, value in MALLOC_ENV.items():
                env[key] = facts.env.get(key, value)
            return Decision("reexec", "OpenBLAS found", library=lib, env=env)
        errors.append(f"{lib}: {result.error or 'failed'}")
    if not facts.candidates:
        return Decision("slow", f"no OpenBLAS found ({INSTALL_HINT})")
    return Decision("slow", "no working OpenBLAS: " + "; ".join(errors))


def _join(first: str, rest: str | None) -> str:
    return first + (":" + rest if rest else "")


def reference_blas_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` undone for a child process on mlx-cpu's reference BLAS: the OpenBLAS this process was
    re-executed with taken out of LD_PRELOAD (other preloads kept), and the re-exec turned off."""
    env = dict(env)
    lib = env.pop(MARKER_ENV, None)
    preload = [p for p in env.pop("LD_PRELOAD", "").split(":") if p and p != lib]
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    env[OPT_OUT_ENV] = "1"
    return env


def _dist_libs(dist: str, folder: str, prefix: str) -> list[str]:
    """Existing files `folder/prefix*.so*` installed by distribution `dist`."""
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        return []
    found = []
    for f in files:
        if "/".join(f.parts[:-1]) == folder and f.name.startswith(prefix) and ".so" in f.name:
            path = str(f.locate())
            if os.path.exists(path):
                found.append(path)
    return sorted(found)


def reference_blas_path() -> str | None:
    """The reference BLAS bundled in the `mlx-cpu` wheel (`mlx_cpu.libs/libblas-*.so*`)."""
    found = _dist_libs("mlx-cpu", "mlx_cpu.libs", "libblas")
    return found[0] if found else None


def find_candidates(env: Mapping[str, str], machine: str | None = None) -> tuple[str, ...]:
    """OpenBLAS libraries on this machine, best first (see the module docstring)."""
    if env.get(OVERRIDE_ENV):
        return (env[OVERRIDE_ENV],)
    found = _dist_libs("ngsolve-openblas", "ngsolve_openblas", "libopenblas")
    multiarch = f"{machine or platform.machine()}-linux-gnu"
    for pattern in _SYSTEM_PATTERNS:
        path = pattern.format(multiarch=multiarch)
        if os.path.exists(path):
            found.append(path)
    cmeel = _dist_libs("cmeel-openblas", "cmeel.prefix/lib", "libopenblas.so.0")
    found += [p for p in cmeel if p.endswith(".so.0")]
    unique: list[str] = []
    seen: set[str] = set()
    for path in found:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            unique.append(path)
    return tuple(unique)


def gather_facts(env: Mapping[str, str] | None = None) -> Facts:
    """The facts of this process and machine."""
    env = dict(os.environ if env is None else env)
    dists = frozenset(
        (d.metadata["Name"] or "").lower().replace("_", "-")
        for d in importlib.metadata.distributions()
        if (d.metadata["Name"] or "").lower().startswith("mlx")
    )
    linux = sys.platform.startswith("linux")
    return Facts(
        platform=sys.platform,
        mlx_distributions=dists,
        reference_blas=reference_blas_path() if linux else None,
        env=env,
        candidates=find_candidates(env) if linux else (),
    )


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clo-mlx" / "blas-probe.json"


def _cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "vendor_id"))]
    return hashlib.sha1("\n".join(sorted(set(lines))).encode()).hexdigest()[:16]


def _probe_key(lib: str) -> str:
    try:
        st = os.stat(lib)
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = "missing"
    try:
        mlx_version = importlib.metadata.version("mlx")
    except importlib.metadata.PackageNotFoundError:
        mlx_version = "?"
    return f"{os.path.realpath(lib)}|{stamp}|mlx {mlx_version}|cpu {_cpu_id()}"


def gfortran_shim_dir(reference_blas: str | None) -> str | None:
    """A directory with `libgfortran.so.5` pointing at the copy bundled in `mlx-cpu`, for an
    OpenBLAS wheel that needs it on a system without it."""
    if reference_blas is None:
        return None
    libs = Path(reference_blas).parent
    gfortran = sorted(libs.glob("libgfortran*.so*"))
    if not gfortran:
        return None
    shim = cache_path().parent / "gfortran-shim"
    shim.mkdir(parents=True, exist_ok=True)
    links = {"libgfortran.so.5": gfortran[0]}
    links.update({p.name: p for p in libs.glob("libquadmath*.so*")})
    for name, target in links.items():
        link = shim / name
        if os.path.realpath(link) != str(target.resolve()):
            tmp = shim / f".{name}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            os.replace(tmp, link)
    return str(shim)


def run_probe(lib: str, extra_env: Mapping[str, str] | None = None, timeout: float = 120) -> Probe:
    """Try `lib` as MLX's BLAS in a subprocess."""
    env = dict(os.environ)
    env.pop(MARKER_ENV, None)
    env["LD_PRELOAD"] = lib
    env.update(extra_env or {})
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE_CODE, os.path.realpath(lib)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return Probe(False, error="probe timed out")
    if proc.returncode == 0 and proc.stdout.strip().endswith("ok"):
        return Probe(True, dict(extra_env or {}))
    if proc.returncode < 0:
        error = f"crashed with signal {-proc.returncode}"
    else:
        tail = (proc.stderr.strip().splitlines() or ["exit code " + str(proc.returncode)])[-1]
        error = tail[:200]
    return Probe(False, error=error)


def cached_probe(lib: str, reference_blas: str | None = None) -> Probe:
    """`run_probe`, remembered per library, MLX version and CPU; retries with the gfortran shim."""
    path = cache_path()
    key = _probe_key(lib)
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        entry = cache[key]
        return Probe(bool(entry["ok"]), dict(entry.get("env", {})), entry.get("error", ""))
    result = run_probe(lib)
    if not result.ok and "libgfortran" in result.error:
        shim = gfortran_shim_dir(reference_blas)
        if shim:
            result = run_probe(lib, {"LD_LIBRARY_PATH": shim})
    cache[key] = {"ok": result.ok, "env": result.extra_env, "error": result.error}
    _write_cache(path, cache)
    return result


def _write_cache(path: Path, cache: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            json.dump(cache, f, indent=1)
        os.replace(f.name, path)
    except OSError:
        pass


def first_announcement(lib: str) -> bool:
    """True the first time `lib` is announced on this machine (remembered in the probe cache):
    the "using OpenBLAS" line is shown once, not before every command (`clo-mlx doctor` shows it)."""
    path = cache_path()
    key = "announced " + os.path.realpath(lib)
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if cache.get(key):
        return False
    cache[key] = True
    _write_cache(path, cache)
    return True


def active_blas() -> str | None:
    """The library whose `cblas_sgemm` MLX would bind to in this process (Linux; via the symbol
    in the global scope, else MLX's bundled reference BLAS), or None where it can't be told."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        addr = ctypes.cast(ctypes.CDLL(None).cblas_sgemm, ctypes.c_void_p).value
    except (AttributeError, OSError):
        addr = None
    if addr is not None:
        for start, end, path in _mappings():
            if start <= addr < end:
                return path
    return reference_blas_path()


def _mappings() -> list[tuple[int, int, str]]:
    out = []
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            lo, hi = parts[0].split("-")
            out.append((int(lo, 16), int(hi, 16), parts[5]))
    return out


def loaded_blas_libraries() -> list[str]:
    """BLAS/LAPACK-like shared libraries mapped into this process (from /proc/self/maps)."""
    keys = ("blas", "lapack", "mkl", "gfortran")
    seen: list[str] = []
    for _, _, path in _mappings():
        if any(k in Path(path).name.lower() for k in keys) and path not in seen:
            seen.append(path)
    return seen


def is_reference(path: str | None) -> bool:
    return path is not None and "mlx_cpu.libs" in path and "libblas" in Path(path).name


def ensure_fast_blas(stderr=None) -> Decision:
    """Re-execute this process with OpenBLAS preloaded when MLX would use the reference BLAS.

    Returns (instead of re-executing) when nothing is to be done; prints one short line on
    stderr the first time it re-executes with a library, or when the slow reference BLAS stays
    in use.
    """
    stderr = stderr or sys.stderr
    facts = gather_facts()
    decision = decide(facts, lambda lib: cached_probe(lib, facts.reference_blas))
    if decision.action == "reexec":
        env = dict(os.environ)
        env.update(decision.env)
        argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
        if first_announcement(decision.library):
            print(
                f"clo-mlx: using OpenBLAS {decision.library} ({OPT_OUT_ENV}=1 to turn off; "
                "shown once, `clo-mlx doctor` reports it)",
                file=stderr,
            )
        stderr.flush()
        sys.stdout.flush()
        os.execve(sys.executable, argv, env)
    if decision.action == "fast" and decision.reason == "already re-executed":
        active = active_blas()
        if active is None or is_reference(active):
            print(
                f"clo-mlx: OpenBLAS preload failed; MLX uses the slow reference BLAS ({INSTALL_HINT})",
                file=stderr,
            )
            return Decision("slow", "preload did not take effect")
    elif decision.action == "slow" and not _truthy(os.environ.get(OPT_OUT_ENV)):
        print(f"clo-mlx: MLX uses the slow reference BLAS: {decision.reason}", file=stderr)
    return decision


def fast_blas_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a subprocess that should run MLX with the fast BLAS (for benchmarks)."""
    env = dict(os.environ if base is None else base)
    env.pop(MARKER_ENV, None)
    facts = gather_facts(env)
    decision = decide(facts, lambda lib: cached_probe(lib, facts.reference_blas))
    env.update(decision.env)
    env.pop(MARKER_ENV, None)
    return env


def matmul_gflops(n: int = 1024, dtype: str = "float32", repeats: int = 5) -> float:
    """Best-of-`repeats` GFLOP/s of an n x n matmul with MLX on the default device."""
    import mlx.core as mx

    a = mx.random.normal((n, n)).astype(getattr(mx, dtype))
    b = mx.random.normal((n, n)).astype(getattr(mx, dtype))
    mx.eval(a, b, a @ b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        mx.eval(a @ b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9
