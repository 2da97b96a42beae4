"""Rewards for RL on LLMs: QA exact match / F1, MCQ choice extraction, tag-format score, and a registry.

Scalar functions (pure, one completion at a time):

- ``normalize_answer``, ``exact_match``, ``token_f1``, ``extract_answer_block``, ``qa_em_reward``,
  ``qa_f1_reward`` (``rlcore.rewards.qa``);
- ``extract_choice``, ``explain_choice``, ``mcq_reward`` (``rlcore.rewards.mcq``);
- ``format_reward``, ``format_report`` (``rlcore.rewards.format``).

Batched functions for trainers, ``fn(completions, **columns) -> list[float | None]``, are looked up by name:
``get_reward("qa_em" | "qa_f1" | "mcq" | "format", **fixed_kwargs)``; add your own with ``@register_reward``.
"""

from rlcore.rewards.format import FormatReport, format_report, format_reward
from rlcore.rewards.mcq import ChoiceResult, explain_choice, extract_choice, mcq_reward
from rlcore.rewards.qa import (
    exact_match,
    extract_answer_block,
    normalize_answer,
    qa_em_reward,
    qa_f1_reward,
    token_f1,
)
from rlcore.rewards.registry import REWARDS, BatchedReward, get_reward, register_reward

__all__ = [
    "REWARDS",
    "BatchedReward",
    "ChoiceResult",
    "FormatReport",
    "exact_match",
    "explain_choice",
    "extract_answer_block",
    "extract_choice",
    "format_report",
    "format_reward",
    "get_reward",
    "mcq_reward",
    "normalize_answer",
    "qa_em_reward",
    "qa_f1_reward",
    "register_reward",
    "token_f1",
]
