"""The Search-R1 tag protocol as text functions: stop strings, action parsing, observation formatting.

A turn's action is the first complete ``<search>…</search>`` or ``<answer>…</answer>`` block in the text the
policy produced in that turn; the observation for a search is the retrieved passages wrapped in
``<information>…</information>``, tokenized once and cut to ``max_obs_tokens``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rlcore.rollout.config import RolloutConfig

__all__ = [
    "Action",
    "parse_action",
    "stop_strings",
    "passage_contents",
    "format_passages",
    "format_observation",
    "encode_observation",
    "DEFAULT_SEARCH_INSTRUCTION",
]

# Our own wording of the Search-R1-style instruction; callers may load the exact template they trained with.
DEFAULT_SEARCH_INSTRUCTION = (
    "Answer the question below. Think step by step inside <think> and </think> whenever you get new "
    "information. If you are missing knowledge, write a search query as <search> query </search>; the top "
    "results will be shown to you between <information> and </information>. Search as many times as you "
    "need. When you are sure, give only the short final answer inside <answer> and </answer>, for example "
    "<answer> Marie Curie </answer>.\nQuestion: {question}\n"
)


@dataclass(frozen=True)
class Action:
    """The first complete action block of a turn: ``kind`` is "search" or "answer"."""

    kind: str
    content: str  # text between the tags, stripped
    start: int  # character offset of the opening tag in the turn's text
    end: int  # character offset just after the closing tag


def stop_strings(config: RolloutConfig) -> list[str]:
    """Closing tags that end a turn.

    With tools on, both closing tags end every turn, including the search-free final one (a search there ends
    the trajectory). With tools off, only ``</answer>`` and only if ``stop_at_answer``.
    """
    if config.tools_enabled:
        return [f"</{config.search_tag}>", f"</{config.answer_tag}>"]
    return [f"</{config.answer_tag}>"] if config.stop_at_answer else []


def _block_pattern(tags: list[str]) -> re.Pattern[str]:
    names = "|".join(re.escape(tag) for tag in tags)
    return re.compile(rf"<({names})>(.*?)</\1>", re.DOTALL)


def parse_action(text: str, config: RolloutConfig, search_enabled: bool = True) -> Action | None:
    """First complete action block in ``text``, or None.

    With tools off only answer blocks count. A search block is returned even when search is disabled in this
    round (the engine then ends the trajectory), because the turn's first block decides the action.
    """
    tags = [config.search_tag, config.answer_tag] if config.tools_enabled else [config.answer_tag]
    match = _block_pattern(tags).search(text)
    if match is None:
        return None
    kind = "search" if match.group(1) == config.search_tag else "answer"
    return Action(kind=kind, content=match.group(2).strip(), start=match.start(), end=match.end())


def passage_contents(passage: Any) -> str:
    """The ``contents`` of a retriever hit: a ``Passage``-like object or a mapping (FlashRAG style)."""
    if hasattr(passage, "contents"):
        return str(passage.contents)
    if isinstance(passage, dict):
        if "contents" in passage:
            return str(passage["contents"])
        if isinstance(passage.get("document"), dict) and "contents" in passage["document"]:
            return str(passage["document"]["contents"])
    raise TypeError(
        f"retriever returned {type(passage).__name__} without a 'contents' field: {passage!r:.120}"
    )


def format_passages(passages: list[Any], config: RolloutConfig) -> str:
    """Passages as text: ``passage_template`` per passage (title = first line of contents, text = the rest)."""
    if not passages:
        return config.empty_results_text
    pieces = []
    for index, passage in enumerate(passages, start=1):
        title, _, text = passage_contents(passage).partition("\n")
        pieces.append(config.passage_template.format(index=index, title=title, text=text))
    joined = "".join(pieces)
    return joined.strip() if config.strip_passages else joined


def format_observation(passages: list[Any], config: RolloutConfig) -> str:
    """The whole observation string, e.g. ``"\\n\\n<information>Doc 1(Title: T) body</information>\\n\\n"``."""
    return config.observation_template.format(
        tag=config.information_tag, passages=format_passages(passages, config)
    )


def encode_observation(passages: list[Any], config: RolloutConfig, tokenizer) -> tuple[list[int], bool]:
    """Observation token ids (tokenized once, no special tokens) and whether they were truncated.

    If the observation is longer than ``max_obs_tokens``: ``keep_wrapper`` cuts the passage tokens and keeps
    the opening and closing wrapper (each tokenized on its own); ``cut`` keeps the first ``max_obs_tokens``
    tokens (Search-R1's behaviour, which drops the closing tag).
    """
    text = format_observation(passages, config)
    ids = tokenizer.encode(text, add_special_tokens=False)
    limit = config.max_obs_tokens
    if len(ids) <= limit:
        return ids, False
    if config.obs_truncation == "cut":
        return ids[:limit], True
    head, tail = config.observation_template.split("{passages}")
    head_ids = tokenizer.encode(head.format(tag=config.information_tag), add_special_tokens=False)
    tail_ids = tokenizer.encode(tail.format(tag=config.information_tag), add_special_tokens=False)
    room = limit - len(head_ids) - len(tail_ids)
    if room <= 0:
        return ids[:limit], True
    body_ids = tokenizer.encode(format_passages(passages, config), add_special_tokens=False)
    return head_ids + body_ids[:room] + tail_ids, True
