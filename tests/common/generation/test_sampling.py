"""Golden values for the sampling distribution, stop-string matching and SamplingParams validation."""

from __future__ import annotations

import math

import pytest
import torch

from rlcore.generation import SamplingParams, StopStringMatcher, draw_tokens, sampling_logprobs

NEG_INF = float("-inf")
LOGITS = torch.tensor([[2.0, 1.0, 0.0, -1.0]])


@pytest.mark.parametrize(
    "temperature, top_k, top_p, expected",
    [
        # plain softmax: logsumexp(2,1,0,-1) = log(7.38906 + 2.71828 + 1 + 0.36788) = log(11.47522) = 2.44019
        (1.0, -1, 1.0, [-0.44019, -1.44019, -2.44019, -3.44019]),
        # T=2: logits/2 = (1, .5, 0, -.5); logsumexp = log(2.71828 + 1.64872 + 1 + 0.60653) = log(5.97353) = 1.78734
        (2.0, -1, 1.0, [-0.78734, -1.28734, -1.78734, -2.28734]),
        # top-k 2 keeps (2, 1): logsumexp = log(7.38906 + 2.71828) = 2.31326
        (1.0, 2, 1.0, [-0.31326, -1.31326, NEG_INF, NEG_INF]),
        # top-p 0.7: probs (.64391, .23688, .08714, .03206); mass before each = (0, .64391, .88079, .96794);
        # keep mass-before < 0.7 -> tokens 0 and 1, renormalised as in the top-k 2 case
        (1.0, -1, 0.7, [-0.31326, -1.31326, NEG_INF, NEG_INF]),
        # top-p 0.6: only the arg-max has mass-before < 0.6 -> log 1 = 0
        (1.0, -1, 0.6, [0.0, NEG_INF, NEG_INF, NEG_INF]),
        # top-k 3 then top-p 0.9 on the RENORMALISED top-3 probs (.66524, .24473, .09003): mass before token 2 is
        # .90997 >= 0.9, so it goes (on the unrenormalised probs it would be .88079 < 0.9 and stay)
        (1.0, 3, 0.9, [-0.31326, -1.31326, NEG_INF, NEG_INF]),
        # top-k 0 means off, like -1
        (1.0, 0, 1.0, [-0.44019, -1.44019, -2.44019, -3.44019]),
    ],
)
def test_sampling_logprobs_golden(temperature, top_k, top_p, expected):
    got = sampling_logprobs(LOGITS, temperature, top_k, top_p)[0].tolist()
    for value, want in zip(got, expected):
        if want == NEG_INF:
            assert value == NEG_INF
        else:
            assert value == pytest.approx(want, abs=1e-4)


def test_top_k_keeps_ties():
    # Two tokens share the k-th value: both are kept, each with probability 1/2.
    got = sampling_logprobs(torch.tensor([[1.0, 1.0, 0.0]]), top_k=1)[0].tolist()
    assert got[:2] == pytest.approx([math.log(0.5)] * 2) and got[2] == NEG_INF


def test_draw_tokens_never_picks_filtered_tokens_and_is_seeded():
    logprobs = sampling_logprobs(LOGITS.repeat(2000, 1), top_k=2)
    draws = draw_tokens(logprobs, torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {0, 1}
    # P(token 0) = e^2 / (e^2 + e) = 0.731; 2000 draws put the frequency within 0.731 +- 0.04 (4 sigma)
    assert abs((draws == 0).float().mean().item() - 0.731) < 0.04
    again = draw_tokens(logprobs, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)


def test_stop_string_matcher_scans_incrementally():
    matcher = StopStringMatcher(["</search>", "</answer>"])
    assert matcher.find("<search> q </sea") is None
    assert matcher.find("<search> q </search") is None
    assert matcher.find("<search> q </search>") == "</search>"
    # the earliest stop string wins when two appear in the new text
    assert StopStringMatcher(["</answer>", "</search>"]).find("a</search> b</answer>") == "</search>"
    assert StopStringMatcher([]).find("anything") is None


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"stop": "</answer>"}, "list of strings"),
        ({"stop": [""]}, "non-empty"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
    ],
)
def test_sampling_params_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**changes)


def test_sampling_params_greedy_conventions():
    assert SamplingParams(temperature=0.0).is_greedy
    assert SamplingParams(greedy=True, temperature=0.7).is_greedy
    assert not SamplingParams().is_greedy
