"""What a training run does besides training, as callbacks of mlx-lm's TrainingCallback shape.

`trainer.train` calls `on_train_begin(step, model)` before its first step and, at every step, in
this order: `on_train_loss_report(info)` every steps_per_report, `on_step_end(step, model,
skipped)`, and `on_save(step, model, optimizer, numbered)` when it saves (every save_every steps
at an update, at the end, and at a Ctrl-C stop). Info dicts carry mlx-lm's `iteration` key.
`Callbacks` calls the callbacks that have a method, so an mlx-lm callback (the two report
methods only) or a tracker (reporting.py) can be one of them.

Data-parallel: every rank runs these; the ones that write files or print do it on rank 0 only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from . import distributed, reporting
from .adapters import ADAPTER_FILE, save_adapters
from .batching import AUTO_MICRO_BATCH_TOKENS
from .checkpoint import save_checkpoint
from .config import TrainConfig
from .io import append_jsonl, atomic_write_text, ensure_folder


class TrainingCallback:
    """mlx-lm's TrainingCallback (on_train_loss_report, on_val_loss_report), plus the steps a
    run needs around them."""

    def on_train_begin(self, step: int, model) -> None:
        pass

    def on_step_end(self, step: int, model, skipped: bool) -> None:
        pass

    def on_train_loss_report(self, train_info: dict) -> None:
        pass

    def on_val_loss_report(self, val_info: dict) -> None:
        pass

    def on_save(self, step: int, model, optimizer, numbered: bool) -> None:
        pass


class Callbacks(TrainingCallback):
    """Several callbacks as one, called in order; None entries are left out."""

    def __init__(self, callbacks: Sequence):
        self.callbacks = [c for c in callbacks if c is not None]

    def _call(self, name: str, *args) -> None:
        for c in self.callbacks:
            if (method := getattr(c, name, None)) is not None:
                method(*args)

    def on_train_begin(self, step: int, model) -> None:
        self._call("on_train_begin", step, model)

    def on_step_end(self, step: int, model, skipped: bool) -> None:
        self._call("on_step_end", step, model, skipped)

    def on_train_loss_report(self, train_info: dict) -> None:
        self._call("on_train_loss_report", train_info)

    def on_val_loss_report(self, val_info: dict) -> None:
        self._call("on_val_loss_report", val_info)

    def on_save(self, step: int, model, optimizer, numbered: bool) -> None:
        self._call("on_save", step, model, optimizer, numbered)


def _record(info: dict) -> dict:
    return {k: v for k, v in info.items() if k != "iteration"}


class TrainResult(TrainingCallback):
    """What a run returns: its train reports and evaluations, and the adapters it saved."""

    def __init__(self, adapter_path: str | Path | None = None):
        self.reports: list[dict] = []
        self.evals: list[dict] = []
        self.adapter_file: Path | None = None
        self._folder = Path(adapter_path) if adapter_path is not None else None

    def on_train_loss_report(self, train_info: dict) -> None:
        self.reports.append(_record(train_info))

    def on_val_loss_report(self, val_info: dict) -> None:
        self.evals.append(_record(val_info))

    def on_save(self, step: int, model, optimizer, numbered: bool) -> None:
        if self._folder is not None:
            self.adapter_file = self._folder / ADAPTER_FILE


class MetricsFile(TrainingCallback):
    """`metrics.jsonl` in the adapter folder: one line per train report and evaluation. A resumed
    run keeps the lines up to its start step and rewrites the later ones."""

    def __init__(self, folder: str | Path, start_step: int):
        self.path = ensure_folder(folder) / "metrics.jsonl"
        _truncate_metrics(self.path, start_step)

    def on_train_loss_report(self, train_info: dict) -> None:
        append_jsonl(self.path, [{"type": "train", **_record(train_info)}])

    def on_val_loss_report(self, val_info: dict) -> None:
        append_jsonl(self.path, [{"type": "eval", **_record(val_info)}])


def _truncate_metrics(path: Path, keep_until: int) -> None:
    """Keep the metrics lines of steps <= keep_until (a resumed run rewrites later ones)."""
    if not path.exists():
        return
    if keep_until == 0:
        path.unlink()
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= keep_until:
                kept.append(line + "\n")
        except json.JSONDecodeError:
            continue  # a torn last line from a crash
    atomic_write_text(path, "".join(kept))


class ConsoleLog(TrainingCallback):
    """A Rich progress bar and one line per train report and evaluation (reporting.py); a context
    manager around the training loop."""

    def __init__(self, cfg: TrainConfig, console, verbose: bool = False, unit: str = "pairs"):
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.cfg, self.console, self.verbose, self.unit = cfg, console, verbose, unit
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not distributed.is_main(),
        )
        self.task = None

    def __enter__(self) -> ConsoleLog:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        return self.progress.__exit__(*exc)

    def on_train_begin(self, step: int, model) -> None:
        cfg = self.cfg
        per_pass = (
            f"at most {cfg.micro_batch_size} {self.unit}"
            if cfg.micro_batch_size
            else f"automatic, <= {AUTO_MICRO_BATCH_TOKENS:,} padded tokens"
        )
        self.console.print(
            f"batches of {cfg.batch_size} {self.unit}; forward/backward passes: {per_pass}"
        )
        self.task = self.progress.add_task("train", total=cfg.iters, completed=step, info="")

    def on_step_end(self, step: int, model, skipped: bool) -> None:
        if skipped:
            self.console.print(f"[yellow]step {step}: non-finite loss, batch skipped")
        self.progress.update(self.task, advance=1, **({"info": "skipped"} if skipped else {}))

    def on_train_loss_report(self, train_info: dict) -> None:
        report = _record(train_info)
        self.console.print(reporting.train_line(report, self.verbose), highlight=False)
        loss = report.get("loss")
        self.progress.update(self.task, info="" if loss is None else f"loss {loss:.3f}")

    def on_val_loss_report(self, val_info: dict) -> None:
        line = reporting.eval_line(_record(val_info), self.verbose)
        self.console.print(line, style="cyan", highlight=False)


class Evaluator(TrainingCallback):
    """Evaluations at step 0 (of a fresh run), every steps_per_eval steps and at the end:
    trainer.evaluate_pairs on `valid` (`val/...` metrics) plus whatever `extra(step, model)`
    returns; each goes to `report.on_val_loss_report`."""

    def __init__(
        self,
        cfg: TrainConfig,
        valid,
        report: TrainingCallback,
        extra: Callable[[int, object], dict | None] | None = None,
    ):
        self.cfg, self.valid, self.report, self.extra = cfg, valid, report, extra

    def on_train_begin(self, step: int, model) -> None:
        if step == 0:
            self.evaluate(0, model)

    def on_step_end(self, step: int, model, skipped: bool) -> None:
        if step % self.cfg.steps_per_eval == 0 or step == self.cfg.iters:
            self.evaluate(step, model)

    def evaluate(self, step: int, model) -> None:
        from .trainer import evaluate_pairs

        record: dict = {"step": step}
        tic = time.perf_counter()
        if self.valid is not None and len(self.valid):
            metrics = evaluate_pairs(model, self.valid, self.cfg, self.cfg.val_batches)
            record.update({f"val/{k}": v for k, v in metrics.items()})
        if self.extra is not None:
            record.update(self.extra(step, model) or {})
        model.train()
        if len(record) > 1:
            record["val_time"] = time.perf_counter() - tic
            self.report.on_val_loss_report({"iteration": step, **record})


class Checkpointer(TrainingCallback):
    """Adapters (mlx-lm layout, plus a numbered copy at intermediate saves) and a resumable
    checkpoint in the adapter folder, written by rank 0."""

    def __init__(self, cfg: TrainConfig):
        self.cfg, self.folder = cfg, Path(cfg.adapter_path)

    def on_save(self, step: int, model, optimizer, numbered: bool) -> None:
        if not distributed.is_main():
            return
        # The checkpoint first: a kill before the other files can still --resume.
        save_checkpoint(self.folder, step, model, optimizer, self.cfg)
        if numbered:
            save_adapters(model, self.folder, self.cfg, filename=f"{step:07d}_adapters.safetensors")
        save_adapters(model, self.folder, self.cfg)
