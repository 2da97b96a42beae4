"""Atomic checkpoints, ``resume=auto`` and save-on-signal.

Layout under ``<output_dir>/checkpoints/``::

    step-00000012/            one complete checkpoint (only ever appears by an atomic rename)
        model / optimizer / RNG files written by ``accelerate.Accelerator.save_state`` (DeepSpeed: its own
        sharded layout), plus registered stateful objects (LR scheduler, extra user state)
        trainer_state.json     step, data position, MLflow run id, counters
        COMPLETE               written last, before the rename
    .tmp-step-00000012/       in progress; removed on the next save if a run died while writing it

Every rank writes into the same temporary folder (a shared file system under multi-node, as DeepSpeed
requires); rank 0 renames it once all ranks are done.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = [
    "checkpoint_root",
    "list_checkpoints",
    "latest_checkpoint",
    "resolve_resume",
    "save_checkpoint",
    "load_checkpoint",
    "StopSignal",
]

logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d{8})$")
_MARKER = "COMPLETE"
_STATE_FILE = "trainer_state.json"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as ``(step, path)``, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / _MARKER).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def resolve_resume(resume: str, output_dir: str | Path) -> Path | None:
    """Which checkpoint to start from: ``"never"`` -> None, ``"auto"`` -> newest complete one (or None),
    anything else -> that folder, which must be a complete checkpoint."""
    if resume == "never":
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    path = Path(resume).expanduser()
    if not (path / _MARKER).is_file():
        raise FileNotFoundError(
            f"train.resume={resume!r}: not a complete checkpoint folder (expected {path / _MARKER}); "
            f"use 'auto', 'never' or a path like <output_dir>/checkpoints/step-00000012"
        )
    return path


def save_checkpoint(
    accelerator: Any, output_dir: str | Path, step: int, trainer_state: dict[str, Any], keep_last: int = 2
) -> Path:
    """Write checkpoint ``step`` atomically on all ranks; keep the newest ``keep_last`` (0 keeps all).

    Must be called by every rank (DeepSpeed saves are collective).
    """
    root = checkpoint_root(output_dir)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every rank's files (RNG states, DeepSpeed shards) are in before the rename
    if accelerator.is_main_process:
        state = {**trainer_state, "step": step}
        (tmp / _STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        (tmp / _MARKER).write_text("ok\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep_last > 0:
            for _old_step, old_path in list_checkpoints(output_dir)[:-keep_last]:
                shutil.rmtree(old_path, ignore_errors=True)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: str | Path) -> dict[str, Any]:
    """Restore model, optimizer, RNG and registered objects from ``path``; return its trainer state."""
    path = Path(path)
    accelerator.load_state(str(path))
    return json.loads((path / _STATE_FILE).read_text())


class StopSignal:
    """Turns SIGTERM/SIGINT into a flag the training loop checks once per step.

    The loop then saves a checkpoint and returns normally. A second SIGINT (Ctrl-C twice) raises
    KeyboardInterrupt at once. Use as a context manager; previous handlers are restored on exit. Outside
    the main thread (where Python allows no signal handlers) it is inert.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = name
        logger.warning("%s received: finishing the current step, saving a checkpoint, then exiting", name)

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
