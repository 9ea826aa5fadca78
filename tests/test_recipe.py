"""The one training recipe (run.train_model), the loop's callbacks (callbacks.py) and the method's
per-batch loss (losses.pair_loss)."""

import ast
import io
import json
import math

import mlx.core as mx
import numpy as np
import pytest
from conftest import REPO, train_config
from rich.console import Console

from clo_mlx.config import build_config


def small_cfg(model, data, tmp_path, **over):
    base = {
        "batch_size": 4,
        "iters": 4,
        "steps_per_report": 2,
        "steps_per_eval": 2,
        "save_every": 2,
        "learning_rate": 1e-3,
        "lora_parameters": {"rank": 4, "scale": 10.0},
    }
    return train_config(model, data, tmp_path, **{**base, **over})


def quiet_console() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_callbacks_get_the_loop_events_in_order(tiny_llama, parallel_data, tmp_path):
    """4 steps, reports, evaluations and saves every 2: the schedule written out by hand. An
    mlx-lm TrainingCallback (report methods only) gets the reports with their iteration."""
    from mlx_lm.tuner.callbacks import TrainingCallback

    from clo_mlx.run import prepare, train_model

    events = []

    class Recorder:
        def on_train_begin(self, step, model):
            events.append(("begin", step))

        def on_step_end(self, step, model, skipped):
            events.append(("step", step))

        def on_train_loss_report(self, info):
            events.append(("train", info["iteration"]))

        def on_val_loss_report(self, info):
            events.append(("val", info["iteration"]))

        def on_save(self, step, model, optimizer, numbered):
            events.append(("save", step, numbered))

    class MlxLm(TrainingCallback):
        def __init__(self):
            self.train, self.val = [], []

        def on_train_loss_report(self, train_info):
            self.train.append(train_info)

        def on_val_loss_report(self, val_info):
            self.val.append(val_info)

    cfg = small_cfg(tiny_llama, parallel_data, tmp_path)
    console = quiet_console()
    prep = prepare(cfg, console=console)
    peer = MlxLm()
    result = train_model(cfg, prep, console, callbacks=[Recorder(), peer])
    assert events == [
        ("begin", 0), ("val", 0),
        ("step", 1), ("train", 2), ("step", 2), ("val", 2), ("save", 2, True),
        ("step", 3), ("train", 4), ("step", 4), ("val", 4), ("save", 4, False),
    ]  # fmt: skip
    assert [i["iteration"] for i in peer.train] == [2, 4]
    assert [i["iteration"] for i in peer.val] == [0, 2, 4] and "val/loss" in peer.val[0]
    assert [r["step"] for r in result.reports] == [2, 4] and "iteration" not in result.reports[0]
    assert result.adapter_file == tmp_path / "ad" / "adapters.safetensors"
    lines = [json.loads(x) for x in (tmp_path / "ad" / "metrics.jsonl").read_text().splitlines()]
    assert [(x["type"], x["step"]) for x in lines] == [
        ("eval", 0), ("train", 2), ("eval", 2), ("train", 4), ("eval", 4),
    ]  # fmt: skip
    assert (tmp_path / "ad" / "0000002_adapters.safetensors").is_file()


def test_every_entry_point_trains_the_same_adapters(tiny_llama, parallel_data, tmp_path):
    """One seeding rule: the CLI's run (model loaded from its folder) and the recipe on a model
    loaded by the caller (the demo's and the sweep's way) give identical adapters."""
    from clo_mlx.models import load_model
    from clo_mlx.run import prepare, run_training, train_model

    cli = small_cfg(tiny_llama, parallel_data, tmp_path / "cli", steps_per_eval=100)
    run_training(cli, console=quiet_console())
    mem = small_cfg(tiny_llama, parallel_data, tmp_path / "mem", steps_per_eval=100)
    model, tok = load_model(str(tiny_llama))
    train_model(mem, prepare(mem, model=model, tokenizer=tok, console=quiet_console()))
    a = mx.load(str(tmp_path / "cli" / "ad" / "adapters.safetensors"))
    b = mx.load(str(tmp_path / "mem" / "ad" / "adapters.safetensors"))
    assert set(a) == set(b) and len(a) > 0
    for k in a:
        assert np.array_equal(np.array(a[k]), np.array(b[k])), k


def _calls_and_imports(path):
    """Names a module imports from clo_mlx modules, and the names it calls."""
    tree = ast.parse(path.read_text())
    imported = {
        (node.module or "").rsplit(".", 1)[-1] + ":" + alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    called = {
        node.func.id if isinstance(node.func, ast.Name) else node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))
    }
    return imported, called


def test_only_the_recipe_attaches_adapters_and_runs_the_loop():
    """The prepare -> attach -> train recipe is written once (run.train_model): nothing else in
    the package or the bench imports trainer.train or calls attach_adapters."""
    files = sorted((REPO / "clo_mlx").rglob("*.py")) + sorted((REPO / "bench").glob("*.py"))
    offenders = []
    for path in files:
        if path.name == "run.py" and path.parent.name == "clo_mlx":
            continue
        imported, called = _calls_and_imports(path)
        if "trainer:train" in imported or "attach_adapters" in called:
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_pair_loss_reads_the_paper_equation():
    """Hand-derived: pairs 0 (en) and 1 (tgt), chosen log-probs -3, -6 over 2 and 3 tokens,
    rejected -5, -9; reference chosen -4.5, -6.5, rejected -4.5, -8.
    h = (pc - rc) - (pr - rr) = 2.0, 1.5; NLL over the tgt chosen response = 6 / 3 = 2.0
    (with `both`: 9 / 5 = 1.8); L = 0.5 * NLL + 0.5 * mean(-log sigmoid(0.1 * h))."""
    from clo_mlx.losses import pair_loss

    logps = mx.array([-3.0, -6.0, -5.0, -9.0])  # chosen 0, 1, rejected 0, 1
    ntok = mx.array([2.0, 3.0, 4.0, 5.0])
    ref_c, ref_r = mx.array([-4.5, -6.5]), mx.array([-4.5, -8.0])
    is_en = mx.array([1.0, 0.0])
    dpo = np.mean([math.log1p(math.exp(-0.1 * h)) for h in (2.0, 1.5)])
    cfg = build_config()
    loss, m = pair_loss(cfg, logps, ntok, ref_c, ref_r, mx.array([0.0, 1.0]), is_en)
    assert m["nll/target"].item() == pytest.approx(2.0)
    assert loss.item() == pytest.approx(0.5 * 2.0 + 0.5 * dpo, rel=1e-6)
    assert m["logps/chosen"].item() == pytest.approx(-4.5)  # (-3 - 6) / 2
    _, both = pair_loss(cfg, logps, ntok, ref_c, ref_r, mx.array([1.0, 1.0]), is_en)
    assert both["nll/target"].item() == pytest.approx(1.8)
    dpo_only, _ = pair_loss(build_config(overrides={"loss": "dpo"}), logps, ntok, ref_c, ref_r,
                            mx.array([0.0, 1.0]), is_en)  # fmt: skip
    assert dpo_only.item() == pytest.approx(dpo, rel=1e-6)
    # One pair at a time with the whole batch's counts adds up to the batch (micro-batches).
    parts = [
        pair_loss(cfg, logps[mx.array([i, 2 + i])], ntok[mx.array([i, 2 + i])], ref_c[i : i + 1],
                  ref_r[i : i + 1], mx.array([0.0, 1.0])[i : i + 1], is_en[i : i + 1],
                  num_pairs=2, total_nll_tokens=mx.array(3.0))[0].item()
        for i in range(2)
    ]  # fmt: skip
    assert sum(parts) == pytest.approx(loss.item(), rel=1e-6)
