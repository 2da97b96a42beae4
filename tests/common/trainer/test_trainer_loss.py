"""The trainer's forward and micro-batch loss on a tiny random Qwen2: alignment, accumulation exactness, KL terms."""

import math

import pytest
import torch

from rlcore.config import load_config
from rlcore.generation.testing import build_tiny_qwen2, build_tiny_tokenizer
from rlcore.objectives import aggregation_denominator, kl_penalty, masked_mean, policy_loss
from rlcore.rollout import MODEL, OBSERVATION, Trajectory
from rlcore.trainer import RLTrainConfig
from rlcore.trainer.batching import collate
from rlcore.trainer.forward import batched_response_logprobs, response_logprobs
from rlcore.trainer.grpo import micro_batch_loss
from rlcore.trainer.metrics import MetricSums


@pytest.fixture(scope="module")
def model_and_batch():
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_qwen2(tokenizer, seed=0).train()
    generator = torch.Generator().manual_seed(0)
    vocab = len(tokenizer)

    def ids(n):
        return torch.randint(3, vocab, (n,), generator=generator).tolist()

    # different prompt and response lengths so that both paddings occur; row 1 has an observation block
    trajectories = [
        Trajectory(
            prompt_ids=ids(5),
            group_id="a",
            response_ids=ids(6),
            components=[MODEL] * 6,
            sample_logprobs=[-1.0] * 6,
        ),
        Trajectory(
            prompt_ids=ids(3),
            group_id="a",
            response_ids=ids(7),
            components=[MODEL, MODEL, OBSERVATION, OBSERVATION, OBSERVATION, MODEL, MODEL],
            sample_logprobs=[-1.0, -1.0, 0.0, 0.0, 0.0, -1.0, -1.0],
        ),
        Trajectory(
            prompt_ids=ids(4),
            group_id="b",
            response_ids=ids(2),
            components=[MODEL] * 2,
            sample_logprobs=[-1.0] * 2,
        ),
        Trajectory(
            prompt_ids=ids(5),
            group_id="b",
            response_ids=ids(4),
            components=[MODEL] * 4,
            sample_logprobs=[-1.0] * 4,
        ),
    ]
    batch = collate(trajectories, torch.tensor([1.0, -1.0, 0.5, -0.5]), tokenizer.pad_token_id)
    return model, batch, trajectories


def test_response_logprobs_are_aligned_with_response_tokens(model_and_batch):
    model, batch, trajectories = model_and_batch
    logprobs, entropy = response_logprobs(model, batch, compute_entropy=True)
    for row, traj in enumerate(trajectories):
        # reference: the row alone, unpadded, full forward; the logit at position p predicts token p + 1
        full = torch.tensor([traj.prompt_ids + traj.response_ids])
        with torch.no_grad():
            logits = model(input_ids=full).logits[0]
        reference = torch.log_softmax(logits, -1)
        for t, token in enumerate(traj.response_ids):
            expected = reference[len(traj.prompt_ids) - 1 + t, token]
            assert logprobs[row, t].item() == pytest.approx(expected.item(), abs=1e-4), (row, t)
        probs = reference.exp()[len(traj.prompt_ids) - 1]
        assert entropy[row, 0].item() == pytest.approx(-(probs * probs.log()).sum().item(), abs=1e-4)
    chunked = batched_response_logprobs(model, batch, micro_batch_size=3)
    torch.testing.assert_close(
        chunked[batch.response_mask], logprobs.detach()[batch.response_mask], atol=1e-5, rtol=0
    )


def _cfg(*overrides):
    return load_config(RLTrainConfig, overrides=list(overrides))


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_micro_batches_accumulate_to_the_full_batch_gradient(model_and_batch, aggregation):
    model, batch, _ = model_and_batch
    cfg = _cfg(f"objective.aggregation={aggregation}", "objective.kl_coef=0.1", "objective.entropy_coef=0.01")
    with torch.no_grad():
        base = batched_response_logprobs(model, batch, 4)
    batch.old_logprobs = base + 0.1 * torch.sin(torch.arange(base.numel(), dtype=torch.float32)).view(
        base.shape
    )
    batch.ref_logprobs = base - 0.2
    denominator = float(aggregation_denominator(batch.loss_mask, aggregation))

    model.zero_grad(set_to_none=True)
    full = micro_batch_loss(model, batch, cfg, denominator, MetricSums(), num_updates=1)
    full.backward()
    full_grads = [p.grad.clone() for p in model.parameters()]

    model.zero_grad(set_to_none=True)
    parts = 0.0
    for rows in ([0, 3], [1], [2]):
        loss = micro_batch_loss(model, batch.select(rows), cfg, denominator, MetricSums(), num_updates=1)
        loss.backward()
        parts += loss.item()
    assert parts == pytest.approx(full.item(), abs=1e-6)
    for grad, expected in zip((p.grad for p in model.parameters()), full_grads):
        torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-4)  # float summation order only
    batch.old_logprobs = batch.ref_logprobs = None


def test_loss_terms_and_ratio_weighted_kl(model_and_batch):
    model, batch, _ = model_and_batch
    with torch.no_grad():
        base = batched_response_logprobs(model, batch, 4)
    old, ref = base + 0.05, base - 0.3
    batch.old_logprobs, batch.ref_logprobs = old, ref
    mask = batch.loss_mask
    with torch.no_grad():
        logprobs, entropy = response_logprobs(model, batch, compute_entropy=True)
        policy, _ = policy_loss(logprobs, old, batch.advantages, mask)
        kl = kl_penalty(logprobs, ref, "k3", mask)
        ratio = torch.exp(torch.where(mask, logprobs - old, torch.zeros_like(logprobs)))
    for weighted in (False, True):
        cfg = _cfg(
            "objective.kl_coef=0.1",
            "objective.entropy_coef=0.01",
            f"objective.kl_importance_weighted={weighted}",
        )
        sums = MetricSums()
        with torch.no_grad():
            loss = micro_batch_loss(model, batch, cfg, float(mask.sum()), sums, num_updates=1)
        # loss = PPO term + 0.1 * token-mean(k3 [x ratio]) - 0.01 * token-mean(entropy)
        expected = (
            policy
            + 0.1 * masked_mean(kl * ratio if weighted else kl, mask)
            - 0.01 * masked_mean(entropy, mask)
        )
        assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
        metrics = sums.reduce()
        assert metrics["kl"] == pytest.approx(masked_mean(kl, mask).item(), abs=1e-6)
        assert math.isfinite(metrics["entropy"]) and metrics["policy/ratio_mean"] == pytest.approx(
            masked_mean(ratio, mask).item(), abs=1e-5
        )
    batch.old_logprobs = batch.ref_logprobs = None
