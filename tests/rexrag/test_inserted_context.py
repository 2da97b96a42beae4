"""``rexrag.train_inserted=false``: a kept probe's inserted prompt stays in context but leaves the loss, and the
correction still finds where it sits."""

import pytest
import torch

from rexrag.method import RexRag, RexRagConfig
from rlcore.generation.testing import build_tiny_tokenizer
from rlcore.rollout import (
    INSERTED,
    INSERTED_CONTEXT,
    MODEL,
    OBSERVATION,
    RolloutConfig,
    Trajectory,
    TurnRecord,
)


def _turn(start: int, num_tokens: int, round_index: int) -> TurnRecord:
    return TurnRecord(
        round_index, start, num_tokens, context_fingerprint=0, sampled_fingerprint=0, search_enabled=True
    )


def _trajectories(tok, probe_prompt_ids):
    """One wrong original and one wrong probe of it: [model x3][observation x2][inserted][model x2]."""
    original = Trajectory(prompt_ids=[1, 2], group_id="q#0", is_original=True, final_answer="Vale")
    original.append_sampled([11, 12, 13], [-0.1, -0.2, -0.3], _turn(0, 3, 0))
    probe = Trajectory(prompt_ids=[1, 2], group_id="q#0", is_original=False, final_answer="Vale")
    probe.append_sampled([11, 12, 13], [-0.1, -0.2, -0.3], _turn(0, 3, 0))
    probe.append([21, 22], OBSERVATION)
    probe.append(probe_prompt_ids, INSERTED)
    probe.append_sampled([31, 32], [-0.5, -0.6], _turn(len(probe.response_ids), 2, 1))
    for traj in (original, probe):
        traj.metadata.update(
            {"reward": 0.0, "record_index": 0, "old_logprobs": [-1.0] * len(traj.response_ids)}
        )
    return original, probe


@pytest.mark.parametrize("train_inserted", [True, False])
def test_untrained_inserted_prompt_is_context_only(train_inserted):
    tok = build_tiny_tokenizer()
    cfg = RexRagConfig(keep_ratio_init=1.0, pool="paraphrase_30", train_inserted=train_inserted)
    method = RexRag(cfg, tok, RolloutConfig(), [{"golden_answers": ["Teford"]}])
    inserted_ids = method.sampler.prompt_ids[0]
    original, probe = _trajectories(tok, inserted_ids)
    kept = method.after_rollout([original, probe], step=1)
    assert kept == [original, probe] and method.alpha == pytest.approx(0.5)
    start, length = 5, len(inserted_ids)
    code = INSERTED if train_inserted else INSERTED_CONTEXT
    assert probe.components[start : start + length] == [code] * length
    mask = probe.loss_mask()
    assert mask[start : start + length] == [train_inserted] * length
    assert mask[:3] == [True] * 3 and mask[3:5] == [False] * 2 and mask[start + length :] == [True, True]
    assert probe.components[:start] == [MODEL] * 3 + [OBSERVATION] * 2  # nothing else re-tagged
    # the correction still locates the prompt, and gives the same behaviour log-probs either way
    layout = method.sampler.layout(probe)
    assert (layout.insert_start, layout.insert_length) == (start, length)
    width = len(probe.response_ids)
    old = torch.full((2, width), -1.0)
    behaviour = method.behaviour_logprobs([original, probe], old, step=1)
    assert behaviour.shape == (2, width) and torch.isfinite(behaviour[1]).all()
    reference = RexRag(
        RexRagConfig(keep_ratio_init=1.0, pool="paraphrase_30"),
        tok,
        RolloutConfig(),
        [{"golden_answers": ["x"]}],
    )
    original2, probe2 = _trajectories(tok, inserted_ids)
    reference.after_rollout([original2, probe2], step=1)
    assert torch.allclose(behaviour, reference.behaviour_logprobs([original2, probe2], old, step=1))
