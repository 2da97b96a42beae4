"""Reward registry: batched reward functions a trainer can look up by name from a config.

A batched reward has the signature ``fn(completions: list[str], **columns) -> list[float | None]``: one value per
completion, where each column is a list aligned with ``completions`` (dataset fields repeated per generation).
Columns a reward does not need are ignored, so a trainer can pass every dataset field. ``None`` means "no
reward for this row" (its gold column is None), the same convention TRL uses for multi-task batches.

Config usage::

    reward_fn = get_reward(cfg.reward.name, **cfg.reward.kwargs)   # e.g. "mcq", {} or "format", {"require_think": True}
    rewards = reward_fn(completions, **batch_columns)

Built-in rewards and the columns they read:

======== ============================================ ==================================================
name     columns (required / optional)                scalar function
======== ============================================ ==================================================
qa_em    golden_answers (list[str] or str per row)    ``qa_em_reward``: EM of the last <answer> block
qa_f1    golden_answers                               ``qa_f1_reward``: token F1 of the last <answer> block
mcq      gold_letter / num_choices, options, lang     ``mcq_reward``: 1.0 if the extracted letter is gold
format   (none)                                       ``format_reward``: tag-protocol score in [0, 1]
======== ============================================ ==================================================
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Sequence
from typing import Any

from rlcore.rewards.format import format_reward
from rlcore.rewards.mcq import mcq_reward
from rlcore.rewards.qa import qa_em_reward, qa_f1_reward

__all__ = ["REWARDS", "BatchedReward", "get_reward", "register_reward"]

BatchedReward = Callable[..., list[float | None]]
REWARDS: dict[str, BatchedReward] = {}


def register_reward(name: str) -> Callable[[BatchedReward], BatchedReward]:
    """Decorator registering a batched reward under ``name``; registering a taken name is an error."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_reward: name must be a non-empty string, got {name!r}")

    def decorator(fn: BatchedReward) -> BatchedReward:
        if name in REWARDS:
            raise ValueError(
                f"register_reward: a reward named {name!r} is already registered ({REWARDS[name]!r})"
            )
        REWARDS[name] = fn
        return fn

    return decorator


def get_reward(name: str, **fixed_kwargs: Any) -> BatchedReward:
    """The batched reward registered as ``name``, with ``fixed_kwargs`` bound (e.g. ``tag="ans"``)."""
    if name not in REWARDS:
        close = difflib.get_close_matches(str(name), REWARDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown reward {name!r}{hint} Registered rewards: {sorted(REWARDS)}")
    fn = REWARDS[name]
    return functools.partial(fn, **fixed_kwargs) if fixed_kwargs else fn


def _column(columns: dict[str, Any], name: str, size: int, reward: str, default: Any = ...) -> Sequence[Any]:
    """Column ``name`` as a list of ``size`` values; a missing optional column repeats ``default``."""
    if name not in columns or columns[name] is None:
        if default is ...:
            raise KeyError(f"reward {reward!r} needs the column {name!r}; columns given: {sorted(columns)}")
        return [default] * size
    values = columns[name]
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"reward {reward!r}: column {name!r} must be a list with one value per completion")
    if len(values) != size:
        raise ValueError(
            f"reward {reward!r}: column {name!r} has {len(values)} values for {size} completions"
        )
    return values


def _completions(completions: Sequence[Any], reward: str) -> list[str | None]:
    """Plain strings; a chat-style completion (list of messages) contributes its last message's content."""
    if isinstance(completions, str):
        raise TypeError(f"reward {reward!r}: completions must be a list of strings, got one string")
    texts = []
    for index, completion in enumerate(completions):
        if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
            completion = completion[-1].get("content")
        if completion is not None and not isinstance(completion, str):
            raise TypeError(
                f"reward {reward!r}: completions[{index}] is {type(completion).__name__}, expected str"
            )
        texts.append(completion)
    return texts


def _qa_batch(scalar, name: str, completions, tag: str, columns) -> list[float | None]:
    texts = _completions(completions, name)
    golds = _column(columns, "golden_answers", len(texts), name)
    return [None if gold is None else scalar(text, gold, tag=tag) for text, gold in zip(texts, golds)]


@register_reward("qa_em")
def qa_em_batch(completions: Sequence[str], tag: str = "answer", **columns: Any) -> list[float | None]:
    """Batched ``qa_em_reward``; column ``golden_answers``."""
    return _qa_batch(qa_em_reward, "qa_em", completions, tag, columns)


@register_reward("qa_f1")
def qa_f1_batch(completions: Sequence[str], tag: str = "answer", **columns: Any) -> list[float | None]:
    """Batched ``qa_f1_reward``; column ``golden_answers``."""
    return _qa_batch(qa_f1_reward, "qa_f1", completions, tag, columns)


@register_reward("mcq")
def mcq_batch(completions: Sequence[str], lang: str = "auto", **columns: Any) -> list[float | None]:
    """Batched ``mcq_reward``; columns ``gold_letter`` and optionally ``num_choices`` (default 4), ``options``."""
    texts = _completions(completions, "mcq")
    golds = _column(columns, "gold_letter", len(texts), "mcq")
    num_choices = _column(columns, "num_choices", len(texts), "mcq", default=4)
    options = _column(columns, "options", len(texts), "mcq", default=None)
    return [
        None if gold is None else mcq_reward(text, gold, num_choices=int(n), options=opts, lang=lang)
        for text, gold, n, opts in zip(texts, golds, num_choices, options)
    ]


@register_reward("format")
def format_batch(completions: Sequence[str], **kwargs: Any) -> list[float | None]:
    """Batched ``format_reward``; keyword options of ``format_reward`` apply to every row, columns are ignored."""
    option_names = (
        "think_tag",
        "search_tag",
        "information_tag",
        "answer_tag",
        "allow_search",
        "require_think",
    )
    options = {key: kwargs[key] for key in option_names if key in kwargs}
    return [format_reward(text, **options) for text in _completions(completions, "format")]
