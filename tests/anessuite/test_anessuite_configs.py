"""Every committed AnesSuite YAML config loads against its schema and passes the trainer's validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from anessuite.evaluate import EvalConfig
from anessuite.experiment import AnessuiteExperimentSpec
from anessuite.pipeline.config import PipelineConfig
from anessuite.pipeline.grpo_stage import build_rl_config
from anessuite.tables import MorpheusConfig, StrategiesConfig, Table3Config
from rlcore.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "packages/anessuite/configs").glob("*.yaml"))
EXPERIMENTS = sorted(ROOT.glob("experiments/anessuite-*/*.yaml"))
# Every config names the command that runs it on its first line (`# recipe: anessuite <command>`).
SCHEMAS = {
    "pipeline": PipelineConfig,
    "eval": EvalConfig,
    "table3": Table3Config,
    "morpheus": MorpheusConfig,
    "strategies": StrategiesConfig,
    "experiment": AnessuiteExperimentSpec,
}


def _schema(path: Path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    command = first.removeprefix("# recipe: anessuite ").strip()
    assert first.startswith("# recipe: anessuite ") and command in SCHEMAS, (
        f"{path}: first line must be '# recipe: anessuite <{'|'.join(SCHEMAS)}>', got {first!r}"
    )
    return SCHEMAS[command]


def test_configs_found():
    assert len(CONFIGS) >= 8 and len(EXPERIMENTS) >= 5


@pytest.mark.parametrize("path", CONFIGS + EXPERIMENTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_loads_and_validates(path, tmp_path):
    cfg = load_config(_schema(path), path)
    if isinstance(cfg, AnessuiteExperimentSpec):
        cfg.validate()
    if isinstance(cfg, PipelineConfig):
        build_rl_config(cfg.grpo, cfg.base_model, tmp_path / "rl.jsonl", tmp_path, cfg.seed)  # validates
        for stage in (cfg.cpt, cfg.sft):
            if stage.deepspeed:
                assert (ROOT / stage.deepspeed).is_file(), stage.deepspeed
    else:
        assert getattr(cfg, "seed", 0) >= 0


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_experiment_configs_point_at_existing_files(path):
    cfg = load_config(_schema(path), path)
    pipeline = getattr(cfg, "pipeline_config", None)
    if pipeline:
        assert (ROOT / pipeline).is_file(), pipeline


def test_module_size_caps():
    """Components stay under ~400 lines and recipes under ~600 (CONVENTIONS.md)."""
    recipes = {"evaluate.py", "run.py", "tables.py", "convert.py", "generate.py", "tasks.py"}
    for path in sorted((ROOT / "packages/anessuite/src/anessuite").rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= (600 if path.name in recipes else 400), f"{path.name}: {lines} lines"
