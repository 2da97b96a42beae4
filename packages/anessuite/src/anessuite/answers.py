"""From a model's free-text response to an option letter, via the shared extractor in ``rlcore.rewards``.

The extraction rules (EN/ZH answer statements, negations, boxed/bold answers, option text instead of a letter,
refusals -> abstain) live in ``rlcore.rewards.extract_choice`` so that evaluation and the GRPO reward agree on
what counts as an answer. This module only feeds it what a benchmark item knows: the number of options, the
question's language and the option texts. Unlike the official evaluator there is no fuzzy
fallback, so an unclear response abstains (and counts as wrong) instead of mapping to an arbitrary letter.
"""

from __future__ import annotations

from anessuite.mcq import MCQItem
from rlcore.rewards import extract_choice

__all__ = ["extract_prediction"]


def extract_prediction(text: str | None, item: MCQItem) -> str | None:
    """Letter for ``item`` stated in ``text``, or None (abstain). Letters beyond the item's options never count."""
    if not text or not text.strip():
        return None
    letter = extract_choice(
        text, num_choices=item.num_choices, lang=item.language, options=[option for _, option in item.options]
    )
    return letter if letter in item.letters else None
