"""The AnesSuite pipeline's CPT and SFT stages (the SFT engine, TRL's SFTTrainer on the tiny Qwen2) SIGKILLed
mid-training and mid-checkpoint-write, then rerun: the stage resumes from its newest complete checkpoint (a torn
one is named in a warning with the one used instead), finished stages are not retrained, and the final weights and
per-step losses, grad norms and learning rates of both stages equal an uninterrupted pipeline's.

Both stages run the same engine, whose fault points (``sft.update``, ``sft.checkpoint``) count that stage's
optimizer steps. CPT runs 3 steps and SFT 4, so ``sft.update:2`` kills CPT in the middle of its training and
``sft.checkpoint:4`` kills SFT while it writes ``checkpoint-4`` (a step CPT never reaches)."""

import json
import signal

import pytest
import torch
from faults_helpers import (
    fault_free_env,
    pipeline_command,
    read_jsonl,
    run_to_end,
    stage_final_weights,
)

from rlcore.faults import FAULT_ENV

STEPS = {"cpt": 3, "sft": 4}
CONFIG = f"""name: faults-hf-stages
base_model: tiny-qwen2
tracking:
  enabled: false
reuse: false
evaluate_base: false
cpt:
  total_steps: {STEPS["cpt"]}
  max_length: 64
  max_samples: 16
  micro_batch_size: 2
  gradient_accumulation_steps: 1
  log_every: 1
  save_every: 1
sft:
  total_steps: {STEPS["sft"]}
  max_length: 64
  max_samples: 16
  micro_batch_size: 2
  gradient_accumulation_steps: 1
  log_every: 1
  save_every: 1
grpo:
  enabled: false
eval:
  enabled: false
"""
# (fault point, stage it lands in, the checkpoint the rerun resumes from, the torn checkpoint it names)
CASES = [
    ("sft.update:2", "cpt", "checkpoint-1", None),  # after CPT's 2nd optimizer step, nothing logged or saved
    ("sft.checkpoint:4", "sft", "checkpoint-3", "checkpoint-4"),  # SFT's checkpoint-4: weights written only
]
LOGGED = ("step", "loss", "grad_norm", "lr")


def _command(tmp_path, out):
    return pipeline_command(tmp_path, CONFIG, out)


_env = fault_free_env
_final_weights = stage_final_weights


def _logged_steps(out, stage):
    rows = [{key: row[key] for key in LOGGED} for row in read_jsonl(out / stage / "metrics.jsonl")]
    assert [row["step"] for row in rows] == list(range(1, STEPS[stage] + 1))
    return rows


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-stages")
    done = run_to_end(_command(root, root / "whole"), _env(), timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return root / "whole"


# the first case also runs the reference pipeline: both cases took 16 min on two cores under load 8-9 (about
# 40 s a pipeline run on idle cores), so each run and each case get room beyond the 900 s default
@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(("point", "stage", "resumed", "torn"), CASES)
def test_stage_killed_then_rerun_equals_uninterrupted(uninterrupted, tmp_path, point, stage, resumed, torn):
    out = tmp_path / "broken"
    command = _command(tmp_path, out)
    killed = run_to_end(command, _env(**{FAULT_ENV: point}), timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
    assert not (out / stage / "DONE.json").exists()
    trainer_dir = out / stage / "trainer"
    earlier = ["cpt"] if stage == "sft" else []
    stamps = {name: (out / name / "DONE.json").stat().st_mtime_ns for name in earlier}

    rerun = run_to_end(command, _env(), timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert {
        name: (out / name / "DONE.json").stat().st_mtime_ns for name in earlier
    } == stamps  # not retrained
    summary = json.loads((out / stage / "train_summary.json").read_text())
    assert summary["resumed_from"] == str(trainer_dir / resumed)
    # the mean loss covers the steps before the resume too (Trainer's own mean covers this process only)
    whole = json.loads((uninterrupted / stage / "train_summary.json").read_text())
    assert summary["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-5)
    warned = [line for line in rerun.stderr.splitlines() if "is torn" in line]
    if torn is None:
        assert not warned, warned
    else:
        assert len(warned) == 1, rerun.stderr[-4000:]
        assert f"{trainer_dir / torn} is torn" in warned[0] and str(trainer_dir / resumed) in warned[0]
    for name in ("cpt", "sft"):
        expected, got = _final_weights(uninterrupted, name), _final_weights(out, name)
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[key], got[key]) for key in expected), name
        assert _logged_steps(out, name) == _logged_steps(uninterrupted, name), name
