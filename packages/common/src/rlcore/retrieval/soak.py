"""Overload soak of the retrieval server (``make soak-retrieval``; loopback only, a few minutes).

    python -m rlcore.retrieval.soak [--index DIR --kind bm25] [--overload-seconds 90] [--out DIR]

Starts ``python -m rlcore.retrieval.server`` as a subprocess on 127.0.0.1 (over ``--index``, or a BM25 index
it builds over generated passages), then:

1. **capacity**: closed-loop load with ``--connections`` keep-alive connections, valid requests only; the
   capacity is the rate of 200 answers.
2. **overload**: open-loop load at ``--factor`` x that capacity (2 by default) for ``--overload-seconds``, a
   ``--malformed-frac`` share of the requests malformed (bad JSON, wrong types, empty or over-long queries,
   topk out of range, too many queries).
3. **cool-down**: all client connections closed, the server left idle, then asked again.

Checks (the exit status is non-zero when one fails): every valid request answered 200, or 503 with
``Retry-After``; every malformed one 4xx; no other status, no transport error; the server's open file
descriptors and threads back to their level before the load; its RSS within 10% of it; the server still
answers. The server's own ``/proc`` counters are sampled every second. Results go to
``<out>/results.json`` and ``<out>/summary.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlcore.logging_utils import setup_logging
from rlcore.runs import runs_root

__all__ = ["SoakConfig", "run_soak", "MALFORMED", "main"]

logger = logging.getLogger(__name__)

# (label, body): each must be answered 4xx by a correct server
MALFORMED: list[tuple[str, bytes]] = [
    ("bad-json", b'{"queries": ["unterminated'),
    ("wrong-top-level", b'["a list", "not an object"]'),
    ("queries-not-list", b'{"queries": "one string"}'),
    ("empty-query", b'{"queries": ["   "]}'),
    ("topk-zero", b'{"queries": ["item 1"], "topk": 0}'),
    ("topk-string", b'{"queries": ["item 1"], "topk": "3"}'),
    ("topk-huge", b'{"queries": ["item 1"], "topk": 100000}'),
    ("scores-not-bool", b'{"queries": ["item 1"], "return_scores": "yes"}'),
    ("query-too-long", json.dumps({"queries": ["x" * 5000]}).encode()),
    ("too-many-queries", json.dumps({"queries": [f"q{i}" for i in range(600)]}).encode()),
]


@dataclass
class SoakConfig:
    """One soak run."""

    index: str = ""  # index folder to serve; empty = a BM25 index over `passages` generated passages
    kind: str = "bm25"  # index kind (flat | hnsw | ivfpq | bm25 | hybrid)
    passages: int = 20000  # generated passages when no index is given
    queries_per_request: int = 4  # queries in each valid request
    connections: int = 64  # client keep-alive connections (capacity phase and overload pool)
    capacity_seconds: float = 20.0  # closed-loop phase measuring capacity
    factor: float = 2.0  # overload rate = factor x capacity
    overload_seconds: float = 90.0  # open-loop overload phase
    malformed_frac: float = 0.2  # share of malformed requests during the overload
    max_connections: int = 256  # most client connections during the overload
    cooldown_seconds: float = 30.0  # longest wait for descriptors and threads to settle afterwards
    rss_tolerance: float = 0.10  # allowed RSS growth over the pre-load level
    # extra server flags; a queue bound the client pool can exceed, so overload reaches shedding
    server_args: list[str] = field(default_factory=lambda: ["--max-queue-queries", "256"])
    seed: int = 0  # request mix
    out: str = ""  # results folder; empty = runs/soak-retrieval/<time>


def _proc_stats(pid: int) -> dict[str, int]:
    """Open descriptors, threads and RSS (KiB) of a process, from /proc."""
    stats = {"fds": len(list(Path(f"/proc/{pid}/fd").iterdir()))}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            stats["threads"] = int(line.split()[1])
        elif line.startswith("VmRSS:"):
            stats["rss_kib"] = int(line.split()[1])
    return stats


_IDLE_REOPEN_S = 2.0  # reopen a keep-alive connection idle longer than this (well under the server's timeout)


class _Closed(Exception):
    """The server closed the connection without answering."""


class _Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol (far cheaper than httpx)."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def post(self, body: bytes) -> tuple[int, dict[str, str]]:
        # a keep-alive connection the server closed while it sat idle (uvicorn: after 5 s) answers nothing at
        # all; like any HTTP client, send the request again once on a fresh connection
        reused = self.writer is not None
        if reused and time.monotonic() - self.last_used > _IDLE_REOPEN_S:
            await self.close()
            reused = False
        try:
            return await self._post(body)
        except (ConnectionError, asyncio.IncompleteReadError, _Closed):
            if not reused:
                raise
            await self.close()
            return await self._post(body)

    async def _post(self, body: bytes) -> tuple[int, dict[str, str]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (
            f"POST /retrieve HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise _Closed("connection closed before any answer")
        status = int(status_line.split()[1])
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        await self.reader.readexactly(int(headers.get("content-length", 0)))
        self.last_used = time.monotonic()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


class _Tally:
    def __init__(self) -> None:
        self.valid: Counter[str] = Counter()
        self.malformed: Counter[str] = Counter()
        self.violations: list[str] = []

    def record(self, malformed: str | None, status: int, headers: dict[str, str]) -> None:
        if malformed is None:
            self.valid[str(status)] += 1
            if status == 503 and "retry-after" not in headers:
                self._violate("valid request answered 503 without Retry-After")
            elif status not in (200, 503):
                self._violate(f"valid request answered {status}")
        else:
            self.malformed[str(status)] += 1
            if not 400 <= status < 500:
                self._violate(f"malformed request {malformed!r} answered {status}")

    def error(self, malformed: str | None, err: BaseException) -> None:
        (self.valid if malformed is None else self.malformed)["transport-error"] += 1
        self._violate(f"transport error on a {'malformed' if malformed else 'valid'} request: {err!r}")

    def _violate(self, message: str) -> None:
        if len(self.violations) < 20:
            self.violations.append(message)


def _valid_body(rng: random.Random, count: int) -> bytes:
    queries = [
        f"item number {rng.randrange(100000)} colour {rng.choice(('red', 'blue'))}" for _ in range(count)
    ]
    return json.dumps({"queries": queries, "topk": 3, "return_scores": True}).encode()


async def _closed_loop(port: int, cfg: SoakConfig, seconds: float, tally: _Tally) -> float:
    """Valid requests back to back on ``cfg.connections`` connections; returns 200 answers per second."""
    rng = random.Random(cfg.seed)
    deadline = time.monotonic() + seconds
    ok = 0

    async def worker() -> None:
        nonlocal ok
        conn = _Connection(port)
        while time.monotonic() < deadline:
            try:
                status, headers = await conn.post(_valid_body(rng, cfg.queries_per_request))
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError, _Closed) as err:
                tally.error(None, err)
                await conn.close()
                continue
            tally.record(None, status, headers)
            ok += status == 200
        await conn.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(cfg.connections)))
    return ok / (time.monotonic() - started)


async def _open_loop(port: int, cfg: SoakConfig, rate: float, tally: _Tally) -> dict[str, float]:
    """Requests sent on a fixed schedule (``rate`` per second) whatever the answers' latency."""
    rng = random.Random(cfg.seed + 1)
    idle: list[_Connection] = []
    opened = 0
    late = 0
    slots = asyncio.Semaphore(cfg.max_connections)
    tasks: set[asyncio.Task] = set()

    async def one(malformed: tuple[str, bytes] | None) -> None:
        nonlocal opened
        async with slots:
            if idle:
                conn = idle.pop()
            else:
                conn, opened = _Connection(port), opened + 1
            label = malformed[0] if malformed else None
            body = malformed[1] if malformed else _valid_body(rng, cfg.queries_per_request)
            try:
                status, headers = await conn.post(body)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError, _Closed) as err:
                tally.error(label, err)
                await conn.close()
                return
            tally.record(label, status, headers)
            idle.append(conn)

    started = time.monotonic()
    total = int(rate * cfg.overload_seconds)
    for index in range(total):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.1:
            late += 1
        malformed = rng.choice(MALFORMED) if rng.random() < cfg.malformed_frac else None
        task = asyncio.create_task(one(malformed))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    for conn in idle:
        await conn.close()
    return {"sent": total, "connections_opened": opened, "sent_late": late}


async def _sampler(pid: int, timeline: list[dict], stop: asyncio.Event, phase: list[str]) -> None:
    started = time.monotonic()
    while not stop.is_set():
        timeline.append({"t": round(time.monotonic() - started, 1), "phase": phase[0], **_proc_stats(pid)})
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass


def _generated_index(folder: Path, passages: int) -> Path:
    from .build import build_index

    corpus = folder / "corpus.jsonl"
    rng = random.Random(0)
    with corpus.open("w", encoding="utf-8") as handle:
        for i in range(passages):
            words = " ".join(rng.choice(("red", "blue", "green", "river", "city", "song")) for _ in range(12))
            handle.write(
                json.dumps({"id": str(i), "contents": f"Item {i}\nItem number {i}: {words}."}) + "\n"
            )
    build_index(corpus, folder / "index", kind="bm25")
    return folder / "index"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    # httpx costs ~0.12 s to import and only this HTTP path needs it
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"retrieval server exited with status {proc.returncode} before it was ready")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"retrieval server on port {port} not ready after {timeout:.0f}s")


async def _settle(pid: int, baseline: dict[str, int], seconds: float) -> dict[str, int]:
    """Wait (up to ``seconds``) for descriptors and threads to come back to the baseline; the last sample."""
    deadline = time.monotonic() + seconds
    while True:
        now = _proc_stats(pid)
        if now["fds"] <= baseline["fds"] and now["threads"] <= baseline["threads"]:
            return now
        if time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.5)


async def _soak(cfg: SoakConfig, port: int, pid: int) -> dict:
    tally, timeline, phase, stop = _Tally(), [], ["warm-up"], asyncio.Event()
    sampler = asyncio.create_task(_sampler(pid, timeline, stop, phase))
    await _closed_loop(port, SoakConfig(**{**asdict(cfg), "connections": 4}), 3.0, _Tally())
    await asyncio.sleep(2.0)
    baseline = _proc_stats(pid)
    phase[0] = "capacity"
    capacity = await _closed_loop(port, cfg, cfg.capacity_seconds, tally)
    rate = cfg.factor * capacity
    phase[0] = "overload"
    started = time.monotonic()
    load = await _open_loop(port, cfg, rate, tally)
    overload_wall = time.monotonic() - started
    phase[0] = "cool-down"
    after = await _settle(pid, baseline, cfg.cooldown_seconds)
    phase[0] = "after"
    final = _Tally()
    conn = _Connection(port)
    for _ in range(10):
        final.record(None, *(await conn.post(_valid_body(random.Random(1), cfg.queries_per_request))))
    await conn.close()
    stop.set()
    await sampler
    checks = {
        "valid answered 200 or 503+Retry-After, malformed 4xx, no transport errors": not tally.violations,
        "no leaked file descriptors": after["fds"] <= baseline["fds"],
        "no leaked threads": after["threads"] <= baseline["threads"],
        f"RSS within {cfg.rss_tolerance:.0%} of the start": after["rss_kib"]
        <= (1 + cfg.rss_tolerance) * baseline["rss_kib"],
        "server still answering": final.valid == Counter({"200": 10}),
    }
    peak = max(timeline, key=lambda s: s["rss_kib"]) if timeline else {}
    return {
        "config": asdict(cfg),
        "capacity_requests_per_s": round(capacity, 1),
        "overload_rate_requests_per_s": round(rate, 1),
        "overload_wall_s": round(overload_wall, 1),
        "load": load,
        "valid": dict(tally.valid),
        "malformed": dict(tally.malformed),
        "violations": tally.violations,
        "server_before": baseline,
        "server_after": after,
        "server_peak_rss_kib": peak.get("rss_kib"),
        "server_peak_fds": max((s["fds"] for s in timeline), default=None),
        "server_peak_threads": max((s["threads"] for s in timeline), default=None),
        "checks": checks,
        "passed": all(checks.values()),
        "timeline": timeline,
    }


def run_soak(cfg: SoakConfig) -> dict:
    """Start a server, soak it, stop it; the results (``passed`` says whether every check held)."""
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        index = Path(cfg.index) if cfg.index else _generated_index(Path(scratch), cfg.passages)
        port = _free_port()
        command = [
            sys.executable,
            "-m",
            "rlcore.retrieval.server",
            "--index",
            str(index),
            "--kind",
            cfg.kind,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *cfg.server_args,
        ]
        log = Path(scratch) / "server.log"
        with log.open("wb") as handle:
            proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        try:
            _wait_ready(port, proc)
            results = asyncio.run(_soak(cfg, port, proc.pid))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        results["server_exit_status"] = proc.returncode
        results["server_log_tail"] = log.read_text(errors="replace")[-2000:]
    return results


def summary_markdown(results: dict) -> str:
    before, after = results["server_before"], results["server_after"]
    lines = [
        f"capacity {results['capacity_requests_per_s']} req/s (closed loop); overload "
        f"{results['overload_rate_requests_per_s']} req/s for {results['overload_wall_s']} s "
        f"({results['load']['sent']} requests, {results['load']['connections_opened']} connections)",
        f"valid answers: {results['valid']}; malformed answers: {results['malformed']}",
        f"server fds {before['fds']} -> peak {results['server_peak_fds']} -> {after['fds']}; threads "
        f"{before['threads']} -> peak {results['server_peak_threads']} -> {after['threads']}; RSS "
        f"{before['rss_kib'] / 1024:.0f} -> peak {results['server_peak_rss_kib'] / 1024:.0f} -> "
        f"{after['rss_kib'] / 1024:.0f} MiB",
        "",
        "| check | result |",
        "|---|---|",
        *(f"| {name} | {'pass' if ok else 'FAIL'} |" for name, ok in results["checks"].items()),
    ]
    if results["violations"]:
        lines += ["", "violations (first 20):", *(f"- {v}" for v in results["violations"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    defaults = SoakConfig()
    parser = argparse.ArgumentParser(
        prog="python -m rlcore.retrieval.soak", description=__doc__.splitlines()[0]
    )
    for name, value in asdict(defaults).items():
        if name == "server_args":
            continue
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=type(value), default=value, help=f"default {value}"
        )
    parser.add_argument("--server-arg", action="append", default=None, help="extra server flag (repeatable)")
    args = vars(parser.parse_args(argv))
    extra = args.pop("server_arg")
    cfg = SoakConfig(**args, **({"server_args": extra} if extra is not None else {}))
    if not cfg.out:
        cfg.out = str(runs_root() / "soak-retrieval" / time.strftime("%Y%m%d-%H%M%S"))
    results = run_soak(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = summary_markdown(results)
    (out / "summary.md").write_text(text)
    print(text, end="")
    print(f"results: {out / 'results.json'}")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
