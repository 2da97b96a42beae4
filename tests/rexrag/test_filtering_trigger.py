"""Probe filtering, the keep-ratio EMA and the trigger modes."""

import math

import pytest
import torch

from rexrag.filtering import KeepRatioEMA, inserted_mean_logprob, probe_budget, select_probes
from rexrag.trigger import OFFICIAL_PROBE_PROB, ProbeTrigger, dead_end_rate


@pytest.mark.parametrize(
    "num_originals, ratio, world_size, expected",
    [
        (2560, 0.08, 8, 200),  # floor(204.8) = 204 -> multiple of 8 -> 200 (spec worked example)
        (32, 0.08, 1, 2),  # floor(2.56) = 2
        (25, 0.08, 1, 2),  # 25 * 0.08 = 2.0000000000000004 in floats -> 2
        (100, 0.29, 1, 29),  # 100 * 0.29 = 28.999999999999996 in floats; the intended product is 29
        (40, 0.08, 2, 2),  # floor(3.2) = 3 -> multiple of 2 -> 2
        (10, 0.0, 1, 0),
    ],
)
def test_probe_budget(num_originals, ratio, world_size, expected):
    assert probe_budget(num_originals, ratio, world_size) == expected


def test_select_probes_ranks_by_score_and_rounds_to_world_size():
    scores = [-1.0, -0.5, -2.0, -0.5]
    # K = floor(40 * 0.08) = 3: best -0.5 (index 1), then the tie -0.5 (index 3, later), then -1.0 (index 0)
    assert select_probes(scores, 40, 0.08, world_size=1) == [1, 3, 0]
    assert select_probes(scores, 40, 0.08, world_size=2) == [1, 3]
    # fewer probes than the budget: keep all of them, still a multiple of the world size
    assert select_probes([-3.0], 40, 0.08, world_size=1) == [0]
    assert select_probes([-3.0], 40, 0.08, world_size=2) == []


def test_inserted_mean_logprob():
    old = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    mask = torch.tensor([[0, 1, 1], [0, 0, 0]])
    scores = inserted_mean_logprob(old, mask)
    # row 0: (-2 - 3) / 2 = -2.5 ; row 1: no inserted token -> -inf
    assert scores[0].item() == pytest.approx(-2.5) and scores[1].item() == -math.inf


def test_keep_ratio_ema_by_hand():
    ema = KeepRatioEMA(initial=0.08)
    assert ema.update(0.5) == pytest.approx(0.122)  # 0.9 * 0.08 + 0.1 * 0.5
    assert ema.update(0.0) == pytest.approx(0.1098)  # 0.9 * 0.122
    capped = KeepRatioEMA(initial=0.08, max_ratio=0.1)
    assert capped.update(0.5) == pytest.approx(0.1)  # min(0.122, 0.1)
    assert capped.update(1.0) == pytest.approx(0.1)  # min(0.9 * 0.1 + 0.1, 0.1)
    restored = KeepRatioEMA()
    restored.load_state_dict(ema.state_dict())
    assert restored.value == ema.value
    with pytest.raises(ValueError):
        ema.update(1.5)


def test_keep_ratio_floor_keeps_probes_alive():
    # 16 originals per step, 0 accuracy: the unbounded EMA drops below 1/16 (K = 0) after a few updates
    free = KeepRatioEMA(initial=0.2)
    floored = KeepRatioEMA(initial=0.2, max_ratio=0.2, min_ratio=0.125)
    for _ in range(12):
        free.update(0.0)
        floored.update(0.0)
    assert probe_budget(16, free.value) == 0  # 0.2 * 0.9**12 = 0.056
    assert floored.value == pytest.approx(0.125) and probe_budget(16, floored.value) == 2
    restored = KeepRatioEMA()
    restored.load_state_dict(floored.state_dict())
    assert restored.min_ratio == 0.125 and restored.update(0.0) == pytest.approx(0.125)
    assert floored.update(1.0) == pytest.approx(0.2)  # the cap still applies: min(0.9*0.125 + 0.1, 0.2)
    assert KeepRatioEMA(initial=0.0, min_ratio=0.05).value == pytest.approx(
        0.05
    )  # the floor lifts the start too
    legacy = {"value": 0.07, "decay": 0.9, "max_ratio": None}  # checkpoint from before the floor existed
    restored.load_state_dict(legacy)
    assert restored.min_ratio is None and restored.update(0.0) == pytest.approx(0.063)
    with pytest.raises(ValueError, match="exceeds keep_ratio_max"):
        KeepRatioEMA(min_ratio=0.3, max_ratio=0.2)
    with pytest.raises(ValueError, match="keep_ratio_min"):
        KeepRatioEMA(min_ratio=-0.1)


def test_per_wrong_rollout_trigger():
    always = ProbeTrigger("per_wrong_rollout", probe_prob=1.0)
    assert always.at_answer(is_original=True, answer_correct=False, search_enabled=True)
    assert not always.at_answer(is_original=True, answer_correct=True, search_enabled=True)  # right answer
    assert not always.at_answer(
        is_original=False, answer_correct=False, search_enabled=True
    )  # probes never probe
    assert not always.at_answer(
        is_original=True, answer_correct=False, search_enabled=False
    )  # forced final turn
    never = ProbeTrigger("per_wrong_rollout", probe_prob=0.0)
    assert not never.at_answer(True, False, True)
    sampled = ProbeTrigger("per_wrong_rollout", probe_prob=0.2, seed=1)
    rate = sum(sampled.at_answer(True, False, True) for _ in range(20000)) / 20000
    assert abs(rate - 0.2) < 0.01
    assert OFFICIAL_PROBE_PROB == pytest.approx(0.1980198)  # randint(0, 100) < 20 -> 20 of 101 values


def test_dead_end_group_trigger():
    trigger = ProbeTrigger("dead_end_group", probe_prob=1.0)
    groups = ["a", "a", "b", "b", "c", "c"]
    correct = [False, False, True, False, False, False]
    eligible = [True, True, True, True, True, False]
    # a: all wrong -> both; b: solved -> none; c: all wrong but the second never reached a clone point
    assert trigger.dead_end_candidates(groups, correct, eligible) == [0, 1, 4]
    assert not trigger.at_answer(True, False, True)  # the decision is deferred in this mode
    assert ProbeTrigger("per_wrong_rollout").dead_end_candidates(groups, correct, eligible) == []
    assert dead_end_rate(groups, correct) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="trigger mode"):
        ProbeTrigger("sometimes")
