"""Stage keys name the build of an embedded base model: a stage trained from an earlier build is not adopted."""

from __future__ import annotations

from pathlib import Path

import pytest

from anessuite.pipeline import stage_cache
from anessuite.pipeline.config import PipelineConfig
from rlcore.config import load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cpu_pipeline() -> PipelineConfig:
    return load_config(PipelineConfig, REPO / "packages/anessuite/configs/pipeline_cpu.yaml")


def test_a_rebuilt_embedded_model_changes_its_keys(cpu_pipeline, monkeypatch):
    assert cpu_pipeline.base_model == "smollm2-135m-instruct"
    now = (
        stage_cache.training_fingerprint(cpu_pipeline),
        stage_cache.stage_key(cpu_pipeline, "cpt", "smollm2-135m-instruct"),
    )
    monkeypatch.setitem(
        stage_cache.BUILDS_IN_EARLIER_KEYS,
        "smollm2-135m-instruct",
        stage_cache.EMBEDDED_VERSIONS["smollm2-135m-instruct"],
    )
    as_if_unchanged = (
        stage_cache.training_fingerprint(cpu_pipeline),
        stage_cache.stage_key(cpu_pipeline, "cpt", "smollm2-135m-instruct"),
    )
    assert now[0] != as_if_unchanged[0] and now[1] != as_if_unchanged[1]


def test_unchanged_builds_and_local_folders_keep_their_keys(cpu_pipeline, tmp_path):
    assert stage_cache._model_identity("tiny-qwen2") == "tiny-qwen2"
    assert stage_cache._model_identity("qwen2.5-tokenizer") == "qwen2.5-tokenizer"
    folder = str(tmp_path / "my-model")
    assert stage_cache._model_identity(folder) == folder
    assert stage_cache._model_identity("smollm2-135m-instruct") == "smollm2-135m-instruct@build2"
