"""Data parallelism with mx.distributed: 2 local ranks over 127.0.0.1 (ring backend, mlx.launch).

Each 2-rank result is compared with a single-process run of the same config (same global batch
and seed) made in this process. The multi-process tests skip where mlx.launch or the ring
backend cannot run here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import REPO, parallel_rows, write_jsonl, write_random_adapters

from clo_mlx import distributed
from clo_mlx.errors import CloError

TESTS = Path(__file__).resolve().parent
LAUNCH_TIMEOUT = 420  # one 2-rank run on a loaded 2-core machine takes ~1-2 min (imports)
KILL_BOUND_S = 30  # the README's bound for a run to exit after one rank is killed, plus slack
TIMING = {"tokens_per_second", "steps_per_second", "peak_memory_gb", "val_time"}


def free_port_pair() -> int:
    """A port p with p and p + 1 free on 127.0.0.1 (ring: one port per rank)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p >= 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no free port pair")


def launcher(*command: str) -> list[str]:
    return [
        sys.executable, "-m", "clo_mlx.launch", "--backend", "ring", "-n", "2",
        "--starting-port", str(free_port_pair()), "--", *command,
    ]  # fmt: skip


def rank_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), env.get("PYTHONPATH", "")])
    env.setdefault("OPENBLAS_NUM_THREADS", "1")  # 2 ranks share 2 cores
    return env


def run_launch(command: list[str], timeout: int = LAUNCH_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(
        launcher(*command), env=rank_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Skip unless 2 ranks can all_sum over 127.0.0.1 with mlx.launch's ring backend."""
    try:
        import mlx._distributed_utils.launch  # noqa: F401
    except ImportError:
        pytest.skip("mlx.launch is not available in this mlx")
    if not mx.distributed.is_available():
        pytest.skip("mx.distributed has no backend in this build")
    probe = tmp_path_factory.mktemp("probe") / "probe.py"
    probe.write_text(
        "import mlx.core as mx\n"
        "g = mx.distributed.init(backend='ring')\n"
        "x = mx.distributed.all_sum(mx.array([1.0]), stream=mx.cpu).item()\n"
        "assert g.size() == 2 and x == 2.0, (g.size(), x)\n"
    )
    try:
        r = run_launch([sys.executable, str(probe)], timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("2 ring ranks over 127.0.0.1 did not finish an all_sum within 120 s")
    if r.returncode != 0:
        pytest.skip(f"2 ring ranks over 127.0.0.1 cannot run here: {r.stderr[-500:]}")


# ----------------------------------------------------------------------------- helpers


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cli.main import main; main()", *args]


def write_config(path: Path, **cfg) -> Path:
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def max_diff(a: Path, b: Path) -> float:
    wa, wb = mx.load(str(a)), mx.load(str(b))
    assert wa.keys() == wb.keys()
    return max(float(mx.abs(wa[k] - wb[k]).max()) for k in wa)


def assert_metrics_equal(a: Path, b: Path, skip: frozenset = frozenset()) -> None:
    la = [json.loads(x) for x in a.read_text().splitlines()]
    lb = [json.loads(x) for x in b.read_text().splitlines()]
    assert [(x["type"], x["step"]) for x in la] == [(x["type"], x["step"]) for x in lb]
    for x, y in zip(la, lb, strict=True):
        assert x.keys() == y.keys()
        for k in x.keys() - TIMING - skip:
            if isinstance(x[k], str):
                assert x[k] == y[k]
            else:
                assert np.isclose(x[k], y[k], rtol=1e-6, atol=1e-5), (x["step"], k, x[k], y[k])


ITERS = 24


@pytest.fixture(scope="module")
def clo_single(two_ranks, tmp_path_factory, learnable_llama):
    """Data, a config (CLO, micro-batches of 1 pair, 2-step gradient accumulation, from random
    non-zero adapters) and its single-process run, as a subprocess with the ranks' environment
    (same BLAS and threads, so the reference caches can be compared byte for byte)."""
    from clo_mlx.config import build_config

    tmp = tmp_path_factory.mktemp("clo")
    data = tmp / "data"
    write_jsonl(data / "train.jsonl", parallel_rows(8))
    write_jsonl(data / "valid.jsonl", parallel_rows(4))
    base = {
        "model": str(learnable_llama),
        "data": str(data),
        "dtype": "float32",
        "iters": ITERS,
        "batch_size": 4,
        "micro_batch_size": 1,
        "grad_accumulation_steps": 2,
        "steps_per_report": 2,
        "steps_per_eval": 8,
        "save_every": 2,
        "learning_rate": 1e-3,
        "seed": 3,
        "lora_parameters": {"rank": 4, "scale": 10.0, "dropout": 0.0},
    }
    # Random non-zero adapters to start from: policy != reference from step 1, so reward
    # accuracies are not ties decided by float noise.
    init = write_random_adapters(
        learnable_llama, tmp / "init", build_config(overrides=base), seed=5, std=0.05
    )
    base["resume_adapter_file"] = str(init)
    cfg = write_config(
        tmp / "single.yaml", **base, adapter_path=str(tmp / "single"), cache_dir=str(tmp / "c1")
    )
    r = subprocess.run(
        cli("train", "-c", str(cfg)),
        env=rank_env(),
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp, base


def two_rank_config(tmp: Path, base: dict, name: str) -> Path:
    out = {"adapter_path": str(tmp / name), "cache_dir": str(tmp / f"cache-{name}")}
    return write_config(tmp / f"{name}.yaml", **base, **out)


# ----------------------------------------------------------------------------- in-process


def test_shares_of_a_batch_cover_it_once_and_keep_rows_together(monkeypatch):
    from clo_mlx.batching import rank_share

    class Pair:
        def __init__(self, row):
            self.row = row

    class Enc:
        def __init__(self, row):
            self.pair = Pair(row)

    class Data:  # a PairData stand-in: items 0..7 are rows 0..3, two pairs each
        encoded = [Enc(i // 2) for i in range(8)]

    from clo_mlx import batching

    monkeypatch.setattr(batching, "PairData", Data)
    batch = [6, 7, 0, 1, 4, 5, 2, 3]  # rows 3, 0, 2, 1
    shares = []
    for r in range(2):
        monkeypatch.setattr(distributed, "world", lambda r=r: _Group(r, 2))
        shares.append(rank_share(Data(), batch))
    assert shares == [[6, 7, 4, 5], [0, 1, 2, 3]]  # rank offset over whole rows (mlx-lm's)


class _Group:
    def __init__(self, rank: int, size: int):
        self._rank, self._size = rank, size

    def rank(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size


def test_batch_that_does_not_divide_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(distributed, "world", lambda: _Group(0, 2))
    with pytest.raises(CloError, match=r"batch_size=2 gives 1 rows .* multiple of 4"):
        distributed.check_batch_divides(2, 2, "rows")
    distributed.check_batch_divides(4, 2, "rows")
    monkeypatch.setattr(distributed, "world", lambda: _Group(0, 3))
    with pytest.raises(CloError, match="across 3 ranks"):
        distributed.check_batch_divides(4, 1, "items")


def test_launcher_select_waits_for_output_instead_of_spinning():
    """mlx.launch's relay threads select on the ranks' stdin pipes, which are always writable:
    the wrapper waits for output (or the timeout) and still reports the pipe writable."""
    from clo_mlx.launch import _select_output_first

    r, w = os.pipe()
    try:
        t = time.monotonic()
        assert _select_output_first([r], [w], [], 0.3) == ([], [w], [])
        assert time.monotonic() - t >= 0.25  # plain select returns at once here
        os.write(w, b"x")
        t = time.monotonic()
        assert _select_output_first([r], [w], [], 5.0) == ([r], [w], [])
        assert time.monotonic() - t < 2.0
    finally:
        os.close(r), os.close(w)


# ----------------------------------------------------------------------------- 2 ranks


@pytest.mark.slow
def test_launcher_does_not_spin_while_ranks_run(two_ranks, tmp_path):
    """2 ranks that sleep 3 s, stdin /dev/null (as under nohup, cron or CI): the launcher and
    the ranks together use well under a CPU second (mlx.launch alone spun ~2 s: its relay
    threads and its stdin loop never waited)."""
    import resource

    script = tmp_path / "sleep.py"
    script.write_text("import time\ntime.sleep(3)\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(
        launcher(sys.executable, str(script)),
        env=rank_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert r.returncode == 0, r.stderr[-2000:]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"launcher + 2 sleeping ranks over 3 s: {cpu:.2f} CPU s")
    assert cpu < 1.0, cpu


@pytest.mark.slow
def test_two_ranks_train_like_one_process(clo_single):
    """CLO with micro-batches (1 pair) and gradient accumulation (2): adapters, metrics.jsonl
    and the reference cache of 2 ranks equal a single-process run's."""
    tmp, base = clo_single
    r = run_launch(cli("train", "-c", str(two_rank_config(tmp, base, "dist"))))
    assert r.returncode == 0, r.stderr[-3000:]
    ref, ours = tmp / "single", tmp / "dist"
    d = max_diff(ref / "adapters.safetensors", ours / "adapters.safetensors")
    print(f"2 ranks vs 1 process after {ITERS} steps: adapters max |d| = {d:.2e}")
    assert d <= 1e-5
    assert_metrics_equal(ref / "metrics.jsonl", ours / "metrics.jsonl")
    mine = sorted((tmp / "cache-dist" / "reference").iterdir())
    theirs = sorted((tmp / "c1" / "reference").iterdir())
    assert [p.name for p in mine] == [p.name for p in theirs] and len(mine) == 2  # train, valid
    for a, b in zip(mine, theirs, strict=True):
        assert a.read_bytes() == b.read_bytes()
    assert r.stderr.count("adapters saved to") == 1  # only rank 0 prints


def launcher_children(pid: int) -> dict[int, int]:
    """{rank: pid} of the processes a launcher started (read from their MLX_RANK)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            for kv in env:
                if kv.startswith(b"MLX_RANK="):
                    out[int(kv.split(b"=")[1])] = int(child)
    return out


def start_training(cfg: Path, *extra: str) -> subprocess.Popen:
    """2 ranks in their own session (a Ctrl-C in a terminal reaches its whole process group)."""
    return subprocess.Popen(
        launcher(*cli("train", "-c", str(cfg), *extra)),
        env=rank_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_checkpoint(proc: subprocess.Popen, latest: Path, step: int) -> None:
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while not (latest.exists() and json.loads(latest.read_text())["step"] >= step):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, f"no checkpoint at step {step} appeared"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_ctrl_c_then_killed_rank_then_resume_continue_exactly(clo_single):
    """Ctrl-C stops both ranks with a checkpoint; a resumed run whose rank 1 is killed -9 exits
    non-zero within KILL_BOUND_S; a second resume ends with the uninterrupted run's adapters."""
    tmp, base = clo_single
    ref = tmp / "single"
    cfg = two_rank_config(tmp, base, "killed")
    latest = tmp / "killed" / "checkpoints" / "latest.json"

    proc = start_training(cfg)
    wait_for_checkpoint(proc, latest, 2)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    _, err = proc.communicate(timeout=LAUNCH_TIMEOUT)
    assert proc.returncode != 0 and "interrupted at step" in err, err[-3000:]
    stopped = json.loads(latest.read_text())["step"]
    assert f"interrupted at step {stopped}; checkpoint saved" in err

    proc = start_training(cfg, "--resume")
    wait_for_checkpoint(proc, latest, stopped + 2)
    ranks = launcher_children(proc.pid)
    assert sorted(ranks) == [0, 1]
    os.kill(ranks[1], signal.SIGKILL)
    killed = time.monotonic()
    try:
        _, err = proc.communicate(timeout=KILL_BOUND_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the run did not stop within {KILL_BOUND_S} s of rank 1 being killed")
    stopped_after = time.monotonic() - killed
    assert proc.returncode != 0
    assert "another rank died or was stopped" in err or "was killed" in err, err[-3000:]
    step = json.loads(latest.read_text())["step"]
    assert step < ITERS, "the run finished before the kill"
    print(f"Ctrl-C at step {stopped}; run stopped {stopped_after:.1f} s after kill -9 of rank 1")

    r = run_launch(cli("train", "-c", str(cfg), "--resume"))
    assert r.returncode == 0, r.stderr[-3000:]
    d = max_diff(ref / "adapters.safetensors", tmp / "killed" / "adapters.safetensors")
    print(f"resumed twice with 2 ranks vs 1 uninterrupted process: adapters max |d| = {d:.2e}")
    assert d <= 1e-5
    # trained_tokens restarts from 0 on any resume (the trainer's counter, 1 process or several)
    skip = frozenset({"trained_tokens"})
    assert_metrics_equal(ref / "metrics.jsonl", tmp / "killed" / "metrics.jsonl", skip)


TRANSLATE = textwrap.dedent(
    """
    import sys, time
    from test_translate import deterministic_translate
    from clo_mlx.translate.pipeline import translate_file

    def slow(texts):
        time.sleep(float(sys.argv[3]))
        return deterministic_translate(texts)

    translate_file(sys.argv[1], sys.argv[2], "sw", slow, batch_size=2, show_progress=False)
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_two_ranks_translate_like_one_process_and_resume_after_kill(two_ranks, tmp_path):
    from test_translate import RESUME_ROWS, deterministic_translate

    from clo_mlx.translate.pipeline import side_paths, translate_file

    src = write_jsonl(tmp_path / "en.jsonl", RESUME_ROWS)
    ref = tmp_path / "ref" / "sw.jsonl"
    translate_file(src, ref, "sw", deterministic_translate, batch_size=2, show_progress=False)
    script = tmp_path / "run.py"
    script.write_text(TRANSLATE)

    # Uninterrupted, 2 ranks: the same files.
    out = tmp_path / "a" / "sw.jsonl"
    r = run_launch([sys.executable, str(script), str(src), str(out), "0"], timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    for a, b in ((out, ref), *zip(side_paths(out), side_paths(ref), strict=True)):
        if a.suffix == ".jsonl":
            assert a.read_bytes() == b.read_bytes()
    assert json.loads(side_paths(out)[1].read_text())["kept"] == len(ref.read_text().splitlines())

    # kill -9 of rank 1 mid-way, then a 2-rank re-run finishes the same files.
    out = tmp_path / "b" / "sw.jsonl"
    proc = subprocess.Popen(
        launcher(sys.executable, str(script), str(src), str(out), "0.3"),
        env=rank_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    done = lambda: sum(p.read_bytes().count(b"\n") for p in (out, side_paths(out)[0]) if p.exists())  # noqa: E731
    deadline = time.monotonic() + 120
    while done() < 4:
        assert proc.poll() is None and time.monotonic() < deadline, "no rows were written"
        time.sleep(0.02)
    os.kill(launcher_children(proc.pid)[1], signal.SIGKILL)
    assert proc.wait(timeout=KILL_BOUND_S) != 0
    assert 4 <= done() < len(RESUME_ROWS), "the run was not killed mid-way"
    r = run_launch([sys.executable, str(script), str(src), str(out), "0"], timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert out.read_bytes() == ref.read_bytes()
    assert side_paths(out)[0].read_bytes() == side_paths(ref)[0].read_bytes()
