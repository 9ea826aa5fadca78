"""Config: every YAML value takes effect, CLI flags beat YAML, bad keys get suggestions."""

import pytest
import yaml
from typer.testing import CliRunner

from clo_mlx.config import ConfigError, TrainConfig, build_config

NON_DEFAULT = {
    "model": "some/model",
    "data": "some/data",
    "train": False,
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
}


def test_every_yaml_value_takes_effect(tmp_path):
    defaults = TrainConfig().to_dict()
    assert set(NON_DEFAULT) == set(defaults), "keep NON_DEFAULT in step with TrainConfig"
    for key, value in NON_DEFAULT.items():
        assert value != defaults[key], key
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(NON_DEFAULT))
    assert build_config(path).to_dict() == NON_DEFAULT


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
    cli.main._register_commands()
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
