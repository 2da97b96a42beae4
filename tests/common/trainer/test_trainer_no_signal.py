"""No silent no-learning: the trainer warns once when every group has had zero reward variance N steps in a row."""

from __future__ import annotations

import logging

import pytest
from trainer_helpers import RECORDS, letter_reward, make_cfg

from rlcore.trainer import train
from rlcore.trainer.reporting import NoSignalWatch


def test_watch_warns_once_after_patience_steps_in_a_row(caplog):
    watch = NoSignalWatch(patience=3)
    flat = {"groups/zero_variance_frac": 1.0, "reward/mean": 0.0}
    mixed = {"groups/zero_variance_frac": 0.5, "reward/mean": 0.2}
    with caplog.at_level(logging.WARNING, logger="rlcore.trainer.reporting"):
        # steps 1-2 flat, step 3 has signal (the streak restarts), steps 4-6 flat -> warns at step 6, then never
        fired = [
            watch.observe(step, m) for step, m in enumerate([flat, flat, mixed, flat, flat, flat, flat], 1)
        ]
    assert fired == [False, False, False, False, False, True, False]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "zero reward variance for 3 steps in a row (steps 4-6, mean reward 0.000)" in warnings[0]
    assert "objective.num_generations" in warnings[0]


def test_watch_ignores_steps_without_the_metric():
    watch = NoSignalWatch(patience=1)
    assert watch.observe(1, {"reward/mean": 0.0}) is False  # not a GRPO step: no verdict
    assert watch.observe(2, {"groups/zero_variance_frac": 1.0}) is True


def zero_reward(completions, **columns):
    return [0.0] * len(completions)


@pytest.mark.slow  # five tiny training steps: ~20-70 s on two busy cores
def test_trainer_warns_when_no_group_ever_varies(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("rlcore.trainer.reporting.NO_SIGNAL_PATIENCE", 2)
    with caplog.at_level(logging.WARNING, logger="rlcore.trainer.reporting"):
        train(make_cfg(tmp_path / "flat", "train.total_steps=3"), records=RECORDS, reward_fn=zero_reward)
    flat = [r for r in caplog.records if "no learning signal" in r.getMessage()]
    assert len(flat) == 1 and "steps 1-2" in flat[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rlcore.trainer.reporting"):
        train(make_cfg(tmp_path / "varied", "train.total_steps=2"), records=RECORDS, reward_fn=letter_reward)
    assert not [r for r in caplog.records if "no learning signal" in r.getMessage()]
