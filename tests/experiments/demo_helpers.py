"""Shared helpers of the `make demo` tests (imported by name: never `from conftest import ...`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load_demo_modules() -> tuple[ModuleType, ModuleType, ModuleType]:
    """``experiments.demo.{run_demo, stages, report}``, imported with the repository root on sys.path (as
    ``python -m experiments.demo.run_demo`` does from the root)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from experiments.demo import report, run_demo, stages

    return run_demo, stages, report


def load_checkpoints_module() -> ModuleType:
    """``experiments.demo.checkpoints``, imported as load_demo_modules does."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from experiments.demo import checkpoints

    return checkpoints


def demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "experiments.demo.run_demo", *args]


def demo_env() -> dict[str, str]:
    """The test session's isolated RUNS_DIR / MLFLOW_TRACKING_URI (tests/conftest.py), offline."""
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def start_demo(args: list[str], log: Path) -> subprocess.Popen:
    handle = log.open("w", encoding="utf-8")
    return subprocess.Popen(
        demo_command(*args), cwd=REPO, env=demo_env(), stdout=handle, stderr=subprocess.STDOUT, text=True
    )


def mlflow_runs(experiment: str = "demo") -> dict[str, object]:
    """run_id -> mlflow Run of ``experiment`` in the session's tracking store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    return {run.info.run_id: run for run in client.search_runs([found.experiment_id], max_results=1000)}
