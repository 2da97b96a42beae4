"""A deterministic in-memory retriever for rollout tests and benchmarks (no index, no model)."""

from __future__ import annotations

try:  # the retrieval area's value type, when present
    from rlcore.retrieval.types import Passage
except ImportError:  # pragma: no cover - same fields, used until rlcore.retrieval is installed
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Passage:  # type: ignore[no-redef]
        id: str
        contents: str
        score: float = 0.0


__all__ = ["FakeRetriever", "Passage"]


class FakeRetriever:
    """``search(queries, topk)`` over a fixed list of ``"title\\ntext"`` documents, by word overlap.

    Ties are broken by document order, so results are deterministic. Every call is recorded in ``calls`` as
    ``(queries, topk)`` so tests can assert one batched call per turn.
    """

    def __init__(self, documents: list[str] | None = None):
        self.documents = (
            documents
            if documents is not None
            else [
                "France\nParis is the capital and largest city of France.",
                "Germany\nBerlin is the capital of Germany.",
                "Jane Austen\nJane Austen wrote Pride and Prejudice, published in 1813.",
                "Danube\nThe Danube flows through Vienna, Budapest and Belgrade.",
                "Mount Everest\nMount Everest is Earth's highest mountain above sea level.",
            ]
        )
        self.calls: list[tuple[list[str], int]] = []

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        self.calls.append((list(queries), topk))
        results = []
        for query in queries:
            words = set(query.lower().split())
            scored = []
            for index, document in enumerate(self.documents):
                overlap = len(words & set(document.lower().replace("\n", " ").split()))
                scored.append((-overlap, index))
            scored.sort()
            results.append(
                [
                    Passage(id=str(index), contents=self.documents[index], score=float(-negative))
                    for negative, index in scored[:topk]
                ]
            )
        return results
