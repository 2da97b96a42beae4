"""Scoring AnesBench responses: per-item correctness, then accuracy per language x level with bootstrap CIs.

Aggregation (the paper's convention):

* accuracy of a cell (language, level) = correct / items in that cell;
* ``total`` of a language = correct / items of that language (question-weighted over levels);
* ``avg`` = unweighted mean of the language totals present, (EN total + ZH total) / 2 when both exist;
* ``overall.accuracy`` = correct / all items (question-weighted over languages).

An abstention (no letter extracted) counts as wrong and is reported separately. A response that stops inside an
unclosed ``<think>`` block (or, from a server that returns ``reasoning_content``, stops at the length cap with an
empty answer) is *truncated*: it is counted as such and never scored from its half-finished thoughts.

Every item is also scored with the official-style extraction (``anessuite.official_extraction``: never abstains),
reported under ``official`` keys beside ours, so the part of a gap to the paper that is extraction is visible.

95% confidence intervals come from a percentile bootstrap over questions. Resampling n 0/1 outcomes with
replacement and averaging is distributed exactly as Binomial(n, p_hat) / n, so each replicate is one binomial
draw instead of n index draws. ``avg`` replicates resample each language independently.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from anessuite.mcq import LANGUAGES, LEVELS, MCQItem
from anessuite.official_extraction import official_extract

__all__ = [
    "ScoredItem",
    "score_items",
    "aggregate",
    "match_responses",
    "bootstrap_ci",
    "length_stats",
    "cut_in_thinking",
]


@dataclass
class ScoredItem:
    """One item's outcome; ``prediction`` is None when the model abstained (or produced nothing usable)."""

    key: str
    id: str
    language: str
    level: str | None
    gold: str
    prediction: str | None
    correct: bool
    response_chars: int = 0
    response_tokens: int | None = None
    finish_reason: str | None = None
    truncated: bool = False  # hit the length cap (finish_reason "length") or cut inside <think>
    official_prediction: str | None = None  # the official-style extraction's letter (never abstains)
    official_correct: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def match_responses(
    items: Sequence[MCQItem], responses: Sequence[Mapping[str, Any]], allow_partial: bool = False
) -> dict[str, Mapping[str, Any]]:
    """Map item keys to response records.

    A response names its item by ``key`` ("en/<id>"), by ``id`` + ``language``, or by ``id`` alone when that
    id belongs to a single loaded item. Unknown ids, ambiguous ids and duplicates raise ValueError; missing
    responses raise unless ``allow_partial``.
    """
    by_key = {item.key: item for item in items}
    by_id: dict[str, list[MCQItem]] = {}
    for item in items:
        by_id.setdefault(item.id, []).append(item)
    matched: dict[str, Mapping[str, Any]] = {}
    for line, record in enumerate(responses, start=1):
        if "key" in record:
            key = str(record["key"])
        elif "id" in record and record.get("language"):
            key = f"{record['language']}/{record['id']}"
        elif "id" in record:
            candidates = by_id.get(str(record["id"]), [])
            if len(candidates) > 1:
                raise ValueError(
                    f"response #{line}: id '{record['id']}' exists in several languages; add a 'language' field"
                )
            key = candidates[0].key if candidates else f"?/{record['id']}"
        else:
            raise ValueError(f"response #{line}: needs an 'id' (or 'key') field, got {sorted(record)}")
        if key not in by_key:
            raise ValueError(f"response #{line}: no benchmark item for '{key}'")
        if key in matched:
            raise ValueError(f"response #{line}: duplicate response for '{key}'")
        if "response" not in record and "prediction" not in record:
            raise ValueError(f"response #{line}: needs a 'response' (text) or 'prediction' (letter) field")
        matched[key] = record
    missing = [key for key in by_key if key not in matched]
    if missing and not allow_partial:
        raise ValueError(
            f"{len(missing)} of {len(by_key)} benchmark items have no response (first: {missing[:5]}); "
            "pass --allow-partial to score only the answered items"
        )
    return matched


def cut_in_thinking(record: Mapping[str, Any]) -> bool:
    """The response stopped while the model was still thinking: an unclosed ``<think>``, or a separate
    ``reasoning`` (``reasoning_content``) with an empty answer at the length cap."""
    text = record.get("response") or ""
    opened = text.rfind("<think>")
    if opened >= 0 and text.find("</think>", opened) < 0:
        return True
    return bool(record.get("reasoning")) and not text.strip() and record.get("finish_reason") == "length"


def score_items(
    items: Sequence[MCQItem],
    responses: Mapping[str, Mapping[str, Any]],
    extract: Callable[[str, MCQItem], str | None],
    official: Callable[[str, MCQItem], str | None] | None = None,
) -> list[ScoredItem]:
    """Score every item that has a response. A ``prediction`` field (a letter or null, e.g. from the
    log-likelihood mode) is used as is; otherwise ``extract(response_text, item)`` picks the letter, except for a
    response cut inside its thinking, which is never scored. ``official`` (default: the official-style
    extraction) fills ``official_prediction``."""

    official = official or official_extract
    scored = []
    for item in items:
        record = responses.get(item.key)
        if record is None:
            continue
        text = record.get("response") or ""
        cut = "prediction" not in record and cut_in_thinking(record)
        if "prediction" in record:
            prediction = record["prediction"] or None
            official_prediction = prediction
        else:
            prediction = None if cut else extract(text, item)
            official_prediction = official(text, item)
        scored.append(
            ScoredItem(
                key=item.key,
                id=item.id,
                language=item.language,
                level=item.level,
                gold=item.answer,
                prediction=prediction,
                correct=prediction == item.answer,
                response_chars=len(text),
                response_tokens=record.get("num_tokens"),
                finish_reason=record.get("finish_reason"),
                truncated=cut or record.get("finish_reason") == "length",
                official_prediction=official_prediction,
                official_correct=official_prediction == item.answer,
            )
        )
    return scored


def bootstrap_ci(
    groups: Sequence[tuple[int, int]], iters: int, rng: np.random.Generator, level: float = 0.95
) -> list[float] | None:
    """Percentile CI of the mean of per-group accuracies; ``groups`` = [(correct, n), ...] resampled
    independently (one group: the CI of that accuracy; two languages: the CI of Avg.)."""
    groups = [(c, n) for c, n in groups if n > 0]
    if not groups or iters <= 0:
        return None
    draws = np.stack([rng.binomial(n, c / n, size=iters) / n for c, n in groups])  # (groups, iters)
    means = draws.mean(axis=0)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return [round(float(low), 6), round(float(high), 6)]


def length_stats(values: Sequence[int | float]) -> dict[str, float] | None:
    """mean / median / p90 / max of a list of lengths (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(np.ceil(0.9 * len(ordered))) - 1)]
    return {
        "mean": round(statistics.fmean(ordered), 3),
        "median": float(statistics.median(ordered)),
        "p90": float(p90),
        "max": float(ordered[-1]),
    }


def _accuracy(rows: Sequence[ScoredItem], official: bool = False) -> float | None:
    if not rows:
        return None
    return round(sum(r.official_correct if official else r.correct for r in rows) / len(rows), 6)


def aggregate(scored: Sequence[ScoredItem], bootstrap_iters: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The results.json body (layout documented in docs/anessuite.md; extra keys are additive)."""
    rng = np.random.default_rng(seed)
    by_language: dict[str, Any] = {}
    totals: list[float] = []
    total_groups: list[tuple[int, int]] = []
    for language in LANGUAGES:
        rows = [r for r in scored if r.language == language]
        if not rows:
            continue
        correct = sum(r.correct for r in rows)
        entry: dict[str, Any] = {"total": _accuracy(rows)}
        n_by_level: dict[str, int] = {}
        ci: dict[str, Any] = {"total": bootstrap_ci([(correct, len(rows))], bootstrap_iters, rng)}
        for level in LEVELS:
            level_rows = [r for r in rows if r.level == level]
            entry[level] = _accuracy(level_rows)
            n_by_level[level] = len(level_rows)
            ci[level] = bootstrap_ci(
                [(sum(r.correct for r in level_rows), len(level_rows))], bootstrap_iters, rng
            )
        abstained = sum(r.prediction is None for r in rows)
        official = {"total": _accuracy(rows, official=True)}
        official.update({level: _accuracy([r for r in rows if r.level == level], True) for level in LEVELS})
        entry.update(
            {
                "n": len(rows),
                "correct": correct,
                "n_by_level": n_by_level,
                "abstained": abstained,
                "abstention_rate": round(abstained / len(rows), 6),
                "truncated": sum(r.truncated for r in rows),
                "ci95": ci,
                "official": official,
            }
        )
        by_language[language] = entry
        totals.append(correct / len(rows))
        total_groups.append((correct, len(rows)))
    n = len(scored)
    abstained = sum(r.prediction is None for r in scored)
    overall_correct = sum(r.correct for r in scored)
    truncated = [r for r in scored if r.finish_reason is not None]
    results: dict[str, Any] = {
        "overall": {
            "accuracy": _accuracy(scored),
            "n": n,
            "correct": overall_correct,
            "abstained": abstained,
            "abstention_rate": round(abstained / n, 6) if n else None,
            "ci95": bootstrap_ci([(overall_correct, n)], bootstrap_iters, rng),
            "truncated": sum(r.truncated for r in scored),
            "official_accuracy": _accuracy(scored, official=True),
        },
        "by_language": by_language,
        "avg": round(sum(totals) / len(totals), 6) if totals else None,
        "avg_official": (
            round(sum(e["official"]["total"] for e in by_language.values()) / len(by_language), 6)
            if by_language
            else None
        ),
        "avg_ci95": bootstrap_ci(total_groups, bootstrap_iters, rng),
        "response_length": {
            "chars": length_stats([r.response_chars for r in scored]),
            "tokens": length_stats([r.response_tokens for r in scored if r.response_tokens is not None]),
            "truncated_rate": (
                round(sum(r.finish_reason == "length" for r in truncated) / len(truncated), 6)
                if truncated
                else None
            ),
        },
        "bootstrap": {
            "iters": bootstrap_iters,
            "seed": seed,
            "method": "percentile, per-question resampling",
        },
    }
    return results
