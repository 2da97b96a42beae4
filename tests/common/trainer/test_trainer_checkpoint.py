"""Atomic checkpoints, resume resolution and the stop-on-signal flag."""

import json
import os
import signal

import pytest
import torch
from accelerate import Accelerator

from rlcore.trainer.checkpoint import (
    StopSignal,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
)


@pytest.fixture()
def prepared():
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return accelerator, model, optimizer


def test_save_load_roundtrip_restores_weights_optimizer_and_rng(tmp_path, prepared):
    accelerator, model, optimizer = prepared
    save_checkpoint(
        accelerator, tmp_path, 3, {"sampler": {"epoch": 0, "position": 4}, "mlflow_run_id": "abc"}
    )
    expected_weight = model.weight.detach().clone()
    expected_moment = optimizer.state_dict()["state"][0]["exp_avg"].clone()
    after_save = torch.rand(3)  # the RNG stream right after the save
    with torch.no_grad():
        model.weight.add_(1.0)
    state = load_checkpoint(accelerator, tmp_path / "checkpoints" / "step-00000003")
    assert state == {"sampler": {"epoch": 0, "position": 4}, "mlflow_run_id": "abc", "step": 3}
    torch.testing.assert_close(model.weight.detach(), expected_weight)
    torch.testing.assert_close(optimizer.state_dict()["state"][0]["exp_avg"], expected_moment)
    torch.testing.assert_close(torch.rand(3), after_save)  # RNG restored to the moment of saving


def test_only_complete_checkpoints_count_and_old_ones_are_pruned(tmp_path, prepared):
    accelerator, _, _ = prepared
    for step in (1, 2, 3):
        save_checkpoint(accelerator, tmp_path, step, {}, keep_last=2)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 3]
    # a crash mid-save leaves only a temporary folder or a folder without the marker: both are ignored
    (tmp_path / "checkpoints" / ".tmp-step-00000004").mkdir()
    (tmp_path / "checkpoints" / "step-00000005").mkdir()
    assert latest_checkpoint(tmp_path).name == "step-00000003"
    assert resolve_resume("auto", tmp_path).name == "step-00000003"
    assert resolve_resume("never", tmp_path) is None
    # the next save of step 4 replaces the stale temporary folder
    save_checkpoint(accelerator, tmp_path, 4, {}, keep_last=0)
    assert (
        json.loads((tmp_path / "checkpoints" / "step-00000004" / "trainer_state.json").read_text())["step"]
        == 4
    )


def test_resolve_resume_errors(tmp_path):
    assert resolve_resume("auto", tmp_path) is None  # nothing to resume from: start fresh
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        resolve_resume(str(tmp_path / "nope"), tmp_path)


def test_stop_signal_sets_flag_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignal() as stop:
        assert stop.requested is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == "SIGTERM"
        # a second Ctrl-C while stopping aborts at once
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
