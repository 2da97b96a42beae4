"""Phase 7 of a training step, and the run's tracking: step metrics, MLflow, ``metrics.jsonl``, the console.

Per step: the wall-clock split and throughput join the summed metrics, one reduction over ranks gives the
step's metrics (identical on every rank), and the main rank logs them in one batched MLflow call, one
``metrics.jsonl`` line and one console line. ``metrics.jsonl`` is always written, with or without MLflow.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlcore.tracking import start_run
from rlcore.trainer.config import RLTrainConfig
from rlcore.trainer.metrics import MetricSums, PhaseTimer, finalize_reward_std
from rlcore.trainer.setup import TrainerParts

__all__ = ["NoSignalWatch", "StepClock", "step_metrics", "log_step", "truncate_metrics", "open_tracking"]

logger = logging.getLogger(__name__)
# Steps in a row in which every group had zero reward variance before the trainer warns (once per run).
NO_SIGNAL_PATIENCE = 5


class NoSignalWatch:
    """Warns once when every GRPO group has had zero reward variance for ``patience`` steps in a row.

    Then every advantage is 0 and the update changes nothing: a run can go on for hours without learning.
    """

    def __init__(self, patience: int | None = None) -> None:
        self.patience = NO_SIGNAL_PATIENCE if patience is None else patience
        self.streak = 0
        self.warned = False

    def observe(self, step: int, metrics: Mapping[str, float]) -> bool:
        """Feed one step's metrics; True on the step that emits the warning."""
        frac = metrics.get("groups/zero_variance_frac")
        self.streak = self.streak + 1 if frac is not None and frac >= 1.0 - 1e-9 else 0
        if self.warned or self.streak < self.patience:
            return False
        self.warned = True
        reward = metrics.get("reward/mean", float("nan"))
        logger.warning(
            "no learning signal: every group has had zero reward variance for %d steps in a row (steps %d-%d, "
            "mean reward %.3f), so every advantage is 0 and the policy is not updated. This usually means the "
            "policy cannot answer any training question (reward always 0: a model, prompt template or "
            "retriever that does not fit the data, e.g. a warm-up trained on another corpus) or answers all of "
            "them (reward always 1); try a policy that answers some questions, more rollouts per prompt "
            "(objective.num_generations) or a higher rollout.temperature",
            self.streak,
            step - self.streak + 1,
            step,
            reward,
        )
        return True


@dataclass
class StepClock:
    """Wall-clock and process-CPU start of one training step."""

    wall: float = field(default_factory=time.perf_counter)
    cpu: float = field(default_factory=time.process_time)


def step_metrics(
    parts: TrainerParts,
    timer: PhaseTimer,
    sums: MetricSums,
    clock: StepClock,
    update_tokens: int,
    skipped_before: int,
    extra: Mapping[str, float],
) -> tuple[dict[str, float], dict[str, float]]:
    """The step's metrics after one reduction over ranks, and this rank's phase seconds.

    Adds ``time/*`` (``step_cpu`` is this process's CPU seconds, all threads), ``throughput/*``,
    ``reward/std``, ``optim/skipped_steps_total`` (``skipped_before`` plus this step's), ``optim/lr`` and the
    ``after_step`` seam's ``extra`` values.
    """
    seconds = timer.reset()
    seconds["step"] = time.perf_counter() - clock.wall
    seconds["step_cpu"] = time.process_time() - clock.cpu
    for name, value in seconds.items():
        sums.add(f"time/{name}", value)
    generated = parts.engine.last_stats.get("generated_tokens", 0.0)
    sums.add("throughput/rollout_tokens_per_s", generated / max(seconds.get("generate", 0.0), 1e-9))
    sums.add("throughput/update_tokens_per_s", update_tokens / max(seconds.get("update", 0.0), 1e-9))
    metrics = sums.reduce(parts.accelerator)
    finalize_reward_std(metrics)
    skipped_total = skipped_before + round(metrics.get("optim/skipped_steps", 0.0))
    metrics["optim/skipped_steps_total"] = float(skipped_total)
    metrics["optim/lr"] = float(parts.scheduler.get_last_lr()[0])
    metrics.update(extra)
    return metrics, seconds


def log_step(
    cfg: RLTrainConfig,
    run: Any,
    metrics_path: Path,
    step: int,
    metrics: Mapping[str, float],
    step_seconds: float,
) -> None:
    """Main rank, every ``train.log_every`` steps: MLflow (if a run is open), ``metrics.jsonl``, one log line."""
    if run is not None:
        run.log_metrics(metrics, step=step)
    with metrics_path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"step": step, **metrics}, sort_keys=True) + "\n")
    logger.info(
        "step %d/%d reward %.3f acc %.3f loss %.4f kl %.4f grad %.3f (%.1fs)",
        step,
        cfg.train.total_steps,
        metrics.get("reward/mean", 0.0),
        metrics.get("accuracy", 0.0),
        metrics.get("loss/total", 0.0),
        metrics.get("kl", 0.0),
        metrics.get("optim/grad_norm", 0.0),
        step_seconds,
    )


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metrics.jsonl lines of steps after the checkpoint we resume from (a kill between log and save).

    Lines are in step order: everything after the first record at or past ``last_step`` goes unread (a line cut
    mid-write by the kill among them); an unreadable line before it is an error naming ``file:line``, so a
    damaged record is never silently lost."""
    if not path.exists():
        return
    kept = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            step = int(json.loads(line)["step"])
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(
                f"{path}:{number}: unreadable metrics record before step {last_step} ({exc})"
            ) from exc
        if step <= last_step:
            kept.append(line)
        if step >= last_step:
            break
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def open_tracking(
    cfg: RLTrainConfig, accelerator: Any, run_id: str | None, output_dir: Path
) -> AbstractContextManager[Any]:
    """The MLflow run on the main rank (resumed if the checkpoint names one); a null context elsewhere."""
    if not (cfg.tracking.enabled and accelerator.is_main_process):
        return nullcontext(None)

    return start_run(
        cfg.tracking.experiment,
        run_name=cfg.tracking.run_name or output_dir.name,
        config=cfg,
        seeds=[cfg.train.seed],
        tags={**cfg.tracking.tags, "output_dir": str(output_dir)},
        resume_run_id=run_id,
    )
