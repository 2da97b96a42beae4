"""The REX-RAG SFT warm-up (``python -m rexrag sft``, on the shared TRL engine ``rlcore.trainer.sft``) SIGKILLed
mid-training (``sft.update``: an optimizer step applied, nothing logged or saved) and mid-checkpoint-write
(``sft.checkpoint``: the weights written, optimizer, RNG and trainer state not; ``sft.marker``: every file written,
the ``COMPLETE`` manifest not), then resumed with ``train.resume=auto``: the same per-step losses, gradient norms,
learning rates and final weights as an uninterrupted warm-up. A torn checkpoint is named in a warning together with
the complete one used instead."""

import json
import signal
import sys

import pytest
import torch
from faults_helpers import SMALL_WORLD, read_jsonl, run_to_end, subprocess_env
from safetensors.torch import load_file

from rlcore.faults import FAULT_ENV

STEPS, SAVE_EVERY = 6, 2


def _command(root, out):
    world = "\n".join(f"    {key}: {value}" for key, value in SMALL_WORLD.items())
    config = root / "sft.yaml"
    config.write_text(
        f"""data:
  dir: {root / "world"}
  world:
{world}
model:
  vocab_size: 400
  hidden_size: 32
  num_layers: 1
  intermediate_size: 64
use_chat_template: false
rollout:
  max_turns: 2
  max_new_tokens_per_turn: 12
  max_response_tokens: 128
train:
  total_steps: {STEPS}
  batch_size: 5
  save_every: {SAVE_EVERY}
num_threads: 1
eval:
  num_questions: 0
tracking:
  experiment: faults-sft
"""
    )
    return [sys.executable, "-m", "rexrag", "sft", "--config", str(config), f"train.output_dir={out}"]


def _env(**extra):
    env = subprocess_env()
    env.pop(FAULT_ENV, None)
    env.update(extra)
    return env


def _steps(out):
    return [(m["step"], m["loss"], m["grad_norm"], m["lr"]) for m in read_jsonl(out / "metrics.jsonl")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft-kill")
    done = run_to_end(_command(root, root / "whole"), _env())
    assert done.returncode == 0, done.stderr[-4000:]
    return root, _steps(root / "whole"), load_file(root / "whole" / "model" / "model.safetensors")


# the first case also trains the reference: two cases took 14 min on two cores under load 9
@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("point", ["sft.update:5", "sft.checkpoint:4", "sft.marker:4"])
def test_warm_up_killed_at_a_point_then_resumed_equals_uninterrupted(reference, point, tmp_path):
    root, expected_steps, expected_weights = reference
    out = tmp_path / "run"
    command = _command(root, out)
    killed = run_to_end(command, _env(**{FAULT_ENV: point}))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
    assert f"{FAULT_ENV}={point}: killing process" in killed.stderr
    checkpoints = out / "checkpoints"
    torn, kept = checkpoints / "checkpoint-4", checkpoints / "checkpoint-2"
    if point == "sft.update:5":
        assert (checkpoints / "checkpoint-4" / "COMPLETE").is_file()  # the step-4 save finished
    else:
        assert torn.is_dir() and not (torn / "COMPLETE").exists()  # the interrupted write is on disk
        assert (torn / "model.safetensors").is_file()
        assert (torn / "trainer_state.json").is_file() == (point == "sft.marker:4")
        assert (kept / "COMPLETE").is_file()  # pruned only after a newer manifest: still there

    resumed = run_to_end(command, _env())
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    if point != "sft.update:5":
        warning = next(line for line in resumed.stderr.splitlines() if "is torn" in line)
        assert f"{torn} is torn" in warning and f"resuming from {kept} instead" in warning
    results = json.loads((out / "results.json").read_text())
    assert results["resumed_from_step"] == (4 if point == "sft.update:5" else 2)
    assert _steps(out) == expected_steps  # every step once, the same numbers
    weights = load_file(out / "model" / "model.safetensors")
    assert weights.keys() == expected_weights.keys()
    assert all(torch.equal(weights[name], expected_weights[name]) for name in weights)
    assert not checkpoints.exists()  # the final model supersedes them
