"""Reading JSONL files with errors that name the file and line (one implementation for every package).

    for line_number, record in iter_jsonl_records("data/train.jsonl"):
        ...

Blank lines are skipped; ``.gz`` files are decompressed on the fly; bytes that are not UTF-8, lines that are not
JSON and (by default) values that are not objects raise ``error`` with ``<path>:<line>: ...``. Packages pass their
own exception class so callers can catch format errors by type.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlcore.errors import RecordFormatError

__all__ = ["iter_jsonl_records", "read_jsonl"]


def iter_jsonl_records(
    path: str | Path,
    error: type[Exception] = RecordFormatError,
    objects_only: bool = True,
    what: str = "JSONL file",
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each non-blank line of ``path`` (1-based line numbers)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as raw:
        for line_number, raw_line in enumerate(raw, start=1):
            try:
                # utf-8-sig on the first line: a byte-order mark is not part of the JSON (nor of its columns)
                line = raw_line.decode("utf-8-sig" if line_number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise error(
                    f"{path}:{line_number}: invalid UTF-8 at byte {err.start + 1} ({err.reason})"
                ) from err
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{path}:{line_number}: invalid JSON ({err.msg} at column {err.colno})") from err
            if objects_only and not isinstance(value, dict):
                raise error(f"{path}:{line_number}: expected a JSON object, got {type(value).__name__}")
            yield line_number, value


def read_jsonl(
    path: str | Path, error: type[Exception] = RecordFormatError, limit: int | None = None
) -> list[dict]:
    """All records (JSON objects) of a JSONL file, or the first ``limit``."""
    records = []
    for _, record in iter_jsonl_records(path, error):
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    return records
