"""Each phase of a training step on its own, with scripted inputs (no model weights).

The phases together are checked end to end, bit for bit, by the golden-loss and resume tests; these tests pin
down what each phase promises to the next: group ids and slices, reward columns, advantages, the update
plan, the step's metrics, and when checkpoints are written.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from rlcore.rollout import MODEL, Trajectory
from rlcore.trainer import reporting, saving, update
from rlcore.trainer.advantages import build_batch
from rlcore.trainer.batching import collate
from rlcore.trainer.collectives import any_rank, max_over_ranks, sum_over_ranks
from rlcore.trainer.config import ObjectiveConfig, RLTrainConfig
from rlcore.trainer.logprobs import needs_old_logprobs, old_logprobs
from rlcore.trainer.metrics import MetricSums, PhaseTimer
from rlcore.trainer.rollouts import sample_prompts
from rlcore.trainer.scoring import score, score_rollouts

ONE_PROCESS = SimpleNamespace(
    num_processes=1,
    process_index=0,
    is_main_process=True,
    device="cpu",
    autocast=nullcontext,
    distributed_type=DistributedType.NO,
)


def _cfg(**objective) -> RLTrainConfig:
    cfg = RLTrainConfig()
    for key, value in objective.items():
        setattr(cfg.objective, key, value)
    return cfg


def _traj(group: str, response: list[int], reward: float | None = None, record_index: int = 0) -> Trajectory:
    traj = Trajectory(
        prompt_ids=[7, 8],
        group_id=group,
        response_ids=response,
        components=[MODEL] * len(response),
        sample_logprobs=[-0.5] * len(response),
    )
    traj.metadata["record_index"] = record_index
    if reward is not None:
        traj.metadata["reward"] = reward
    return traj


class _Decoder:
    pad_token_id = 0

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


# --- rollouts ---------------------------------------------------------------------------------------------


def test_sample_prompts_gives_each_rank_its_slots_and_one_group_per_prompt_instance():
    records = [{"id": "q0", "prompt_ids": [1]}, {"prompt_ids": [2]}, {"id": "q2", "prompt_ids": [3]}]
    cfg = _cfg(num_generations=2)
    # global list [0, 2, 0, 1]: record 0 is drawn twice; rank 1 of 2 takes slots 1 and 3
    prompt_ids, group_ids, metadata = sample_prompts(cfg, records, [0, 2, 0, 1], None, 5, rank=1, world=2)
    assert prompt_ids == [[3], [3], [2], [2]]
    # "<step>:<slot>:<record id>"; a record without an id is named by its position
    assert group_ids == ["5:1:q2", "5:1:q2", "5:3:record1", "5:3:record1"]
    assert metadata == [{"record_index": 2}] * 2 + [{"record_index": 1}] * 2
    # rank 0 gets slots 0 and 2: the same record twice, two different groups
    _, groups_rank0, _ = sample_prompts(cfg, records, [0, 2, 0, 1], None, 5, rank=0, world=2)
    assert groups_rank0 == ["5:0:q0", "5:0:q0", "5:2:q0", "5:2:q0"]


# --- scoring ----------------------------------------------------------------------------------------------


def test_score_passes_record_columns_but_not_private_fields():
    records = [{"id": "a", "gold": "1", "_line": 3}, {"id": "b", "gold": "2", "_line": 4}]
    seen = {}

    def reward_fn(completions, **columns):
        seen.update(columns, completions=completions)
        return [1.0, 0.25]

    trajectories = [_traj("g", [1, 2], record_index=1), _traj("g", [3], record_index=0)]
    score(trajectories, records, _Decoder(), reward_fn)
    assert seen == {"completions": ["1 2", "3"], "gold": ["2", "1"], "id": ["b", "a"]}
    assert [t.metadata["reward"] for t in trajectories] == [1.0, 0.25]


def test_score_errors_name_the_record_and_the_count():
    records = [{"id": "a", "gold": "1"}]
    with pytest.raises(ValueError, match="reward is None for record a"):
        score([_traj("g", [1])], records, _Decoder(), lambda completions, **_: [None])
    with pytest.raises(RuntimeError, match="returned 2 values for 1 completions"):
        score([_traj("g", [1])], records, _Decoder(), lambda completions, **_: [1.0, 0.0])


def test_score_rollouts_returns_rewards_and_adds_rollout_metrics():
    parts = SimpleNamespace(records=[{"id": "a"}], tokenizer=_Decoder(), reward_fn=lambda c, **_: [1.0, 0.0])
    sums = MetricSums()
    trajectories, rewards = score_rollouts(
        RLTrainConfig(), parts, [_traj("g", [1]), _traj("g", [2])], 1, PhaseTimer(), sums, None
    )
    assert rewards.tolist() == [1.0, 0.0] and rewards.dtype == torch.float32
    metrics = sums.reduce()
    assert metrics["reward/mean"] == 0.5 and metrics["accuracy"] == 0.5  # success_threshold 1.0
    assert metrics["rollout/num_trajectories"] == 2


# --- advantages -------------------------------------------------------------------------------------------


def test_build_batch_normalises_within_groups_and_counts_zero_variance_groups():
    trajectories = [_traj("a", [1]), _traj("a", [2]), _traj("b", [3]), _traj("b", [4])]
    sums = MetricSums()
    batch = build_batch(ObjectiveConfig(), trajectories, torch.tensor([1.0, 0.0, 1.0, 1.0]), 0, "cpu", sums)
    # group a: mean 0.5, unbiased std sqrt(0.5) = 0.70711 -> +-0.5 / 0.70711 = +-0.70711; group b: no variance
    assert batch.advantages.tolist() == pytest.approx([0.70711, -0.70711, 0.0, 0.0], abs=1e-5)
    assert sums.reduce()["groups/zero_variance_frac"] == 0.5
    assert batch.num_rows == 4


# --- log-probs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, minibatches, seam, expected",
    [
        ({}, 1, False, False),  # one epoch, one mini-batch, no seam: pi_old is the policy itself
        ({"ppo_epochs": 2}, 1, False, True),  # the second epoch sees a moved policy
        ({}, 2, False, True),  # the second mini-batch sees a moved policy
        ({"tis_cap": 2.0}, 1, False, True),  # TIS weights are pi_old / sampler
        ({}, 1, True, True),  # a seam reads pi_old
    ],
)
def test_old_logprobs_are_computed_only_when_something_needs_them(changes, minibatches, seam, expected):
    obj = ObjectiveConfig(**changes)
    assert needs_old_logprobs(obj, minibatches, (lambda *a: None) if seam else None, None) is expected
    assert needs_old_logprobs(obj, minibatches, None, (lambda *a: None) if seam else None) is expected


def test_old_logprobs_reuse_what_the_after_rollout_path_stored():
    trajectories = [_traj("a", [1, 2, 3]), _traj("a", [4])]
    trajectories[0].metadata["old_logprobs"] = [-1.0, -2.0, -3.0]
    trajectories[1].metadata["old_logprobs"] = [-4.0]
    batch = collate(trajectories, torch.zeros(2), 0)
    # model=None: no forward pass may happen when every trajectory carries its values
    values = old_logprobs(None, batch, trajectories, ObjectiveConfig(), 1.0, 1)
    assert values.tolist() == [[-1.0, -2.0, -3.0], [-4.0, 0.0, 0.0]]


# --- update -----------------------------------------------------------------------------------------------


def test_update_shape_counts_minibatches_and_logprob_calls():
    obj = ObjectiveConfig(minibatch_size=4, micro_batch_size=2, logprob_batch_size=3)
    shape = update.update_shape(ONE_PROCESS, 8, obj)
    # 8 rows: ceil(8/3) = 3 log-prob calls; 8/4 = 2 mini-batches of 4 rows = 2 micro-batches of 2
    assert shape == update.UpdateShape(max_rows=8, logprob_calls=3, num_minibatches=2, micro_per_minibatch=2)
    whole = update.update_shape(ONE_PROCESS, 8, ObjectiveConfig(minibatch_size=0, micro_batch_size=8))
    assert (whole.num_minibatches, whole.micro_per_minibatch) == (1, 1)


class _Stepper:
    def __init__(self, applied):
        self.boundaries, self.applied = [], list(applied)

    def backward(self, loss, boundary):
        loss.backward()
        self.boundaries.append(boundary)

    def step(self):
        return 0.5, self.applied.pop(0)


def test_ppo_update_runs_the_plan_counts_skipped_steps_and_steps_the_schedule_once(monkeypatch):
    weight = torch.nn.Parameter(torch.ones(()))
    rows_seen = []

    def fake_loss(model, micro, cfg, denominator, sums, num_updates):
        rows_seen.append(micro.num_rows)
        return weight * micro.advantages.sum() / denominator

    monkeypatch.setattr(update, "micro_batch_loss", fake_loss)
    cfg = _cfg(ppo_epochs=2, minibatch_size=4, micro_batch_size=2)
    trajectories = [_traj(str(i // 2), [1, 2]) for i in range(8)]
    batch = collate(trajectories, torch.ones(8), 0)
    scheduler_steps = []
    parts = SimpleNamespace(
        accelerator=ONE_PROCESS,
        model=torch.nn.Linear(1, 1),
        stepper=_Stepper([True, False, True, True]),
        scheduler=SimpleNamespace(step=lambda: scheduler_steps.append(1)),
    )
    sums = MetricSums()
    shape = update.update_shape(ONE_PROCESS, 8, cfg.objective)
    tokens = update.ppo_update(cfg, parts, batch, shape, 3, PhaseTimer(), sums)
    # 2 epochs x 2 mini-batches x 2 micro-batches of 2 rows; the boundary is each mini-batch's last micro-batch
    assert rows_seen == [2] * 8
    assert parts.stepper.boundaries == [False, True] * 4
    assert tokens == 8 * 2 * 4  # every row: 2 prompt + 2 response tokens, seen once per epoch
    assert scheduler_steps == [1]
    metrics = sums.reduce()
    assert metrics["optim/skipped_steps"] == 1.0
    assert metrics["optim/grad_norm"] == 0.5  # mean over the 3 applied steps only


def test_sync_and_after_step_updates_the_sampler_then_returns_the_seam_metrics():
    calls = []
    parts = SimpleNamespace(
        accelerator=ONE_PROCESS,
        model=None,
        policy="policy",
        backend=SimpleNamespace(update_weights=lambda policy: calls.append(("sync", policy))),
    )
    timer = PhaseTimer()
    extra = update.sync_and_after_step(
        parts, 4, timer, lambda policy, step: calls.append(("after", step)) or {"em": torch.tensor(0.5)}
    )
    assert calls == [("sync", "policy"), ("after", 4)]
    assert extra == {"em": 0.5} and isinstance(extra["em"], float)
    assert set(timer.reset()) == {"weight_sync", "after_step"}
    assert update.sync_and_after_step(parts, 5, timer, None) == {}


# --- reporting --------------------------------------------------------------------------------------------


def test_step_metrics_add_time_lr_skipped_total_and_seam_values():
    parts = SimpleNamespace(
        accelerator=ONE_PROCESS,
        engine=SimpleNamespace(last_stats={"generated_tokens": 10.0}),
        scheduler=SimpleNamespace(get_last_lr=lambda: [0.25]),
    )
    sums = MetricSums()
    sums.add("reward/mean", 0.5, 4)
    sums.add("reward/sq_mean", 0.5, 4)  # rewards 0, 1, 0, 1: population std 0.5
    sums.add_total("optim/skipped_steps", 2.0)
    timer = PhaseTimer()
    timer.add("generate", 2.0)
    metrics, seconds = reporting.step_metrics(parts, timer, sums, reporting.StepClock(), 6, 3, {"em": 0.75})
    assert metrics["reward/std"] == 0.5 and "reward/sq_mean" not in metrics
    assert metrics["optim/skipped_steps_total"] == 5.0  # 3 before + 2 this step
    assert metrics["optim/lr"] == 0.25 and metrics["em"] == 0.75
    assert metrics["throughput/rollout_tokens_per_s"] == 5.0  # 10 tokens in 2 s
    assert metrics["time/generate"] == 2.0 and seconds["step"] >= 0 and "time/step_cpu" in metrics


def test_log_step_writes_one_sorted_json_line_and_one_tracking_call(tmp_path):
    logged = []
    run = SimpleNamespace(log_metrics=lambda metrics, step: logged.append((step, dict(metrics))))
    path = tmp_path / "metrics.jsonl"
    cfg = RLTrainConfig()
    reporting.log_step(cfg, run, path, 2, {"loss/total": 0.5, "accuracy": 1.0}, 1.0)
    reporting.log_step(cfg, None, path, 3, {"loss/total": 0.25}, 1.0)
    assert path.read_text().splitlines() == [
        '{"accuracy": 1.0, "loss/total": 0.5, "step": 2}',
        '{"loss/total": 0.25, "step": 3}',
    ]
    assert logged == [(2, {"loss/total": 0.5, "accuracy": 1.0})]


def test_truncate_metrics_drops_steps_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in (1, 2, 3)))
    reporting.truncate_metrics(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    reporting.truncate_metrics(tmp_path / "absent.jsonl", 2)  # a fresh run has none: no error
    assert not (tmp_path / "absent.jsonl").exists()


def test_tracking_is_a_null_context_when_off_or_on_other_ranks(tmp_path):
    cfg = RLTrainConfig()
    cfg.tracking.enabled = False
    with reporting.open_tracking(cfg, ONE_PROCESS, None, tmp_path) as run:
        assert run is None
    cfg.tracking.enabled = True
    other_rank = SimpleNamespace(is_main_process=False)
    with reporting.open_tracking(cfg, other_rank, None, tmp_path) as run:
        assert run is None


# --- checkpoint / resume ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step, save_every, stop_now, saved",
    [
        (3, 0, False, False),  # no periodic saves, not the last step
        (4, 2, False, True),  # periodic
        (3, 2, False, False),  # not a multiple of save_every
        (3, 0, True, True),  # a signal or stop_after_step
        (10, 0, False, True),  # the last step (total_steps=10)
    ],
)
def test_checkpoint_if_due(monkeypatch, tmp_path, step, save_every, stop_now, saved):
    calls, stateful = [], {"lr_scheduler": object()}
    monkeypatch.setattr(saving, "save_checkpoint", lambda *args, **kwargs: calls.append((args, kwargs)))
    cfg = RLTrainConfig()
    cfg.train.total_steps, cfg.train.save_every = 10, save_every
    parts = SimpleNamespace(
        accelerator=ONE_PROCESS,
        output_dir=tmp_path,
        sampler=SimpleNamespace(state_dict=lambda: {"epoch": 1, "position": 2}),
        engine=SimpleNamespace(run_index=7),
        checkpointed=stateful,
    )
    saving.checkpoint_if_due(cfg, parts, step, stop_now, "run-1", 3)
    assert bool(calls) is saved
    if saved:
        (_, output_dir, saved_step, state, keep), kwargs = calls[0]
        assert kwargs == {"stateful": stateful}  # the LR schedule and stateful objects go in as JSON
        assert (output_dir, saved_step, keep) == (tmp_path, step, cfg.train.keep_checkpoints)
        assert state["sampler"] == {"epoch": 1, "position": 2} and state["rollout_run_index"] == 7
        assert state["mlflow_run_id"] == "run-1" and state["skipped_steps_total"] == 3
        assert state["config"]["train"]["total_steps"] == 10


def test_should_stop_on_a_signal_or_the_planned_step():
    cfg = RLTrainConfig()
    cfg.train.stop_after_step = 2
    parts = SimpleNamespace(accelerator=ONE_PROCESS)
    assert saving.should_stop(cfg, parts, 1, None) is False
    assert saving.should_stop(cfg, parts, 1, "SIGTERM") is True
    assert saving.should_stop(cfg, parts, 2, None) is True


def test_fresh_run_starts_at_step_zero(tmp_path):
    cfg = RLTrainConfig()
    cfg.train.resume = "auto"
    parts = SimpleNamespace(output_dir=tmp_path)  # no checkpoints/ folder yet
    assert saving.resume(cfg, parts) == saving.ResumePoint(step=0, run_id=None, skipped_total=0)


def test_collectives_are_identity_on_one_process():
    assert max_over_ranks(ONE_PROCESS, 5) == 5
    assert sum_over_ranks(ONE_PROCESS, 2.5) == 2.5
    assert any_rank(ONE_PROCESS, True) and not any_rank(ONE_PROCESS, False)


def test_a_run_that_fails_in_setup_is_recorded_as_failed(tmp_path, monkeypatch):
    """No model at model.path: the trainer never reaches its first step, and MLflow still shows the failure."""
    from mlflow.tracking import MlflowClient

    from rlcore.trainer import train

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = RLTrainConfig()
    cfg.model.path = str(tmp_path / "no-such-model")
    cfg.train.output_dir, cfg.train.seed = str(tmp_path / "out"), 4
    cfg.tracking.experiment, cfg.tracking.run_name = "setup-failure", "grpo-missing-model"
    with pytest.raises(Exception, match="no-such-model"):
        train(cfg, records=[{"id": "q", "prompt": "2+2?"}], reward_fn=lambda completions, **_: [0.0])
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("setup-failure").experiment_id])
    assert run.info.status == "FAILED" and run.info.run_name == "grpo-missing-model"
    assert "no-such-model" in run.data.tags["error"] and run.data.tags["failed_during"] == "setup"
    assert run.data.tags["seeds"] == "4"
