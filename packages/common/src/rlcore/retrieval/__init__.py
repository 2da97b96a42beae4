"""Retrieval service: corpora, encoders, FAISS/BM25/hybrid indexes, a streaming index builder, an in-process
retriever, a micro-batching HTTP server compatible with Search-R1, and sync/async clients.

The interface every consumer codes against: ``search(queries: list[str], topk: int) -> list[list[Passage]]``,
offered by :class:`Retriever` / :func:`load_retriever` (in-process) and :class:`RetrievalClient` /
:class:`AsyncRetrievalClient` (HTTP). Heavy dependencies (torch, faiss, bm25s, fastapi) load on first use.
"""

from __future__ import annotations

import importlib

from .types import (
    CorpusFormatError,
    IndexMismatchError,
    Passage,
    RetrievalError,
    RetrievalServerError,
    RetrievalUnavailableError,
    SearchBackend,
)

__all__ = [
    "Passage",
    "SearchBackend",
    "RetrievalError",
    "CorpusFormatError",
    "IndexMismatchError",
    "RetrievalServerError",
    "RetrievalUnavailableError",
    "Retriever",
    "CachedRetriever",
    "load_retriever",
    "RetrievalClient",
    "AsyncRetrievalClient",
    "build_index",
    "load_encoder",
    "DocStore",
    "iter_corpus",
]

_LAZY = {
    "Retriever": "retriever",
    "CachedRetriever": "retriever",
    "load_retriever": "retriever",
    "RetrievalClient": "client",
    "AsyncRetrievalClient": "client",
    "build_index": "build",
    "load_encoder": "encoders",
    "DocStore": "docstore",
    "iter_corpus": "corpus",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
