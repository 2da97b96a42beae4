"""Every committed trainer / accelerate / DeepSpeed config loads and validates; the CLI's dry run and errors."""

import json
import re
from pathlib import Path

import pytest
import yaml

from rlcore.config import ConfigError, load_config
from rlcore.trainer import RLTrainConfig
from rlcore.trainer.grpo import main

REPO = Path(__file__).parents[3]
TRAINER_CONFIGS = sorted((REPO / "packages/common/src/rlcore/trainer/configs").glob("*.yaml"))
ACCELERATE_CONFIGS = sorted((REPO / "infra/accelerate").glob("*.yaml"))
DEEPSPEED_CONFIGS = sorted((REPO / "infra/deepspeed").glob("*.json"))


def test_the_config_folders_are_not_empty():
    assert TRAINER_CONFIGS and len(ACCELERATE_CONFIGS) >= 4 and len(DEEPSPEED_CONFIGS) == 3


@pytest.mark.parametrize("path", TRAINER_CONFIGS, ids=lambda p: p.name)
def test_trainer_yaml_loads_and_validates(path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config(RLTrainConfig, path)
    cfg.validate()
    assert Path(cfg.data.path).is_file()


@pytest.mark.parametrize("path", DEEPSPEED_CONFIGS, ids=lambda p: p.name)
def test_deepspeed_json(path):
    config = json.loads(path.read_text())
    stage = int(path.stem.removeprefix("zero"))
    assert config["zero_optimization"]["stage"] == stage
    # values the trainer pins itself must stay "auto" so one JSON serves every recipe and batch size
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert config[key] == "auto", key
    assert config["bf16"]["enabled"] == "auto"
    assert config["zero_allow_untested_optimizer"] is True  # the trainer passes a torch AdamW
    if stage == 3:
        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_yaml(path):
    config = yaml.safe_load(path.read_text())
    assert config["distributed_type"] in {"DEEPSPEED", "MULTI_GPU", "MULTI_CPU"}
    if config["distributed_type"] == "DEEPSPEED":
        ds_file = REPO / config["deepspeed_config"]["deepspeed_config_file"]
        assert ds_file.is_file() and ds_file.stem == path.stem  # zero2.yaml -> infra/deepspeed/zero2.json
    assert config["num_machines"] == 1 and config["num_processes"] >= 1


def test_cli_dry_run_prints_resolved_config(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["--config", str(TRAINER_CONFIGS[0]), "--dry-run", "objective.kl_coef=0.001"]) == 0
    out = capsys.readouterr().out
    resolved = yaml.safe_load(out)
    assert resolved["objective"]["kl_coef"] == 0.001 and resolved["rollout"]["tools_enabled"] is False


def test_cli_unknown_key_names_the_nearest(capsys):
    assert main(["--dry-run", "objective.kl_coeff=0.1"]) == 2
    assert "objective.kl_coef" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, message",
    [
        # a value outside a field's choices fails at load, naming the valid values
        ("objective.aggregation=sum", "invalid value 'sum' for 'objective.aggregation'"),
        ("objective.std_scope=global", "invalid value 'global' for 'objective.std_scope'"),
        ("train.mixed_precision=fp16", "invalid value 'fp16' for 'train.mixed_precision'"),
        ("generation.backend=vlm", "for 'generation.backend'; did you mean 'vllm'"),
        # impossible values and combinations fail in validate()
        ("objective.dual_clip=0.5", "objective.dual_clip must be > 1"),
        ("rollout.temperature=0", "no GRPO signal"),
    ],
)
def test_validate_names_the_field(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(RLTrainConfig, overrides=[override]).validate()


def test_type_errors_surface_as_config_errors():
    with pytest.raises(ConfigError, match="objective.ppo_epochs"):
        load_config(RLTrainConfig, overrides=["objective.ppo_epochs=two"])
