"""In-process retrieval: load an index folder and answer ``search(queries, topk) -> list[list[Passage]]``.

The same interface as the HTTP client (``rlcore.retrieval.client``), so a single-process CPU run and a
multi-node GPU run differ only in which object the rollout engine is handed.

Kinds: ``flat``, ``hnsw``, ``ivfpq`` (FAISS over an encoder), ``bm25`` (bm25s), ``hybrid`` (reciprocal
rank fusion of a dense kind and BM25: ``rrf(d) = sum_i 1 / (rrf_k + rank_i(d))``, ranks 1-based).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .bm25 import BM25Index
from .dense import DENSE_KINDS, DenseIndex, DenseParams
from .docstore import DocStore
from .encoders import Encoder, load_encoder
from .manifest import check_entry, get_entry
from .types import Passage

__all__ = ["Retriever", "CachedRetriever", "load_retriever", "DenseSearcher", "HybridSearcher", "KINDS"]

logger = logging.getLogger(__name__)

KINDS = (*DENSE_KINDS, "bm25", "hybrid")


class DenseSearcher:
    """Encode queries, then search a FAISS index: ``(n,) texts -> (n, k) scores, (n, k) rows``."""

    def __init__(self, encoder: Encoder, index: DenseIndex):
        self.encoder, self.index = encoder, index

    def search_texts(self, queries: list[str], topk: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(self.encoder.encode_queries(queries), topk)


class HybridSearcher:
    """Reciprocal rank fusion of two searchers over the top ``depth`` of each (``depth >= topk``)."""

    def __init__(self, first, second, rrf_k: int = 60, depth: int = 50):
        self.first, self.second, self.rrf_k, self.depth = first, second, rrf_k, depth

    def search_texts(self, queries: list[str], topk: int) -> tuple[np.ndarray, np.ndarray]:
        depth = max(self.depth, topk)
        _, rows_a = self.first.search_texts(queries, depth)
        _, rows_b = self.second.search_texts(queries, depth)
        scores = np.full((len(queries), topk), -np.inf, dtype=np.float32)
        rows = np.full((len(queries), topk), -1, dtype=np.int64)
        for q in range(len(queries)):
            fused: dict[int, float] = {}
            for ranked in (rows_a[q], rows_b[q]):
                for rank, row in enumerate(ranked, start=1):
                    if row >= 0:
                        fused[int(row)] = fused.get(int(row), 0.0) + 1.0 / (self.rrf_k + rank)
            best = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:topk]
            for j, (row, score) in enumerate(best):
                rows[q, j], scores[q, j] = row, score
        return scores, rows


class Retriever:
    """A docstore plus a searcher. Concurrent ``search`` calls are allowed: CPU FAISS, bm25s and torch inference
    are re-entrant and the docstore is read-only; a FAISS GPU index is not re-entrant, even for search, so
    :class:`~rlcore.retrieval.dense.DenseIndex` runs searches on GPU one at a time."""

    def __init__(self, store: DocStore, searcher, kind: str, folder: Path | None = None):
        self.store, self.searcher, self.kind, self.folder = store, searcher, kind, folder

    def __len__(self) -> int:
        return len(self.store)

    def search_rows(self, queries: list[str], topk: int) -> tuple[np.ndarray, np.ndarray]:
        """``(n, topk)`` float32 scores and ``(n, topk)`` int64 corpus rows (``-1`` = no hit)."""
        if topk <= 0:
            raise ValueError(f"topk must be positive, got {topk}")
        if not queries:
            return np.zeros((0, topk), dtype=np.float32), np.zeros((0, topk), dtype=np.int64)
        return self.searcher.search_texts(list(queries), topk)

    def to_passages(self, scores: np.ndarray, rows: np.ndarray) -> list[list[Passage]]:
        """Turn search output into passages, dropping ``-1`` rows."""
        store = self.store
        return [
            [Passage(store.id(int(r)), store[int(r)], float(s)) for s, r in zip(score_row, row_row) if r >= 0]
            for score_row, row_row in zip(scores.tolist(), rows.tolist())
        ]

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        """Top-``topk`` passages for each query, best first."""
        return self.to_passages(*self.search_rows(queries, topk))


class CachedRetriever:
    """LRU cache in front of anything with ``search``: repeated ``(query, topk)`` pairs skip the search.

    Useful in RL, where the same question is rolled out ``num_generations`` times and often issues the same
    first query. Thread-safe; ``hits``/``misses`` count lookups.
    """

    def __init__(self, retriever, maxsize: int = 65536):
        self.retriever, self.maxsize = retriever, maxsize
        self._cache: OrderedDict[tuple[str, int], list[Passage]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __getattr__(self, name):
        return getattr(self.retriever, name)

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        results: list[list[Passage] | None] = [None] * len(queries)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, query in enumerate(queries):
                cached = self._cache.get((query, topk))
                if cached is not None:
                    self._cache.move_to_end((query, topk))
                    results[i] = cached
                    self.hits += 1
                else:
                    missing.setdefault(query, []).append(i)
                    self.misses += 1
        if missing:
            fresh = self.retriever.search(list(missing), topk)
            with self._lock:
                for (query, positions), passages in zip(missing.items(), fresh):
                    for i in positions:
                        results[i] = passages
                    self._cache[(query, topk)] = passages
                    while len(self._cache) > self.maxsize:
                        self._cache.popitem(last=False)
        return [list(r) for r in results]  # copies, so callers cannot mutate the cache


def _load_dense(
    folder: Path,
    kind: str,
    store: DocStore,
    encoder,
    device: str,
    params: DenseParams | None,
    gpu: bool,
    mmap: bool,
) -> DenseSearcher:
    entry = get_entry(folder, kind)
    if encoder is None:
        encoder = load_encoder(entry["encoder"], device=device)
    saved = DenseParams(**entry["params"])
    if params is not None:  # search-time settings may be overridden; build-time ones come from the file
        saved.ef_search, saved.nprobe = params.ef_search, params.nprobe
    index = DenseIndex.load(folder / entry["file"], kind, saved, mmap=mmap)
    check_entry(folder, kind, entry, store, encoder=encoder, ntotal=index.ntotal)
    if gpu:
        index.to_gpu()
    return DenseSearcher(encoder, index)


def _load_bm25(folder: Path, store: DocStore, mmap: bool) -> BM25Index:
    entry = get_entry(folder, "bm25")
    index = BM25Index.load(
        folder / entry["file"], entry["params"]["stemmer"], entry["params"]["stopwords"], mmap=mmap
    )
    check_entry(folder, "bm25", entry, store, ntotal=index.ntotal)
    return index


def load_retriever(
    folder: str | Path,
    kind: str = "flat",
    encoder: Encoder | str | None = None,
    device: str = "auto",
    params: DenseParams | None = None,
    gpu: bool = False,
    mmap: bool = False,
    cache_size: int = 0,
    hybrid_dense: str = "flat",
    rrf_k: int = 60,
):
    """Open an index folder built by ``rlcore.retrieval.build``.

    ``encoder``: None -> the one recorded in the manifest; a spec string or an :class:`Encoder` must match the
    recorded fingerprint or the load is refused (:class:`IndexMismatchError`). ``gpu`` moves Flat/IVF
    indexes to every visible GPU (fp16, sharded). ``cache_size > 0`` wraps the result in an LRU cache.
    """
    folder = Path(folder)
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose from {KINDS}")
    get_entry(folder, hybrid_dense if kind == "hybrid" else kind)  # clear error before opening anything
    store = DocStore(folder / "docstore")
    if isinstance(encoder, str):
        encoder = load_encoder(encoder, device=device)
    if kind in DENSE_KINDS:
        searcher = _load_dense(folder, kind, store, encoder, device, params, gpu, mmap)
    elif kind == "bm25":
        searcher = _load_bm25(folder, store, mmap)
    else:
        dense = _load_dense(folder, hybrid_dense, store, encoder, device, params, gpu, mmap)
        searcher = HybridSearcher(dense, _load_bm25(folder, store, mmap), rrf_k=rrf_k)
    retriever = Retriever(store, searcher, kind, folder)
    logger.info("loaded %s retriever over %d passages from %s", kind, len(store), folder)
    return CachedRetriever(retriever, cache_size) if cache_size > 0 else retriever
