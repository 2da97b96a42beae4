"""Checkpoint/resume reproduces the uninterrupted run's per-step metrics exactly on CPU.

Two cases: a planned stop (``train.stop_after_step``) resumed in the same process, and a real SIGTERM that
lands in the middle of a step of a subprocess, resumed in a fresh subprocess.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from trainer_helpers import RECORDS, deterministic, letter_reward, make_cfg, read_metrics

from rlcore.trainer import train
from rlcore.trainer.checkpoint import list_checkpoints

HERE = Path(__file__).parent


@pytest.mark.parametrize("rollout_seed", ["null", "11"])  # global RNG / per-call seeds from a counter
def test_stop_and_resume_in_process_equals_uninterrupted(tmp_path, rollout_seed):
    seed = f"rollout.seed={rollout_seed}"
    full = train(
        make_cfg(tmp_path / "full", "train.total_steps=2", seed), records=RECORDS, reward_fn=letter_reward
    )
    part_dir = tmp_path / "part"
    first = train(
        make_cfg(part_dir, "train.total_steps=2", "train.stop_after_step=1", "tracking.enabled=true", seed),
        records=RECORDS,
        reward_fn=letter_reward,
    )
    assert first.stopped_early and first.last_step == 1
    assert [step for step, _ in list_checkpoints(part_dir)] == [1]
    second = train(
        make_cfg(part_dir, "train.total_steps=2", "tracking.enabled=true", seed),
        records=RECORDS,
        reward_fn=letter_reward,
    )
    assert not second.stopped_early and second.last_step == 2
    assert second.run_id == first.run_id  # the MLflow run continues instead of starting over
    assert [deterministic(m) for m in read_metrics(part_dir)] == [
        deterministic(m) for m in read_metrics(full.output_dir)
    ]
    for (name, a), (_, b) in zip(full.model.named_parameters(), second.model.named_parameters()):
        assert torch.equal(a, b), name


def _worker(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, str(HERE / "resume_worker.py"), *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


@pytest.mark.slow
def test_sigterm_mid_step_then_resume_in_new_process_equals_uninterrupted(tmp_path):
    reference = _worker(tmp_path / "full", 4)
    announce = tmp_path / "announce"
    victim = _worker(tmp_path / "part", 4, 2, announce)
    deadline = time.time() + 600
    while not announce.exists():
        assert victim.poll() is None, victim.stdout.read()
        assert time.time() < deadline, "step 2 never started"
        time.sleep(0.05)
    victim.send_signal(signal.SIGTERM)  # lands during step 2 (after its rollouts, before its update)
    out, _ = victim.communicate(timeout=600)
    assert victim.returncode == 0, out
    assert "LAST_STEP 2 STOPPED True" in out, out
    assert [step for step, _ in list_checkpoints(tmp_path / "part")] == [2]

    resumed = _worker(tmp_path / "part", 4)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0 and "LAST_STEP 4 STOPPED False" in out, out
    ref_out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_out
    expected = [deterministic(m) for m in read_metrics(tmp_path / "full")]
    got = [deterministic(m) for m in read_metrics(tmp_path / "part")]
    assert [m["step"] for m in got] == [1, 2, 3, 4]
    assert got == expected


def test_resume_under_another_tracking_store_opens_a_new_run_and_finishes(tmp_path, monkeypatch, caplog):
    """The runs folder copied to another machine: the checkpoint names an MLflow run the new store lacks."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'first' / 'mlflow.db'}")
    first = train(
        make_cfg(tmp_path / "run", "train.total_steps=2", "train.stop_after_step=1", "tracking.enabled=true"),
        records=RECORDS,
        reward_fn=letter_reward,
    )
    assert first.stopped_early and first.run_id
    other = f"sqlite:///{tmp_path / 'second' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    with caplog.at_level("WARNING", logger="rlcore.tracking"):
        second = train(
            make_cfg(tmp_path / "run", "train.total_steps=2", "tracking.enabled=true"),
            records=RECORDS,
            reward_fn=letter_reward,
        )
    assert not second.stopped_early and second.last_step == 2
    assert second.run_id != first.run_id
    assert any(first.run_id in r.getMessage() and other in r.getMessage() for r in caplog.records)
    from mlflow.tracking import MlflowClient

    run = MlflowClient(other).get_run(second.run_id)
    assert run.data.tags["resumed_from_run_id"] == first.run_id and run.info.status == "FINISHED"
    assert [m.step for m in MlflowClient(other).get_metric_history(second.run_id, "loss/total")] == [2]
