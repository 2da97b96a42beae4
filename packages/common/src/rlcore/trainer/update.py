"""Phase 6 of a training step: PPO epochs over mini-batches, gradient accumulation over micro-batches.

Each micro-batch loss is normalised by the *mini-batch-wide* denominator, summed over micro-batches and
ranks, so accumulation and data parallelism give exactly the full-batch gradient. Every rank runs the same
number of backward passes; a rank with fewer trajectories pads with a placeholder micro-batch whose loss mask
is empty. A NaN loss is made to poison every gradient, so the step is skipped and counted rather than passing
as a silent zero-gradient step. The LR schedule advances once per training step.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from rlcore.faults import fault_point
from rlcore.objectives import (
    MAX_LOG_RATIO,
    aggregate,
    aggregation_denominator,
    kl_penalty,
    masked_mean,
    policy_loss,
)
from rlcore.trainer.batching import TrainBatch, minibatch_counts, update_plan
from rlcore.trainer.collectives import max_over_ranks, sum_over_ranks
from rlcore.trainer.config import ObjectiveConfig, RLTrainConfig
from rlcore.trainer.forward import response_logprobs
from rlcore.trainer.metrics import MetricSums, PhaseTimer
from rlcore.trainer.optim import generation_context
from rlcore.trainer.seams import AfterStep
from rlcore.trainer.setup import TrainerParts

__all__ = ["UpdateShape", "update_shape", "micro_batch_loss", "ppo_update", "sync_and_after_step"]


@dataclass(frozen=True)
class UpdateShape:
    """How one step's batch is cut, identical on every rank (derived from the largest rank's row count)."""

    max_rows: int  # most trajectories any rank holds this step
    logprob_calls: int  # no-grad forward calls per log-prob pass (ceil(max_rows / logprob_batch_size))
    num_minibatches: int  # optimizer steps per PPO epoch
    micro_per_minibatch: int  # forward/backward passes per optimizer step


def update_shape(accelerator: Any, num_rows: int, obj: ObjectiveConfig) -> UpdateShape:
    """Mini-batch and micro-batch counts for ``num_rows`` local trajectories (one cross-rank max)."""
    world = accelerator.num_processes
    max_rows = max_over_ranks(accelerator, num_rows)
    logprob_calls = -(-max_rows // obj.logprob_batch_size)
    minibatch_rows = -(-obj.minibatch_size // world) if obj.minibatch_size else max_rows
    num_minibatches, micro_per_minibatch = minibatch_counts(max_rows, minibatch_rows, obj.micro_batch_size)
    return UpdateShape(max_rows, logprob_calls, num_minibatches, micro_per_minibatch)


def micro_batch_loss(
    model: torch.nn.Module,
    micro: TrainBatch,
    cfg: RLTrainConfig,
    denominator: float,
    sums: MetricSums,
    num_updates: int,
) -> torch.Tensor:
    """Loss of one micro-batch, normalised by the mini-batch-wide ``denominator``; adds its metrics to ``sums``.

    loss = PPO-clip(ratio, A) + kl_coef * KL(pi_theta || pi_ref) - entropy_coef * H, each aggregated with the
    same mask, aggregation and denominator, so micro-batch losses add up to the mini-batch loss.
    """
    obj = cfg.objective
    logprobs, entropy = response_logprobs(
        model, micro, cfg.rollout.temperature, compute_entropy=True, entropy_grad=obj.entropy_coef != 0
    )
    old = micro.old_logprobs if micro.old_logprobs is not None else logprobs.detach()
    loss, pg_metrics = policy_loss(
        logprobs,
        old,
        micro.advantages,
        micro.loss_mask,
        behaviour_logprobs=micro.behaviour_logprobs,
        eps_low=obj.eps_low,
        eps_high=obj.eps_high,
        dual_clip=obj.dual_clip,
        aggregation=obj.aggregation,
        importance_weights=micro.importance_weights,
        denominator=denominator,
    )
    tokens = float(pg_metrics.pop("num_tokens"))
    sums.add("loss/policy", float(loss.detach()) / num_updates)
    if micro.ref_logprobs is not None:
        kl = kl_penalty(logprobs, micro.ref_logprobs, obj.kl_kind, micro.loss_mask, obj.kl_clamp)
        sums.add("kl", float(masked_mean(kl.detach(), micro.loss_mask)), tokens)
        if obj.kl_importance_weighted:
            # tokens came from the behaviour policy, not pi_theta: weight by the (differentiable) ratio so the KL
            # gradient is the unbiased reverse-KL gradient (DeepSeek-V3.2; TRL's use_bias_correction_kl)
            behaviour = micro.behaviour_logprobs if micro.behaviour_logprobs is not None else old
            log_ratio = torch.where(micro.loss_mask, logprobs - behaviour, torch.zeros_like(logprobs))
            kl = kl * torch.exp(log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO))
        loss = loss + obj.kl_coef * aggregate(kl, micro.loss_mask, obj.aggregation, denominator)
    if obj.entropy_coef != 0:
        loss = loss - obj.entropy_coef * aggregate(entropy, micro.loss_mask, obj.aggregation, denominator)
    sums.add("entropy", float(masked_mean(entropy.detach(), micro.loss_mask)), tokens)
    total = float(loss.detach())
    sums.add("loss/total", total / num_updates)
    if not math.isfinite(total):
        # A NaN loss can still give finite (zero) gradients, e.g. through a clamp, and the step would pass the
        # grad-norm check as a silent no-op. Make every gradient NaN instead, so the optimizer step is skipped
        # and counted the same way under plain, DDP and DeepSpeed training.
        loss = loss + (logprobs * float("nan")).sum()
    for name, value in pg_metrics.items():
        if name == "ratio_max":
            sums.maximum("policy/ratio_max", value)
        else:
            sums.add(f"policy/{name}", float(value), tokens)
    return loss


def ppo_update(
    cfg: RLTrainConfig,
    parts: TrainerParts,
    batch: TrainBatch,
    shape: UpdateShape,
    step: int,
    timer: PhaseTimer,
    sums: MetricSums,
) -> int:
    """``ppo_epochs`` passes over ``batch``, then one LR-schedule step.

    Returns the number of tokens (prompt + response) that went through a training forward on this rank.
    The mini-batch order of each epoch is seeded by ``(train.seed, step, epoch)``; with one epoch and one
    mini-batch the rows keep their order.
    """
    obj, accelerator, world = cfg.objective, parts.accelerator, parts.accelerator.num_processes
    parts.model.train()
    update_tokens, num_updates = 0, obj.ppo_epochs * shape.num_minibatches
    with timer.phase("update"):
        for epoch in range(obj.ppo_epochs):
            order = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + step * 131 + epoch)
            plan = update_plan(
                batch.num_rows,
                shape.num_minibatches,
                obj.micro_batch_size,
                shape.micro_per_minibatch,
                order if obj.ppo_epochs > 1 or shape.num_minibatches > 1 else None,
            )
            for micro_batches in plan:
                local = sum(
                    float(aggregation_denominator(batch.loss_mask[rows], obj.aggregation))
                    for rows in micro_batches
                )
                denominator = sum_over_ranks(accelerator, local) / world
                for index, rows in enumerate(micro_batches):
                    micro = batch.select(rows)
                    with accelerator.autocast():
                        loss = micro_batch_loss(parts.model, micro, cfg, denominator, sums, num_updates)
                    parts.stepper.backward(loss, boundary=index == len(micro_batches) - 1)
                    update_tokens += int(micro.attention_mask.sum())
                grad_norm, applied = parts.stepper.step()
                fault_point("update", step)
                sums.add("optim/grad_norm", grad_norm if applied else 0.0, 1.0 if applied else 0.0)
                sums.add_total("optim/skipped_steps", 0.0 if applied else 1.0 / world)
    with warnings.catch_warnings():
        # the schedule follows training steps, also when this step's optimizer updates were all skipped
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        parts.scheduler.step()
    return update_tokens


def sync_and_after_step(
    parts: TrainerParts, step: int, timer: PhaseTimer, after_step: AfterStep | None
) -> dict[str, float]:
    """Send the new weights to the sampler (vLLM), then run the ``after_step`` seam; returns its metrics."""
    with timer.phase("weight_sync"), generation_context(parts.accelerator, parts.model):
        if hasattr(parts.backend, "update_weights"):
            parts.backend.update_weights(parts.policy)
    if after_step is None:
        return {}
    with timer.phase("after_step"):
        return {k: float(v) for k, v in (after_step(parts.policy, step) or {}).items()}
