"""One logging setup for every recipe: timestamps, level from the environment, quiet third-party loggers."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["setup_logging"]

_NOISY = ("urllib3", "httpx", "httpcore", "filelock", "alembic", "mlflow", "datasets", "fsspec", "asyncio")


def setup_logging(level: str | int | None = None, rank: int | None = None) -> None:
    """Configure the root logger once. Level: argument, else ``LOG_LEVEL``, else INFO.

    Non-zero ranks of a distributed run log warnings only, so an 8-GPU run prints one stream.
    """
    if level is None:
        level = os.environ.get("LOG_LEVEL", "INFO")
    if rank is None:
        rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        level = "WARNING"
    prefix = f"[rank{rank}] " if "WORLD_SIZE" in os.environ and os.environ.get("WORLD_SIZE") != "1" else ""
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
