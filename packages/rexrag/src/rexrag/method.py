"""REX-RAG on the shared GRPO trainer: the three callables it plugs in (no subclassing).

- ``on_answer`` (rollout): :class:`~rexrag.sampling.MixedSampler` spawns probes from wrong originals.
- ``after_rollout(trajectories, step)``: dead-end selection (``dead_end_group`` mode), then probe filtering:
  keep the top-K probes by the mean log pi_old of their inserted tokens, K = floor(N_orig * keep_ratio);
  fixes alpha = K / (N_orig + K) and z = error rate of the originals for this step; updates the keep-ratio EMA
  with the kept probes' accuracy for the next step. Kept probes keep their question's group id, so they join its
  GRPO group.
- ``behaviour_logprobs(trajectories, old_logprobs, step)``: the mixture log-probs of :mod:`rexrag.correction`.

With ``enabled=False`` the same object gives the Search-R1 GRPO baseline: no probes, no correction, the same
statistics (dead-end rate, accuracy), so the two arms share everything but mixed sampling and correction.

Data parallelism: each rank filters its own probes with budget floor(N_rank * keep_ratio) (equal on every rank,
so the total is a multiple of the world size when every rank has enough probes); alpha, z and the probe
accuracy are summed over ranks when torch.distributed is initialised.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from rexrag.correction import (
    PREFIX_COUNTS,
    VARIANTS,
    behaviour_logprobs,
    clip_by_token_class,
    importance_diagnostics,
)
from rexrag.filtering import KeepRatioEMA, select_probes
from rexrag.pool import load_pool
from rexrag.sampling import MixedSampler, probe_generated_tokens
from rexrag.trigger import TRIGGER_MODES, ProbeTrigger, dead_end_rate
from rlcore.objectives import grpo_advantages
from rlcore.rollout import INSERTED, INSERTED_COMPONENTS, INSERTED_CONTEXT, RolloutConfig, Trajectory

logger = logging.getLogger(__name__)


@dataclass
class RexRagConfig:
    """Mixed sampling and policy correction (``enabled: false`` = the Search-R1 GRPO baseline)."""

    enabled: bool = True  # probes + correction; false gives plain GRPO with identical everything else
    pool: str = "self_doubt_30"  # exploratory prompt pool: shipped name or path to a JSON list
    # per_wrong_rollout (official) | dead_end_group (all originals wrong)
    trigger: Literal["per_wrong_rollout", "dead_end_group"] = "per_wrong_rollout"
    probe_prob: float = 0.2  # spawn probability per eligible original (official: 20/101 = 0.198)
    filter_probes: bool = True  # keep only the top-K probes by inserted-prompt likelihood (false: keep all)
    keep_ratio_init: float = 0.08  # initial probe budget as a fraction of the originals
    keep_ratio_decay: float = 0.9  # EMA decay: r <- decay * r + (1 - decay) * probe accuracy
    keep_ratio_max: float | None = None  # optional cap on the keep ratio (official trainer: none)
    keep_ratio_min: float | None = None  # optional floor, so the budget cannot decay to 0 (official: none)
    # train the inserted prompt's tokens (official); false: context only, no gradient
    train_inserted: bool = True
    # none | paper (per-token mixture) | coarse (prompt mass on first token) | sequence
    correction: Literal["none", "paper", "coarse", "sequence"] = "paper"
    # tokens the 1/z factor is spread over: response_tokens (official) | model_tokens
    prefix_count: Literal["response_tokens", "model_tokens"] = "response_tokens"
    sequence_weight_cap: float = 1.0  # truncation of the sequence-level weight (correction=sequence)
    min_error_rate: float = 1e-6  # z is clamped to at least this (z = 0 would divide by zero)
    seed: int = 0  # seeds the trigger draws and the prompt choice

    def validate(self) -> None:
        if self.trigger not in TRIGGER_MODES:
            raise ValueError(f"rexrag.trigger must be one of {TRIGGER_MODES}, got {self.trigger!r}")
        if self.correction not in VARIANTS:
            raise ValueError(f"rexrag.correction must be one of {VARIANTS}, got {self.correction!r}")
        if self.prefix_count not in PREFIX_COUNTS:
            raise ValueError(f"rexrag.prefix_count must be one of {PREFIX_COUNTS}, got {self.prefix_count!r}")
        if not 0.0 <= self.probe_prob <= 1.0:
            raise ValueError(f"rexrag.probe_prob must lie in [0, 1], got {self.probe_prob}")


def _global_sums(values: Sequence[float]) -> list[float]:
    """Sum a few counters over data-parallel ranks (identity in a single process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        tensor = torch.tensor(list(values), dtype=torch.float64)
        if torch.distributed.get_backend() == "nccl":
            tensor = tensor.cuda()
        torch.distributed.all_reduce(tensor)
        return tensor.cpu().tolist()
    return list(values)


class RexRag:
    """State of REX-RAG across training steps; pass its bound methods to ``rlcore.trainer.train``."""

    def __init__(
        self,
        cfg: RexRagConfig,
        tokenizer,
        rollout_config: RolloutConfig,
        records: list[dict],
        success_threshold: float = 1.0,
        eps_low: float = 0.2,
        eps_high: float = 0.2,
        metrics_path: str | Path | None = None,
    ):
        cfg.validate()
        self.cfg = cfg
        self.records = records
        self.success_threshold = success_threshold
        self.eps_low, self.eps_high = eps_low, eps_high
        self.sampler = MixedSampler(
            tokenizer,
            load_pool(cfg.pool),
            ProbeTrigger(cfg.trigger, cfg.probe_prob, cfg.seed),
            rollout_config,
            seed=cfg.seed + 1,
            gold_fn=self.golds,
        )
        self.ema = KeepRatioEMA(
            cfg.keep_ratio_init, cfg.keep_ratio_decay, cfg.keep_ratio_max, cfg.keep_ratio_min
        )
        self.alpha = 0.0
        self.error_rate = 1.0
        self.history: list[dict[str, float]] = []
        self._pending: dict[str, float] = {}
        self.metrics_path = Path(metrics_path) if metrics_path else None

    def golds(self, traj: Trajectory) -> list[str]:
        return list(self.records[traj.metadata["record_index"]]["golden_answers"])

    # --- seams -----------------------------------------------------------------------------------------
    @property
    def on_answer(self):
        """The rollout hook (None for the baseline)."""
        return self.sampler.on_answer if self.cfg.enabled else None

    def _correct(self, traj: Trajectory) -> bool:
        return traj.metadata["reward"] >= self.success_threshold

    def after_rollout(self, trajectories: list[Trajectory], step: int) -> list[Trajectory]:
        """Select and filter probes; fix alpha and z for this step (see module docstring)."""
        self.sampler.discarded_probe_tokens = 0  # counted per step
        trajectories = self.sampler.select_dead_end_probes(trajectories)
        originals = [t for t in trajectories if t.is_original]
        probes = [t for t in trajectories if not t.is_original]
        kept = probes
        if probes and self.cfg.filter_probes:
            scores = []
            for probe in probes:
                inserted = [
                    lp
                    for lp, c in zip(probe.metadata["old_logprobs"], probe.components)
                    if c in INSERTED_COMPONENTS
                ]
                scores.append(sum(inserted) / len(inserted))
            chosen = select_probes(scores, len(originals), self.ema.value, world_size=1)
            kept = [probes[i] for i in sorted(chosen)]
        if not self.cfg.train_inserted:  # the inserted prompt stays in context but leaves the loss
            for probe in kept:
                probe.components = [INSERTED_CONTEXT if c == INSERTED else c for c in probe.components]
        orig_correct = [self._correct(t) for t in originals]
        kept_correct = sum(self._correct(t) for t in kept)
        n_orig, n_kept, n_orig_ok, n_kept_ok, n_spawned, n_spawned_ok = _global_sums(
            [
                len(originals),
                len(kept),
                sum(orig_correct),
                kept_correct,
                len(probes),
                sum(self._correct(t) for t in probes),
            ]
        )
        self.alpha = n_kept / (n_orig + n_kept) if n_orig + n_kept else 0.0
        self.error_rate = 1.0 - n_orig_ok / n_orig if n_orig else 1.0
        probe_accuracy = n_kept_ok / n_kept if n_kept else 0.0
        ratio_used = self.ema.value
        if self.cfg.enabled:
            self.ema.update(probe_accuracy)
        self._pending = {
            "step": float(step),
            "rexrag/alpha": self.alpha,
            "rexrag/error_rate": self.error_rate,
            "rexrag/keep_ratio": ratio_used,
            "rexrag/probes_spawned": n_spawned,
            "rexrag/probes_kept": n_kept,
            "rexrag/probe_accuracy_kept": probe_accuracy,
            "rexrag/probe_accuracy_spawned": n_spawned_ok / n_spawned if n_spawned else 0.0,
            "rexrag/dead_end_rate": dead_end_rate([t.group_id for t in originals], orig_correct)
            if originals
            else 0.0,
            "rexrag/orig_accuracy": n_orig_ok / n_orig if n_orig else 0.0,
            "rexrag/discarded_probe_tokens": float(self.sampler.discarded_probe_tokens),
            "rexrag/probe_generated_tokens": float(sum(probe_generated_tokens(t) for t in probes)),
        }
        if not self.cfg.enabled or self.cfg.correction == "none":
            self._flush()
        return originals + kept

    def behaviour_logprobs(
        self, trajectories: list[Trajectory], old_logprobs: torch.Tensor, step: int
    ) -> torch.Tensor | None:
        """(B, T) mixture behaviour log-probs for this step's alpha and z (None: no correction)."""
        if not self.cfg.enabled or self.cfg.correction == "none":
            return None
        device = old_logprobs.device
        old = old_logprobs.detach().cpu().double()
        valid = torch.zeros_like(old, dtype=torch.bool)
        loss_mask = torch.zeros_like(valid)
        for row, traj in enumerate(trajectories):
            valid[row, : len(traj.response_ids)] = True
            loss_mask[row, : len(traj.response_ids)] = torch.tensor(traj.loss_mask(), dtype=torch.bool)
        layouts = [self.sampler.layout(t) for t in trajectories]
        mask_for_variant = loss_mask if self.cfg.correction == "sequence" else valid
        behaviour = behaviour_logprobs(
            old,
            mask_for_variant,
            layouts,
            self.alpha,
            self.error_rate,
            self.cfg.correction,
            self.cfg.prefix_count,
            self.cfg.sequence_weight_cap,
            self.cfg.min_error_rate,
        )
        is_probe = torch.tensor([not t.is_original for t in trajectories])
        diagnostics = importance_diagnostics(old, behaviour, loss_mask, is_probe, self.eps_low, self.eps_high)
        diagnostics.update(
            clip_by_token_class(
                old,
                behaviour,
                loss_mask,
                layouts,
                self.eps_low,
                self.eps_high,
                advantage_signs(trajectories),
            )
        )
        self._pending.update({f"rexrag/{k}": v for k, v in diagnostics.items()})
        self._flush()
        return behaviour.to(device=device, dtype=torch.float32)

    # --- bookkeeping -----------------------------------------------------------------------------------
    def _flush(self) -> None:
        if not self._pending:
            return
        self.history.append(self._pending)
        if self.metrics_path is not None:
            self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
            with self.metrics_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(self._pending, sort_keys=True) + "\n")
        self._pending = {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "ema": self.ema.state_dict(),
            "trigger_rng": self.sampler.trigger._rng.getstate(),
            "prompt_rng": self.sampler._rng.getstate(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.load_state_dict(state["ema"])
        self.sampler.trigger._rng.setstate(_as_state(state["trigger_rng"]))
        self.sampler._rng.setstate(_as_state(state["prompt_rng"]))


def advantage_signs(trajectories: Sequence[Trajectory]) -> torch.Tensor:
    """(B,) sign of each trajectory's GRPO advantage: sign(reward - mean reward of its group, probes included).

    Scaling by a group or batch standard deviation never changes the sign, so this holds for every
    ``objective.scale_by_std`` / ``std_scope`` setting. Differences below 1e-9 (rounding in the group mean of
    equal rewards) count as 0.
    """
    rewards = torch.tensor([float(t.metadata["reward"]) for t in trajectories], dtype=torch.float64)
    centred = grpo_advantages(rewards, [t.group_id for t in trajectories], scale_by_std=False)
    return torch.where(centred.abs() > 1e-9, torch.sign(centred), torch.zeros_like(centred))


def _as_state(value: Any) -> tuple:
    """random.Random states round-trip through checkpoints as nested lists."""
    return tuple(_as_state(v) for v in value) if isinstance(value, list | tuple) else value
