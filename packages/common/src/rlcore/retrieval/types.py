"""Value types and errors shared by every part of the retrieval service.

``Passage`` is the unit every retriever returns (in-process, HTTP client, server wire format). Its
``contents`` follow the FlashRAG / Search-R1 corpus layout: the first line is the title, the rest the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Passage",
    "SearchBackend",
    "RetrievalError",
    "CorpusFormatError",
    "IndexMismatchError",
    "RetrievalServerError",
    "RetrievalUnavailableError",
]


@dataclass(frozen=True, slots=True)
class Passage:
    """One retrieved passage.

    ``id`` is the corpus id (always a string), ``contents`` is ``"title\\ntext"``, ``score`` the retriever's
    similarity (inner product for dense indexes, BM25 score, or reciprocal-rank-fusion score for hybrid;
    higher is better; 0.0 when the server was asked not to return scores).
    """

    id: str
    contents: str
    score: float = 0.0

    @property
    def title(self) -> str:
        """First line of ``contents``."""
        return self.contents.split("\n", 1)[0]

    @property
    def text(self) -> str:
        """Everything after the first line of ``contents`` (empty when there is no newline)."""
        parts = self.contents.split("\n", 1)
        return parts[1] if len(parts) == 2 else ""

    def to_wire(self, with_score: bool = True) -> dict[str, Any]:
        """Search-R1 wire form: ``{"document": {"id", "contents"}, "score"}`` (score omitted on request)."""
        item: dict[str, Any] = {"document": {"id": self.id, "contents": self.contents}}
        if with_score:
            item["score"] = self.score
        return item

    @classmethod
    def from_wire(cls, item: dict[str, Any]) -> Passage:
        """Inverse of :meth:`to_wire`; also accepts the bare document dict some servers return."""
        doc = item.get("document", item)
        return cls(id=str(doc["id"]), contents=str(doc["contents"]), score=float(item.get("score", 0.0)))


@runtime_checkable
class SearchBackend(Protocol):
    """What the rollout engine needs: ``search(queries, topk) -> list[list[Passage]]``, one list per query."""

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]: ...


class RetrievalError(RuntimeError):
    """Base class of every error raised by ``rlcore.retrieval``."""


class CorpusFormatError(RetrievalError, ValueError):
    """A corpus record is malformed; the message names the file and line (or row) number."""


class IndexMismatchError(RetrievalError):
    """An index on disk does not match the corpus, encoder or settings it is being loaded with."""


class RetrievalServerError(RetrievalError):
    """The retrieval server answered with an error status; ``status`` and the server's message are kept."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class RetrievalUnavailableError(RetrievalServerError):
    """The retrieval server could not be reached (or stayed overloaded) after all retries."""
