"""GRPO / PPO training recipe: :func:`train` is the loop, one named phase per line.

One training step::

    generate_rollouts      sample prompts, roll them out (RolloutEngine; single- or multi-turn)   rollouts.py
    score_rollouts         rewards -> [after_rollout seam] -> rollout metrics                      scoring.py
    build_batch            group-normalised advantages, padded TrainBatch                          advantages.py
    attach_logprobs        old / reference log-probs -> [behaviour_logprobs seam], TIS weights     logprobs.py
    ppo_update             PPO epochs over mini-batches, gradient accumulation, LR schedule        update.py
    sync_and_after_step    weight sync to the sampler -> [after_step seam]                         update.py
    step_metrics, log_step one reduction over ranks; MLflow, metrics.jsonl, console                reporting.py
    checkpoint_if_due      periodic, on a signal, at a planned stop, at the end                    saving.py

Choices worth knowing:

* Advantages are GRPO's group-normalised outcome rewards (``rlcore.objectives.grpo_advantages``), broadcast
  to every trained token. Group ids are unique per prompt *instance* (``<step>:<slot>:<record id>``).
* The loss is the PPO clipped surrogate with clip-higher / dual clip, optional k1/k2/k3 KL to a frozen
  reference (skipped entirely when ``kl_coef == 0``) and an optional entropy bonus, aggregated with one
  mini-batch-wide denominator so that gradient accumulation and data parallelism give the exact full-batch
  gradient.
* With one PPO epoch, one mini-batch and no seam that needs them, pi_old equals the current policy, so old
  log-probs are not recomputed (ratio = 1 with the gradient of log pi), as in TRL.
* Optimizer steps with a non-finite gradient norm are skipped (and counted). The LR schedule advances once
  per training step.
* Runs under ``accelerate``: one process, DDP, or DeepSpeed ZeRO-1/2/3 (``infra/accelerate/*.yaml``,
  ``infra/deepspeed/*.json``); bf16 autocast on GPU; optional LoRA and gradient checkpointing.

Method code plugs in through plain callables (``after_rollout``, ``behaviour_logprobs``, ``on_answer``,
``after_step``), described in :mod:`rlcore.trainer.seams`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from rlcore.config import recipe_main
from rlcore.generation import GenerationBackend
from rlcore.logging_utils import setup_logging
from rlcore.retrieval.types import RetrievalUnavailableError
from rlcore.tracking import failures_recorded
from rlcore.trainer.advantages import build_batch
from rlcore.trainer.checkpoint import StopSignal
from rlcore.trainer.collectives import any_rank
from rlcore.trainer.config import RLTrainConfig
from rlcore.trainer.logprobs import attach_logprobs
from rlcore.trainer.metrics import MetricSums, PhaseTimer
from rlcore.trainer.outage import StepStart, checkpoint_after_outage
from rlcore.trainer.reporting import (
    NoSignalWatch,
    StepClock,
    log_step,
    open_tracking,
    step_metrics,
    truncate_metrics,
)
from rlcore.trainer.rollouts import generate_rollouts
from rlcore.trainer.saving import checkpoint_if_due, resume, save_final_model, should_stop
from rlcore.trainer.scoring import score_rollouts
from rlcore.trainer.seams import AfterRollout, AfterStep, BehaviourLogprobs, OnAnswer, RewardFn
from rlcore.trainer.setup import build_trainer
from rlcore.trainer.update import micro_batch_loss, ppo_update, sync_and_after_step, update_shape

__all__ = [
    "train",
    "TrainResult",
    "RewardFn",
    "AfterRollout",
    "AfterStep",
    "BehaviourLogprobs",
    "micro_batch_loss",
    "main",
]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    output_dir: Path  # run folder (checkpoints/, metrics.jsonl, final/)
    last_step: int  # last completed training step
    metrics: list[dict[str, float]]  # per-step metrics logged by this process (main rank), in order
    stopped_early: bool  # a signal or train.stop_after_step ended the run before total_steps
    run_id: str | None  # MLflow run id (None when tracking is off)
    model: torch.nn.Module | None = None  # the trained policy, unwrapped (for in-process evaluation)


@failures_recorded  # a failure before the run opens (model, data, retriever) still leaves a FAILED run
def train(
    cfg: RLTrainConfig,
    records: list[dict[str, Any]] | None = None,
    reward_fn: RewardFn | None = None,
    retriever: Any = None,
    after_rollout: AfterRollout | None = None,
    behaviour_logprobs: BehaviourLogprobs | None = None,
    on_answer: OnAnswer | None = None,
    stateful: Mapping[str, Any] | None = None,
    backend: GenerationBackend | None = None,
    after_step: AfterStep | None = None,
) -> TrainResult:
    """Train ``cfg.model.path`` with GRPO on ``records`` (or ``cfg.data.path``).

    Args:
        cfg: the full config (see :class:`RLTrainConfig`).
        records: prompt records; default: read ``cfg.data.path``.
        reward_fn: batched ``(completions, **columns) -> list[float]`` (the ``rlcore.rewards`` registry
            signature; columns are the records' fields); default: ``get_reward(cfg.reward.name)``.
        retriever: ``search(queries, topk)`` object, required when ``cfg.rollout.tools_enabled``.
        after_rollout, behaviour_logprobs, on_answer, after_step: the seams of :mod:`rlcore.trainer.seams`.
        stateful: extra objects with ``state_dict``/``load_state_dict`` saved in every checkpoint.
        backend: a ready generation backend (e.g. a scripted one in tests); default from ``cfg.generation``.
    """
    cfg.validate()
    parts = build_trainer(cfg, records, reward_fn, retriever, stateful, backend)
    accelerator, output_dir = parts.accelerator, parts.output_dir
    start = resume(cfg, parts)
    metrics_path = output_dir / "metrics.jsonl"
    if accelerator.is_main_process:
        truncate_metrics(metrics_path, start.step)

    history: list[dict[str, float]] = []
    step, stopped_early, run_id, skipped_total = start.step, False, start.run_id, start.skipped_total
    main_rank = accelerator.is_main_process
    no_signal = NoSignalWatch()
    progress = tqdm(
        total=cfg.train.total_steps, initial=start.step, desc="grpo", unit="step", disable=not main_rank
    )
    with StopSignal() as stop, open_tracking(cfg, accelerator, run_id, output_dir) as run, progress:
        run_id = run.run_id if run is not None else run_id
        for step in range(start.step + 1, cfg.train.total_steps + 1):
            timer, sums, clock = PhaseTimer(), MetricSums(), StepClock()
            step_start = StepStart.take(parts)
            lost = None
            try:
                trajectories = generate_rollouts(cfg, parts, step, timer, on_answer)
            except RetrievalUnavailableError as err:  # the client's outage budget is spent
                lost = err
            if any_rank(accelerator, lost is not None):  # every rank stops together and joins the checkpoint
                raise checkpoint_after_outage(
                    cfg, parts, step, step_start, run_id, skipped_total, lost
                ) from lost
            trajectories, rewards = score_rollouts(cfg, parts, trajectories, step, timer, sums, after_rollout)
            batch = build_batch(
                cfg.objective, trajectories, rewards, parts.tokenizer.pad_token_id, accelerator.device, sums
            )
            shape = update_shape(accelerator, batch.num_rows, cfg.objective)
            attach_logprobs(
                cfg, parts, batch, trajectories, shape, step, timer, behaviour_logprobs, after_rollout
            )
            update_tokens = ppo_update(cfg, parts, batch, shape, step, timer, sums)
            extra = sync_and_after_step(parts, step, timer, after_step)
            metrics, seconds = step_metrics(parts, timer, sums, clock, update_tokens, skipped_total, extra)
            skipped_total = int(metrics["optim/skipped_steps_total"])
            if main_rank and step % cfg.train.log_every == 0:
                log_step(cfg, run, metrics_path, step, metrics, seconds["step"])
            if main_rank:
                no_signal.observe(step, metrics)
            history.append({"step": float(step), **metrics})
            progress.set_postfix(
                reward=f"{metrics.get('reward/mean', 0.0):.3f}", loss=f"{metrics['loss/total']:.4f}"
            )
            progress.update(1)

            stop_now = should_stop(cfg, parts, step, stop.requested)
            checkpoint_if_due(cfg, parts, step, stop_now, run_id, skipped_total)
            if stop_now and step < cfg.train.total_steps:
                stopped_early = True
                logger.warning("stopping after step %d (%s)", step, stop.requested or "train.stop_after_step")
                break

    if not stopped_early and cfg.train.save_final_model:
        save_final_model(accelerator, parts.model, parts.tokenizer, output_dir / "final")
    accelerator.wait_for_everyone()
    return TrainResult(
        output_dir=output_dir,
        last_step=step,
        metrics=history,
        stopped_early=stopped_early,
        run_id=run_id,
        model=parts.policy,
    )


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m rlcore.trainer --config FILE [--dry-run] [key=value ...]``."""
    setup_logging()

    def run(cfg: RLTrainConfig) -> int:
        if cfg.rollout.tools_enabled:
            raise SystemExit(
                "rollout.tools_enabled needs a retriever: run a recipe that builds one (e.g. "
                "`python -m rexrag train`) or call rlcore.trainer.train(cfg, retriever=...)"
            )
        result = train(cfg)
        print(f"finished at step {result.last_step}; outputs in {result.output_dir}")
        return 0

    return recipe_main(
        RLTrainConfig, run, argv, description=__doc__.splitlines()[0], prog="rlcore.trainer.grpo"
    )


if __name__ == "__main__":
    raise SystemExit(main())
