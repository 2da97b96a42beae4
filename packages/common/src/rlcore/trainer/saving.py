"""Phase 8 of a training step, and the run's start and end: resume, checkpoints, the final model folder.

Checkpoints are taken periodically (``train.save_every``), on SIGTERM/SIGINT, at ``train.stop_after_step``
and at the end; the atomic layout itself lives in :mod:`rlcore.trainer.checkpoint`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlcore.config import to_dict
from rlcore.trainer.checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from rlcore.trainer.collectives import any_rank
from rlcore.trainer.config import RLTrainConfig
from rlcore.trainer.optim import generation_context
from rlcore.trainer.setup import TrainerParts

__all__ = ["ResumePoint", "resume", "should_stop", "checkpoint_if_due", "save_now", "save_final_model"]

logger = logging.getLogger(__name__)


@dataclass
class ResumePoint:
    """Where a run starts: step 0 for a fresh run, else the state saved with the checkpoint."""

    step: int = 0  # last completed step
    run_id: str | None = None  # MLflow run to re-open
    skipped_total: int = 0  # optimizer steps skipped so far (non-finite gradient norm)


def resume(cfg: RLTrainConfig, parts: TrainerParts) -> ResumePoint:
    """Restore weights, optimizer, RNG, sampler and rollout counter from ``train.resume``, if it names one."""
    resume_from = resolve_resume(cfg.train.resume, parts.output_dir)
    if resume_from is None:
        return ResumePoint()
    state = load_checkpoint(parts.accelerator, resume_from, parts.checkpointed)
    point = ResumePoint(
        step=int(state["step"]),
        run_id=state.get("mlflow_run_id"),
        skipped_total=int(state.get("skipped_steps_total", 0)),
    )
    parts.sampler.load_state_dict(state["sampler"])
    parts.engine.run_index = int(state.get("rollout_run_index", 0))  # rollout.seed's per-call seeds continue
    # A sampler with its own copy of the weights (vLLM) was built from model.path before the checkpoint
    # loaded: give it the resumed weights, or the first step after a resume samples from the base model.
    with generation_context(parts.accelerator, parts.model):
        if hasattr(parts.backend, "update_weights"):
            parts.backend.update_weights(parts.policy)
    logger.info("resumed from %s at step %d", resume_from, point.step)
    return point


def should_stop(cfg: RLTrainConfig, parts: TrainerParts, step: int, signal_name: str | None) -> bool:
    """A signal reached any rank, or this is ``train.stop_after_step`` (the same answer on every rank)."""
    return any_rank(parts.accelerator, signal_name is not None) or step == cfg.train.stop_after_step


def checkpoint_if_due(
    cfg: RLTrainConfig, parts: TrainerParts, step: int, stop_now: bool, run_id: str | None, skipped_total: int
) -> None:
    """Save on every rank when the step is periodic, a stop, or the last one."""
    periodic = cfg.train.save_every > 0 and step % cfg.train.save_every == 0
    if periodic or stop_now or step == cfg.train.total_steps:
        save_now(cfg, parts, step, run_id, skipped_total)


def save_now(
    cfg: RLTrainConfig, parts: TrainerParts, step: int, run_id: str | None, skipped_total: int
) -> None:
    """Checkpoint ``step`` on every rank: weights, optimizer, RNG, sampler, counters, stateful objects."""
    trainer_state = {
        "sampler": parts.sampler.state_dict(),
        "rollout_run_index": parts.engine.run_index,
        "mlflow_run_id": run_id,
        "skipped_steps_total": skipped_total,
        "config": to_dict(cfg),
    }
    save_checkpoint(
        parts.accelerator,
        parts.output_dir,
        step,
        trainer_state,
        cfg.train.keep_checkpoints,
        stateful=parts.checkpointed,
    )


def save_final_model(accelerator: Any, model: Any, tokenizer: Any, path: Path) -> None:
    """A plain Hugging Face folder (adapters only with LoRA) next to the checkpoints."""
    state_dict = accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        unwrapped.save_pretrained(path, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(path)
