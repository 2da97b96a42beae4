"""One vocabulary across the recipes (CONTRIBUTING.md, "Config keys"): old key names fail naming the new one,
and a pure rename leaves every run identity as it was.

``fixtures/run_identities.json`` was computed by the code *before* the renames of ``out_dir``, ``learning_rate``,
``save_steps``, ``save_total_limit`` and ``logging_steps`` (and holds for the later ones: ``max_steps``,
``per_device_batch_size``, ``track``, the pipeline's ``tracking`` switch and ``experiment``), from the committed
AnesSuite configs (the schemas that renamed keys) and the REX-RAG experiments' planned runs: config hashes (run
folders, MLflow tags, the experiment driver's planned runs), the AnesSuite pipeline's training fingerprint (its
default run folder) and stage keys (stage reuse). Finished runs made before the rename are found and reused only
while these values hold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from config_harness import REPO, recipe_argv

from anessuite.evaluate import EvalConfig as AnesEvalConfig
from anessuite.pipeline import stage_cache
from anessuite.pipeline.config import PipelineConfig
from anessuite.pipeline.stage_cache import STAGES, stage_key, training_fingerprint
from anessuite.tables import MorpheusConfig, StrategiesConfig, Table3Config
from rexrag.experiment import RexRagExperimentSpec
from rexrag.precheck import PrecheckConfig
from rexrag.recipes.evaluate import EvalConfig as RexEvalConfig
from rexrag.recipes.sft import SFTConfig
from rexrag.recipes.train import RexRagTrainConfig
from rlcore.config import ConfigError, config_hash, identity_dict, load_config, to_dict
from rlcore.experiments import plan
from rlcore.trainer.config import RLTrainConfig

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "run_identities.json").read_text())
SCHEMAS = {
    "anessuite pipeline": PipelineConfig,
    "anessuite eval": AnesEvalConfig,
    "anessuite table3": Table3Config,
    "anessuite morpheus": MorpheusConfig,
    "anessuite strategies": StrategiesConfig,
    "rexrag train": RexRagTrainConfig,
    "rexrag sft": SFTConfig,
    "rexrag evaluate": RexEvalConfig,
    "rexrag precheck": PrecheckConfig,
}
RENAMING = sorted(  # a stable order: parallel test workers must collect the same ids
    (schema for schema in {*SCHEMAS.values(), RLTrainConfig} if getattr(schema, "RENAMED_KEYS", None)),
    key=lambda schema: (schema.__module__, schema.__qualname__),
)
# environment variables the committed configs interpolate; the fixture was computed without them
CONFIG_ENV = ("ANESSUITE_ANESR1", "ANESSUITE_DATA", "DATA", "REXRAG_DATA", "RLCORE_RETRIEVER_URL", "RUNS_DIR")


@pytest.fixture
def clean_env(monkeypatch):
    for var in (*CONFIG_ENV, "RLCORE_TRAINER_CONFIGS"):
        monkeypatch.delenv(var, raising=False)


def test_the_fixture_covers_the_committed_configs():
    assert len(FIXTURE["configs"]) >= 15 and len(FIXTURE["experiment_runs"]) >= 60
    # a retired config leaves the fixture in the same commit, so no identity check is skipped for a missing file
    retired = [path for path in FIXTURE["configs"] if not (REPO / path).is_file()]
    assert not retired, (
        f"configs no longer committed, remove them from fixtures/run_identities.json: {retired}"
    )


@pytest.mark.parametrize("path", sorted(FIXTURE["configs"]))
def test_identities_survive_the_renames(path: str, clean_env, monkeypatch):
    # renames only: an embedded model rebuilt since changes keys on purpose (tests/anessuite/test_stage_cache_builds.py)
    monkeypatch.setattr(stage_cache, "BUILDS_IN_EARLIER_KEYS", dict(stage_cache.EMBEDDED_VERSIONS))
    before = FIXTURE["configs"][path]
    cfg = load_config(SCHEMAS[before["recipe"]], REPO / path)
    # a change that alters identities on purpose (a new setting, not a rename) updates the entry and says so
    assert config_hash(cfg) == before["config_hash"], f"{path}: config hash changed"
    if before["recipe"] == "anessuite pipeline":
        assert training_fingerprint(cfg) == before["training_fingerprint"], (
            f"{path}: default run folder changed"
        )
        keys = {stage: stage_key(cfg, stage, "base-model") for stage in STAGES}
        assert keys == before["stage_keys"], f"{path}: stage keys changed (finished stages would retrain)"


def test_experiment_driver_hashes_survive_the_renames(clean_env):
    found = {}
    for spec_path in sorted((REPO / "experiments").glob("*/experiment.yaml")):
        if recipe_argv(spec_path) != ["rexrag", "experiment"]:
            continue
        spec = load_config(RexRagExperimentSpec, spec_path)
        for group in spec.groups:
            spec.group = group
            _, runs = plan(spec, spec_path.parent, RexRagTrainConfig)
            found.update({f"{spec_path.parent.name}/{group}/{run.name}": run.config_hash for run in runs})
    same = {key: found.get(key) for key in FIXTURE["experiment_runs"]}
    assert same == FIXTURE["experiment_runs"]


@pytest.mark.parametrize("schema", RENAMING, ids=lambda s: s.__name__)
def test_renamed_keys_name_real_keys(schema: type):
    """Each entry's new key exists and its old key does not (a stale entry would hide a real key), unless the old
    leaf became the block that holds the new key (``tracking`` -> ``tracking.enabled``)."""
    keys = {".".join(path) for path in _paths(to_dict(schema()))}
    for old, new in schema.RENAMED_KEYS.items():
        assert new in keys, f"{schema.__name__}.RENAMED_KEYS: new key '{new}' is not a key of the schema"
        assert old not in keys or new.startswith(f"{old}."), (
            f"{schema.__name__}.RENAMED_KEYS: old key '{old}' is still a key"
        )


def _paths(tree: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for key, value in tree.items():
        found.append((*prefix, key))
        if isinstance(value, dict):
            found.extend(_paths(value, (*prefix, key)))
    return found


@pytest.mark.parametrize(
    ("schema", "old", "new"),
    [(s, old, new) for s in RENAMING for old, new in s.RENAMED_KEYS.items()],
    ids=lambda v: v if isinstance(v, str) else getattr(v, "__name__", str(v)),
)
def test_old_key_fails_naming_the_new_one(schema: type, old: str, new: str, tmp_path: Path):
    *parents, leaf = old.split(".")
    text = "".join(f"{'  ' * i}{p}:\n" for i, p in enumerate(parents)) + f"{'  ' * len(parents)}{leaf}: 1\n"
    path = tmp_path / "old.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(schema, path)
    assert str(err.value) == f"{path}: config key '{old}' is now '{new}'; rename it"
    with pytest.raises(ConfigError, match=f"'{old}' is now '{new}'"):
        load_config(schema, None, [f"{old}=1"])


def test_a_pure_rename_keeps_the_hash_and_a_value_change_does_not():
    """identity_dict spells renamed keys the old way, so only values move the hash."""
    cfg = PipelineConfig()
    ident = identity_dict(cfg)
    assert ident["out_dir"] == cfg.output_dir and "output_dir" not in ident
    assert ident["cpt"]["learning_rate"] == cfg.cpt.lr and "lr" not in ident["cpt"]
    assert (
        ident["sft"]["save_steps"] == cfg.sft.save_every
        and ident["sft"]["logging_steps"] == cfg.sft.log_every
    )
    # a leaf that became a block is spelled as the leaf again, next to the key that moved into the block
    assert ident["tracking"] is cfg.tracking.enabled and ident["experiment"] == cfg.tracking.experiment
    eval_ident = identity_dict(AnesEvalConfig())
    assert eval_ident["track"] is True and eval_ident["experiment"] == "anessuite-eval"
    assert "tracking" not in eval_ident and "tracking" not in identity_dict(Table3Config())
    changed = PipelineConfig()
    changed.cpt.lr = cfg.cpt.lr * 2
    assert config_hash(changed) != config_hash(cfg)
    assert stage_key(changed, "cpt", "m") != stage_key(cfg, "cpt", "m")
    # schemas without the opt-in hash their keys as they are (the SFT warm-up renamed before runs were kept)
    assert "lr" in identity_dict(SFTConfig())["optim"]


def test_recipe_cli_prints_one_line_naming_the_new_key(tmp_path: Path):
    config = tmp_path / "pipeline.yaml"
    config.write_text("cpt:\n  learning_rate: 1.0e-4\n")
    proc = subprocess.run(
        [sys.executable, "-m", "anessuite", "pipeline", "--config", str(config), "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"config error: {config}: config key 'cpt.learning_rate' is now 'cpt.lr'; rename it"
    ]
