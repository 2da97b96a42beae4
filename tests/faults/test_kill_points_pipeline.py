"""The AnesSuite pipeline (``python -m anessuite pipeline``, CPT -> SFT -> GRPO on the tiny Qwen2) SIGKILLed in the
middle of its GRPO stage's update, then rerun: the finished stages are not retrained, the GRPO stage resumes from
its checkpoint, and the final models and evaluation tables equal an uninterrupted pipeline's."""

import signal

import pytest
import torch
from faults_helpers import (
    fault_free_env,
    pipeline_command,
    run_to_end,
    stage_final_weights,
)

from rlcore.faults import FAULT_ENV

CONFIG = """name: faults-tiny
base_model: tiny-qwen2
tracking:
  enabled: false
reuse: false
evaluate_base: false
cpt:
  total_steps: 2
  max_length: 64
  max_samples: 16
  micro_batch_size: 2
  gradient_accumulation_steps: 1
  log_every: 1
  save_every: 1
sft:
  total_steps: 2
  max_length: 64
  max_samples: 16
  micro_batch_size: 2
  gradient_accumulation_steps: 1
  log_every: 1
  save_every: 1
grpo:
  total_steps: 3
  save_every: 1
  max_prompts: 4
  format_weight: 0.1
  objective:
    num_generations: 2
    prompts_per_step: 2
  rollout:
    max_new_tokens_per_turn: 8
eval:
  modes: [loglik]
  limit_per_language: 2
  bootstrap_iters: 10
"""


def _command(tmp_path, out):
    return pipeline_command(tmp_path, CONFIG, out)


_env = fault_free_env
_final_weights = stage_final_weights


@pytest.mark.slow
def test_pipeline_killed_mid_grpo_update_then_rerun_equals_uninterrupted(tmp_path):
    whole = run_to_end(_command(tmp_path, tmp_path / "whole"), _env())
    assert whole.returncode == 0, whole.stderr[-4000:]

    out = tmp_path / "broken"
    command = _command(tmp_path, out)
    killed = run_to_end(command, _env(**{FAULT_ENV: "update:2"}))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
    assert (out / "sft" / "DONE.json").is_file() and not (out / "grpo" / "DONE.json").exists()
    stamps = {stage: (out / stage / "DONE.json").stat().st_mtime_ns for stage in ("cpt", "sft")}

    rerun = run_to_end(command, _env())
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert {
        stage: (out / stage / "DONE.json").stat().st_mtime_ns for stage in stamps
    } == stamps  # not retrained
    assert "resumed from" in rerun.stderr and "step-00000001" in rerun.stderr
    for stage in ("cpt", "sft", "grpo"):
        expected, got = _final_weights(tmp_path / "whole", stage), _final_weights(out, stage)
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[name], got[name]) for name in expected), stage
    assert (out / "table_loglik.md").read_text() == (tmp_path / "whole" / "table_loglik.md").read_text()
