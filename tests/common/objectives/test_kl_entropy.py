"""Golden tests for KL estimators, entropy and token log-probs."""

import math

import pytest
import torch

from rlcore.objectives import entropy_from_logits, kl_penalty, token_logprobs_from_logits

LN_HALF = math.log(0.5)
LN_QUARTER = math.log(0.25)


@pytest.mark.parametrize(
    "kind, expected",
    [
        # l = ln pi_ref - ln pi_theta = ln .25 - ln .5 = ln .5 = -0.693147
        ("k1", 0.693147),  # -l
        ("k2", 0.240227),  # l^2/2 = 0.480453/2
        ("k3", 0.193147),  # (e^l - 1) - l = (0.5 - 1) + 0.693147
    ],
)
def test_estimators_single_token(kind, expected):
    value = kl_penalty(torch.tensor([[LN_HALF]]), torch.tensor([[LN_QUARTER]]), kind=kind)
    assert value.item() == pytest.approx(expected, abs=1e-6)


def test_k1_and_k3_are_unbiased_for_exact_kl():
    # pi_theta = (.5,.5), pi_ref = (.25,.75); KL(theta||ref) = .5 ln(.5/.25) + .5 ln(.5/.75)
    #   = .5*0.693147 + .5*(-0.405465) = 0.143841. The expectation of k1 and k3 under pi_theta equals it exactly.
    p = torch.tensor([[0.5, 0.5]])
    ref = torch.tensor([[0.25, 0.75]])
    for kind in ("k1", "k3"):
        per_token = kl_penalty(p.log(), ref.log(), kind=kind)
        assert (p * per_token).sum().item() == pytest.approx(0.143841, abs=1e-6)


def test_k3_clamped_and_masked():
    # ref - theta = 30 -> clamp log-ratio to 20 -> e^20 - 21 ~ 4.85e8 -> clamp to 10. Position 1 is masked
    # with -inf inputs and must come out as 0, not NaN; its gradient is 0.
    logprobs = torch.tensor([[-30.0, -math.inf]], requires_grad=True)
    ref = torch.tensor([[0.0, -math.inf]])
    value = kl_penalty(logprobs, ref, kind="k3", loss_mask=torch.tensor([[1, 0]]))
    assert value.tolist() == [[10.0, 0.0]]
    value.sum().backward()
    assert torch.isfinite(logprobs.grad).all()
    assert kl_penalty(torch.tensor([[-30.0]]), torch.tensor([[0.0]]), clamp=None).item() > 1e8


def test_kl_gradient_k3():
    # d k3 / d logp with l = ref - logp: d/dlogp [e^l - 1 - l] = -e^l + 1. For l = ln .5: 1 - .5 = 0.5
    logprobs = torch.tensor([[LN_HALF]], requires_grad=True)
    kl_penalty(logprobs, torch.tensor([[LN_QUARTER]])).sum().backward()
    assert logprobs.grad.item() == pytest.approx(0.5, abs=1e-6)


def test_bad_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), kind="k4")


def test_entropy_values():
    # uniform over 4: ln 4 = 1.386294
    # probs (.25,.75) from logits (0, ln 3): -(.25 ln .25 + .75 ln .75) = .346574 + .215762 = 0.562335
    # a single allowed token (other logit -inf): 0, and no NaN from 0 * -inf
    logits = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],
            [0.0, math.log(3.0), -math.inf, -math.inf],
            [1.0, -math.inf, -math.inf, -math.inf],
        ]
    )
    torch.testing.assert_close(
        entropy_from_logits(logits), torch.tensor([1.386294, 0.562335, 0.0]), atol=1e-6, rtol=0
    )


def test_entropy_bfloat16_upcasts():
    logits = torch.zeros(2, 3, 8, dtype=torch.bfloat16)
    out = entropy_from_logits(logits)
    assert out.dtype == torch.float32 and out.shape == (2, 3)
    torch.testing.assert_close(out, torch.full((2, 3), math.log(8.0)), atol=1e-6, rtol=0)


def test_token_logprobs_with_temperature():
    # logits (0, ln 3), token 1: p = 3/4 -> ln .75 = -0.287682
    # temperature 2: logits (0, ln3/2) -> weights (1, sqrt 3 = 1.732051) -> p = 1.732051/2.732051 = 0.633975
    #   -> ln 0.633975 = -0.455746
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    token = torch.tensor([[1]])
    assert token_logprobs_from_logits(logits, token).item() == pytest.approx(-0.287682, abs=1e-6)
    assert token_logprobs_from_logits(logits, token, temperature=2.0).item() == pytest.approx(
        -0.455746, abs=1e-6
    )


def test_token_logprobs_match_log_softmax():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=generator)
    tokens = torch.randint(0, 11, (2, 5), generator=generator)
    expected = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(token_logprobs_from_logits(logits, tokens), expected)
