"""Table 5's variants (CPT only, then SFT on each data choice from the base and from the CPT model) each run in a
folder of their own when the pipeline config fixes output_dir; sharing it made every variant adopt the first
variant's finished SFT stage."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

import anessuite.pipeline.run as run_module
from anessuite import tables
from anessuite.pipeline.config import PipelineConfig
from anessuite.tables import StrategiesConfig, run_strategies
from rlcore.config import load_config


def _result() -> dict:
    entry = {"total": 0.5, "system1": 0.5, "system1.x": 0.5, "system2": 0.5}
    return {"generate": {"by_language": {"en": entry, "zh": entry}, "avg": 0.5}}


def test_every_variant_gets_its_own_folder(tmp_path: Path, monkeypatch):
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"name": "mini", "output_dir": str(tmp_path / "runs" / "p-seed0")}))
    calls: list[list[str]] = []

    def fake_pipeline(config_path: str, overrides=()):
        calls.append(list(overrides))
        cfg = load_config(PipelineConfig, config_path, overrides)
        out = Path(cfg.output_dir)
        (out / "cpt").mkdir(parents=True, exist_ok=True)
        (out / "cpt" / "DONE.json").write_text(json.dumps({"final": "cpt/final"}))
        labels = ["base", "base+CPT"] if cfg.cpt.enabled else ["base+SFT"]
        return cfg, {label: _result() for label in labels}

    monkeypatch.setattr(tables, "_pipeline", fake_pipeline)
    run_strategies(StrategiesConfig(pipeline_config=str(pipeline), output_dir=str(tmp_path / "table5")))
    folders = [next(o.split("=", 1)[1] for o in call if o.startswith("output_dir=")) for call in calls]
    assert len(calls) == 7 and len(set(folders)) == 7
    assert all(Path(f).parent == tmp_path / "runs" and Path(f).name.startswith("p-seed0-") for f in folders)
    assert Path(folders[0]).name == "p-seed0-cpt-only"
    assert (tmp_path / "table5" / "table5.md").is_file()


def test_without_a_fixed_out_dir_the_variants_keep_their_named_folders(tmp_path: Path, monkeypatch):
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"name": "mini"}))
    calls: list[list[str]] = []

    def fake_pipeline(config_path: str, overrides=()):
        calls.append(list(overrides))
        cfg = load_config(PipelineConfig, config_path, overrides)
        return cfg, {"base": _result(), "base+CPT": _result(), "base+SFT": _result()}

    monkeypatch.setattr(tables, "_pipeline", fake_pipeline)
    # the CPT-only variant's folder follows from its name under the runs root; its final model is not read here
    monkeypatch.setattr(run_module, "stage_final", lambda out, stage: "cpt-model")
    run_strategies(StrategiesConfig(pipeline_config=str(pipeline), output_dir=str(tmp_path / "table5")))
    assert not any(o.startswith("output_dir=") for call in calls for o in call)


def test_rows_without_cpt_replay_no_cpt_document(tmp_path: Path, monkeypatch):
    """A pipeline that replays CPT documents inside SFT (data.sft_replay) keeps that replay for the rows that start
    from the CPT model; the rows without CPT are fine-tuned with it off, or the CPT corpus would leak into them."""
    pipeline = tmp_path / "pipeline.yaml"
    body = {"name": "mini", "output_dir": str(tmp_path / "runs" / "p"), "data": {"sft_replay": 0.25}}
    pipeline.write_text(yaml.safe_dump(body))
    replay_by_variant: dict[str, float] = {}

    def fake_pipeline(config_path: str, overrides=()):
        cfg = load_config(PipelineConfig, config_path, overrides)
        out = Path(cfg.output_dir)
        (out / "cpt").mkdir(parents=True, exist_ok=True)
        (out / "cpt" / "DONE.json").write_text(json.dumps({"final": "cpt/final"}))
        replay_by_variant[out.name] = cfg.data.sft_replay
        labels = ["base", "base+CPT"] if cfg.cpt.enabled else ["base+SFT"]
        return cfg, {label: _result() for label in labels}

    monkeypatch.setattr(tables, "_pipeline", fake_pipeline)
    run_strategies(StrategiesConfig(pipeline_config=str(pipeline), output_dir=str(tmp_path / "table5")))
    sft_rows = {name: replay for name, replay in replay_by_variant.items() if name != "p-cpt-only"}
    assert len(sft_rows) == 6
    assert {name: replay for name, replay in sft_rows.items() if name.startswith("p-base-CPT-")} == {
        "p-base-CPT-anesqa": 0.25,
        "p-base-CPT-anesr1": 0.25,
        "p-base-CPT-anesqa+anesr1": 0.25,
    }
    assert {name: replay for name, replay in sft_rows.items() if not name.startswith("p-base-CPT-")} == {
        "p-base-anesqa": 0.0,
        "p-base-anesr1": 0.0,
        "p-base-anesqa+anesr1": 0.0,
    }
