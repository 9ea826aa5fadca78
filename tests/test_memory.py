"""The wired limit (mlx-lm's maybe_set_recommended_wired_limit): set around training, the
reference pass, evaluation and generation; a no-op without a recommended size; restored after."""

import mlx.core as mx
import pytest
from conftest import train_config

from clo_mlx import memory

GB = 2**30


@pytest.fixture
def limits(monkeypatch):
    """Record mx.set_wired_limit calls; the fake 'old' limit is 7."""
    calls = []

    def fake_set(limit):
        calls.append(limit)
        return 7

    monkeypatch.setattr(mx, "set_wired_limit", fake_set)
    return calls


def fake_device(monkeypatch, info):
    if isinstance(info, Exception):

        def device_info():
            raise info
    else:

        def device_info():
            return info

    monkeypatch.setattr(mx, "device_info", device_info)


@pytest.mark.skipif(mx.metal.is_available(), reason="the real CPU backend is what this checks")
def test_real_cpu_backend_is_a_no_op(limits):
    with memory.wired_limit():
        assert mx.sum(mx.ones(3)).item() == 3
    assert limits == []
    assert memory.maybe_set_recommended_wired_limit() is None


@pytest.mark.parametrize(
    "info",
    [{"architecture": "x86_64", "device_name": "AMD EPYC"}, RuntimeError("no device"), {}],
)
def test_no_recommended_size_is_a_no_op(monkeypatch, limits, info):
    fake_device(monkeypatch, info)
    with memory.wired_limit():
        pass
    assert limits == []


def test_sets_the_recommended_size_and_restores_the_old_limit(monkeypatch, limits):
    fake_device(monkeypatch, {"max_recommended_working_set_size": 12 * GB})
    with memory.wired_limit():
        assert limits == [12 * GB]
    assert limits == [12 * GB, 7]
    with pytest.raises(KeyError), memory.wired_limit():  # restored on errors too
        raise KeyError("x")
    assert limits == [12 * GB, 7, 12 * GB, 7]


def test_a_refused_limit_is_not_a_crash(monkeypatch):
    fake_device(monkeypatch, {"max_recommended_working_set_size": 12 * GB})
    calls = []

    def refuse(limit):
        calls.append(limit)
        raise ValueError("[metal::set_wired_limit] Setting a wired limit larger than ...")

    monkeypatch.setattr(mx, "set_wired_limit", refuse)
    with memory.wired_limit():
        pass
    assert calls == [12 * GB]  # tried once, nothing to restore


def test_training_reference_and_eval_run_under_the_limit(
    monkeypatch, limits, tiny_llama, parallel_data, tmp_path
):
    """Each entry point holds the recommended limit while it runs and restores it after."""
    from clo_mlx import reference, run, trainer
    from clo_mlx.eval import fidelity

    fake_device(monkeypatch, {"max_recommended_working_set_size": 3 * GB})
    seen = {}

    def spy(name, fn):
        def wrapped(*a, **k):
            seen[name] = list(limits)
            return fn(*a, **k)

        return wrapped

    for mod, name in [(reference, "sequence_logps"), (trainer, "build_optimizer")]:
        monkeypatch.setattr(mod, name, spy(name, getattr(mod, name)))
    cfg = train_config(tiny_llama, parallel_data, tmp_path, iters=1, batch_size=8, steps_per_eval=1)
    run.run_training(cfg)
    # The reference pass and training each set the limit, and every set was undone.
    assert seen["sequence_logps"][-1] == 3 * GB and seen["build_optimizer"][-1] == 3 * GB
    assert limits.count(3 * GB) == limits.count(7) >= 3
    assert limits[-1] == 7
    assert fidelity.generate_responses.__wrapped__ is not None
