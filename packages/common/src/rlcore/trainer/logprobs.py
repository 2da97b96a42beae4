"""Phase 5 of a training step: old, reference and behaviour log-probs (and truncated IS weights).

* **Old (pi_old)** is recomputed only when something needs it: more than one PPO epoch or mini-batch, a seam,
  or TIS. Otherwise pi_old is the current policy (ratio 1 with the gradient of log pi, as in TRL).
* **Reference (pi_ref)** exists only when ``kl_coef != 0``: a frozen copy, or with LoRA the policy with its
  adapters disabled.
* **Behaviour** comes from the ``behaviour_logprobs`` seam and replaces pi_old in the PPO ratio.

Every rank makes the same number of no-grad forward calls (``UpdateShape.logprob_calls``): ZeRO-3 gathers
parameters collectively inside each forward.
"""

from __future__ import annotations

from typing import Any

import torch

from rlcore.objectives import truncated_importance_weights
from rlcore.rollout import Trajectory
from rlcore.trainer.batching import TrainBatch
from rlcore.trainer.config import ObjectiveConfig, RLTrainConfig
from rlcore.trainer.forward import batched_response_logprobs
from rlcore.trainer.metrics import PhaseTimer
from rlcore.trainer.seams import AfterRollout, BehaviourLogprobs
from rlcore.trainer.setup import TrainerParts
from rlcore.trainer.update import UpdateShape

__all__ = ["needs_old_logprobs", "old_logprobs", "reference_logprobs", "attach_logprobs"]


def needs_old_logprobs(
    obj: ObjectiveConfig,
    num_minibatches: int,
    behaviour_logprobs: BehaviourLogprobs | None,
    after_rollout: AfterRollout | None,
) -> bool:
    """Whether pi_old differs from the policy of the first update (or a seam or TIS reads it)."""
    return (
        obj.ppo_epochs > 1
        or num_minibatches > 1
        or behaviour_logprobs is not None
        or obj.tis_cap is not None
        or after_rollout is not None
    )


def old_logprobs(
    model: torch.nn.Module,
    batch: TrainBatch,
    trajectories: list[Trajectory],
    obj: ObjectiveConfig,
    temperature: float,
    min_calls: int,
) -> torch.Tensor:
    """log pi_old per response token ``(B, T)``: reused from ``metadata["old_logprobs"]`` when the seam path
    computed them, else one batched no-grad pass."""
    if all("old_logprobs" in t.metadata for t in trajectories):
        out = torch.zeros_like(batch.sample_logprobs)
        for row, traj in enumerate(trajectories):
            values = traj.metadata["old_logprobs"]
            out[row, : len(values)] = torch.tensor(values, dtype=torch.float32)
        return out.to(batch.input_ids.device)
    return batched_response_logprobs(model, batch, obj.logprob_batch_size, temperature, min_calls)


def reference_logprobs(
    reference: Any,
    policy: torch.nn.Module,
    batch: TrainBatch,
    obj: ObjectiveConfig,
    temperature: float,
    min_calls: int,
) -> torch.Tensor:
    """log pi_ref per response token ``(B, T)``: the frozen copy, or (LoRA) the policy with adapters off."""
    if reference == "adapters-off":
        with policy.disable_adapter():
            return batched_response_logprobs(policy, batch, obj.logprob_batch_size, temperature, min_calls)
    return batched_response_logprobs(reference, batch, obj.logprob_batch_size, temperature, min_calls)


def attach_logprobs(
    cfg: RLTrainConfig,
    parts: TrainerParts,
    batch: TrainBatch,
    trajectories: list[Trajectory],
    shape: UpdateShape,
    step: int,
    timer: PhaseTimer,
    behaviour_logprobs: BehaviourLogprobs | None,
    after_rollout: AfterRollout | None,
) -> None:
    """Fill ``batch.old_logprobs``, ``ref_logprobs``, ``behaviour_logprobs`` and ``importance_weights`` as the
    config and seams require (each stays None otherwise)."""
    obj, temperature = cfg.objective, cfg.rollout.temperature
    need_old = needs_old_logprobs(obj, shape.num_minibatches, behaviour_logprobs, after_rollout)
    with timer.phase("logprobs"), torch.no_grad(), parts.accelerator.autocast():
        if need_old:
            batch.old_logprobs = old_logprobs(
                parts.model, batch, trajectories, obj, temperature, shape.logprob_calls
            )
        if parts.reference is not None:
            batch.ref_logprobs = reference_logprobs(
                parts.reference, parts.policy, batch, obj, temperature, shape.logprob_calls
            )
    if behaviour_logprobs is not None:
        behaviour = behaviour_logprobs(trajectories, batch.old_logprobs, step)
        if behaviour is not None:
            batch.behaviour_logprobs = behaviour.to(batch.old_logprobs.device, torch.float32)
    if obj.tis_cap is not None:
        batch.importance_weights = truncated_importance_weights(
            batch.old_logprobs, batch.sample_logprobs, batch.sampled_mask, obj.tis_cap
        )
