"""From trajectories to padded training tensors, and the mini/micro-batch plan of one PPO update.

Layout of one row (prompt left-padded to a common width P, response right-padded to T)::

    [pad ... pad | prompt tokens | response tokens | pad ... pad]
     <-------- P columns -------> <-------- T columns ------->

Column ``P + t`` holds response token ``t`` (``Trajectory.response_ids[t]``), so every ``(B, T)`` per-token
tensor (log-probs, masks, advantages) is indexed by the response position the rollout engine uses; the
seams (``behaviour_logprobs``) see exactly this indexing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["TrainBatch", "collate", "PromptSampler", "update_plan", "LOSS_COMPONENTS", "MODEL_COMPONENT"]

# Component codes of rlcore.rollout (MODEL=1, INSERTED=5) that are trained; observations (4), invalid-action
# feedback (3) and the prompt (0) are conditioned on but never trained.
MODEL_COMPONENT = 1
LOSS_COMPONENTS = (1, 5)


@dataclass
class TrainBatch:
    """Padded tensors of B trajectories. Per-token tensors are ``(B, T)`` over response positions."""

    input_ids: torch.Tensor  # (B, P + T) int64: left-padded prompt then right-padded response
    attention_mask: torch.Tensor  # (B, P + T) int64: 1 on real prompt/response tokens
    position_ids: torch.Tensor  # (B, P + T) int64: 0-based positions counted over real tokens only
    response_ids: torch.Tensor  # (B, T) int64: response token ids, pad id beyond each response
    response_mask: torch.Tensor  # (B, T) bool: real response tokens (model, observation, feedback, inserted)
    loss_mask: torch.Tensor  # (B, T) bool: trained tokens, components in LOSS_COMPONENTS
    sampled_mask: torch.Tensor  # (B, T) bool: tokens drawn by the sampler (component MODEL)
    sample_logprobs: torch.Tensor  # (B, T) float32: sampler log-probs, 0 where not sampled
    advantages: torch.Tensor  # (B,) float32: one advantage per trajectory
    old_logprobs: torch.Tensor | None = None  # (B, T) log pi_old (before this step's updates)
    ref_logprobs: torch.Tensor | None = None  # (B, T) log pi_ref (frozen reference), when kl_coef > 0
    # (B, T) from the behaviour seam, replaces old in the ratio
    behaviour_logprobs: torch.Tensor | None = None
    # (B, T) truncated IS weights pi_old / sampler, when enabled
    importance_weights: torch.Tensor | None = None

    @property
    def prompt_width(self) -> int:
        """P: number of prompt columns."""
        return self.input_ids.shape[1] - self.response_ids.shape[1]

    @property
    def num_rows(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> TrainBatch:
        """A copy with every tensor moved to ``device``."""
        changes = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if torch.is_tensor(getattr(self, f.name))
        }
        return dataclasses.replace(self, **changes)

    def select(self, rows: Sequence[int] | torch.Tensor) -> TrainBatch:
        """Rows ``rows`` only, with columns that are padding in all of them trimmed away (less compute).

        An empty selection gives one placeholder row (the first row, loss mask cleared): data-parallel ranks
        must run the same number of forward/backward passes, and a rank with nothing left still takes part.
        """
        index = torch.as_tensor(list(rows) if not torch.is_tensor(rows) else rows, dtype=torch.long)
        placeholder = index.numel() == 0
        if placeholder:
            index = torch.zeros(1, dtype=torch.long)
        index = index.to(self.input_ids.device)
        width = self.response_ids.shape[1]
        response_len = int(self.response_mask[index].sum(dim=1).max().item()) if width else 0
        prompt_real = self.attention_mask[index, : self.prompt_width].sum(dim=1)
        prompt_len = int(prompt_real.max().item())
        start = self.prompt_width - prompt_len
        stop = self.prompt_width + max(response_len, 1 if width else 0)
        keep_t = stop - self.prompt_width
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not torch.is_tensor(value):
                continue
            value = value[index]
            if f.name in ("input_ids", "attention_mask", "position_ids"):
                value = value[:, start:stop]
            elif value.dim() == 2:
                value = value[:, :keep_t]
            changes[f.name] = value
        if placeholder:
            changes["loss_mask"] = torch.zeros_like(changes["loss_mask"])
            changes["sampled_mask"] = torch.zeros_like(changes["sampled_mask"])
        return dataclasses.replace(self, **changes)


def collate(trajectories: Sequence[Any], advantages: torch.Tensor, pad_token_id: int) -> TrainBatch:
    """Pad ``trajectories`` (``rlcore.rollout.Trajectory``) into a :class:`TrainBatch`.

    Args:
        trajectories: B trajectories with ``prompt_ids``, ``response_ids``, ``components`` and
            ``sample_logprobs`` (the last three of equal length).
        advantages: ``(B,)`` one advantage per trajectory.
        pad_token_id: id written in padding slots (never attended to, never trained).

    Returns:
        The batch on CPU.
    """
    if len(trajectories) != advantages.shape[0]:
        raise ValueError(f"{len(trajectories)} trajectories but {advantages.shape[0]} advantages")
    if not trajectories:
        raise ValueError("cannot collate an empty list of trajectories")
    for row, traj in enumerate(trajectories):
        lengths = {len(traj.response_ids), len(traj.components), len(traj.sample_logprobs)}
        if len(lengths) != 1:
            raise ValueError(
                f"trajectory {row} (group {traj.group_id}): response_ids/components/sample_logprobs lengths "
                f"differ: {len(traj.response_ids)}/{len(traj.components)}/{len(traj.sample_logprobs)}"
            )
        if not traj.prompt_ids:
            raise ValueError(f"trajectory {row} (group {traj.group_id}) has an empty prompt")
    batch = len(trajectories)
    prompt_width = max(len(t.prompt_ids) for t in trajectories)
    width = max(1, max(len(t.response_ids) for t in trajectories))
    input_ids = torch.full((batch, prompt_width + width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, prompt_width + width), dtype=torch.long)
    components = torch.full((batch, width), -1, dtype=torch.long)
    sample_logprobs = torch.zeros((batch, width), dtype=torch.float32)
    for row, traj in enumerate(trajectories):
        prompt, response = traj.prompt_ids, traj.response_ids
        input_ids[row, prompt_width - len(prompt) : prompt_width] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, prompt_width - len(prompt) : prompt_width] = 1
        if response:
            input_ids[row, prompt_width : prompt_width + len(response)] = torch.tensor(
                response, dtype=torch.long
            )
            attention_mask[row, prompt_width : prompt_width + len(response)] = 1
            components[row, : len(response)] = torch.tensor(traj.components, dtype=torch.long)
            sample_logprobs[row, : len(response)] = torch.tensor(traj.sample_logprobs, dtype=torch.float32)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    loss_mask = torch.zeros_like(components, dtype=torch.bool)
    for code in LOSS_COMPONENTS:
        loss_mask |= components == code
    sampled = components == MODEL_COMPONENT
    return TrainBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        response_ids=input_ids[:, prompt_width:].clone(),
        response_mask=components >= 0,
        loss_mask=loss_mask,
        sampled_mask=sampled,
        sample_logprobs=torch.where(sampled, sample_logprobs, torch.zeros_like(sample_logprobs)),
        advantages=advantages.detach().to(torch.float32).cpu(),
    )


def update_plan(
    num_rows: int,
    num_minibatches: int,
    micro_batch_size: int,
    micro_per_minibatch: int,
    generator: torch.Generator | None = None,
) -> list[list[list[int]]]:
    """Row indices of every micro-batch of every mini-batch of one PPO epoch.

    Rows are shuffled with ``generator`` (identity order when None), split into ``num_minibatches`` near-equal
    mini-batches, each split into exactly ``micro_per_minibatch`` micro-batches of at most
    ``micro_batch_size`` rows. Trailing micro-batches may be empty: under data parallelism every rank must run
    the same number of backward passes, so the counts come from the largest rank (see the trainer).

    Returns:
        ``plan[m][k]`` = list of row indices of micro-batch k of mini-batch m.
    """
    if num_minibatches < 1 or micro_batch_size < 1 or micro_per_minibatch < 1:
        raise ValueError("num_minibatches, micro_batch_size and micro_per_minibatch must be >= 1")
    order = (
        torch.randperm(num_rows, generator=generator).tolist()
        if generator is not None
        else list(range(num_rows))
    )
    base, extra = divmod(num_rows, num_minibatches)
    plan, start = [], 0
    for m in range(num_minibatches):
        size = base + (1 if m < extra else 0)
        rows = order[start : start + size]
        start += size
        micro = [rows[k * micro_batch_size : (k + 1) * micro_batch_size] for k in range(micro_per_minibatch)]
        if sum(len(chunk) for chunk in micro) != len(rows):
            raise ValueError(
                f"{len(rows)} rows do not fit in {micro_per_minibatch} micro-batches of {micro_batch_size}"
            )
        plan.append(micro)
    return plan


def minibatch_counts(max_rows_any_rank: int, minibatch_rows: int, micro_batch_size: int) -> tuple[int, int]:
    """(num_minibatches, micro_per_minibatch) for the largest rank's row count; identical on every rank."""
    rows = max(max_rows_any_rank, 1)
    num_minibatches = max(1, math.ceil(rows / minibatch_rows)) if minibatch_rows > 0 else 1
    largest_minibatch = math.ceil(rows / num_minibatches)
    return num_minibatches, max(1, math.ceil(largest_minibatch / micro_batch_size))


class PromptSampler:
    """Epoch-wise shuffled prompt order whose whole state is ``(epoch, position)``.

    The permutation of epoch e is drawn from a private generator seeded with ``seed + e``, so resuming needs
    only the two integers (no RNG state) and never disturbs the global random streams.
    """

    def __init__(self, num_records: int, seed: int, shuffle: bool = True):
        if num_records < 1:
            raise ValueError("the prompt dataset is empty")
        self.num_records = num_records
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_records))
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_records, generator=generator).tolist()

    def next_indices(self, count: int) -> list[int]:
        """The next ``count`` record indices, wrapping into a freshly shuffled epoch when one runs out."""
        out: list[int] = []
        while len(out) < count:
            if self.position >= self.num_records:
                self.epoch += 1
                self.position = 0
                self._order = self._permutation(self.epoch)
            take = min(count - len(out), self.num_records - self.position)
            out.extend(self._order[self.position : self.position + take])
            self.position += take
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "num_records": self.num_records}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["num_records"] != self.num_records:
            raise ValueError(
                f"checkpoint was written for {state['num_records']} prompt records, the dataset now has "
                f"{self.num_records}; resuming would replay a different data order"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)
