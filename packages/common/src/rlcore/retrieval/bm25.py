"""BM25 (Lucene variant) through bm25s, with English stopwords and the Snowball stemmer (PyStemmer).

``score(q, d) = sum_{t in q} idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))``
with ``idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))``, ``k1 = 1.5``, ``b = 0.75`` (bm25s defaults).
The corpus is tokenised in chunks with a shared vocabulary, so the text never has to sit in memory; the
token-id lists do (bm25s builds its sparse matrix from them), which is fine up to a few million passages.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .docstore import DocStore

__all__ = ["BM25Index", "build_bm25"]

logger = logging.getLogger(__name__)


def _stemmer(language: str):
    # PyStemmer is pinned in requirements, not a package dependency; only stemmed BM25 needs it
    import Stemmer

    return Stemmer.Stemmer(language) if language else None


def build_bm25(
    store: DocStore,
    stemmer_language: str = "english",
    stopwords: str = "en",
    chunk_rows: int = 65536,
    k1: float = 1.5,
    b: float = 0.75,
) -> BM25Index:
    """Tokenise ``store`` chunk by chunk and build the bm25s index over its rows (row r = passage r)."""
    # bm25s is heavy (~0.2 s to import) and only BM25 indexes need it
    import bm25s
    from bm25s.tokenization import Tokenizer

    tokenizer = Tokenizer(stopwords=stopwords, stemmer=_stemmer(stemmer_language))
    token_ids: list[list[int]] = []
    num = len(store)
    for start in tqdm(range(0, num, chunk_rows), desc="bm25 tokenize", unit=" chunk"):
        texts = list(store.iter_range(start, min(start + chunk_rows, num)))
        token_ids.extend(tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False))
    model = bm25s.BM25(k1=k1, b=b)
    model.index((token_ids, tokenizer.get_vocab_dict()), show_progress=False)
    return BM25Index(model, stemmer_language, stopwords)


class BM25Index:
    """``search_texts(queries, k) -> (scores (n, k) float32, rows (n, k) int64)``; rows ``-1`` pad when
    ``k`` exceeds the corpus size."""

    def __init__(self, model, stemmer_language: str = "english", stopwords: str = "en"):
        self.model = model
        self.stemmer_language, self.stopwords = stemmer_language, stopwords
        self._stemmer = _stemmer(stemmer_language)

    @property
    def ntotal(self) -> int:
        return int(self.model.scores["num_docs"])

    def search_texts(self, queries: list[str], topk: int) -> tuple[np.ndarray, np.ndarray]:
        # bm25s is heavy (~0.2 s to import) and only BM25 indexes need it
        import bm25s

        tokens = bm25s.tokenize(
            queries, stopwords=self.stopwords, stemmer=self._stemmer, return_ids=False, show_progress=False
        )
        k = min(topk, self.ntotal)
        rows, scores = self.model.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        out_scores = np.full((len(queries), topk), -np.inf, dtype=np.float32)
        out_rows = np.full((len(queries), topk), -1, dtype=np.int64)
        out_scores[:, :k], out_rows[:, :k] = scores, rows
        return out_scores, out_rows

    def save(self, folder: Path) -> None:
        self.model.save(str(folder))

    @classmethod
    def load(cls, folder: Path, stemmer_language: str, stopwords: str, mmap: bool = False) -> BM25Index:
        # bm25s is heavy (~0.2 s to import) and only BM25 indexes need it
        import bm25s

        return cls(bm25s.BM25.load(str(folder), mmap=mmap), stemmer_language, stopwords)
