"""Streaming corpus readers: JSONL (optionally gzipped), Parquet, local Hugging Face dataset folders.

Every reader yields ``(id, contents)`` pairs one record at a time, so a 21M-passage corpus never sits in
memory. The canonical layout is the FlashRAG / Search-R1 one: ``{"id": "...", "contents": "Title\\ntext"}``.
Records in the DPR layout ``{"id", "title", "text"}`` are accepted and turned into ``"title\\ntext"``.
A malformed record raises :class:`CorpusFormatError` naming the file and the 1-based line (or row) number.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlcore.io import iter_jsonl_records

from .types import CorpusFormatError

__all__ = ["iter_corpus", "iter_jsonl", "iter_parquet", "iter_hf_dataset", "corpus_files", "write_jsonl"]

logger = logging.getLogger(__name__)

_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".ndjson")


def _record_to_pair(record: Any, where: str) -> tuple[str, str]:
    """Validate one record and return ``(id, contents)``; ``where`` is ``file:line`` for the error message."""
    if not isinstance(record, dict):
        raise CorpusFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "id" not in record:
        raise CorpusFormatError(f"{where}: missing field 'id' (keys: {sorted(record)})")
    doc_id = record["id"]
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise CorpusFormatError(
            f"{where}: field 'id' must be a string or integer, got {type(doc_id).__name__}"
        )
    doc_id = str(doc_id)
    if not doc_id:
        raise CorpusFormatError(f"{where}: field 'id' is empty")
    if "contents" in record:
        contents = record["contents"]
        if not isinstance(contents, str):
            raise CorpusFormatError(
                f"{where}: field 'contents' must be a string, got {type(contents).__name__}"
            )
    elif "text" in record:
        title, text = record.get("title", ""), record["text"]
        if not isinstance(text, str) or not isinstance(title, str):
            raise CorpusFormatError(f"{where}: fields 'title' and 'text' must be strings")
        contents = f"{title}\n{text}"
    else:
        raise CorpusFormatError(f"{where}: missing field 'contents' (or 'text'); keys: {sorted(record)}")
    return doc_id, contents


def iter_jsonl(path: str | Path) -> Iterator[tuple[str, str]]:
    """Yield ``(id, contents)`` from a JSONL file (``.gz`` is decompressed on the fly); blank lines are skipped."""
    for line_number, record in iter_jsonl_records(path, CorpusFormatError, objects_only=False, what="corpus"):
        yield _record_to_pair(record, f"{path}:{line_number}")


def iter_parquet(path: str | Path, batch_size: int = 8192) -> Iterator[tuple[str, str]]:
    """Yield ``(id, contents)`` from a Parquet file, reading ``batch_size`` rows at a time."""
    # pyarrow costs ~0.12 s to import and only parquet files need it
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise CorpusFormatError(f"{path}: not a readable Parquet file ({err})") from err
    names = set(parquet.schema_arrow.names)
    if "id" not in names or not ({"contents"} <= names or {"text"} <= names):
        raise CorpusFormatError(
            f"{path}: needs columns 'id' and 'contents' (or 'title'/'text'); has {sorted(names)}"
        )
    columns = [c for c in ("id", "contents", "title", "text") if c in names]
    row_number = 0
    for batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
        for record in batch.to_pylist():
            row_number += 1
            yield _record_to_pair(record, f"{path}:row {row_number}")


def iter_hf_dataset(
    path: str | Path, split: str | None = None, batch_size: int = 8192
) -> Iterator[tuple[str, str]]:
    """Yield ``(id, contents)`` from a folder written by ``datasets.Dataset.save_to_disk`` (memory-mapped Arrow)."""
    # datasets is heavy (~0.7 s to import) and only this path needs it
    import datasets

    path = Path(path)
    dataset = datasets.load_from_disk(str(path))
    if isinstance(dataset, datasets.DatasetDict):
        if split is None:
            if len(dataset) != 1:
                raise CorpusFormatError(f"{path}: dataset has splits {list(dataset)}; pass split=...")
            split = next(iter(dataset))
        dataset = dataset[split]
    names = set(dataset.column_names)
    if "id" not in names or not ({"contents"} <= names or {"text"} <= names):
        raise CorpusFormatError(
            f"{path}: needs columns 'id' and 'contents' (or 'title'/'text'); has {sorted(names)}"
        )
    columns = [c for c in ("id", "contents", "title", "text") if c in names]
    row_number = 0
    for batch in dataset.select_columns(columns).iter(batch_size=batch_size):
        for i in range(len(batch["id"])):
            row_number += 1
            yield _record_to_pair({c: batch[c][i] for c in columns}, f"{path}:row {row_number}")


def _is_hf_dataset_dir(path: Path) -> bool:
    return (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()


def corpus_files(path: str | Path) -> list[Path]:
    """The data files a corpus path stands for: the file itself, or a folder's JSONL/Parquet shards in name order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus not found: {path}")
    if path.is_file():
        return [path]
    if _is_hf_dataset_dir(path):
        return [path]
    files = sorted(p for p in path.iterdir() if p.name.endswith(_JSONL_SUFFIXES) or p.suffix == ".parquet")
    if not files:
        raise CorpusFormatError(
            f"{path}: folder holds no .jsonl/.jsonl.gz/.parquet files and is not a saved HF dataset"
        )
    return files


def iter_corpus(path: str | Path) -> Iterator[tuple[str, str]]:
    """Yield ``(id, contents)`` for a corpus given as a JSONL/Parquet file, a folder of shards, or an HF dataset dir."""
    for file in corpus_files(path):
        if file.is_dir():
            yield from iter_hf_dataset(file)
        elif file.suffix == ".parquet":
            yield from iter_parquet(file)
        elif file.name.endswith(_JSONL_SUFFIXES):
            yield from iter_jsonl(file)
        else:
            raise CorpusFormatError(f"{file}: unknown corpus format (expected .jsonl, .jsonl.gz or .parquet)")


def write_jsonl(pairs: Iterator[tuple[str, str]], out: str | Path) -> int:
    """Write ``(id, contents)`` pairs as canonical JSONL; returns the number written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for doc_id, contents in pairs:
            handle.write(json.dumps({"id": doc_id, "contents": contents}, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(out)
    return count
