"""The multiple-choice item every loader produces and every scorer consumes, plus level/language helpers.

Levels follow AnesBench: ``system1`` (factual recall), ``system1.x`` (hybrid reasoning: apply a rule),
``system2`` (complex, multi-step decision). The original release encodes them as integers 1/2/3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "LEVELS",
    "LANGUAGES",
    "LETTERS",
    "MCQItem",
    "SchemaError",
    "normalize_level",
    "normalize_letter",
    "detect_language",
]

LEVELS: tuple[str, ...] = ("system1", "system1.x", "system2")
LANGUAGES: tuple[str, ...] = ("en", "zh")
LETTERS = "ABCDEFGHIJ"

_INT_LEVEL = {1: "system1", 2: "system1.x", 3: "system2"}
# Spelled-out labels, compared after lower-casing and removing spaces, underscores and hyphens.
_LABEL_LEVEL = {
    "system1": "system1",
    "sys1": "system1",
    "s1": "system1",
    "system1.x": "system1.x",
    "system1x": "system1.x",
    "sys1.x": "system1.x",
    "s1.x": "system1.x",
    "1.x": "system1.x",
    "system2": "system2",
    "sys2": "system2",
    "s2": "system2",
}
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


class SchemaError(ValueError):
    """A benchmark record is malformed; the message names the file, the record id and the field."""


@dataclass(frozen=True)
class MCQItem:
    """One single-answer multiple-choice question in one language.

    ``options`` holds ``(letter, text)`` pairs in letter order starting at "A"; ``answer`` is one of those
    letters. ``key`` is unique within a loaded benchmark (``id`` alone can repeat across languages).
    """

    id: str
    question: str
    options: tuple[tuple[str, str], ...]
    answer: str
    language: str
    level: str | None = None
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        return f"{self.language}/{self.id}"

    @property
    def num_choices(self) -> int:
        return len(self.options)

    @property
    def letters(self) -> list[str]:
        return [letter for letter, _ in self.options]

    def option_text(self, letter: str) -> str:
        for option_letter, text in self.options:
            if option_letter == letter:
                return text
        raise KeyError(letter)

    def to_record(self) -> dict[str, Any]:
        """The item in the 2026 flat AnesBench-like layout (one language per record)."""
        record: dict[str, Any] = {"id": self.id, "question": self.question}
        record.update({letter: text for letter, text in self.options})
        record.update({"choice_num": self.num_choices, "answer": self.answer, "language": self.language})
        if self.level is not None:
            record["level"] = LEVELS.index(self.level) + 1
        return record


def normalize_level(value: Any) -> str:
    """Map a level label to one of :data:`LEVELS`.

    Integers and digit strings use the AnesBench code (1 -> system1, 2 -> system1.x, 3 -> system2);
    spelled-out labels ("System 1.x", "sys2", "1.x") are read literally. Raises ValueError otherwise.
    """
    if isinstance(value, bool):
        raise ValueError(f"level must be 1/2/3 or a System label, got {value!r}")
    if isinstance(value, int):
        if value in _INT_LEVEL:
            return _INT_LEVEL[value]
        raise ValueError(f"level code must be 1, 2 or 3, got {value}")
    if isinstance(value, float) and value.is_integer():
        return normalize_level(int(value))
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return normalize_level(int(text))
        compact = re.sub(r"[\s_\-]+", "", text.lower())
        if compact in _LABEL_LEVEL:
            return _LABEL_LEVEL[compact]
    raise ValueError(f"unknown level {value!r} (expected 1/2/3 or one of {', '.join(LEVELS)})")


def normalize_letter(value: Any) -> str:
    """An answer letter: strips spaces and one trailing '.' or ')', upper-cases. Raises ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"answer must be an option letter string, got {value!r}")
    text = value.strip().rstrip(".)").strip().upper()
    if len(text) != 1 or text not in LETTERS:
        raise ValueError(f"answer must be a single option letter A-J, got {value!r}")
    return text


def detect_language(text: str) -> str:
    """'zh' when CJK ideographs make up at least a fifth of the letters/ideographs in ``text``, else 'en'."""
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN.findall(text))
    if cjk == 0:
        return "en"
    return "zh" if cjk * 5 >= cjk + latin else "en"
