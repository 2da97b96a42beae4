"""Golden tests for GRPO advantages. Run: .venv/bin/python -m pytest tests/common/objectives -q"""

import math

import pytest
import torch

from rlcore.objectives import group_index, group_reward_stats, grpo_advantages


def test_group_index_first_appearance_order():
    index, num_groups = group_index(["q7", "q2", "q7", "q9", "q2"])
    assert num_groups == 3
    assert index.tolist() == [0, 1, 0, 2, 1]


def test_dead_end_group_with_one_correct_probe():
    # rewards [0,0,0,0,0,1]: mean = 1/6; squared deviations 5*(1/6)^2 + (5/6)^2 = 30/36;
    # unbiased var = (30/36)/5 = 1/6, std = 0.408248
    # A_orig = (-1/6)/0.408248 = -0.408248 ; A_probe = (5/6)/0.408248 = 2.041241  (rexrag spec 4.5)
    adv = grpo_advantages(torch.tensor([0.0, 0, 0, 0, 0, 1]), ["q"] * 6)
    expected = torch.tensor([-0.408248] * 5 + [2.041241])
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)


def test_interleaved_groups_of_different_sizes():
    # group a = positions 0,2,4 rewards [1,0,1]: mean 2/3, deviations (1/3,-2/3,1/3), sum sq 6/9,
    #   var 6/9/2 = 1/3, std 0.577350 -> A = 0.577350, -1.154701, 0.577350
    # group b = positions 1,3 rewards [0,1]: mean 1/2, deviations (-1/2,1/2), var 0.5/1, std 0.707107 -> -/+0.707107
    adv = grpo_advantages(torch.tensor([1.0, 0, 0, 1, 1]), ["a", "b", "a", "b", "a"])
    expected = torch.tensor([0.577350, -0.707107, -1.154701, 0.707107, 0.577350])
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)


def test_dr_grpo_no_std_scaling():
    # same batch, only centred: a -> 1-2/3, 0-2/3, 1-2/3 ; b -> 0-1/2, 1-1/2
    adv = grpo_advantages(torch.tensor([1.0, 0, 0, 1, 1]), ["a", "b", "a", "b", "a"], scale_by_std=False)
    expected = torch.tensor([1 / 3, -0.5, -2 / 3, 0.5, 1 / 3])
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)


def test_batch_std_scaling():
    # batch rewards [1,0,0,1,1]: mean 0.6, deviations (.4,-.6,-.6,.4,.4), sum sq 3*.16 + 2*.36 = 1.2,
    # unbiased var 1.2/4 = 0.3, std 0.547723. Group-centred values from above divided by 0.547723:
    # 1/3 -> 0.608581, -1/2 -> -0.912871, -2/3 -> -1.217161
    adv = grpo_advantages(torch.tensor([1.0, 0, 0, 1, 1]), ["a", "b", "a", "b", "a"], std_scope="batch")
    expected = torch.tensor([0.608581, -0.912871, -1.217161, 0.912871, 0.608581])
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)


def test_singleton_group_gets_zero_advantage():
    # "c" has no other sample, so no baseline: A = 0 (not the raw reward 1 the reference code would give).
    # "a" = [1,0]: mean .5, std .707107 -> +/-0.707107
    adv = grpo_advantages(torch.tensor([1.0, 0.0, 1.0]), ["a", "a", "c"])
    torch.testing.assert_close(adv, torch.tensor([0.707107, -0.707107, 0.0]), atol=1e-5, rtol=0)
    assert grpo_advantages(torch.tensor([3.0]), ["solo"]).tolist() == [0.0]


def test_zero_variance_group_is_zero_not_nan():
    # all-correct group: deviations 0, std 0 -> 0/(0+eps) = 0
    adv = grpo_advantages(torch.tensor([1.0, 1.0, 1.0]), ["g", "g", "g"])
    assert adv.tolist() == [0.0, 0.0, 0.0]


def test_colliding_ids_change_the_baseline():
    # two different questions wrongly sharing an id are pooled: [1,1] and [0,0] become one group with
    # mean 0.5 and get +/-0.866025 (std of [1,1,0,0] = sqrt(1/3) = 0.577350; 0.5/0.577350 = 0.866025),
    # whereas unique ids correctly give 0 for both zero-variance groups.
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0])
    pooled = grpo_advantages(rewards, ["0", "0", "0", "0"])
    unique = grpo_advantages(rewards, ["nq-0", "nq-0", "hotpot-0", "hotpot-0"])
    torch.testing.assert_close(
        pooled, torch.tensor([0.866025, 0.866025, -0.866025, -0.866025]), atol=1e-5, rtol=0
    )
    assert unique.tolist() == [0.0, 0.0, 0.0, 0.0]


def test_integer_rewards_and_empty_batch():
    adv = grpo_advantages(torch.tensor([1, 0]), ["a", "a"])
    assert adv.dtype == torch.float32
    assert grpo_advantages(torch.zeros(0), []).numel() == 0


@pytest.mark.parametrize(
    "rewards, ids, kwargs, message",
    [
        (torch.zeros(2, 2), ["a", "a"], {}, "1-D"),
        (torch.zeros(3), ["a", "a"], {}, "3 rewards but 2 group ids"),
        (torch.tensor([1.0, math.nan]), ["a", "a"], {}, "NaN"),
        (torch.zeros(2), ["a", "a"], {"std_scope": "global"}, "std_scope"),
    ],
)
def test_bad_inputs_raise_clear_errors(rewards, ids, kwargs, message):
    with pytest.raises(ValueError, match=message):
        grpo_advantages(rewards, ids, **kwargs)


def test_group_reward_stats():
    # a = [1,1] zero variance; b = [0,1] informative; c = [0] singleton (also zero variance)
    stats = group_reward_stats(torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0]), ["a", "a", "b", "b", "c"])
    assert stats["num_groups"] == 3
    assert stats["zero_variance_group_frac"] == pytest.approx(2 / 3)
    assert stats["singleton_group_frac"] == pytest.approx(1 / 3)
    assert stats["mean_group_size"] == pytest.approx(5 / 3)
