"""Shared fixtures: a 300-passage slice of the embedded wiki corpus, indexes over it built with the hashing
encoder (no weights needed), and a real uvicorn server on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
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


class ServerThread:
    """uvicorn serving ``app`` in a background thread on a free 127.0.0.1 port."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()
