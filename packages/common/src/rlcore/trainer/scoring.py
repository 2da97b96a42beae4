"""Phase 3 of a training step: rewards, then the ``after_rollout`` seam, then the rollout statistics."""

from __future__ import annotations

from typing import Any

import torch

from rlcore.rollout import Trajectory
from rlcore.trainer.batching import collate
from rlcore.trainer.collectives import max_over_ranks
from rlcore.trainer.config import ObjectiveConfig, RLTrainConfig
from rlcore.trainer.forward import batched_response_logprobs
from rlcore.trainer.metrics import MetricSums, PhaseTimer, add_rollout_metrics
from rlcore.trainer.seams import AfterRollout, RewardFn
from rlcore.trainer.setup import TrainerParts

__all__ = ["score", "attach_old_logprobs", "score_rollouts"]


def score(
    trajectories: list[Trajectory], records: list[dict[str, Any]], tokenizer: Any, reward_fn: RewardFn
) -> None:
    """One batched reward call over decoded responses; stores ``metadata["reward"]`` on every trajectory.

    The whole response is decoded (observations included, special tokens dropped); rewards read the last
    answer block. Every record field not starting with ``_`` is passed as a column aligned with the
    completions.
    """
    texts = [tokenizer.decode(t.response_ids, skip_special_tokens=True) for t in trajectories]
    rows = [records[t.metadata["record_index"]] for t in trajectories]
    names = sorted({key for row in rows for key in row if not key.startswith("_")})
    values = reward_fn(texts, **{name: [row.get(name) for row in rows] for name in names})
    if len(values) != len(trajectories):
        raise RuntimeError(
            f"reward function returned {len(values)} values for {len(trajectories)} completions"
        )
    for traj, row, value in zip(trajectories, rows, values):
        if value is None:
            raise ValueError(
                f"reward is None for record {row.get('id', row.get('_line', '?'))}: the reward needs "
                f"a field this record lacks (fields: {sorted(row)})"
            )
        traj.metadata["reward"] = float(value)


def attach_old_logprobs(
    model: torch.nn.Module,
    trajectories: list[Trajectory],
    pad_id: int,
    obj: ObjectiveConfig,
    temperature: float,
    accelerator: Any,
) -> None:
    """Before ``after_rollout``: store log pi_old of every response token in ``metadata["old_logprobs"]``."""
    placeholder = torch.zeros(len(trajectories))
    batch = collate(trajectories, placeholder, pad_id).to(accelerator.device)
    min_calls = -(-max_over_ranks(accelerator, batch.num_rows) // obj.logprob_batch_size)
    with torch.no_grad(), accelerator.autocast():
        values = batched_response_logprobs(model, batch, obj.logprob_batch_size, temperature, min_calls).cpu()
    for row, traj in enumerate(trajectories):
        traj.metadata["old_logprobs"] = values[row, : len(traj.response_ids)].tolist()


def score_rollouts(
    cfg: RLTrainConfig,
    parts: TrainerParts,
    trajectories: list[Trajectory],
    step: int,
    timer: PhaseTimer,
    sums: MetricSums,
    after_rollout: AfterRollout | None,
) -> tuple[list[Trajectory], torch.Tensor]:
    """Rewards, the optional ``after_rollout`` seam (which sees rewards and log pi_old), rollout metrics.

    Returns the (possibly changed) trajectories and their rewards, ``(B,)`` float32.
    """
    with timer.phase("score"):
        score(trajectories, parts.records, parts.tokenizer, parts.reward_fn)
    if after_rollout is not None:
        with timer.phase("logprobs"):
            attach_old_logprobs(
                parts.model,
                trajectories,
                parts.tokenizer.pad_token_id,
                cfg.objective,
                cfg.rollout.temperature,
                parts.accelerator,
            )
        trajectories = after_rollout(trajectories, step)
    rewards = torch.tensor([t.metadata["reward"] for t in trajectories], dtype=torch.float32)
    add_rollout_metrics(trajectories, rewards, cfg.reward.success_threshold, sums)
    return trajectories, rewards
