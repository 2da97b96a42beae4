"""Run the infra/ launchers in a clean environment and parse what their --dry-run prints."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
# A recognisable interpreter name, so expected command lines do not depend on where the venv lives.
FAKE_PYTHON = "python-under-test"


@dataclass
class Transcript:
    """What a launcher printed: ``commands`` are the shell-split command lines, ``notes`` the ``# ...`` lines."""

    returncode: int
    stdout: str
    stderr: str
    commands: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def command_with(self, *tokens: str) -> list[str]:
        """The one command line that contains every token in ``tokens``."""
        found = [cmd for cmd in self.commands if all(t in cmd for t in tokens)]
        assert len(found) == 1, f"expected one command with {tokens}, got {found}\nstdout:\n{self.stdout}"
        return found[0]


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A minimal environment: nothing from SLURM, CUDA or the developer's shell leaks into the launchers."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LOG_DIR": str(tmp_path / "logs"),
        "RUNS_DIR": str(tmp_path / "runs"),
        "PYTHON": FAKE_PYTHON,
        "CUDA_VISIBLE_DEVICES": "",
    }
    env.update(extra)
    return env


def run_script(
    script: str | Path,
    *args: str,
    env: dict[str, str],
    cwd: Path | None = None,
    timeout: float = 60,
    parse: bool = True,
    new_session: bool = False,
) -> Transcript:
    """Run an infra script; with ``parse``, split its stdout into command lines and ``#`` notes."""
    path = Path(script) if Path(script).is_absolute() else INFRA / script
    proc = subprocess.run(
        ["bash", str(path), *args],
        env=env,
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=new_session,
    )
    transcript = Transcript(proc.returncode, proc.stdout, proc.stderr)
    for line in proc.stdout.splitlines() if parse else ():
        if line.startswith("#"):
            transcript.notes.append(line[1:].strip())
        elif line.strip():
            transcript.commands.append(shlex.split(line))
    return transcript


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
