"""Token-by-token layout of training batches, the PPO update plan and the resumable prompt sampler."""

import pytest
import torch

from rlcore.rollout import FEEDBACK, INSERTED, MODEL, OBSERVATION, Trajectory
from rlcore.trainer.batching import PromptSampler, collate, minibatch_counts, update_plan

PAD = 0


def _traj(prompt, response, components, logprobs=None, group="g"):
    logprobs = logprobs if logprobs is not None else [(-0.5 if c == MODEL else 0.0) for c in components]
    return Trajectory(
        prompt_ids=prompt,
        group_id=group,
        response_ids=response,
        components=components,
        sample_logprobs=logprobs,
    )


def _two_rows():
    # row 0: prompt [11,12,13], response model 21,22 | observation 23,24 | model 25
    # row 1: prompt [31], response inserted 41 | model 42 | feedback 43
    return [
        _traj(
            [11, 12, 13],
            [21, 22, 23, 24, 25],
            [MODEL, MODEL, OBSERVATION, OBSERVATION, MODEL],
            [-0.1, -0.2, 0.0, 0.0, -0.3],
        ),
        _traj([31], [41, 42, 43], [INSERTED, MODEL, FEEDBACK], [0.0, -0.4, 0.0]),
    ]


def test_collate_layout_token_by_token():
    batch = collate(_two_rows(), torch.tensor([1.5, -0.5]), PAD)
    # P = 3 prompt columns (row 1 left-padded by 2), T = 5 response columns (row 1 right-padded by 2)
    assert batch.prompt_width == 3
    assert batch.input_ids.tolist() == [
        [11, 12, 13, 21, 22, 23, 24, 25],
        [PAD, PAD, 31, 41, 42, 43, PAD, PAD],
    ]
    assert batch.attention_mask.tolist() == [[1] * 8, [0, 0, 1, 1, 1, 1, 0, 0]]
    # positions count real tokens only, so the padded row starts at 0 on its first real token
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 1, 2, 3, 3, 3]]
    assert batch.response_ids.tolist() == [[21, 22, 23, 24, 25], [41, 42, 43, PAD, PAD]]
    # trained: MODEL and INSERTED; observations, feedback and padding are not
    assert batch.loss_mask.tolist() == [[True, True, False, False, True], [True, True, False, False, False]]
    # sampled (TIS applies): MODEL only, not the inserted token
    assert batch.sampled_mask.tolist() == [
        [True, True, False, False, True],
        [False, True, False, False, False],
    ]
    assert batch.response_mask.tolist() == [[True] * 5, [True, True, True, False, False]]
    torch.testing.assert_close(
        batch.sample_logprobs, torch.tensor([[-0.1, -0.2, 0, 0, -0.3], [0, -0.4, 0, 0, 0]])
    )
    assert batch.advantages.tolist() == [1.5, -0.5]


def test_select_trims_padding_and_keeps_response_alignment():
    batch = collate(_two_rows(), torch.tensor([1.5, -0.5]), PAD)
    batch.old_logprobs = torch.arange(10, dtype=torch.float32).view(2, 5)
    row1 = batch.select([1])
    # only row 1: its single prompt token and 3 response tokens remain; response column t is still token t
    assert row1.input_ids.tolist() == [[31, 41, 42, 43]]
    assert row1.prompt_width == 1
    assert row1.old_logprobs.tolist() == [[5.0, 6.0, 7.0]]
    assert row1.advantages.tolist() == [-0.5]


def test_select_empty_gives_placeholder_without_loss_tokens():
    batch = collate(_two_rows(), torch.tensor([1.5, -0.5]), PAD)
    empty = batch.select([])
    assert empty.num_rows == 1
    assert not empty.loss_mask.any() and not empty.sampled_mask.any()


def test_collate_rejects_misaligned_trajectory():
    bad = _traj([1], [2, 3], [MODEL])
    with pytest.raises(ValueError, match="lengths differ"):
        collate([bad], torch.zeros(1), PAD)


def test_update_plan_identity_and_shuffled():
    # 5 rows, 2 mini-batches (3 + 2 rows), micro-batches of 2, 2 micro-batches each
    assert update_plan(5, 2, 2, 2) == [[[0, 1], [2]], [[3, 4], []]]
    generator = torch.Generator().manual_seed(0)
    plan = update_plan(5, 2, 2, 2, generator)
    rows = sorted(r for minibatch in plan for micro in minibatch for r in micro)
    assert rows == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="do not fit"):
        update_plan(5, 1, 2, 2)


def test_minibatch_counts_follow_the_largest_rank():
    # the largest rank has 10 rows, 4 rows per mini-batch -> 3 mini-batches of <= 4 rows -> 2 micro of 3
    assert minibatch_counts(10, 4, 3) == (3, 2)
    # minibatch_rows 10 covers all: one mini-batch of 10 rows in micro-batches of 8 -> 2 micro-batches
    assert minibatch_counts(10, 10, 8) == (1, 2)
    assert minibatch_counts(0, 4, 8) == (1, 1)


def test_prompt_sampler_epochs_and_resume():
    sampler = PromptSampler(5, seed=3)
    first = sampler.next_indices(3) + sampler.next_indices(3)
    # the first 5 draws are a permutation of the records; the 6th starts the next epoch
    assert sorted(first[:5]) == [0, 1, 2, 3, 4]
    state = sampler.state_dict()
    assert state == {"epoch": 1, "position": 1, "num_records": 5}
    upcoming = sampler.next_indices(7)
    resumed = PromptSampler(5, seed=3)
    resumed.load_state_dict(state)
    assert resumed.next_indices(7) == upcoming
    with pytest.raises(ValueError, match="written for 5 prompt records"):
        PromptSampler(6, seed=3).load_state_dict(state)
    assert PromptSampler(4, seed=0, shuffle=False).next_indices(6) == [0, 1, 2, 3, 0, 1]
