"""Fixtures for the infra/ launcher tests (helpers live in infra_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from infra_helpers import Transcript, base_env, run_script


@pytest.fixture
def dry_run(tmp_path: Path):
    """``dry_run("launch_train.sh", "--", "a=1", RECIPE="m")``: run a launcher with --dry-run; must exit 0."""

    def _run(script: str, *args: str, **env: str) -> Transcript:
        transcript = run_script(script, "--dry-run", *args, env=base_env(tmp_path, **env))
        assert transcript.returncode == 0, f"{script} failed:\n{transcript.stderr}"
        return transcript

    return _run


@pytest.fixture
def fails(tmp_path: Path):
    """``fails("launch_train.sh", LAUNCHER="x")``: the launcher must exit non-zero; returns its stderr."""

    def _run(script: str, *args: str, dry: bool = True, **env: str) -> str:
        flags = ("--dry-run",) if dry else ()
        transcript = run_script(script, *flags, *args, env=base_env(tmp_path, **env))
        assert transcript.returncode != 0, f"{script} should have failed; stdout:\n{transcript.stdout}"
        return transcript.stderr

    return _run
