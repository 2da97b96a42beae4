"""GRPO stage through the shared rlcore trainer: single-turn MCQ rollouts with a verifiable reward.

Reward of a completion for an item with gold letter g (the paper says only "outcome-based binary reward"):

    r = 1[extract_choice(completion, options) == g] + format_weight * 1[last line is the SFT's answer line]

The first term is ``rlcore.rewards.mcq_reward`` (the same extractor the evaluation uses, so GRPO optimises
exactly what the benchmark scores); the optional second term rewards the answer line SFT taught: "Answer: X" /
"答案：X" with a letter (``data.sft_answer: letter``), or with one option's text ("Answer: pruritus",
``data.sft_answer: text``). Our choices where
the paper is silent (group size, KL, clipping, lr, response length) are documented in docs/anessuite.md.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anessuite.pipeline.config import GRPOStageConfig
from rlcore.io import read_jsonl
from rlcore.rewards import mcq_reward
from rlcore.trainer import (
    DataConfig,
    ModelConfig,
    RewardConfig,
    RLTrainConfig,
    TrackingConfig,
    TrainLoopConfig,
    train,
)

__all__ = ["answer_line_format", "make_reward_fn", "run_grpo_stage"]

logger = logging.getLogger(__name__)

_ANSWER_LINE = re.compile(r"^(?:Answer:\s*[A-J]|答案[:：]\s*[A-J])\s*$")
_TEXT_ANSWER_LINE = re.compile(r"^(?:Answer:|答案[:：])\s*(.+?)\s*[.。]?$")


def _normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def answer_line_format(
    completion: str | None, answer: str = "letter", options: Sequence[str] | None = None
) -> float:
    """1.0 when the last non-empty line is exactly an answer line, else 0.0.

    ``answer="letter"``: "Answer: C" / "答案：C". ``answer="text"``: "Answer: <text>" / "答案：<text>" where the text
    is one of ``options`` (case and spacing ignored, a closing full stop allowed); a letter line does not count,
    since text-answer SFT never writes one.
    """
    lines = [line.strip() for line in (completion or "").splitlines() if line.strip()]
    if not lines:
        return 0.0
    if answer == "letter":
        return float(_ANSWER_LINE.match(lines[-1]) is not None)
    if answer != "text":
        raise ValueError(f"answer_line_format: answer must be 'letter' or 'text', got {answer!r}")
    match = _TEXT_ANSWER_LINE.match(lines[-1])
    texts = {_normalised(option) for option in options or () if option and option.strip()}
    return float(match is not None and _normalised(match.group(1)) in texts)


def make_reward_fn(format_weight: float, answer: str = "letter"):
    """Batched reward ``(completions, gold_letter, num_choices, options, language, **_) -> list[float]``.

    ``answer`` is the answer form SFT taught (``data.sft_answer``), which the format term checks.
    """
    if answer not in ("letter", "text"):
        raise ValueError(
            f"make_reward_fn: answer must be 'letter' or 'text' (data.sft_answer), got {answer!r}"
        )

    def reward(
        completions: Sequence[str],
        gold_letter: Sequence[str],
        num_choices: Sequence[int],
        options: Sequence[list[str]],
        language: Sequence[str] | None = None,
        **_: Any,
    ) -> list[float]:
        languages = language if language is not None else ["auto"] * len(completions)
        values = []
        for text, gold, count, opts, lang in zip(completions, gold_letter, num_choices, options, languages):
            value = mcq_reward(text, gold, num_choices=int(count), options=opts, lang=lang or "auto")
            if format_weight:
                value += format_weight * answer_line_format(text, answer, opts)
            values.append(value)
        return values

    return reward


def build_rl_config(cfg: GRPOStageConfig, model_in: str, rl_file: Path, stage_dir: Path, seed: int):
    """The rlcore ``RLTrainConfig`` this stage trains with (validated)."""

    rl_cfg = RLTrainConfig(
        model=ModelConfig(path=model_in),
        data=DataConfig(path=str(rl_file), prompt_field="prompt"),
        reward=RewardConfig(name="mcq", success_threshold=1.0),
        rollout=cfg.rollout,
        objective=cfg.objective,
        optim=cfg.optim,
        generation=cfg.generation,
        train=TrainLoopConfig(
            total_steps=cfg.total_steps,
            seed=seed,
            mixed_precision=cfg.mixed_precision,
            output_dir=str(stage_dir / "trainer"),
            save_every=cfg.save_every,
            save_final_model=True,
            resume="auto",
        ),
        # the pipeline's nested MLflow run records the metrics (copied below), so the trainer opens none
        tracking=TrackingConfig(enabled=False),
    )
    rl_cfg.validate()
    return rl_cfg


def run_grpo_stage(
    cfg: GRPOStageConfig,
    model_in: str,
    rl_file: Path,
    stage_dir: Path,
    seed: int,
    run: Any = None,
    answer: str = "letter",
) -> Path:
    """Train with GRPO; returns the final model folder. Resumes from the newest checkpoint in the stage folder.

    ``answer`` is ``data.sft_answer``: the answer line the format term of the reward pays for.
    """

    records = read_jsonl(rl_file)
    if cfg.max_prompts is not None:
        records = records[: cfg.max_prompts]
    trainer_dir = stage_dir / "trainer"
    rl_cfg = build_rl_config(cfg, model_in, rl_file, stage_dir, seed)
    result = train(rl_cfg, records=records, reward_fn=make_reward_fn(cfg.format_weight, answer))
    if run is not None:
        for metrics in result.metrics:
            step = int(metrics.get("step", 0))
            run.log_metrics({f"grpo/{k}": v for k, v in metrics.items() if k != "step"}, step=step)
    final = trainer_dir / "final"
    summary = {
        "last_step": result.last_step,
        "stopped_early": result.stopped_early,
        "prompts": len(records),
        "final": str(final),
    }
    (stage_dir / "train_summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    if result.stopped_early:
        raise KeyboardInterrupt(f"GRPO stopped early at step {result.last_step}; re-run to resume")
    logger.info("grpo done: %s", summary)
    return final
