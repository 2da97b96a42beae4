"""The REX-RAG SFT warm-up (``python -m rexrag sft``) SIGKILLed mid-update, mid-checkpoint-write (between the
weights and the state) and mid-swap (old checkpoint moved aside, new one not in place), then resumed: the same
per-step losses and final weights as an uninterrupted warm-up."""

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
  max_turns: 1
  max_new_tokens_per_turn: 6
  max_response_tokens: 64
train:
  total_steps: {STEPS}
  batch_size: 4
  save_every: {SAVE_EVERY}
num_threads: 1
eval:
  num_questions: 0
experiment: faults-sft
"""
    )
    return [sys.executable, "-m", "rexrag", "sft", "--config", str(config), f"train.output_dir={out}"]


def _env(**extra):
    env = subprocess_env()
    env.pop(FAULT_ENV, None)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft-kill")
    done = run_to_end(_command(root, root / "whole"), _env())
    assert done.returncode == 0, done.stderr[-4000:]
    return (
        root,
        read_jsonl(root / "whole" / "metrics.jsonl"),
        load_file(root / "whole" / "model" / "model.safetensors"),
    )


@pytest.mark.slow
@pytest.mark.parametrize("point", ["sft.update:5", "sft.checkpoint:4", "sft.swap:4"])
def test_sft_killed_at_a_point_then_resumed_equals_uninterrupted(reference, point, tmp_path):
    root, expected_metrics, expected_weights = reference
    out = tmp_path / "run"
    command = _command(root, out)
    killed = run_to_end(command, _env(**{FAULT_ENV: point}))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
    assert f"{FAULT_ENV}={point}: killing process" in killed.stderr
    if point != "sft.update:5":
        assert (out / ".checkpoint-tmp").is_dir()  # the interrupted write is on disk

    resumed = run_to_end(command, _env())
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    if point != "sft.update:5":
        warning = next(line for line in resumed.stderr.splitlines() if "is torn" in line)
        kept = ".checkpoint-old" if point == "sft.swap:4" else "checkpoint"
        assert ".checkpoint-tmp" in warning and f"{out / kept}" in warning
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert [(m["loss"], m["grad_norm"], m["lr"]) for m in metrics] == [
        (m["loss"], m["grad_norm"], m["lr"]) for m in expected_metrics
    ]
    weights = load_file(out / "model" / "model.safetensors")
    assert weights.keys() == expected_weights.keys()
    assert all(torch.equal(weights[name], expected_weights[name]) for name in weights)
