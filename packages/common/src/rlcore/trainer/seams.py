"""The callables method code passes to :func:`rlcore.trainer.train` (plain functions, no subclassing).

* ``reward_fn(completions, **record_columns) -> list[float | None]``: one batched call per step on the decoded
  responses (the ``rlcore.rewards`` registry signature).
* ``after_rollout(trajectories, step) -> trajectories``: add, drop or reorder trajectories after rewards are
  known. Each trajectory then carries ``metadata["reward"]`` and ``metadata["old_logprobs"]`` (list of
  log pi_old per response token).
* ``behaviour_logprobs(trajectories, old_logprobs, step) -> (B, T) tensor | None``: per-token log-prob of the
  policy that actually generated each token; it replaces pi_old in the PPO ratio. ``old_logprobs[i, t]`` is
  log pi_old of ``trajectories[i].response_ids[t]`` (right-padded).
* ``on_answer(trajectory, run_index) -> new trajectories`` goes to ``RolloutEngine.run`` (REX-RAG spawns
  probes there).
* ``after_step(policy, step) -> {name: value} | None``: called on every rank after the update and the weight
  sync, before the step's metrics are logged; what it returns (main rank's values) joins that step's metrics
  (MLflow, metrics.jsonl, TrainResult.metrics). Use it for held-out evaluation curves and for the method's own
  per-step statistics. The policy is unwrapped; the next step's update puts it back in train mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from rlcore.rollout import OnAnswer, Trajectory

__all__ = ["RewardFn", "AfterRollout", "BehaviourLogprobs", "OnAnswer", "AfterStep"]

RewardFn = Callable[..., list[float | None]]  # (decoded responses, **record columns) -> one reward each
AfterRollout = Callable[[list[Trajectory], int], list[Trajectory]]
BehaviourLogprobs = Callable[[list[Trajectory], torch.Tensor, int], torch.Tensor | None]
AfterStep = Callable[[torch.nn.Module, int], Mapping[str, float] | None]
