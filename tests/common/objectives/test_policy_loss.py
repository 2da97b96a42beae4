"""Golden tests for the PPO clipped surrogate, aggregation and truncated IS weights."""

import math

import pytest
import torch

from rlcore.objectives import aggregate, aggregation_denominator, policy_loss, truncated_importance_weights

OLD = torch.tensor([[-1.0, -1.0, -1.0]])
# ratios exp(logprobs - old) = [1.5, 0.5, 1.0]
NEW = OLD + torch.log(torch.tensor([[1.5, 0.5, 1.0]]))
MASK = torch.ones(1, 3, dtype=torch.bool)


def _leaf(values):
    return values.clone().requires_grad_(True)


def test_positive_advantage_symmetric_clip():
    # A=+1, eps 0.2: unclipped -r = (-1.5,-0.5,-1.0); clipped -clip(r,.8,1.2) = (-1.2,-0.8,-1.0)
    # max -> (-1.2,-0.5,-1.0); token-mean = -2.7/3 = -0.9. Only token 0 is above 1.2 with A>0: clip_frac_high 1/3
    logprobs = _leaf(NEW)
    loss, metrics = policy_loss(logprobs, OLD, torch.tensor([1.0]), MASK)
    assert loss.item() == pytest.approx(-0.9, abs=1e-6)
    assert metrics["clip_frac_high"].item() == pytest.approx(1 / 3)
    assert metrics["clip_frac_low"].item() == 0.0
    # ratio mean (1.5+0.5+1)/3 = 1.0, max 1.5
    assert metrics["ratio_mean"].item() == pytest.approx(1.0, abs=1e-6)
    assert metrics["ratio_max"].item() == pytest.approx(1.5, abs=1e-6)
    # d loss / d logprob: clipped token 0 -> 0; token 1: -A r / 3 = -0.5/3; token 2: -1/3
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.0, -0.5 / 3, -1 / 3]]), atol=1e-6, rtol=0)


def test_negative_advantage_and_dual_clip():
    # A=-1: unclipped r = (1.5,0.5,1.0); clipped (1.2,0.8,1.0); max -> (1.5,0.8,1.0); mean 3.3/3 = 1.1
    loss, metrics = policy_loss(NEW, OLD, torch.tensor([-1.0]), MASK)
    assert loss.item() == pytest.approx(1.1, abs=1e-6)
    assert metrics["clip_frac_low"].item() == pytest.approx(1 / 3)  # 0.5 < 0.8 with A<0
    assert metrics["clip_frac_high"].item() == 0.0
    # dual clip c=1.3 bounds each token at -A*c = 1.3: (1.3,0.8,1.0) -> 3.1/3 = 1.033333
    loss, metrics = policy_loss(NEW, OLD, torch.tensor([-1.0]), MASK, dual_clip=1.3)
    assert loss.item() == pytest.approx(3.1 / 3, abs=1e-6)
    assert metrics["dual_clip_frac"].item() == pytest.approx(1 / 3)  # ratio 1.5 > 1.3


def test_clip_higher():
    # A=+1, eps_high 0.28: token 0 clipped at 1.28 -> (-1.28,-0.5,-1.0), mean -2.78/3 = -0.926667
    loss, _ = policy_loss(NEW, OLD, torch.tensor([1.0]), MASK, eps_low=0.2, eps_high=0.28)
    assert loss.item() == pytest.approx(-2.78 / 3, abs=1e-6)


def test_behaviour_logprobs_replace_old_in_ratio():
    # behaviour = logprobs + ln 2 -> every ratio is 0.5. A=+1: unclipped -0.5, clipped -0.8, max -0.5 -> loss -0.5
    behaviour = NEW + math.log(2.0)
    loss, metrics = policy_loss(NEW, OLD, torch.tensor([1.0]), MASK, behaviour_logprobs=behaviour)
    assert loss.item() == pytest.approx(-0.5, abs=1e-6)
    assert metrics["ratio_mean"].item() == pytest.approx(0.5, abs=1e-6)
    # approx_kl still measures drift from pi_old: k3 = (r-1) - ln r over r = (1.5,0.5,1):
    # (0.5 - 0.405465) + (-0.5 + 0.693147) + 0 = 0.094535 + 0.193147 = 0.287682; /3 = 0.095894
    assert metrics["approx_kl"].item() == pytest.approx(0.095894, abs=1e-5)


def test_per_token_advantages_and_importance_weights():
    # A per token (1,-1,2); ratios (1.5,0.5,1.0)
    # t0: A=1, r=1.5 -> max(-1.5,-1.2) = -1.2 ; t1: A=-1, r=.5 -> max(.5,.8) = .8 ; t2: A=2, r=1 -> -2
    # weights (0.5, 2, 1) -> (-0.6, 1.6, -2) ; mean = -1.0/3
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    weights = torch.tensor([[0.5, 2.0, 1.0]])
    loss, _ = policy_loss(NEW, OLD, adv, MASK, importance_weights=weights)
    assert loss.item() == pytest.approx(-1.0 / 3, abs=1e-6)


def test_masked_minus_inf_positions_give_finite_loss_and_zero_grad():
    # position 2 is padding: -inf current log-prob, -200 old log-prob, NaN behaviour. Token 0 alone is trained,
    # ratio 1, A=1 -> loss -1; gradient -1 on token 0 and exactly 0 elsewhere (not NaN).
    logprobs = torch.tensor([[-1.0, -3.0, -math.inf]], requires_grad=True)
    old = torch.tensor([[-1.0, -200.0, -200.0]])
    behaviour = torch.tensor([[-1.0, math.nan, math.nan]])
    mask = torch.tensor([[1, 0, 0]])
    for kwargs in ({}, {"behaviour_logprobs": behaviour}):
        logprobs.grad = None
        loss, metrics = policy_loss(logprobs, old, torch.tensor([1.0]), mask, dual_clip=3.0, **kwargs)
        loss.backward()
        assert loss.item() == pytest.approx(-1.0)
        assert torch.isfinite(logprobs.grad).all()
        assert logprobs.grad.tolist() == [[-1.0, 0.0, 0.0]]
        assert all(torch.isfinite(value) for value in metrics.values())


def test_huge_log_ratio_is_clamped_not_inf():
    # log-ratio 1000 would overflow exp; it is clamped to 20 and with A=-1 the loss is exp(20) (unclipped branch)
    loss, _ = policy_loss(
        torch.tensor([[0.0]]), torch.tensor([[-1000.0]]), torch.tensor([-1.0]), torch.ones(1, 1)
    )
    assert loss.item() == pytest.approx(math.exp(20.0), rel=1e-6)


def test_empty_mask_gives_zero_loss():
    loss, metrics = policy_loss(NEW, OLD, torch.tensor([1.0]), torch.zeros(1, 3))
    assert loss.item() == 0.0
    assert metrics["num_tokens"].item() == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eps_low": 1.0}, "eps_low"),
        ({"dual_clip": 0.9}, "dual_clip must be > 1"),
        ({"aggregation": "sum"}, "aggregation must be one of"),
        ({"advantages": torch.ones(2)}, "do not match batch size"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = {"logprobs": NEW, "old_logprobs": OLD, "advantages": torch.ones(1), "loss_mask": MASK}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        policy_loss(**args)


# per-token values with garbage (NaN / inf) in masked slots; row 2 has no loss token at all
PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0, math.nan], [4.0, math.inf, -math.inf, math.nan], [math.nan] * 4])
AGG_MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize(
    "aggregation, expected",
    [
        ("token-mean", 2.5),  # (1+2+3+4)/4 tokens
        ("seq-mean-token-mean", 3.0),  # (6/3 + 4/1) / 2 non-empty sequences
        ("seq-mean-token-sum", 5.0),  # (6 + 4) / 2 non-empty sequences
    ],
)
def test_aggregations(aggregation, expected):
    assert aggregate(PER_TOKEN, AGG_MASK, aggregation).item() == pytest.approx(expected)


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_micro_batches_with_global_denominator_sum_to_full_batch(aggregation):
    # rows {0} and {1,2} as two accumulation micro-batches; with the whole batch's denominator the sum is exact
    denominator = aggregation_denominator(AGG_MASK, aggregation)
    parts = [aggregate(PER_TOKEN[rows], AGG_MASK[rows], aggregation, denominator) for rows in ([0], [1, 2])]
    full = aggregate(PER_TOKEN, AGG_MASK, aggregation)
    assert sum(parts).item() == pytest.approx(full.item())


def test_truncated_importance_weights():
    # log w = trainer - sampler = (-1 - -1.5, -2 - -1) = (0.5, -1) -> (1.648721, 0.367879); cap 1.5 truncates
    # the first to 1.5. Third position is masked (sampler -inf) -> neutral weight 1.
    trainer = torch.tensor([[-1.0, -2.0, -5.0]])
    sampler = torch.tensor([[-1.5, -1.0, -math.inf]])
    weights = truncated_importance_weights(trainer, sampler, torch.tensor([[1, 1, 0]]), cap=1.5)
    torch.testing.assert_close(weights, torch.tensor([[1.5, 0.367879, 1.0]]), atol=1e-6, rtol=0)
    assert not weights.requires_grad
