"""Memory-mapped passage store: O(1) lookup by row and by id, without a Python list of dicts.

On-disk layout of a docstore folder (all little-endian, all written in one streaming pass):

- ``contents.bin``          UTF-8 bytes of every passage, concatenated.
- ``contents_offsets.i64``  ``(N + 1,)`` int64; passage ``r`` is ``contents.bin[off[r]:off[r + 1]]``.
- ``ids.bin`` / ``ids_offsets.i64``  the same for the corpus ids.
- ``id_table.i64``          open-addressing hash table, ``(S,)`` int64 with ``S`` a power of two ``>= 2N``;
                            slot ``blake2b64(id) mod S`` (then linear probing) holds the row, ``-1`` is empty.
- ``docstore.json``         count, corpus hash (sha256 over ``id\\0contents\\0`` of every record), source.

Serving maps the files (shared page cache, near-zero resident memory of its own); the builder reads by
``pread`` so that reading 13 GB of text does not show up as resident memory of the build process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .types import CorpusFormatError, RetrievalError

__all__ = ["DocStore", "build_docstore", "id_hash64"]

logger = logging.getLogger(__name__)

DOCSTORE_VERSION = 1
_EMPTY = -1


def id_hash64(doc_id: str) -> int:
    """Stable 64-bit hash of an id (blake2b, so it is the same in every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")


def _table_size(count: int) -> int:
    size = 2
    while size < 2 * max(count, 1):
        size *= 2
    return size


def _build_id_table(hashes: np.ndarray) -> np.ndarray:
    """Insert rows ``0..N-1`` into a linear-probing table, vectorised over all rows still looking for a slot.

    Each round, every unplaced row proposes its current slot; among proposals for the same empty slot the
    lowest row wins (``np.unique`` returns first occurrences), losers move one slot on. Lookup probes from
    ``hash mod S`` forward until it finds the row or an empty slot, so the result is a valid table.
    """
    size = _table_size(len(hashes))
    mask = np.uint64(size - 1)
    table = np.full(size, _EMPTY, dtype=np.int64)
    pending = np.arange(len(hashes), dtype=np.int64)
    slots = (hashes & mask).astype(np.int64)
    while len(pending):
        free = table[slots] == _EMPTY
        candidates, cand_slots = pending[free], slots[free]
        _, first = np.unique(cand_slots, return_index=True)
        table[cand_slots[first]] = candidates[first]
        placed_rows = np.zeros(len(hashes), dtype=bool)
        placed_rows[candidates[first]] = True
        placed = placed_rows[pending]
        pending, slots = pending[~placed], (slots[~placed] + 1) & (size - 1)
    return table


class _Appender:
    """Append-only blob + offsets writer (offsets buffered in a small numpy chunk, not a Python list)."""

    def __init__(self, folder: Path, stem: str, chunk: int = 1 << 16):
        self.blob = open(folder / f"{stem}.bin", "wb")
        self.offsets = open(folder / f"{stem}_offsets.i64", "wb")
        self.buffer = np.zeros(chunk, dtype="<i8")
        self.filled = 1  # offsets[0] = 0
        self.position = 0

    def add(self, data: bytes) -> None:
        self.blob.write(data)
        self.position += len(data)
        self.buffer[self.filled] = self.position
        self.filled += 1
        if self.filled == len(self.buffer):
            self.offsets.write(self.buffer.tobytes())
            self.filled = 0

    def close(self) -> None:
        self.offsets.write(self.buffer[: self.filled].tobytes())
        self.blob.close()
        self.offsets.close()


def build_docstore(pairs: Iterable[tuple[str, str]], out: str | Path, source: str = "") -> DocStore:
    """Stream ``(id, contents)`` pairs into a docstore folder and return it opened.

    Memory: O(N) only for the 8-byte id hashes and the id table (about 24 bytes per passage, i.e. ~0.5 GB
    for wiki-18's 21M passages); the text itself streams straight to disk. Duplicate ids are an error.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "docstore.json").unlink(missing_ok=True)  # marks the folder incomplete until the end
    start = time.perf_counter()
    corpus_hash = hashlib.sha256()
    contents_writer, ids_writer = _Appender(out, "contents"), _Appender(out, "ids")
    hash_chunks: list[np.ndarray] = []
    hash_buffer = np.zeros(1 << 16, dtype=np.uint64)
    filled = count = 0
    for doc_id, contents in tqdm(pairs, desc="docstore", unit=" passages", mininterval=2.0):
        id_bytes, content_bytes = doc_id.encode("utf-8"), contents.encode("utf-8")
        corpus_hash.update(id_bytes + b"\0" + content_bytes + b"\0")
        ids_writer.add(id_bytes)
        contents_writer.add(content_bytes)
        hash_buffer[filled] = int.from_bytes(hashlib.blake2b(id_bytes, digest_size=8).digest(), "little")
        filled += 1
        count += 1
        if filled == len(hash_buffer):
            hash_chunks.append(hash_buffer.copy())
            filled = 0
    hash_chunks.append(hash_buffer[:filled].copy())
    contents_writer.close()
    ids_writer.close()
    if count == 0:
        raise CorpusFormatError(f"corpus {source or '(stream)'} holds no passages")
    hashes = np.concatenate(hash_chunks)
    del hash_chunks
    _check_unique(hashes, out)
    _build_id_table(hashes).astype("<i8").tofile(out / "id_table.i64")
    meta = {
        "version": DOCSTORE_VERSION,
        "num_passages": count,
        "corpus_hash": corpus_hash.hexdigest(),
        "source": str(source),
    }
    tmp = out / "docstore.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(out / "docstore.json")
    logger.info("docstore: %d passages in %.1fs -> %s", count, time.perf_counter() - start, out)
    return DocStore(out)


def _check_unique(hashes: np.ndarray, folder: Path) -> None:
    order = np.argsort(hashes, kind="stable")
    same = np.nonzero(hashes[order][1:] == hashes[order][:-1])[0]
    if not len(same):
        return
    ids_offsets = np.fromfile(folder / "ids_offsets.i64", dtype="<i8")
    with open(folder / "ids.bin", "rb") as handle:

        def read_id(row: int) -> str:
            handle.seek(ids_offsets[row])
            return handle.read(ids_offsets[row + 1] - ids_offsets[row]).decode("utf-8")

        for position in same:
            first, second = int(order[position]), int(order[position + 1])
            if read_id(first) == read_id(second):
                raise CorpusFormatError(
                    f"duplicate passage id {read_id(first)!r} at passages #{first + 1} and #{second + 1} (1-based corpus order)"
                )


class DocStore:
    """Read side of a docstore folder. ``len(store)``, ``store[row]`` (contents), ``store.id(row)``,
    ``store.row_of(id)``, ``store.get(id)`` are all O(1); nothing is loaded eagerly beyond the maps."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_path = self.folder / "docstore.json"
        if not meta_path.exists():
            raise RetrievalError(f"{self.folder}: not a complete docstore (no docstore.json); rebuild it")
        self.meta = json.loads(meta_path.read_text())
        self.num_passages = int(self.meta["num_passages"])
        self.corpus_hash = str(self.meta["corpus_hash"])
        self._contents = self._map("contents.bin", np.uint8)
        self._contents_offsets = self._map("contents_offsets.i64", "<i8")
        self._ids = self._map("ids.bin", np.uint8)
        self._ids_offsets = self._map("ids_offsets.i64", "<i8")
        self._table = self._map("id_table.i64", "<i8")
        if (
            len(self._contents_offsets) != self.num_passages + 1
            or len(self._ids_offsets) != self.num_passages + 1
        ):
            raise RetrievalError(
                f"{self.folder}: offsets files do not match num_passages={self.num_passages}"
            )
        self._mask = len(self._table) - 1

    def _map(self, name: str, dtype) -> np.ndarray:
        path = self.folder / name
        if path.stat().st_size == 0:
            return np.zeros(0, dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r")

    def __len__(self) -> int:
        return self.num_passages

    def __getitem__(self, row: int) -> str:
        """Contents of passage ``row`` (0-based corpus order)."""
        start, end = self._contents_offsets[row], self._contents_offsets[row + 1]
        return self._contents[start:end].tobytes().decode("utf-8")

    def id(self, row: int) -> str:
        """Corpus id of passage ``row``."""
        start, end = self._ids_offsets[row], self._ids_offsets[row + 1]
        return self._ids[start:end].tobytes().decode("utf-8")

    def row_of(self, doc_id: str) -> int | None:
        """Row of ``doc_id``, or None; expected O(1) probes (load factor <= 0.5)."""
        slot = id_hash64(doc_id) & self._mask
        while True:
            row = int(self._table[slot])
            if row == _EMPTY:
                return None
            if self.id(row) == doc_id:
                return row
            slot = (slot + 1) & self._mask

    def get(self, doc_id: str) -> str | None:
        """Contents of the passage with id ``doc_id``, or None."""
        row = self.row_of(doc_id)
        return None if row is None else self[row]

    def iter_range(self, start: int, end: int) -> Iterator[str]:
        """Contents of rows ``start..end-1`` read with ``pread`` (no mapping, so no resident-memory growth)."""
        offsets = np.fromfile(
            self.folder / "contents_offsets.i64", dtype="<i8", count=end - start + 1, offset=8 * start
        )
        fd = os.open(self.folder / "contents.bin", os.O_RDONLY)
        try:
            blob = os.pread(fd, int(offsets[-1] - offsets[0]), int(offsets[0]))
        finally:
            os.close(fd)
        base = int(offsets[0])
        for row in range(end - start):
            yield blob[offsets[row] - base : offsets[row + 1] - base].decode("utf-8")
