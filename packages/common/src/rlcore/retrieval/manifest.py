"""The index folder manifest (``index.json``): one entry per index kind, each with the facts needed to refuse
a mismatched load (encoder, dim, normalisation, corpus hash, passage count).

Folder layout written by ``python -m rlcore.retrieval.build``::

    OUT/index.json           manifest (this module)
    OUT/docstore/            passages (rlcore.retrieval.docstore)
    OUT/embeddings/          embeddings.f32 (N, dim) float32 + progress.json (dense kinds only)
    OUT/flat.faiss | hnsw.faiss | ivfpq.faiss
    OUT/bm25/                bm25s files
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .docstore import DocStore
from .types import IndexMismatchError, RetrievalError

__all__ = ["MANIFEST", "read_manifest", "write_entry", "get_entry", "check_entry"]

MANIFEST = "index.json"
FORMAT_VERSION = 1


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of ``folder`` (``{"format_version", "indexes": {kind: entry}}``); empty if none yet."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return {"format_version": FORMAT_VERSION, "indexes": {}}
    data = json.loads(path.read_text())
    if data.get("format_version") != FORMAT_VERSION:
        raise RetrievalError(
            f"{path}: format_version {data.get('format_version')} is not {FORMAT_VERSION}; rebuild"
        )
    return data


def write_entry(folder: str | Path, kind: str, entry: dict[str, Any]) -> None:
    """Add or replace the ``kind`` entry atomically (write a temp file, then rename)."""
    folder = Path(folder)
    data = read_manifest(folder)
    data["indexes"][kind] = entry
    tmp = folder / f"{MANIFEST}.tmp.{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(folder / MANIFEST)


def get_entry(folder: str | Path, kind: str) -> dict[str, Any]:
    """The manifest entry for ``kind``, or a clear error listing what the folder does hold."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RetrievalError(
            f"index folder {folder} does not exist; build it with `make index CORPUS=... OUT={folder}`"
        )
    indexes = read_manifest(folder)["indexes"]
    if kind not in indexes:
        held = ", ".join(sorted(indexes)) or "none"
        raise RetrievalError(
            f"{folder} holds no complete '{kind}' index (it holds: {held}); build it with "
            f"`make index CORPUS=... OUT={folder} KIND={kind}`"
        )
    return indexes[kind]


def check_entry(
    folder: Path, kind: str, entry: dict[str, Any], store: DocStore, encoder=None, ntotal: int | None = None
) -> None:
    """Raise :class:`IndexMismatchError` when the entry disagrees with the docstore, the encoder or the index."""
    where = f"{folder} ({kind} index)"
    if entry["corpus_hash"] != store.corpus_hash:
        raise IndexMismatchError(
            f"{where} was built from corpus {entry['corpus_hash'][:12]}..., but the docstore holds corpus "
            f"{store.corpus_hash[:12]}...: the passages changed since the index was built; rebuild the index"
        )
    if entry["num_passages"] != len(store):
        raise IndexMismatchError(
            f"{where} indexes {entry['num_passages']} passages, the docstore holds {len(store)}"
        )
    if ntotal is not None and ntotal != entry["num_passages"]:
        raise IndexMismatchError(
            f"{where}: index file holds {ntotal} vectors, metadata says {entry['num_passages']}"
        )
    if encoder is None or entry.get("encoder") is None:
        return
    if encoder.dim != entry["dim"]:
        raise IndexMismatchError(
            f"{where} holds {entry['dim']}-dim embeddings from encoder {entry['encoder']!r}; the given encoder "
            f"{encoder.spec!r} produces {encoder.dim}-dim embeddings"
        )
    if encoder.fingerprint != entry["encoder_fingerprint"] or bool(encoder.normalize) != bool(
        entry["normalized"]
    ):
        raise IndexMismatchError(
            f"{where} was built with encoder {entry['encoder']!r} (fingerprint {entry['encoder_fingerprint']}, "
            f"normalized={entry['normalized']}); the given encoder {encoder.spec!r} has fingerprint "
            f"{encoder.fingerprint} (normalized={encoder.normalize}); queries must be encoded by the same model"
        )
