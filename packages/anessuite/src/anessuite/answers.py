"""From a model's free-text response to an option letter, via the shared extractor in ``rlcore.rewards``.

The letter cascade itself (EN/ZH patterns, negations, boxed/bold answers, abstention) lives in
``rlcore.rewards.extract_choice`` so that evaluation and the GRPO reward agree on what counts as an answer.
AnesBench responses often name the option's *text* instead of its letter ("the answer is naloxone"). The
option texts are passed to the shared extractor when it accepts them; with an extractor that does not, this
module adds one benchmark-aware step after it: if the response's final sentence states exactly one option
text (and is not negated), that option is the answer. Unlike the
official evaluator (spec section 3.5) nothing is rewritten inside the reasoning and there is no fuzzy
fallback, so an unclear response abstains instead of being mapped to an arbitrary letter.
"""

from __future__ import annotations

import inspect
import re
from functools import lru_cache

from anessuite.mcq import MCQItem

__all__ = ["extract_prediction", "option_text_answer"]

_SENTENCE_END = re.compile(r"[.!?。！？\n]+")
_NEGATION = re.compile(r"\b(not|n't|never|no|except|incorrect|wrong)\b|不|非|错误", re.IGNORECASE)


@lru_cache(maxsize=1)
def _extractor():
    try:
        from rlcore.rewards import extract_choice
    except ImportError as err:  # pragma: no cover - depends on the rewards package being installed
        raise ImportError("rlcore.rewards.extract_choice is required for answer extraction") from err
    accepts_options = "options" in inspect.signature(extract_choice).parameters
    return extract_choice, accepts_options


def _last_sentence(text: str) -> str:
    parts = [part for part in _SENTENCE_END.split(text) if part.strip()]
    return parts[-1] if parts else ""


def option_text_answer(text: str, item: MCQItem) -> str | None:
    """The option whose text alone appears in the response's final sentence, if that sentence is not negated.

    Longer option texts win over texts they contain ("Propofol infusion" over "Propofol"); two distinct options
    in the final sentence -> None.
    """
    sentence = _last_sentence(text).lower()
    if not sentence or _NEGATION.search(sentence):
        return None
    found: list[tuple[str, str]] = []
    for letter, option in sorted(item.options, key=lambda pair: -len(pair[1])):
        needle = option.strip().rstrip(".。").lower()
        if len(needle) < 2:
            continue
        pattern = re.escape(needle)
        if needle.isascii():
            pattern = rf"(?<![a-z0-9]){pattern}(?![a-z0-9])"
        if re.search(pattern, sentence) and not any(needle in longer for _, longer in found):
            found.append((letter, needle))
    return found[0][0] if len(found) == 1 else None


def extract_prediction(text: str, item: MCQItem) -> str | None:
    """Letter for ``item`` from ``text``, or None (abstain). Letters beyond the item's options never count."""
    if not text or not text.strip():
        return None
    extract_choice, accepts_options = _extractor()
    if accepts_options:
        letter = extract_choice(
            text,
            num_choices=item.num_choices,
            lang=item.language,
            options=[option for _, option in item.options],
        )
    else:
        letter = extract_choice(text, num_choices=item.num_choices, lang=item.language)
    if letter is None and not accepts_options:
        letter = option_text_answer(text, item)
    if letter is not None and letter not in item.letters:
        return None
    return letter
