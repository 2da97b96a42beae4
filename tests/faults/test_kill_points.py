"""Every kill point resumes exactly: a short training (GRPO through ``python -m rexrag train``, and REX-RAG with a
scripted searching policy), both over the project's HTTP retrieval server, is SIGKILLed at a chosen point by
``RLCORE_FAULT_POINT``, resumed with ``train.resume=auto``, and must end with the uninterrupted run's per-step
metrics and final weights. A checkpoint torn by the kill is skipped with a warning naming it and the one used."""

import signal
import sys

import pytest
import torch
from faults_helpers import (
    REPO,
    SMALL_WORLD,
    ServerProcess,
    build_world_and_model,
    deterministic,
    final_weights,
    read_jsonl,
    run_to_end,
    subprocess_env,
)

from rlcore.faults import FAULT_ENV
from rlcore.trainer.checkpoint import list_checkpoints

TOTAL_STEPS = 3
# mid-rollout (rollouts generated, nothing scored), mid-update (after the step's first optimizer step), and
# mid-checkpoint-write (between accelerate's files and our state; complete but not renamed)
POINTS = ["rollout:2", "update:2", "checkpoint.between_files:2", "checkpoint.before_rename:2"]
CASES = [("grpo", point) for point in POINTS] + [("rexrag", "rollout:2"), ("rexrag", "update:2")]


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill-points")
    world_dir, paths, model_dir = build_world_and_model(root)
    with ServerProcess(paths["index"], kind="bm25", log=root / "server.log") as server:
        yield {
            "root": root,
            "world_dir": world_dir,
            "model_dir": model_dir,
            "server": server,
            "reference": {},
        }


def _grpo_command(setting, out):
    world = "\n".join(f"      {key}: {value}" for key, value in SMALL_WORLD.items())
    config = setting["root"] / "grpo.yaml"
    config.write_text(
        f"""model:
  path: {setting["model_dir"]}
qa:
  source: world
  world:
    dir: {setting["world_dir"]}
    world:
{world}
retriever:
  kind: http
  url: {setting["server"].url}
rollout:
  max_turns: 2
  max_new_tokens_per_turn: 8
  max_response_tokens: 64
objective:
  num_generations: 4
  prompts_per_step: 2
  micro_batch_size: 2
  minibatch_size: 4
  ppo_epochs: 2
  kl_coef: 0.05
optim:
  lr: 0.01
  weight_decay: 0.0
train:
  total_steps: {TOTAL_STEPS}
  seed: 7
  save_every: 1
tracking:
  enabled: false
rexrag:
  enabled: false
final_eval:
  enabled: false
"""
    )
    return [sys.executable, "-m", "rexrag", "train", "--config", str(config), f"train.output_dir={out}"]


def _rexrag_command(setting, out):
    worker = REPO / "tests" / "faults" / "kill_worker.py"
    args = [out, setting["world_dir"], setting["model_dir"], setting["server"].url, TOTAL_STEPS]
    return [sys.executable, str(worker), *map(str, args)]


COMMANDS = {"grpo": _grpo_command, "rexrag": _rexrag_command}


def _env(**extra):
    env = subprocess_env(**extra)
    env["PYTHONPATH"] = f"{REPO / 'tests' / 'faults'}:{env['PYTHONPATH']}"
    env.pop(FAULT_ENV, None)
    env.update(extra)
    return env


def _reference(setting, arm):
    if arm not in setting["reference"]:
        out = setting["root"] / f"{arm}-uninterrupted"
        done = run_to_end(COMMANDS[arm](setting, out), _env())
        assert done.returncode == 0, done.stderr[-4000:]
        setting["reference"][arm] = (deterministic(read_jsonl(out / "metrics.jsonl")), final_weights(out))
    return setting["reference"][arm]


@pytest.mark.slow
@pytest.mark.parametrize(("arm", "point"), CASES)
def test_killed_at_a_point_then_resumed_equals_uninterrupted(setting, arm, point, tmp_path):
    expected_metrics, expected_weights = _reference(setting, arm)
    out = tmp_path / "run"
    command = COMMANDS[arm](setting, out)

    killed = run_to_end(command, _env(**{FAULT_ENV: point}))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
    assert f"{FAULT_ENV}={point}: killing process" in killed.stderr
    name, step = point.rsplit(":", 1)
    torn = out / "checkpoints" / f".tmp-step-{int(step):08d}"
    if name.startswith("checkpoint."):
        assert torn.is_dir()  # the kill left a half-written checkpoint behind
        assert [s for s, _ in list_checkpoints(out)] == [int(step) - 1]

    resumed = run_to_end(command, _env())
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    if name.startswith("checkpoint."):
        warning = next(line for line in resumed.stderr.splitlines() if "is torn" in line)
        assert str(torn) in warning and f"step-{int(step) - 1:08d}" in warning
    metrics = deterministic(read_jsonl(out / "metrics.jsonl"))
    assert [m["step"] for m in metrics] == list(range(1, TOTAL_STEPS + 1))
    assert metrics == expected_metrics
    weights = final_weights(out)
    assert weights.keys() == expected_weights.keys()
    assert all(torch.equal(weights[key], expected_weights[key]) for key in weights)
