"""Reading record files (JSON list, JSONL, Parquet) and hashing them, with errors that name file and line."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlcore.io import iter_jsonl_records

__all__ = [
    "read_records",
    "iter_records",
    "file_sha256",
    "write_jsonl",
    "append_jsonl",
    "data_files",
    "is_data_file",
    "DATA_SUFFIXES",
]

logger = logging.getLogger(__name__)

DATA_SUFFIXES = (".json", ".jsonl", ".parquet")
# Files a dataset download carries besides the data: the dataset card, Hub metadata, Croissant descriptions,
# the datasets library's info files. Matched on the lower-cased file name.
_NON_DATA_NAMES = frozenset(
    {
        "meta.json",
        "metadata.json",
        "dataset_info.json",
        "dataset_infos.json",
        "dataset_dict.json",
        "state.json",
    }
)
_NON_DATA_SUFFIXES = (".jsonld", ".md", ".txt", ".yaml", ".yml", ".lock", ".py", ".gitattributes")
_SNIFF_BYTES = 1 << 16


def file_sha256(path: str | Path, length: int | None = None) -> str:
    """SHA-256 of the file's bytes (streamed), optionally truncated to ``length`` hex characters."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    text = digest.hexdigest()
    return text[:length] if length else text


def _json_is_metadata(path: Path) -> bool:
    """True for a JSON object that is a description, not records: JSON-LD (``@context``, Croissant), or an
    object holding no list of records. A JSON list, or an object around one list of objects, is data."""
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES).lstrip()
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:].lstrip()
    if not head.startswith(b"{"):
        return False
    if b'"@context"' in head[:4096]:
        return True
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False  # a broken file is reported by the reader, with its line and column
    lists = [value for value in data.values() if isinstance(value, list)] if isinstance(data, dict) else []
    return not (len(lists) == 1 and all(isinstance(record, dict) for record in lists[0][:10]))


def is_data_file(path: str | Path) -> bool:
    """Whether a file in a dataset folder holds records (see :func:`data_files`)."""
    path = Path(path)
    name = path.name.lower()
    if name.startswith(".") or name in _NON_DATA_NAMES or "croissant" in name or name.startswith("readme"):
        return False
    if name.endswith(_NON_DATA_SUFFIXES) or path.suffix.lower() not in DATA_SUFFIXES:
        return False
    if path.suffix.lower() == ".json" and _json_is_metadata(path):
        return False
    return True


def data_files(path: str | Path, what: str = "data") -> list[Path]:
    """The record files of a dataset: ``path`` itself, or every data file under the folder (sorted, hidden
    folders such as ``.cache`` skipped). A dataset card (README.md), ``meta.json``, ``dataset_info.json`` and
    Croissant/JSON-LD descriptions are skipped with a log line, never parsed as records."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}")
    files, skipped = [], []
    for candidate in sorted(path.rglob("*")):
        relative = candidate.relative_to(path)
        if not candidate.is_file() or any(part.startswith(".") for part in relative.parts[:-1]):
            continue
        (files if is_data_file(candidate) else skipped).append(candidate)
    for file in skipped:
        logger.info("%s: not a data file, skipped", file)
    if not files:
        raise FileNotFoundError(
            f"{path}: no {what} files (.json/.jsonl/.parquet records) in this folder; "
            f"found {[str(p.relative_to(path)) for p in skipped][:10]}"
        )
    return files


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
        # pyarrow costs ~0.12 s to import and only parquet files need it
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
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
