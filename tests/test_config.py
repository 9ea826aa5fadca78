"""Config: every YAML value takes effect, CLI flags beat YAML, bad keys get suggestions."""

import pytest
import yaml
from typer.testing import CliRunner

from clo_mlx.config import ConfigError, TrainConfig, build_config

NON_DEFAULT = {
    "model": "some/model",
    "data": "some/data",
    "fine_tune_type": "dora",
    "num_layers": 3,
    "batch_size": 6,
    "iters": 7,
    "learning_rate": 3e-4,
    "lr_schedule": {"name": "cosine_decay", "arguments": [3e-4, 7], "warmup": 2},
    "optimizer": "adamw",
    "optimizer_config": {"weight_decay": 0.1},
    "steps_per_report": 3,
    "steps_per_eval": 4,
    "val_batches": 5,
    "save_every": 6,
    "adapter_path": "out/ad",
    "resume_adapter_file": "x.safetensors",
    "max_seq_length": 99,
    "truncation": "drop",
    "grad_checkpoint": True,
    "grad_accumulation_steps": 2,
    "micro_batch_size": 1,
    "memory_budget_gb": 12.5,
    "seed": 42,
    "lora_parameters": {"rank": 4, "scale": 8.0, "dropout": 0.1, "keys": ["self_attn.q_proj"]},
    "loss": "dpo",
    "clo": {
        "beta": 0.3,
        "lambda": 0.7,
        "nll_languages": "both",
        "preference": "ipo",
        "simpo_gamma": 1.5,
        "dpop_en": 5.0,
        "dpop_tgt": 2.0,
        "anchor_en": 1.0,
    },
    "sft": {"languages": "both"},
    "dtype": "float16",
    "logprob_chunk_size": 64,
    "cache_dir": "c",
    "resume": True,
    "reference_adapter_path": "sft-adapters",
    "skip_nonfinite": True,
    "test": True,
    "test_batches": 9,
    "clear_cache_threshold": 123,
    "trust_remote_code": True,
    "report_to": "tensorboard",
    "project_name": "my-project",
    "data_split": "train_sft",
    "data_columns": {"prompt": "question"},
}


def test_every_yaml_value_takes_effect(tmp_path):
    defaults = TrainConfig().to_dict()
    # `train` (mlx-lm's key) has one valid value, true: false is refused (test below).
    assert set(NON_DEFAULT) | {"train"} == set(defaults), "keep NON_DEFAULT in step"
    for key, value in NON_DEFAULT.items():
        assert value != defaults[key], key
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(NON_DEFAULT))
    assert build_config(path).to_dict() == {**NON_DEFAULT, "train": True}


def test_partial_nested_yaml_keeps_other_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("clo:\n  beta: 0.2\nlearning_rate: 1e-5\n")  # 1e-5: a string to PyYAML
    cfg = build_config(path)
    assert cfg.clo == {**TrainConfig().clo, "beta": 0.2}
    assert cfg.learning_rate == 1e-5


def test_cli_beats_yaml_beats_default(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("iters: 50\nbatch_size: 2\nclo: {beta: 0.2, lambda: 0.9}\n")
    cfg = build_config(path, {"iters": 5, "clo": {"lambda": 0.1}, "seed": None})
    assert (cfg.iters, cfg.batch_size, cfg.seed) == (5, 2, 0)
    assert cfg.clo["beta"] == 0.2 and cfg.clo["lambda"] == 0.1


@pytest.mark.parametrize(
    "text,message",
    [
        ("iter: 5\n", "unknown config key 'iter'. Did you mean 'iters'?"),
        ("lora_parameters: {alpha: 16}\n", "unknown key lora_parameters.alpha"),
        ("clo: {lamda: 0.5}\n", "Did you mean 'lambda'?"),
        ("loss: cl0\n", "loss must be one of ['clo', 'dpo', 'sft']"),
        ("batch_size: two\n", "batch_size must be int"),
        ("clo: {lambda: 1.5}\n", "clo.lambda must be in [0, 1]"),
        ("micro_batch_size: 0\n", "micro_batch_size must be >= 1 (or null: automatic)"),
        ("iters: [1\n", "invalid YAML"),
        # issue 13, items 2, 9, 10: values that used to crash later or be accepted silently
        (
            "lr_schedule: {name: cosine_decy, arguments: [1e-5, 10]}\n",
            "Did you mean 'cosine_decay'?",
        ),
        (
            "lr_schedule: {name: cosine_decay, arguments: [1e-5]}\n",
            "do not fit mlx.optimizers.cosine_decay",
        ),
        (
            "lr_schedule: {name: cosine_decay, arguments: [1e-5, 9], warm_up: 2}\n",
            "Did you mean 'warmup'?",
        ),
        ("lora_parameters: {dropout: 1.5}\n", "lora_parameters.dropout must be in [0, 1), got 1.5"),
        ("optimizer_config: {weight_decay: 0.1}\n", "'weight_decay' is not an option of adam"),
        ("optimizer: sgd\noptimizer_config: {momentm: 0.9}\n", "Did you mean 'momentum'?"),
        ("optimizer_config: {adam: {}, eps: 1.0e-6}\n", "mixes optimizer names ['adam']"),
        ("num_layers: 0\n", "num_layers must be >= 1 (the last N layers) or -1 (all), got 0"),
        ("num_layers: -2\n", "num_layers must be >= 1 (the last N layers) or -1 (all), got -2"),
        ("learning_rate: -1.0e-5\n", "learning_rate must be a finite number >= 0"),
        ("learning_rate: .nan\n", "learning_rate must be a finite number >= 0, got nan"),
        ("clo: {beta: .nan}\n", "clo.beta must be a positive finite number, got nan"),
        ("val_batches: -3\n", "val_batches must be >= 1 or -1 (all), got -3"),
        ("val_batches: 0\n", "val_batches must be >= 1 or -1 (all), got 0"),
        ("logprob_chunk_size: -5\n", "logprob_chunk_size must be >= 1, 0 (off) or null"),
        ("max_seq_length: 100000000\n", "max_seq_length=100000000 is beyond any model's context"),
        (
            "iters: 5\nclo:\n  beta: 0.1\n  beta: 0.2\n",
            ":4: invalid YAML (duplicate key 'beta' (first on line 3))",
        ),
        ("iters: 5\niters: 6\n", "duplicate key 'iters'"),
        ("train: false\n", "train: false is not supported"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        build_config(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_every_cli_flag_reaches_the_config(tmp_path, monkeypatch):
    """Flags map to their keys (and a YAML value survives when its flag is not given)."""
    import cli.main
    import clo_mlx.run

    captured = {}
    monkeypatch.setattr(
        clo_mlx.run, "run_training", lambda cfg, **kw: captured.setdefault("cfg", cfg)
    )
    path = tmp_path / "c.yaml"
    path.write_text("model: m\ndata: d\nmax_seq_length: 77\n")
    flags = [
        "--iters",
        "9",
        "--batch-size",
        "3",
        "--learning-rate",
        "0.002",
        "--loss",
        "sft",
        "--beta",
        "0.4",
        "--lambda",
        "0.2",
        "--nll-languages",
        "both",
        "--dpop-en",
        "5",
        "--dpop-tgt",
        "2",
        "--anchor-en",
        "1.5",
        "--sft-languages",
        "en",
        "--fine-tune-type",
        "full",
        "--num-layers",
        "1",
        "--lora-rank",
        "2",
        "--lora-scale",
        "4",
        "--lora-dropout",
        "0.05",
        "--steps-per-report",
        "2",
        "--steps-per-eval",
        "3",
        "--val-batches",
        "4",
        "--save-every",
        "5",
        "--truncation",
        "drop",
        "--grad-checkpoint",
        "--grad-accumulation-steps",
        "2",
        "--micro-batch-size",
        "1",
        "--seed",
        "7",
        "--dtype",
        "float32",
        "--test",
        "--cache-dir",
        "cc",
        "--logprob-chunk-size",
        "16",
        "--adapter-path",
        "aa",
        "--resume",
        "--skip-nonfinite",
    ]
    result = CliRunner().invoke(cli.main.app, ["train", "-c", str(path), *flags])
    assert result.exit_code == 0, result.output
    cfg = captured["cfg"]
    assert (cfg.model, cfg.data, cfg.max_seq_length) == ("m", "d", 77)
    assert (cfg.iters, cfg.batch_size, cfg.learning_rate, cfg.loss) == (9, 3, 0.002, "sft")
    assert cfg.clo == {
        **TrainConfig().clo,
        **{"beta": 0.4, "lambda": 0.2, "nll_languages": "both"},
        **{"dpop_en": 5.0, "dpop_tgt": 2.0, "anchor_en": 1.5},
    }
    assert cfg.sft == {"languages": "en"}
    assert (cfg.fine_tune_type, cfg.num_layers) == ("full", 1)
    assert cfg.lora_parameters == {
        **TrainConfig().lora_parameters,
        "rank": 2,
        "scale": 4.0,
        "dropout": 0.05,
    }
    assert (cfg.steps_per_report, cfg.steps_per_eval, cfg.val_batches, cfg.save_every) == (
        2,
        3,
        4,
        5,
    )
    assert (cfg.truncation, cfg.grad_checkpoint, cfg.grad_accumulation_steps) == ("drop", True, 2)
    assert cfg.micro_batch_size == 1
    assert (cfg.seed, cfg.dtype, cfg.test, cfg.cache_dir) == (7, "float32", True, "cc")
    assert (cfg.logprob_chunk_size, cfg.adapter_path) == (16, "aa")
    assert cfg.resume and cfg.skip_nonfinite


def test_optimizer_config_takes_flat_or_mlx_lm_per_optimizer_form():
    from clo_mlx.trainer import build_optimizer

    # mlx-lm writes {adam: {...}, adamw: {...}, ...}: only the chosen optimizer's entry is used.
    nested = {"adam": {"betas": [0.5, 0.6]}, "sgd": {"momentum": 0.9}}
    opt = build_optimizer(build_config(overrides={"optimizer_config": nested}))
    assert type(opt).__name__ == "Adam" and opt.betas == [0.5, 0.6]
    opt = build_optimizer(build_config(overrides={"optimizer_config": {"adam": {}}}))
    assert opt.betas == [0.9, 0.999]  # mlx's default
    opt = build_optimizer(build_config(overrides={"optimizer": "sgd", "optimizer_config": nested}))
    assert type(opt).__name__ == "SGD" and opt.momentum == 0.9
    flat = {"optimizer": "adamw", "optimizer_config": {"weight_decay": 0.25}}
    assert build_optimizer(build_config(overrides=flat)).weight_decay == 0.25


def test_yaml_reads_1e_5_as_a_float_everywhere(tmp_path):
    """PyYAML reads `1e-5` as a string; inside lr_schedule.arguments (the presets' form) that
    string used to reach the optimizer and fail at the first update."""
    from clo_mlx.trainer import build_optimizer

    path = tmp_path / "c.yaml"
    path.write_text("lr_schedule: {name: cosine_decay, arguments: [1e-5, 100], warmup: 10}\n")
    cfg = build_config(path)
    assert cfg.lr_schedule["arguments"] == [1e-5, 100]
    schedule = build_optimizer(cfg).learning_rate  # mlx's schedule, at step 0 of warmup
    assert float(schedule) == 0.0
