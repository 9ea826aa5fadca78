"""Readable training logs and experiment trackers (`report_to: wandb, swanlab, tensorboard`).

The console gets one line per train report and one per evaluation; every metric still goes to
`metrics.jsonl`. Trackers follow mlx-lm's `TrainingCallback` shape (`on_train_loss_report`,
`on_val_loss_report` with an `iteration` key) and its `report_to` / `project_name` config keys.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

from .errors import CloError

# (metric, short label, format) shown on a train line when present.
TRAIN_FIELDS = (
    ("loss", "loss", ".3f"),
    ("rewards/margins", "margin", ".3f"),
    ("rewards/accuracies", "acc", ".2f"),
    ("nll/target", "nll/tgt", ".3f"),
    ("nll/train", "nll", ".3f"),
)
# Headline eval metrics, shown per pair kind when the validation set has several.
EVAL_FIELDS = (("rewards/accuracies", "acc", ".2f"), ("rewards/margins", "margin", ".3f"))
_RUN_KEYS = ("step", "learning_rate", "tokens_per_second", "peak_memory_gb")


def train_line(report: dict, verbose: bool = False) -> str:
    """One line for a train report: step, loss, margin, accuracy, target NLL, lr, tok/s, memory."""
    parts = [f"step {report['step']}"]
    parts += [f"{label} {report[k]:{fmt}}" for k, label, fmt in TRAIN_FIELDS if k in report]
    if "learning_rate" in report:
        parts.append(f"lr {report['learning_rate']:.2e}")
    if "tokens_per_second" in report:
        parts.append(f"{report['tokens_per_second']:.0f} tok/s")
    if "peak_memory_gb" in report:
        parts.append(f"{report['peak_memory_gb']:.2f} GB")
    line = " | ".join(parts)
    if verbose:
        shown = {k for k, _, _ in TRAIN_FIELDS} | set(_RUN_KEYS)
        rest = [f"{k} {_fmt(v)}" for k, v in report.items() if k not in shown]
        line += ("\n  " + ", ".join(rest)) if rest else ""
    return line


def eval_line(record: dict, verbose: bool = False, split: str = "val") -> str:
    """One short line for an evaluation record (`val/...` or `test/...` metrics, plus extras
    such as `fidelity/sw`); `verbose`: every metric."""
    name = "eval" if split == "val" else split
    skip = ("step", "val_time")
    if verbose:
        shown = ", ".join(
            f"{k} {v:.3f}" for k, v in record.items() if k not in skip and isinstance(v, float)
        )
        return f"{name} step {record['step']}: {shown}"
    p = f"{split}/"
    kinds = sorted(
        k.rsplit("/", 1)[1]
        for k in record
        if k.startswith(f"{p}rewards/accuracies/") and k.count("/") == 3
    )
    parts = []
    if f"{p}loss" in record:
        parts.append(f"loss {record[f'{p}loss']:.3f}")
    for key, label, fmt in EVAL_FIELDS:
        if kinds:
            per_kind = [
                f"{kind} {record[f'{p}{key}/{kind}']:{fmt}}"
                for kind in kinds
                if f"{p}{key}/{kind}" in record
            ]
            parts.append(f"{label} " + " ".join(per_kind))
        elif f"{p}{key}" in record:
            parts.append(f"{label} {record[f'{p}{key}']:{fmt}}")
    if f"{p}nll/target" in record:
        parts.append(f"nll/tgt {record[f'{p}nll/target']:.3f}")
    parts += [
        f"{k} {_fmt(v)}"
        for k, v in record.items()
        if not k.startswith(("val/", "test/")) and k not in skip and _is_number(v)
    ]
    if "val_time" in record:
        parts.append(f"{record['val_time']:.1f} s")
    return f"{name} step {record['step']}: " + " | ".join(parts)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# ----------------------------------------------------------------------------- trackers

REPORTERS = ("wandb", "swanlab", "tensorboard")  # each is also a pip package and an extra


def parse_report_to(report_to: str | None, where: str = "report_to") -> list[str]:
    """Tracker names of a comma-separated `report_to`; a clear error for an unknown or missing
    one (checked before any long work)."""
    if not report_to:
        return []
    names = [n.strip().lower() for n in report_to.split(",") if n.strip()]
    for name in names:
        if name not in REPORTERS:
            import difflib

            near = difflib.get_close_matches(name, list(REPORTERS), n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise CloError(
                f"{where}: unknown tracker {name!r}; choose from {', '.join(REPORTERS)}.{hint}"
            )
        if importlib.util.find_spec(name) is None:
            raise CloError(
                f"{where}: {name} is not installed; pip install 'clo-mlx[{name}]' "
                f"(or pip install {name})"
            )
    return list(dict.fromkeys(names))


def _serializable(info: dict) -> dict:
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in info.items()}


def _numbers(info: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in _serializable(info).items()
        if _is_number(v) and k not in ("iteration", "step")  # the step is the x axis
    }


class Tracker:
    """mlx-lm's TrainingCallback (mlx_lm.tuner.callbacks, not imported: it imports wandb) plus
    the end of a run: the final eval table, then close."""

    def on_train_loss_report(self, train_info: dict) -> None:
        pass

    def on_val_loss_report(self, val_info: dict) -> None:
        pass

    def on_run_end(self, final: dict[str, float]) -> None:
        pass


class WandBTracker(Tracker):
    def __init__(self, project_name: str, log_dir: str, config: dict):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=project_name,
            name=os.path.basename(os.path.abspath(log_dir)),
            dir=log_dir,
            config=config,
        )

    def on_train_loss_report(self, train_info: dict) -> None:
        self.run.log(_train_metrics(train_info), step=train_info["iteration"])

    def on_val_loss_report(self, val_info: dict) -> None:
        self.run.log(_numbers(val_info), step=val_info["iteration"])

    def on_run_end(self, final: dict[str, float]) -> None:
        table = self.wandb.Table(
            columns=["metric", "value"], data=[[k, v] for k, v in final.items()]
        )
        self.run.log({"final_eval": table})
        for k, v in final.items():
            self.run.summary[f"final/{k}"] = v
        self.run.finish()


class SwanLabTracker(Tracker):
    def __init__(self, project_name: str, log_dir: str, config: dict):
        import swanlab

        self.swanlab = swanlab
        swanlab.init(
            project=project_name,
            experiment_name=os.path.basename(os.path.abspath(log_dir)),
            logdir=os.path.join(log_dir, "swanlog"),
            config=config,
        )

    def on_train_loss_report(self, train_info: dict) -> None:
        self.swanlab.log(_train_metrics(train_info), step=train_info["iteration"])

    def on_val_loss_report(self, val_info: dict) -> None:
        self.swanlab.log(_numbers(val_info), step=val_info["iteration"])

    def on_run_end(self, final: dict[str, float]) -> None:
        self.swanlab.log({f"final/{k}": v for k, v in final.items()})
        self.swanlab.finish()


class TensorBoardTracker(Tracker):
    """Event files under `<log_dir>/tensorboard/<start time>` (one TensorBoard run per training
    run; tensorboard's own writer, no TensorFlow)."""

    def __init__(self, project_name: str, log_dir: str, config: dict):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.dir = Path(log_dir) / "tensorboard" / time.strftime("%Y%m%d-%H%M%S")
        self.writer = EventFileWriter(str(self.dir))
        self._text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)

    def _scalars(self, values: dict[str, float], step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
        self.writer.add_event(Event(wall_time=time.time(), step=step, summary=summary))

    def _text(self, tag: str, text: str, step: int) -> None:
        from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata

        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            string_val=[text.encode("utf-8")],
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]
            ),
        )
        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
        value = Summary.Value(tag=tag, metadata=meta, tensor=tensor)
        self.writer.add_event(
            Event(wall_time=time.time(), step=step, summary=Summary(value=[value]))
        )

    def on_train_loss_report(self, train_info: dict) -> None:
        self._scalars(_train_metrics(train_info), train_info["iteration"])
        self.writer.flush()

    def on_val_loss_report(self, val_info: dict) -> None:
        self._scalars(_numbers(val_info), val_info["iteration"])
        self.writer.flush()

    def on_run_end(self, final: dict[str, float]) -> None:
        rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in final.items())
        self._text("final_eval", "| metric | value |\n|---|---|\n" + rows, 0)
        self.writer.close()


TRACKERS = {"wandb": WandBTracker, "swanlab": SwanLabTracker, "tensorboard": TensorBoardTracker}


def _train_metrics(info: dict) -> dict[str, float]:
    # TRL's names under train/ (eval metrics already carry val/ or test/).
    return {
        (k if k in ("learning_rate", "trained_tokens") else f"train/{k}"): v
        for k, v in _numbers(info).items()
    }


class Trackers(Tracker):
    """Several trackers as one callback."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def on_train_loss_report(self, train_info: dict) -> None:
        for t in self.trackers:
            t.on_train_loss_report(train_info)

    def on_val_loss_report(self, val_info: dict) -> None:
        for t in self.trackers:
            t.on_val_loss_report(val_info)

    def on_run_end(self, final: dict[str, float]) -> None:
        for t in self.trackers:
            t.on_run_end(final)


def make_trackers(
    report_to: str | None, project_name: str | None, log_dir: str | Path, config: dict
) -> Trackers | None:
    """The trackers named in `report_to` (None when it is empty), as mlx-lm's
    get_reporting_callbacks; `project_name` defaults to `clo-mlx`."""
    names = parse_report_to(report_to)
    if not names:
        return None
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    project = project_name or "clo-mlx"
    trackers = []
    for name in names:
        try:
            trackers.append(TRACKERS[name](project, str(log_dir), config))
        except Exception as e:  # e.g. wandb online without a login
            raise CloError(f"report_to: {name} could not start: {e}") from e
    return Trackers(trackers)


def final_metrics(evals: list[dict]) -> dict[str, float]:
    """The final eval table: the last value of every eval/test metric."""
    final: dict[str, float] = {}
    for record in evals:
        final.update({k: v for k, v in _numbers(record).items() if k != "val_time"})
    return final
