"""Shared fixtures: a 300-passage slice of the embedded wiki corpus, indexes over it built with the hashing
encoder (no weights needed), and a real uvicorn server on a free loopback port."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlcore.retrieval.build import build_index
from rlcore.retrieval.corpora import iter_wiki
from rlcore.retrieval.corpus import write_jsonl

HASH_ENCODER = "hashing:64"


@pytest.fixture(scope="session")
def wiki300(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "wiki300.jsonl"
    write_jsonl(iter_wiki(limit=300), path)
    return path


@pytest.fixture(scope="session")
def hash_index(tmp_path_factory, wiki300) -> Path:
    """One folder with flat, hnsw, ivfpq (hashing:64 embeddings) and bm25 over the 300 passages."""
    out = tmp_path_factory.mktemp("index") / "wiki300"
    for kind in ("flat", "hnsw", "ivfpq", "bm25"):
        build_index(wiki300, out, kind=kind, encoder=HASH_ENCODER, chunk_size=64)
    return out
