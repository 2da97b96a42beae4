"""Open-domain QA rewards: SQuAD-style normalisation, exact match, token F1 and `<answer>` extraction.

All functions are pure functions of strings. The reward REX-RAG trains with is
``qa_em_reward``: extract the last complete ``<answer>...</answer>`` block of the response, normalise it and
compare it to every golden answer,

    EM(pred, golds) = max_g 1[normalize(pred) == normalize(g)]                        in {0, 1}
    F1(pred, golds) = max_g 2 * P * R / (P + R),  P = |common| / |pred tokens|,
                                                  R = |common| / |gold tokens|        in [0, 1]

where ``common`` is the multiset intersection of the whitespace tokens of the two normalised strings.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

__all__ = [
    "exact_match",
    "extract_answer_block",
    "normalize_answer",
    "qa_em_reward",
    "qa_f1_reward",
    "token_f1",
]

_PUNCTUATION_TABLE = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_TAG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase -> delete ASCII punctuation -> articles a/an/the to spaces -> collapse spaces.

    Punctuation is deleted, not replaced by a space, exactly as in the SQuAD evaluation script, so "U.S." and
    "us" normalise to the same string and "state-of-the-art" becomes "stateoftheart".
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize_answer expects a str, got {type(text).__name__}: {text!r}")
    text = text.lower().translate(_PUNCTUATION_TABLE)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _as_gold_list(golden_answers: str | Sequence[str], function: str) -> list[str]:
    """Accept one gold string or a sequence of them; reject an empty list (it would silently score 0)."""
    if isinstance(golden_answers, str):
        return [golden_answers]
    golds = list(golden_answers)
    if not golds:
        raise ValueError(
            f"{function}: golden_answers is empty; every question needs at least one gold answer"
        )
    for index, gold in enumerate(golds):
        if not isinstance(gold, str):
            raise TypeError(
                f"{function}: golden_answers[{index}] is {type(gold).__name__} ({gold!r}), expected str"
            )
    return golds


def exact_match(prediction: str | None, golden_answers: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised golden answer, else 0.0 (None -> 0.0)."""
    golds = _as_gold_list(golden_answers, "exact_match")
    if prediction is None:
        return 0.0
    normalized_prediction = normalize_answer(prediction)
    return float(any(normalized_prediction == normalize_answer(gold) for gold in golds))


def _f1_single(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    if not prediction_tokens or not gold_tokens:
        # SQuAD convention: two empty answers agree (1.0); one empty answer shares nothing (0.0).
        return float(prediction_tokens == gold_tokens)
    num_common = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if num_common == 0:
        return 0.0
    precision = num_common / len(prediction_tokens)
    recall = num_common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str | None, golden_answers: str | Sequence[str]) -> float:
    """Max over golden answers of the SQuAD token F1 between normalised strings (None -> 0.0)."""
    golds = _as_gold_list(golden_answers, "token_f1")
    if prediction is None:
        return 0.0
    prediction_tokens = normalize_answer(prediction).split()
    return max(_f1_single(prediction_tokens, normalize_answer(gold).split()) for gold in golds)


def extract_answer_block(text: str | None, tag: str = "answer") -> str | None:
    """Content (stripped) of the LAST complete ``<tag>...</tag>`` block of ``text``, or None if there is none.

    Only the model's response is given to this function, never prompt + response. The official REX-RAG /
    Search-R1 reward decodes prompt + response together; the prompt's in-context example already contains
    one answer block, so that code requires at least two matches and drops the first. Scoring the response
    alone makes every complete block the model's own, so one match is enough and no such rule is needed
    (with it, a correct single answer would score 0).

    "Complete" means an opening and a closing tag: an unclosed trailing ``<answer>`` (a truncated generation)
    is ignored and the previous complete block wins. A block's content never contains another opening tag,
    so ``<answer>x <answer>y</answer>`` yields ``"y"`` (the innermost, most recent opening). Tags are
    matched case-sensitively, like the rollout engine's stop rule.
    """
    if not _TAG_NAME.match(tag):
        raise ValueError(f"extract_answer_block: tag must be a plain tag name like 'answer', got {tag!r}")
    if text is None:
        return None
    opening, closing = f"<{tag}>", f"</{tag}>"
    pattern = re.compile(
        rf"{re.escape(opening)}((?:(?!{re.escape(opening)}).)*?){re.escape(closing)}", re.DOTALL
    )
    matches = pattern.findall(text)
    if not matches:
        return None
    return matches[-1].strip()


def qa_em_reward(completion: str | None, golden_answers: str | Sequence[str], tag: str = "answer") -> float:
    """REX-RAG's training reward: EM of the last complete answer block against the golds (no block -> 0.0)."""
    golds = _as_gold_list(golden_answers, "qa_em_reward")
    return exact_match(extract_answer_block(completion, tag=tag), golds)


def qa_f1_reward(completion: str | None, golden_answers: str | Sequence[str], tag: str = "answer") -> float:
    """Token F1 of the last complete answer block against the golds (no block -> 0.0)."""
    golds = _as_gold_list(golden_answers, "qa_f1_reward")
    return token_f1(extract_answer_block(completion, tag=tag), golds)
