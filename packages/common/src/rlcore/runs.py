"""Where run outputs go: ``runs/<recipe>/<YYYYmmdd-HHMMSS>-<config hash>/`` under the repository root.

The root is ``$RUNS_DIR`` if set, else ``runs/`` in the repository that contains the current directory
(found by walking up to a folder holding ``.git``), else ``./runs``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rlcore.config import config_hash

__all__ = ["repo_root", "runs_root", "make_run_dir"]


def repo_root(start: Path | None = None) -> Path | None:
    """The nearest ancestor of ``start`` (default: cwd) that holds ``.git``, or None."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            return folder
    return None


def runs_root() -> Path:
    env = os.environ.get("RUNS_DIR")
    if env:
        return Path(env).expanduser().resolve()
    root = repo_root()
    return (root / "runs") if root is not None else (Path.cwd() / "runs")


def make_run_dir(recipe: str, cfg: Any | None = None, root: Path | None = None) -> Path:
    """Create and return a fresh run folder; the name sorts by time and carries the config hash."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    suffix = config_hash(cfg, length=8) if cfg is not None else "nocfg"
    base = (root or runs_root()) / recipe
    base.mkdir(parents=True, exist_ok=True)
    candidate = base / f"{stamp}-{suffix}"
    n = 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = base / f"{stamp}-{suffix}-{n}"
