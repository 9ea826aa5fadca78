"""`train --dry-run` plans what the real run then does: the same memory choice and reference
batches (issue 16, item 4)."""

import io

from conftest import train_config
from rich.console import Console


def test_the_dry_run_shows_the_runs_memory_choice_and_reference_batches(
    monkeypatch, tiny_llama, parallel_data, tmp_path
):
    from clo_mlx import reference
    from clo_mlx.plan import dry_run
    from clo_mlx.run import run_training

    # A budget nothing fits: the chooser's smallest settings (not the defaults) in both.
    cfg = train_config(tiny_llama, parallel_data, tmp_path, batch_size=4, iters=1,
                       memory_budget_gb=1e-6, steps_per_eval=100)  # fmt: skip
    dry = io.StringIO()
    plan = dry_run(cfg, console=Console(file=dry, width=300))
    # 8 train rows = 16 pairs (en, tgt) in batches of batch_size 4: 4 reference batches.
    assert plan["reference_batches"] == 4 and plan["reference_batch_pairs"] == 4
    assert "reference pass: 4 batches of up to 4 pairs (batch_size)" in dry.getvalue()

    passes: list[list[int]] = []  # rows of each reference forward, per score_pairs call
    real_score, real_queue = reference.score_pairs, reference.queue_logps

    def score(*a, **k):
        passes.append([])
        return real_score(*a, **k)

    def queue(fn, inputs, *rest):
        passes[-1].append(inputs.shape[0])
        return real_queue(fn, inputs, *rest)

    monkeypatch.setattr(reference, "score_pairs", score)
    monkeypatch.setattr(reference, "queue_logps", queue)
    out = io.StringIO()
    run_training(cfg, console=Console(file=out, width=300))
    assert passes[0] == [8, 8, 8, 8]  # train: 4 passes of 4 pairs = 8 sequences
    (line,) = [x for x in out.getvalue().splitlines() if x.startswith("memory: ")]
    assert line.startswith("memory: " + plan["memory_choice"])
    assert "micro_batch_size 1, grad_checkpoint on" in line and "does NOT fit" in line
    (dry_line,) = [x for x in dry.getvalue().splitlines() if x.startswith("memory: ")]
    assert dry_line == line  # said once by the dry run too, before its reference batch
