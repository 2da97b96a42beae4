"""Reading record files (JSON list, JSONL, Parquet) and hashing them, with errors that name file and line."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlcore.io import iter_jsonl_records

__all__ = ["read_records", "iter_records", "file_sha256", "write_jsonl", "append_jsonl"]


def file_sha256(path: str | Path, length: int | None = None) -> str:
    """SHA-256 of the file's bytes (streamed), optionally truncated to ``length`` hex characters."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    text = digest.hexdigest()
    return text[:length] if length else text


def iter_records(path: str | Path, batch_rows: int = 4096) -> Iterator[dict[str, Any]]:
    """Yield dict records from ``.json`` (a list, or an object holding one list), ``.jsonl`` or ``.parquet``.

    JSONL and Parquet are streamed, so files with millions of rows never sit in memory at once.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for _, record in iter_jsonl_records(path):
            yield record
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from err
        if isinstance(data, dict):
            lists = [value for value in data.values() if isinstance(value, list)]
            if len(lists) != 1:
                raise ValueError(
                    f"{path}: expected a JSON list of records or an object holding exactly one list"
                )
            data = lists[0]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
        for index, record in enumerate(data):
            if not isinstance(record, dict):
                raise ValueError(f"{path}: record #{index} is {type(record).__name__}, expected an object")
            yield record
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=batch_rows):
            yield from batch.to_pylist()
    else:
        raise ValueError(f"{path}: unsupported file type '{suffix}' (use .json, .jsonl or .parquet)")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    return list(iter_records(path))


def write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record and flush it to disk, so an interrupted run keeps everything written so far."""
    import os

    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
