"""Step metrics: wall-clock split, rollout statistics, and one cross-rank reduction per step."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["PhaseTimer", "MetricSums", "add_rollout_metrics", "finalize_reward_std", "DETERMINISTIC_EXCLUDE"]

# Metric-name prefixes that depend on wall-clock time; everything else is a pure function of seed and data,
# which is what the resume-equality test compares.
DETERMINISTIC_EXCLUDE = ("time/", "throughput/")


class PhaseTimer:
    """Accumulates wall-clock seconds per named phase: ``with timer.phase("generate"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds

    def reset(self) -> dict[str, float]:
        out = dict(self.seconds)
        self.seconds.clear()
        return out


class MetricSums:
    """Named running sums with weights, reduced over ranks in one collective call.

    ``add(name, value, weight)`` accumulates ``value * weight`` and ``weight``; the result is the weighted mean.
    ``maximum(name, value)`` keeps a running max. ``reduce`` sums (or maxes) across ranks.
    """

    def __init__(self) -> None:
        self._sums: dict[str, float] = defaultdict(float)
        self._weights: dict[str, float] = defaultdict(float)
        self._max: dict[str, float] = {}

    def add(self, name: str, value: float | torch.Tensor, weight: float | torch.Tensor = 1.0) -> None:
        value = float(value)
        weight = float(weight)
        self._sums[name] += value * weight
        self._weights[name] += weight

    def add_total(self, name: str, value: float) -> None:
        """A quantity summed over ranks and micro-batches (reported as the total, not a mean)."""
        self._sums[name] += float(value)
        self._weights.setdefault(name, 0.0)

    def maximum(self, name: str, value: float | torch.Tensor) -> None:
        value = float(value)
        current = self._max.get(name, -float("inf"))
        self._max[name] = value if (value != value or value > current) else current  # NaN propagates

    def reduce(self, accelerator: Any | None = None) -> dict[str, float]:
        """Weighted means (totals for ``add_total`` names) and maxima over all ranks, identical on every rank."""
        names = sorted(self._sums)
        max_names = sorted(self._max)
        sums = torch.tensor(
            [self._sums[n] for n in names] + [self._weights[n] for n in names], dtype=torch.float64
        )
        maxima = torch.tensor([self._max[n] for n in max_names], dtype=torch.float64)
        if accelerator is not None and accelerator.num_processes > 1:
            device = accelerator.device
            sums = accelerator.reduce(sums.to(device), reduction="sum").cpu()
            if max_names:
                gathered = accelerator.gather(maxima.to(device).unsqueeze(0)).cpu()
                maxima = gathered.max(dim=0).values
        out: dict[str, float] = {}
        count = len(names)
        for index, name in enumerate(names):
            weight = float(sums[count + index])
            total = float(sums[index])
            out[name] = total / weight if weight > 0 else total
        out.update({name: float(maxima[i]) for i, name in enumerate(max_names)})
        return out


def add_rollout_metrics(
    trajectories: Sequence[Any], rewards: torch.Tensor, success_threshold: float, sums: MetricSums
) -> None:
    """Add reward / accuracy / length / turn / search statistics of one rank's trajectories to ``sums``.

    Accuracy (reward >= ``success_threshold``) is over original trajectories only: inserted probes
    (REX-RAG) are a different sampling distribution and would inflate it. Reward mean/std are over all.
    """
    values = rewards.detach().double().cpu()
    num = len(trajectories)
    sums.add("reward/mean", values.sum() / max(num, 1), num)
    sums.add("reward/sq_mean", (values**2).sum() / max(num, 1), num)
    originals = [i for i, t in enumerate(trajectories) if getattr(t, "is_original", True)]
    if originals:
        correct = (values[originals] >= success_threshold).double()
        sums.add("accuracy", correct.mean(), len(originals))
    sums.add_total("rollout/num_trajectories", num)
    sums.add_total("rollout/num_originals", len(originals))
    for traj in trajectories:
        model_tokens = sum(1 for c in traj.components if c == 1)
        sums.add("response/length", len(traj.response_ids))
        sums.add("response/model_tokens", model_tokens)
        sums.maximum("response/length_max", len(traj.response_ids))
        sums.add("rollout/turns", getattr(traj, "num_turns", 1))
        sums.add("rollout/searches", getattr(traj, "num_searches", 0))
        sums.add("rollout/finished_frac", float(getattr(traj, "finished", True)))
        sums.add_total("rollout/generated_tokens", model_tokens)


def finalize_reward_std(metrics: dict[str, float]) -> None:
    """Replace ``reward/sq_mean`` by ``reward/std`` (population std over all ranks' trajectories)."""
    if "reward/sq_mean" in metrics:
        variance = max(metrics.pop("reward/sq_mean") - metrics.get("reward/mean", 0.0) ** 2, 0.0)
        metrics["reward/std"] = variance**0.5
