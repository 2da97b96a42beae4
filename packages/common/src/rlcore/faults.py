"""Fault injection for the kill-point tests: ``RLCORE_FAULT_POINT=<name>:<step>`` makes the process SIGKILL itself
when it reaches point ``<name>`` at step ``<step>`` (no cleanup, no ``finally``, as a pre-emption or the OOM killer
would). Unset, :func:`fault_point` is one comparison against ``None``.

Points: ``rollout`` (a step's rollouts generated, nothing scored or updated), ``update`` (after the first optimizer
step of a step, the rest of its update not done), ``checkpoint.between_files`` (model/optimizer files written,
trainer state and ``COMPLETE`` not yet), ``checkpoint.before_rename`` (temporary folder complete, not renamed),
``sft.update`` / ``sft.checkpoint`` / ``sft.marker`` (the SFT engine, :mod:`rlcore.trainer.sft`), ``eval.cache`` (between two cached evaluation records).
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["FAULT_ENV", "fault_point"]

FAULT_ENV = "RLCORE_FAULT_POINT"
_TARGET = os.environ.get(FAULT_ENV) or None


def fault_point(name: str, step: int) -> None:
    """SIGKILL this process if ``RLCORE_FAULT_POINT`` names ``name:step``."""
    if _TARGET is not None and _TARGET == f"{name}:{step}":
        sys.stderr.write(f"{FAULT_ENV}={_TARGET}: killing process {os.getpid()} with SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
