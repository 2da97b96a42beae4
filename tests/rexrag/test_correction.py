"""Behaviour (mixture) log-probs against hand-computed values, all variants, and the IS diagnostics."""

import math

import pytest
import torch

from rexrag.correction import (
    ProbeLayout,
    behaviour_logprobs,
    importance_diagnostics,
    mixture_logprobs,
    probe_log_mu,
)

LOG_THIRD = math.log(1 / 3)


def _batch():
    """Row 0: an original with 4 real tokens. Row 1: a probe whose prompt sits at j=2 with L=2 tokens.

    The pool trie gives the prompt's tokens probabilities 1 and 1/3 (so P(prompt) = 1/3).
    """
    old = torch.tensor(
        [[-1.0, -2.0, -0.5, -3.0, 0.0, 0.0], [-0.5, -1.0, -4.0, -6.0, -0.2, -0.3]], dtype=torch.float64
    )
    valid = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    layouts = [ProbeLayout(is_probe=False), ProbeLayout(True, insert_start=2, pool_logprobs=[0.0, LOG_THIRD])]
    return old, valid, layouts


def test_paper_variant_golden_values():
    old, valid, layouts = _batch()
    out = behaviour_logprobs(old, valid, layouts, alpha=0.25, error_rate=0.5, variant="paper")
    expected = [
        # original: b = 0.75 * pi_old -> old + log 0.75 = old - 0.2876821; padding keeps old (0.0)
        [-1.2876821, -2.2876821, -0.7876821, -3.2876821, 0.0, 0.0],
        [
            # prefix (j=2): mu = pi_old * 0.5^(-1/2) -> b = pi_old * (0.75 + 0.25 * 1.4142136) = pi_old * 1.1035534
            # -> old + 0.0985354
            -0.4014647,
            -0.9014647,
            # first inserted token: mu = 1 -> b = 0.75 * e^-4 + 0.25 = 0.0137367 + 0.25 = 0.2637367 -> -1.3328039
            -1.3328039,
            # second inserted token: mu = 1/3 -> b = 0.75 * e^-6 + 0.25/3 = 0.0018591 + 0.0833333 -> -2.4628431
            -2.4628431,
            # continuation: mu = pi_old -> b = pi_old
            -0.2,
            -0.3,
        ],
    ]
    assert torch.allclose(out, torch.tensor(expected, dtype=torch.float64), atol=1e-6)


def test_coarse_variant_puts_the_prompt_mass_on_its_first_token():
    old, valid, layouts = _batch()
    out = behaviour_logprobs(old, valid, layouts, alpha=0.25, error_rate=0.5, variant="coarse")
    # first inserted token: mu = P(prompt) = 1/3 -> b = 0.0137367 + 0.0833333 = 0.0970701 -> -2.3323223
    # second: mu = 1 -> b = 0.0018591 + 0.25 = 0.2518591 -> -1.3788856
    assert out[1, 2:4].tolist() == pytest.approx([-2.3323223, -1.3788856], abs=1e-6)
    # product of mu over the prompt is 1/3 in both variants
    paper_mu = probe_log_mu(old, layouts, 0.5, "paper")[1, 2:4].sum()
    coarse_mu = probe_log_mu(old, layouts, 0.5, "coarse")[1, 2:4].sum()
    assert paper_mu.item() == pytest.approx(LOG_THIRD) and coarse_mu.item() == pytest.approx(LOG_THIRD)


def test_alpha_zero_is_the_plain_ratio_and_none_returns_none():
    old, valid, layouts = _batch()
    for variant in ("paper", "coarse"):
        out = behaviour_logprobs(old, valid, layouts, alpha=0.0, error_rate=0.5, variant=variant)
        assert torch.equal(out, old)
    assert behaviour_logprobs(old, valid, layouts, alpha=0.3, error_rate=0.5, variant="none") is None
    with pytest.raises(ValueError, match="alpha"):
        mixture_logprobs(old, old, alpha=1.0)
    with pytest.raises(ValueError, match="variant"):
        behaviour_logprobs(old, valid, layouts, 0.1, 0.5, variant="fancy")


def test_error_rate_near_one_and_near_zero():
    old, valid, layouts = _batch()
    # z = 1: mu = pi_old on the prefix -> b = pi_old exactly
    out = behaviour_logprobs(old, valid, layouts, alpha=0.25, error_rate=1.0)
    assert out[1, :2].tolist() == pytest.approx([-0.5, -1.0], abs=1e-12)
    # z = 0 is clamped to 1e-6: mu = e^-0.5 * (1e6)^(1/2) = 606.53 -> b = 0.4549 + 151.63 = 152.088 -> 5.0244564
    out = behaviour_logprobs(old, valid, layouts, alpha=0.25, error_rate=0.0)
    assert out[1, 0].item() == pytest.approx(5.0244564, abs=1e-6)
    assert torch.isfinite(out).all()
    # z = 1e-3 is used as is: log b = -0.5 + log(0.75 + 0.25 * 1e3^(1/2)) = -0.5 + log(8.6556) = 1.6581
    out = behaviour_logprobs(old, valid, layouts, alpha=0.25, error_rate=1e-3)
    assert out[1, 0].item() == pytest.approx(-0.5 + math.log(0.75 + 0.25 * 1e3**0.5), abs=1e-9)


def test_prefix_count_model_tokens_spreads_one_over_z_on_model_tokens_only():
    old, valid, _ = _batch()
    layouts = [
        ProbeLayout(False),
        ProbeLayout(True, insert_start=2, pool_logprobs=[0.0, LOG_THIRD], prefix_model_tokens=1),
    ]
    log_mu = probe_log_mu(old, layouts, error_rate=0.5, prefix_count="model_tokens")
    # one model token: mu = pi_old / 0.5 -> log mu = old + log 2
    assert log_mu[1, :2].tolist() == pytest.approx([-0.5 + math.log(2), -1.0 + math.log(2)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_nan_or_inf_down_to_minus_200(dtype):
    old = torch.tensor([[-200.0, -150.0, -0.1], [-200.0, -200.0, -200.0]], dtype=dtype)
    valid = torch.ones_like(old)
    layouts = [ProbeLayout(False), ProbeLayout(True, insert_start=1, pool_logprobs=[0.0])]
    for variant in ("paper", "coarse", "sequence"):
        out = behaviour_logprobs(old, valid, layouts, alpha=0.1, error_rate=0.3, variant=variant)
        assert torch.isfinite(out).all(), variant
    out = behaviour_logprobs(old, valid, layouts, alpha=0.1, error_rate=0.3, variant="paper")
    # original: -200 + log 0.9 = -200.1053605 (the probability-space official formula gives -inf in float32)
    assert out[0, 0].item() == pytest.approx(-200.1053605, abs=1e-4)
    # inserted token with pi_old = e^-200 and mu = 1: b ~= 0.1 -> log 0.1 = -2.3025851
    assert out[1, 1].item() == pytest.approx(-2.3025851, abs=1e-5)
    ratio = torch.exp(old - out)  # the PPO ratio at theta = theta_old
    assert torch.isfinite(ratio).all()


def test_sequence_variant_golden_values():
    old, valid, layouts = _batch()
    # use the loss mask: row 1 all 6 tokens, row 0 the first 4
    out = behaviour_logprobs(old, valid, layouts, 0.25, 0.5, variant="sequence", sequence_weight_cap=2.0)
    # original: w = 1 / (1 - 0.25) = 1.3333 (< cap 2) -> b_t = old_t - log(1.3333) = old_t - 0.2876821
    assert out[0, :4].tolist() == pytest.approx([-1.2876821, -2.2876821, -0.7876821, -3.2876821], abs=1e-6)
    # probe: log pi(y) = -0.5-1-4-6-0.2-0.3 = -12 ; log pi(prompt) = -10
    # log mu(y) = -12 - log 0.5 + log(1/3) + 10 = -2.4054651
    # log b(y) = logaddexp(-12 + log .75, -2.4054651 + log .25) = -3.7915552 ; log w = -12 + 3.7915552 = -8.2084448
    assert (old[1] - out[1]).tolist() == pytest.approx([-8.2084448] * 6, abs=1e-6)
    # cap 1 truncates the original's 1.3333 to 1 -> plain ratio
    capped = behaviour_logprobs(old, valid, layouts, 0.25, 0.5, variant="sequence", sequence_weight_cap=1.0)
    assert torch.allclose(capped[0], old[0])


def test_bad_layout_is_reported():
    old, valid, _ = _batch()
    with pytest.raises(ValueError, match="row 1"):
        probe_log_mu(
            old, [ProbeLayout(False), ProbeLayout(True, insert_start=5, pool_logprobs=[0.0, 0.0])], 0.5
        )


def test_importance_diagnostics_golden():
    old = torch.zeros(2, 2, dtype=torch.float64)
    behaviour = torch.tensor([[math.log(0.5), 0.0], [0.0, math.log(2.0)]], dtype=torch.float64)
    mask = torch.ones(2, 2)
    stats = importance_diagnostics(
        old, behaviour, mask, torch.tensor([False, True]), eps_low=0.2, eps_high=0.2
    )
    # w = pi/b: row 0 (original) [2, 1], row 1 (probe) [1, 0.5]
    assert stats["is_weight_mean"] == pytest.approx(4.5 / 4)
    assert stats["is_weight_max"] == pytest.approx(2.0)
    # ESS = (sum w)^2 / (n sum w^2) = 20.25 / (4 * 6.25) = 0.81
    assert stats["is_ess"] == pytest.approx(0.81)
    assert stats["is_weight_mean_orig"] == pytest.approx(1.5) and stats[
        "is_weight_mean_probe"
    ] == pytest.approx(0.75)
    # originals: 2 > 1.2 is outside the trust region -> 1/2 ; probes: 0.5 < 0.8 -> 1/2
    assert stats["clip_frac_orig"] == pytest.approx(0.5) and stats["clip_frac_probe"] == pytest.approx(0.5)
