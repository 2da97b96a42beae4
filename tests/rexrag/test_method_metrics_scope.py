"""A method's own metrics (`rexrag/*`) are logged only by runs that use it; every run logs its dead-end rate."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

from rexrag.recipes.train import RexRagTrainConfig, StepHook

RECORD = {"step": 3.0, "rexrag/dead_end_rate": 0.25, "rexrag/alpha": 0.1, "rexrag/probes_kept": 2}


def _hook(enabled: bool, tmp_path) -> StepHook:
    cfg = RexRagTrainConfig()
    cfg = replace(cfg, rexrag=replace(cfg.rexrag, enabled=enabled))
    method = SimpleNamespace(history=[dict(RECORD)])
    return StepHook(cfg, method, None, None, [], "", tmp_path / "heldout_curve.jsonl")


def test_grpo_run_logs_no_rexrag_metrics(tmp_path):
    assert _hook(False, tmp_path)(None, 3) == {"rollout/dead_end_rate": 0.25}


def test_rexrag_run_logs_its_own_metrics(tmp_path):
    metrics = _hook(True, tmp_path)(None, 3)
    assert metrics == {
        "rollout/dead_end_rate": 0.25,
        "rexrag/dead_end_rate": 0.25,
        "rexrag/alpha": 0.1,
        "rexrag/probes_kept": 2,
    }
    assert _hook(True, tmp_path)(None, 4) == {}  # no record for step 4 yet: nothing stale is re-logged
