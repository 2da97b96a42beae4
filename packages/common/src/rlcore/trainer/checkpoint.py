"""Atomic checkpoints, torn-checkpoint detection, ``resume=auto`` and save-on-signal.

Layout under ``<output_dir>/checkpoints/``::

    step-00000012/            one complete checkpoint (only ever appears by an atomic rename)
        model / optimizer files written by ``accelerate.Accelerator.save_state`` (DeepSpeed: its own
        sharded layout)
        rng_state_<rank>.json  each rank's Python / NumPy / torch (CPU, CUDA) random states and accelerate's
                               step counter, in place of accelerate's pickled ``random_states_<rank>.pkl``
        trainer_state.json     step, data position, MLflow run id, counters
        stateful.json          ``state_dict()`` of the LR scheduler and the registered stateful objects (JSON)
        COMPLETE               written last, before the rename: a manifest of every file and its size
    .tmp-step-00000012/       in progress; removed on the next save if a run died while writing it

Every rank writes into the same temporary folder (a shared file system under multi-node, as DeepSpeed
requires); rank 0 renames it once all ranks are done. Resuming checks the newest checkpoint against its
manifest; a torn one (a file missing or cut short, a write that never reached its rename) is skipped with a
warning naming it and the complete one used instead. Nothing of ours is pickled: our state and the RNG states
are JSON, and what accelerate stores (model, optimizer) it loads with ``weights_only=True``. A checkpoint written
before ``rng_state_<rank>.json`` existed still holds accelerate's RNG pickle, which accelerate reads with
``weights_only=True`` (NumPy's array types allow-listed).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from rlcore.faults import fault_point
from rlcore.seeding import get_rng_state, rng_state_from_json, rng_state_to_json, set_rng_state

__all__ = [
    "checkpoint_root",
    "list_checkpoints",
    "latest_checkpoint",
    "checkpoint_problem",
    "resolve_resume",
    "save_checkpoint",
    "load_checkpoint",
    "write_manifest",
    "StopSignal",
]

logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d{8})$")
_TMP_DIR = re.compile(r"^\.tmp-step-(\d{8})$")
_MARKER = "COMPLETE"
_STATE_FILE = "trainer_state.json"
_STATEFUL_FILE = "stateful.json"
_LEGACY_CUSTOM = "custom_checkpoint_{}.pkl"  # accelerate's pickles of registered objects (older checkpoints)
_RNG_FILE = "rng_state_{}.json"
_ACCELERATE_RNG = "random_states_{}.pkl"  # accelerate's pickled RNG states: replaced by _RNG_FILE on save


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a usable checkpoint (no marker, a file missing or of the wrong size), or None.

    Checkpoints written before manifests existed (marker text ``ok``) are trusted as they are."""
    path = Path(path)
    marker = path / _MARKER
    if not marker.is_file():
        return f"no {_MARKER} marker"
    try:
        manifest = json.loads(marker.read_text())
    except ValueError:
        return None  # an older marker without a manifest
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return f"{_MARKER} is not a manifest"
    for name, size in sorted(manifest["files"].items()):
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, the manifest says {size}"
    return None


def _candidates(output_dir: str | Path) -> tuple[list[tuple[int, Path]], list[tuple[int, Path, str]]]:
    """(complete checkpoints, torn ones with the reason), each oldest first."""
    root = checkpoint_root(output_dir)
    complete: list[tuple[int, Path]] = []
    torn: list[tuple[int, Path, str]] = []
    if not root.is_dir():
        return complete, torn
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match:
            problem = checkpoint_problem(child)
            if problem is None:
                complete.append((int(match.group(1)), child))
            else:
                torn.append((int(match.group(1)), child, problem))
        elif match := _TMP_DIR.match(child.name):
            torn.append((int(match.group(1)), child, "its write was interrupted before the rename"))
    return sorted(complete), sorted(torn)


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (marker present, every file as the manifest says) as ``(step, path)``, oldest first."""
    return _candidates(output_dir)[0]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint. Newer torn ones are skipped, each with a warning naming it and the
    checkpoint used instead."""
    complete, torn = _candidates(output_dir)
    chosen = complete[-1] if complete else None
    for step, path, problem in torn:
        if chosen is None or step > chosen[0]:
            instead = chosen[1] if chosen else "nothing (training starts from step 0)"
            logger.warning("checkpoint %s is torn (%s); resuming from %s instead", path, problem, instead)
    return chosen[1] if chosen else None


def resolve_resume(resume: str, output_dir: str | Path) -> Path | None:
    """Which checkpoint to start from: ``"never"`` -> None, ``"auto"`` -> newest complete one (or None),
    anything else -> that folder, which must be a complete checkpoint."""
    if resume == "never":
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    path = Path(resume).expanduser()
    problem = checkpoint_problem(path)
    if problem is not None:
        raise FileNotFoundError(
            f"train.resume={resume!r}: not a complete checkpoint folder ({path}: {problem}); "
            f"use 'auto', 'never' or a path like <output_dir>/checkpoints/step-00000012"
        )
    return path


def _manifest(folder: Path) -> str:
    files = {str(f.relative_to(folder)): f.stat().st_size for f in sorted(folder.rglob("*")) if f.is_file()}
    return json.dumps({"files": files}, indent=1, sort_keys=True) + "\n"


def write_manifest(folder: str | Path) -> None:
    """Write ``folder``'s ``COMPLETE`` marker: the manifest of every file in it and its size (write it last)."""
    folder = Path(folder)
    (folder / _MARKER).write_text(_manifest(folder))


def _stateful_json(stateful: Mapping[str, Any]) -> str:
    states = {}
    for name, obj in stateful.items():
        states[name] = obj.state_dict()
        try:
            json.dumps(states[name])
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"stateful object {name!r} ({type(obj).__name__}): its state_dict() must be JSON "
                f"(numbers, strings, lists, dicts) to be checkpointed without pickle: {err}"
            ) from err
    return json.dumps(states, indent=1, sort_keys=True) + "\n"


def save_checkpoint(
    accelerator: Any,
    output_dir: str | Path,
    step: int,
    trainer_state: dict[str, Any],
    keep_last: int = 2,
    stateful: Mapping[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically on all ranks; keep the newest ``keep_last`` (0 keeps all).

    ``stateful`` objects (``state_dict``/``load_state_dict`` returning JSON) go to ``stateful.json``.
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
    _replace_rng_pickle(accelerator, tmp)
    accelerator.wait_for_everyone()  # every rank's files (RNG states, DeepSpeed shards) are in before the rename
    if accelerator.is_main_process:
        fault_point("checkpoint.between_files", step)
        state = {**trainer_state, "step": step}
        (tmp / _STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        (tmp / _STATEFUL_FILE).write_text(_stateful_json(stateful or {}))
        (tmp / _MARKER).write_text(_manifest(tmp))
        fault_point("checkpoint.before_rename", step)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep_last > 0:
            for _old_step, old_path in list_checkpoints(output_dir)[:-keep_last]:
                shutil.rmtree(old_path, ignore_errors=True)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def _replace_rng_pickle(accelerator: Any, folder: Path) -> None:
    """This rank's RNG states as JSON, and accelerate's pickle of the same states removed. Nothing random
    happens between ``save_state`` and here, so both hold the same streams."""
    rank = accelerator.process_index
    data = {"accelerate_step": int(accelerator.step), **rng_state_to_json(get_rng_state())}
    (folder / _RNG_FILE.format(rank)).write_text(json.dumps(data) + "\n")
    (folder / _ACCELERATE_RNG.format(rank)).unlink(missing_ok=True)


def _restore_rng(accelerator: Any, path: Path) -> None:
    """This rank's RNG states from ``rng_state_<rank>.json``. Older checkpoints had accelerate's pickle, which
    ``load_state`` has already read; a checkpoint with neither (saved by fewer ranks) gets a warning."""
    rank = accelerator.process_index
    file = path / _RNG_FILE.format(rank)
    if file.is_file():
        data = json.loads(file.read_text())
        set_rng_state(rng_state_from_json(data))
        accelerator.step = int(data["accelerate_step"])
    elif not (path / _ACCELERATE_RNG.format(rank)).is_file():
        logger.warning(
            "%s: no random states for rank %d (neither %s nor %s); the random streams start afresh",
            path,
            rank,
            file.name,
            _ACCELERATE_RNG.format(rank),
        )


def _load_state_without(accelerator: Any, path: Path, skip: set[str]) -> None:
    """``accelerator.load_state`` on a view of ``path`` without the files in ``skip`` (accelerate refuses a
    folder whose pickled custom states outnumber the registered objects; we read those ourselves)."""
    with tempfile.TemporaryDirectory(prefix="checkpoint-view-", dir=path.parent) as view:
        for entry in path.iterdir():
            if entry.name not in skip:
                os.symlink(entry.resolve(), Path(view) / entry.name)
        accelerator.load_state(view)


def load_checkpoint(
    accelerator: Any, path: str | Path, stateful: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Restore model, optimizer, RNG and ``stateful`` objects from ``path``; return its trainer state.

    A checkpoint from before ``stateful.json`` holds accelerate's pickles ``custom_checkpoint_<i>.pkl``, one per
    object in the order they were registered (the LR scheduler first, then the stateful objects by name): pass
    ``stateful`` in that order and they are read with ``weights_only=True`` (plain containers only), never
    unpickled freely.
    """
    path = Path(path)
    stateful = stateful or {}
    legacy = sorted(path.glob(_LEGACY_CUSTOM.format("*")))
    if legacy and not accelerator._custom_objects:
        _load_state_without(accelerator, path, {p.name for p in legacy})
    else:
        accelerator.load_state(str(path))
    _restore_rng(accelerator, path)
    if (path / _STATEFUL_FILE).is_file():
        states = json.loads((path / _STATEFUL_FILE).read_text())
        missing = sorted(set(stateful) - set(states))
        if missing:
            raise KeyError(f"{path / _STATEFUL_FILE}: no saved state for {missing} (saved: {sorted(states)})")
        for name, obj in stateful.items():
            obj.load_state_dict(states[name])
    else:
        for index, (name, obj) in enumerate(stateful.items()):
            legacy = path / _LEGACY_CUSTOM.format(index)
            if not legacy.is_file():
                raise FileNotFoundError(
                    f"{path}: neither {_STATEFUL_FILE} nor {legacy.name} (the state of {name!r}); this "
                    f"checkpoint cannot be resumed, start over with train.resume=never"
                )
            try:
                obj.load_state_dict(torch.load(legacy, map_location="cpu", weights_only=True))
            except Exception as err:
                raise ValueError(
                    f"{legacy}: the pickled state of {name!r} in this older checkpoint is not plain data "
                    f"and is not unpickled ({err}); start over with train.resume=never"
                ) from err
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
