"""Optional format reward for the Search-R1 tag protocol (think / search / information / answer).

REX-RAG itself trains on pure EM (its format weight defaults to 0); this reward exists
for recipes that want shaping, e.g. AnesSuite's GRPO stage with ``<think>...</think><answer>...</answer>``.

The response is scanned for protocol tags only (other markup is ordinary text). A *block* is an opening tag
immediately followed, in the tag stream, by the closing tag of the same name. Five checks, each worth 0.2:

1. ``balanced``      every protocol tag belongs to a block: nothing unclosed, stray or nested;
2. ``final_answer``  exactly one answer block, it is the last block and only whitespace follows it;
3. ``order``         (only when balanced) the block sequence follows the grammar
                     ``(T? S I?)* T? A`` (T think, S search, I information, A answer); with
                     ``require_think`` every action is preceded by a think block: ``(T S I?)* T A``;
                     with ``allow_search=False`` the grammar is ``T? A`` (``T A``);
4. ``non_empty``     every think / search / answer block has non-whitespace content;
5. ``no_stray_text`` nothing but whitespace outside the blocks.

    format_reward = 0.2 * (balanced + final_answer + order + non_empty + no_stray_text)   in {0, 0.2, ..., 1}

A response with no protocol tag at all scores 0.0 (the checks would otherwise pass vacuously).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FormatReport", "format_reward", "format_report"]

_TAG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_CHECK_WEIGHT = 0.2


@dataclass(frozen=True)
class FormatReport:
    """Which of the five format checks passed; ``score`` is 0.2 per passed check (0.0 without any tag)."""

    has_tags: bool  # at least one protocol tag occurs
    balanced: bool  # every tag is part of an open/close pair, no nesting
    final_answer: bool  # exactly one answer block, last, nothing after it
    order: bool  # block sequence follows the protocol grammar
    non_empty: bool  # think/search/answer blocks are not blank
    no_stray_text: bool  # only whitespace outside blocks

    @property
    def score(self) -> float:
        if not self.has_tags:
            return 0.0
        passed = (self.balanced, self.final_answer, self.order, self.non_empty, self.no_stray_text)
        return _CHECK_WEIGHT * sum(passed)


def _check_tag(name: str, value: str) -> str:
    if not _TAG_NAME.match(value):
        raise ValueError(f"format_reward: {name} must be a plain tag name like 'think', got {value!r}")
    return value


def format_report(
    completion: str | None,
    think_tag: str = "think",
    search_tag: str = "search",
    information_tag: str = "information",
    answer_tag: str = "answer",
    allow_search: bool = True,
    require_think: bool = False,
) -> FormatReport:
    """Run the five checks of the module docstring on ``completion`` (the response only, not the prompt)."""
    tags = {
        _check_tag("think_tag", think_tag): "T",
        _check_tag("search_tag", search_tag): "S",
        _check_tag("information_tag", information_tag): "I",
        _check_tag("answer_tag", answer_tag): "A",
    }
    if len(tags) != 4:
        raise ValueError(f"format_reward: the four tag names must differ, got {list(tags)}")
    text = completion or ""
    tag_pattern = re.compile(r"<(/?)(" + "|".join(re.escape(name) for name in tags) + r")>")
    tokens = list(tag_pattern.finditer(text))
    if not tokens:
        return FormatReport(False, False, False, False, False, False)

    blocks: list[tuple[str, re.Match, re.Match]] = []  # (symbol, opening match, closing match)
    index = 0
    while index < len(tokens) - 1:
        opening, closing = tokens[index], tokens[index + 1]
        if not opening.group(1) and closing.group(1) and opening.group(2) == closing.group(2):
            blocks.append((tags[opening.group(2)], opening, closing))
            index += 2
        else:
            index += 1
    balanced = 2 * len(blocks) == len(tokens)

    symbols = "".join(symbol for symbol, _, _ in blocks)
    answers = [i for i, symbol in enumerate(symbols) if symbol == "A"]
    final_answer = (
        len(answers) == 1 and answers[0] == len(blocks) - 1 and not text[blocks[-1][2].end() :].strip()
    )

    think = "T" if require_think else "T?"
    grammar = rf"^(?:{think}SI?)*{think}A$" if allow_search else rf"^{think}A$"
    order = balanced and re.match(grammar, symbols) is not None

    non_empty = bool(blocks) and all(
        text[opening.end() : closing.start()].strip() for symbol, opening, closing in blocks if symbol != "I"
    )

    outside, cursor = [], 0
    for _, opening, closing in blocks:
        outside.append(text[cursor : opening.start()])
        cursor = closing.end()
    outside.append(text[cursor:])
    no_stray_text = not "".join(outside).strip()

    return FormatReport(True, balanced, final_answer, order, non_empty, no_stray_text)


def format_reward(
    completion: str | None,
    think_tag: str = "think",
    search_tag: str = "search",
    information_tag: str = "information",
    answer_tag: str = "answer",
    allow_search: bool = True,
    require_think: bool = False,
) -> float:
    """Format score in [0, 1] of ``completion``: 0.2 per passed check (see the module docstring)."""
    return format_report(
        completion,
        think_tag=think_tag,
        search_tag=search_tag,
        information_tag=information_tag,
        answer_tag=answer_tag,
        allow_search=allow_search,
        require_think=require_think,
    ).score
