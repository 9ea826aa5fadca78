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


# ----------------------------------------------------------------------------- memory budget

SHAPE = memory.ModelShape(hidden=8, layers=2, intermediate=16, heads=2, vocab=100,
                          weight_bytes=1000, trainable=10)  # fmt: skip
BIG_CHUNK = 256 * 2**20


def test_pass_peak_is_the_hand_derived_sum():
    # 2 sequences x 4 tokens = 8 tokens. Per token and layer 4 B x (12 x 8 + 4 x 16) = 640;
    # scores 2 copies x 4 B x 2 seqs x 2 heads x 4 x 4 = 512; one layer 8 x 640 + 512 = 5632.
    # Head: 8 positions x 100 x 4 B x 3 = 9600. Weights 1000, LoRA + grads + Adam 16 x 10 = 160.
    assert memory.pass_peak_bytes(SHAPE, 2, 4, False, BIG_CHUNK) == 1160 + 2 * 5632 + 9600
    # Checkpointed: the layers' inputs (2 x 8 x 8 x 4 B = 512) plus one layer recomputed.
    assert memory.pass_peak_bytes(SHAPE, 2, 4, True, BIG_CHUNK) == 1160 + 512 + 5632 + 9600
    # Head chunks of 800 B = 2 positions: 3 x 2 x 400.
    assert memory.pass_peak_bytes(SHAPE, 2, 4, False, 800) == 1160 + 2 * 5632 + 2400


# Estimates for batch 4 pairs (2 sequences each) of 4 tokens, from the sums above:
# micro 4: 84616, micro 2: 42888, micro 1: 22024; with checkpointing 64136, 32648, 16904.
@pytest.mark.parametrize(
    "budget, want",
    [
        (100_000, (4, False, True, True)),  # the default settings fit
        (50_000, (2, False, True, False)),  # smaller micro-batches first
        (18_000, (1, True, True, False)),  # then gradient checkpointing
        (10_000, (1, True, False, False)),  # nothing fits: the smallest estimate, flagged
    ],
)
def test_chooser_picks_the_fastest_settings_that_fit(budget, want):
    c = memory.choose_memory(SHAPE, 4, 2, 4, budget, auto_micro=4)
    assert (c.micro_batch_size, c.grad_checkpoint, c.fits, c.default) == want
    assert c.estimate_bytes == {4: 84616, 2: 42888, 1: 16904 if want[1] else 22024}[want[0]]
    assert ("does NOT fit" in c.why) == (not want[2])


def test_chooser_keeps_the_users_settings_and_says_when_they_do_not_fit():
    c = memory.choose_memory(SHAPE, 4, 2, 4, 50_000, auto_micro=4, micro_batch_size=4)
    assert (c.micro_batch_size, c.grad_checkpoint, c.fits) == (4, True, False)  # 64136
    c = memory.choose_memory(SHAPE, 4, 2, 4, 50_000, 4, micro_batch_size=4, grad_checkpoint=False)
    assert (c.micro_batch_size, c.grad_checkpoint, c.estimate_bytes, c.fits) == (
        4,
        False,
        84616,
        False,
    )
    c = memory.choose_memory(SHAPE, 4, 2, 4, 100_000, 4, grad_checkpoint=True)
    assert (c.micro_batch_size, c.grad_checkpoint, c.estimate_bytes) == (4, True, 64136)


def test_the_automatic_micro_batch_caps_the_choice():
    # auto_micro 2 (longer sequences): the chooser never goes above the default pass size.
    c = memory.choose_memory(SHAPE, 4, 2, 4, 10**9, auto_micro=2)
    assert (c.micro_batch_size, c.default) == (2, True)


def test_memory_budget_must_be_positive():
    from clo_mlx.config import ConfigError, build_config

    with pytest.raises(ConfigError, match="memory_budget_gb must be > 0"):
        build_config(overrides={"memory_budget_gb": -1.0})


def test_a_small_budget_makes_the_run_use_the_chosen_settings(learnable_llama, tmp_path):
    """The run resolves the automatic settings with the chooser and says so in one line."""
    import io

    from conftest import parallel_rows, write_jsonl
    from rich.console import Console

    from clo_mlx.checkpoint import find_checkpoint
    from clo_mlx.run import run_training

    write_jsonl(tmp_path / "data" / "train.jsonl", parallel_rows(8))
    cfg = train_config(learnable_llama, tmp_path / "data", tmp_path, batch_size=4, iters=1,
                       save_every=1, steps_per_eval=100, memory_budget_gb=1e-6)  # fmt: skip
    out = io.StringIO()
    run_training(cfg, console=Console(file=out, width=200))
    line = next(x for x in out.getvalue().splitlines() if x.startswith("memory: "))
    assert "micro_batch_size 1, grad_checkpoint on" in line and "does NOT fit" in line
    ckpt, _ = find_checkpoint(cfg.adapter_path)
    assert ckpt.config["micro_batch_size"] == 1 and ckpt.config["grad_checkpoint"] is True


def test_settings_that_cannot_fit_are_said_before_the_reference_pass(
    monkeypatch, tiny_llama, parallel_data, tmp_path
):
    """The choice is made and printed in the pre-flight: before the reference pass, once."""
    import io

    from rich.console import Console

    from clo_mlx import reference
    from clo_mlx.run import run_training

    out, seen = io.StringIO(), []
    real = reference.score_pairs

    def spy(*a, **k):
        seen.append(out.getvalue())  # what the user had read when the long pass started
        return real(*a, **k)

    monkeypatch.setattr(reference, "score_pairs", spy)
    cfg = train_config(tiny_llama, parallel_data, tmp_path, iters=1, batch_size=4,
                       micro_batch_size=4, grad_checkpoint=False, memory_budget_gb=1e-6,
                       steps_per_eval=100)  # fmt: skip
    _, result = run_training(cfg, console=Console(file=out, width=200))
    assert len(seen) == 2  # train and valid
    want = "memory: micro_batch_size 4, grad_checkpoint off"
    assert want in seen[0] and "does NOT fit the memory budget of 0.0 GB" in seen[0]
    assert out.getvalue().count("memory: ") == 1  # the run does not choose a second time
    assert len(result.reports) == 1  # and it trained with the settings it was given
