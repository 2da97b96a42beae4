"""Stage runner of `make demo`: subprocess stages with a log file, wall-clock and CPU time each, heartbeat
progress lines, one abort flag shared by the two branches, and clean stops (no orphan process)."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger("demo")

REPO = Path(__file__).resolve().parents[2]
HEARTBEAT_S = 30.0  # progress line for a running stage every this many seconds
STOP_GRACE_S = 30.0  # SIGTERM -> SIGKILL grace for stopped subprocesses
HEARTBEAT_NOISE = ("HTTP Request:",)  # per-request client logs say nothing about progress


class StageError(RuntimeError):
    """A stage failed; the message names the stage and its log file."""

    def __init__(self, stage: str, log: Path | None, reason: str) -> None:
        self.stage, self.log, self.reason = stage, log, reason
        where = f" (log: {log})" if log is not None else ""
        super().__init__(f"stage '{stage}' failed: {reason}{where}")


class Stages:
    """Runs stages as subprocesses (or in-process callables) with a log file each, a timing each, heartbeat
    progress lines, and one abort flag shared by the two branches. Every started process is tracked so that
    :meth:`stop_all` can end it (and its own children: each runs in a new session = its own process group)."""

    def __init__(self, out: Path, env: dict[str, str]) -> None:
        self.out, self.env = out, env
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}  # user + system CPU of the stage's process and its children
        self.in_process = {"startup"}  # stages whose CPU is this process's own
        self.abort = threading.Event()
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def log_path(self, stage: str) -> Path:
        return self.logs / f"{stage}.log"

    def popen(self, stage: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``argv`` in the repository root with its output appended to the stage log."""
        log = self.log_path(stage)
        with log.open("a", encoding="utf-8") as handle:
            handle.write(f"$ {shlex.join(argv)}\n")
            handle.flush()
            proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env={**self.env, **(env or {})},
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the demo only; the demo stops its children itself
            )
        with self._lock:
            self._procs.add(proc)
        return proc

    def run(self, stage: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Run one subprocess stage to completion; StageError on a non-zero exit or an abort."""
        logger.info("[%s] start: %s", stage, shlex.join(argv))
        started = time.perf_counter()
        proc = self.popen(stage, argv, env)
        next_beat = started + HEARTBEAT_S
        cpu = 0.0
        try:
            while True:
                code, used = _wait(proc, 0.5)
                if code is not None:
                    cpu = cpu if used is None else used
                    break
                cpu = max(cpu, cpu_seconds(proc.pid))  # kept in case the exact figure is lost to a stop
                if self.abort.is_set():
                    code = self.stop(proc)
                    break
                if time.perf_counter() >= next_beat:
                    next_beat += HEARTBEAT_S
                    elapsed = time.perf_counter() - started
                    logger.info("[%s] running %4.0fs | %s", stage, elapsed, last_line(self.log_path(stage)))
        except BaseException:  # Ctrl-C / SIGTERM while waiting: the child must not outlive us
            self.stop(proc)
            raise
        finally:
            with self._lock:
                self._procs.discard(proc)
        self.seconds[stage] = time.perf_counter() - started
        self.cpu_seconds[stage] = cpu
        if code != 0 and self.abort.is_set():
            raise StageError(stage, self.log_path(stage), "stopped because another stage failed")
        if code != 0:
            raise StageError(stage, self.log_path(stage), f"exited with code {code}")
        logger.info("[%s] done in %.1fs (CPU %.1fs)", stage, self.seconds[stage], cpu)

    def call(self, stage: str, fn: Callable[[], Any]) -> Any:
        """Run an in-process stage; its log records go to the stage log too."""
        logger.info("[%s] start", stage)
        self.in_process.add(stage)
        handler = logging.FileHandler(self.log_path(stage), encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            result = fn()
        except Exception as err:
            logging.getLogger(stage).exception("stage failed")
            raise StageError(stage, self.log_path(stage), f"{type(err).__name__}: {err}") from err
        finally:
            root.removeHandler(handler)
            handler.close()
        self.seconds[stage] = time.perf_counter() - started
        self.cpu_seconds[stage] = time.process_time() - cpu_started
        logger.info("[%s] done in %.1fs", stage, self.seconds[stage])
        return result

    def total_cpu_seconds(self) -> float:
        """Every subprocess stage (server included) plus this process (start-up and in-process stages)."""
        children = sum(v for k, v in self.cpu_seconds.items() if k not in self.in_process)
        return children + time.process_time()

    def stop(self, proc: subprocess.Popen) -> int | None:
        """SIGTERM to the process group, SIGKILL after the grace period; returns the exit code."""
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=STOP_GRACE_S)
        with self._lock:
            self._procs.discard(proc)
        return proc.returncode

    def stop_all(self) -> None:
        self.abort.set()
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            self.stop(proc)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process and its finished children (0 once it is gone).

    Sampled while a stage runs; on a shared machine wall-clock says little, CPU time says what the stage costs."""
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system + times.children_user + times.children_system


def _wait(proc: subprocess.Popen, timeout: float) -> tuple[int | None, float | None]:
    """``(exit code, CPU seconds)`` once ``proc`` has ended, ``(None, None)`` if it still runs after ``timeout``.

    Reaps with ``wait4`` to get the child's exact user + system time (its own and its reaped children's);
    the CPU figure is None when another thread reaped it first (``stop`` from the other branch)."""
    deadline = time.monotonic() + timeout
    while proc.returncode is None:
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:  # already reaped through Popen.wait in stop()
            proc.poll()
            return (proc.returncode if proc.returncode is not None else -1), None
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() >= deadline:
            return None, None
        time.sleep(0.05)
    return proc.returncode, None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the child leads its own session, so its group id is its pid
    except ProcessLookupError:
        pass


def last_line(path: Path, tail_bytes: int = 2000) -> str:
    """The last non-empty line of a log, progress bars included (tqdm redraws with carriage returns)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - tail_bytes))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    parts = [p.strip() for p in text.replace("\r", "\n").split("\n") if p.strip()]
    parts = [p for p in parts if not any(noise in p for noise in HEARTBEAT_NOISE)] or parts
    return parts[-1][-160:] if parts else ""


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_health(
    url: str, proc: subprocess.Popen, timeout_s: float, stage: str, log: Path, abort: threading.Event
) -> dict[str, Any]:
    """Poll ``GET url/health`` until 200; StageError when the process exits, the time is up or we abort."""
    import httpx

    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StageError(stage, log, f"server exited with code {proc.returncode} before it was healthy")
        if abort.is_set():
            raise StageError(stage, log, "stopped because another stage failed")
        try:
            response = httpx.get(f"{url}/health", timeout=5.0)
            if response.status_code == 200:
                return response.json()
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as err:
            last = f"{type(err).__name__}"
        time.sleep(0.5)
    raise StageError(stage, log, f"GET {url}/health not 200 after {timeout_s:.0f}s (last: {last})")


def last_lines(path: Path, count: int = 15) -> str:
    """The last ``count`` non-empty lines of a log, indented, for the failure message."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(f"  | {line[-200:]}" for line in lines[-count:])
