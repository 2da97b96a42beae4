"""Resumable response cache: one append-only JSONL per (model, benchmark file, prompt/generation config).

The file name carries a hash of all three, and every line repeats it, so responses of two models (or two
prompt settings, or two versions of a benchmark) can never be mixed: the official evaluator resumed from
``eval_result/result.json`` regardless of which model wrote it. Each response is appended and flushed as soon
as it exists, so a crash or Ctrl-C loses at most the requests in flight; a torn last line is ignored on
reload and the re-run asks only for what is missing. A file lock stops two processes writing the same file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from rlcore.faults import fault_point

__all__ = ["ResponseCache", "model_fingerprint", "CacheLockedError"]

logger = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
_EDGE_BYTES = 1 << 20
# Files that change what the model sees or says without touching the weights: tokenizer, chat template,
# generation defaults. Hashed whole (they are small).
_PROMPT_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)


class CacheLockedError(RuntimeError):
    """Another process is writing the same cache file."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-60:] or "model"


def model_fingerprint(model_dir: str | Path | None = None, server: str | None = None) -> str:
    """Identity of the weights being evaluated.

    A local folder: SHA-256 over config.json, the tokenizer files and chat template (``tokenizer_config.json``,
    ``chat_template.jinja``, ...: a changed template changes every prompt) and, per weight file, its name, size
    and first/last MiB (cheap on multi-GB checkpoints, but a re-trained checkpoint written to the same path gets
    a new fingerprint). A server: the description it is given (``server``; the OpenAI backend passes its URL,
    model name, model-list entry and revision).
    """
    digest = hashlib.sha256()
    if server is not None:
        digest.update(f"server|{server}".encode())
        return digest.hexdigest()[:16]
    if model_dir is None:
        raise ValueError("model_fingerprint needs a model folder or a server description")
    folder = Path(model_dir)
    config = folder / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for name in _PROMPT_FILES:
        if (folder / name).is_file():
            digest.update(f"{name}|".encode() + (folder / name).read_bytes())
    weights = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not weights and not config.is_file():
        raise FileNotFoundError(f"{folder}: no config.json or weight files to fingerprint")
    for path in weights:
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder)}|{size}".encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(_EDGE_BYTES))
            if size > 2 * _EDGE_BYTES:
                handle.seek(size - _EDGE_BYTES)
                digest.update(handle.read(_EDGE_BYTES))
    return digest.hexdigest()[:16]


class ResponseCache:
    """Append-only JSONL of responses for one (model, benchmark, config) triple.

    Use as a context manager: it holds the file lock while open.
    """

    def __init__(
        self,
        root: str | Path,
        model_name: str,
        model_fp: str,
        benchmark_hash: str,
        config_hash: str,
        meta: Mapping[str, Any] | None = None,
        seed_dirs: Sequence[str | Path] = (),
    ):
        self.cache_key = hashlib.sha256(f"{model_fp}|{benchmark_hash}|{config_hash}".encode()).hexdigest()[
            :16
        ]
        self.root = Path(root)
        self.path = self.root / f"{_slug(model_name)}-{self.cache_key}.jsonl"
        self.meta = {
            "model": model_name,
            "model_fingerprint": model_fp,
            "benchmark_sha256": benchmark_hash,
            "config_hash": config_hash,
            "cache_key": self.cache_key,
            **(meta or {}),
        }
        self._lock = FileLock(str(self.path) + ".lock")
        self._handle = None
        self.seed_dirs = [Path(d) for d in seed_dirs]
        self.seeded_from: Path | None = None
        self.appended = 0  # records appended by this process

    def __enter__(self) -> ResponseCache:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=1)
        except Timeout as err:
            raise CacheLockedError(
                f"{self.path} is being written by another process (lock {self._lock.lock_file})"
            ) from err
        if not self.path.exists():
            self._seed()
        meta_path = self.path.with_suffix(".meta.json")
        if not meta_path.exists():
            meta_path.write_text(json.dumps(self.meta, indent=2, ensure_ascii=False), encoding="utf-8")
        return self

    def _seed(self) -> None:
        """Start from another cache with the same key (same weights, benchmark and generation settings, whatever
        the display name or folder): the responses would be identical, so they are copied, not recomputed."""
        for folder in self.seed_dirs:
            for candidate in sorted(folder.glob(f"*-{self.cache_key}.jsonl")):
                if candidate.resolve() == self.path.resolve() or candidate.stat().st_size == 0:
                    continue
                shutil.copyfile(candidate, self.path)
                self.seeded_from = candidate
                logger.info(
                    "%s: seeded from %s (same cache key %s)", self.path.name, candidate, self.cache_key
                )
                return

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None
        self._lock.release()

    def load(self) -> dict[str, dict[str, Any]]:
        """item key -> cached record. A torn (crash-truncated) line is skipped with a warning."""
        done: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return done
        with open(self.path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    logger.warning(
                        "%s:%d: skipping a torn line (interrupted write); it will be redone",
                        self.path,
                        line_no,
                    )
                    continue
                if record.get("cache_key") != self.cache_key:
                    raise ValueError(
                        f"{self.path}:{line_no}: line belongs to cache {record.get('cache_key')!r}, "
                        f"not {self.cache_key!r}; refusing to mix responses"
                    )
                done[record["key"]] = record
        return done

    def append(self, records: Iterable[Mapping[str, Any]], sync: bool = True) -> None:
        """Write records (each gets ``cache_key``) and flush; ``sync`` also fsyncs."""
        if self._handle is None:
            self._repair_tail()
            self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
        for record in records:
            self._handle.write(json.dumps({**record, "cache_key": self.cache_key}, ensure_ascii=False) + "\n")
            self.appended += 1
        self._handle.flush()
        if sync:
            os.fsync(self._handle.fileno())
        fault_point("eval.cache", self.appended)  # kill-point tests: after N records are on disk

    def _repair_tail(self) -> None:
        """If a crash left a partial last line, end it so the next record starts on a fresh line."""
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as handle:
                handle.seek(-1, os.SEEK_END)
                last = handle.read(1)
            if last != b"\n":
                with open(self.path, "ab") as handle:
                    handle.write(b"\n")
