"""Minimal HTTP/1.1 load generator on raw asyncio streams (keep-alive, one connection per worker).

httpx does much more Python work per request than a bare keep-alive stream; on a 2-core box a heavy load
generator steals the CPU it is measuring, so the benchmark uses raw streams.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import numpy as np


class Connection:
    """One keep-alive connection; ``post`` returns ``(status, headers, body)``; reconnects when closed."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        for attempt in range(2):
            if self.writer is None:
                await self._connect()
            try:
                head = (
                    f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                self.writer.write(head + body)
                raw = await self.reader.readuntil(b"\r\n\r\n")
                lines = raw.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)
                }
                payload = await self.reader.readexactly(int(headers.get("content-length", 0)))
                if headers.get("connection", "").lower() == "close":
                    await self.close()
                return status, headers, payload
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except ConnectionError:
                pass
        self.reader = self.writer = None


@dataclass
class RunResult:
    requests: int = 0
    queries: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # of 200 answers, seconds
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0  # transport errors and timeouts
    send_seconds: float = 0.0  # open loop: time taken to send every request (> duration = generator lagged)

    def summary(self) -> dict:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.array([np.nan])
        ok = self.statuses.get(200, 0)
        return {
            "requests": self.requests,
            "ok": ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "rps": round(ok / self.seconds, 1) if self.seconds else 0.0,
            "qps": round(self.queries / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "max_ms": round(float(lat.max()), 1),
            **({"sent_rps": round(self.requests / self.send_seconds, 1)} if self.send_seconds else {}),
        }


def make_body(queries: list[str], topk: int, return_scores: bool = True) -> bytes:
    return json.dumps({"queries": queries, "topk": topk, "return_scores": return_scores}).encode()


async def closed_loop(
    host: str,
    port: int,
    bodies: list[tuple[bytes, int]],
    concurrency: int,
    duration: float,
    max_requests: int | None = None,
    timeout: float = 60.0,
) -> RunResult:
    """``concurrency`` workers send back-to-back requests (cycling through ``bodies``: (body, num_queries))
    for ``duration`` seconds or until ``max_requests`` have been sent."""
    result = RunResult()
    counter = iter(range(10**12))
    started = time.perf_counter()
    deadline = started + duration

    async def worker() -> None:
        connection = Connection(host, port)
        try:
            while time.perf_counter() < deadline:
                i = next(counter)
                if max_requests is not None and i >= max_requests:
                    break
                body, num_queries = bodies[i % len(bodies)]
                sent = time.perf_counter()
                result.requests += 1
                try:
                    status, _, _ = await asyncio.wait_for(connection.post("/retrieve", body), timeout)
                except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
                    result.errors += 1
                    await connection.close()
                    continue
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status == 200:
                    result.latencies.append(time.perf_counter() - sent)
                    result.queries += num_queries
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


async def open_loop(
    host: str,
    port: int,
    bodies: list[tuple[bytes, int]],
    rate: float,
    duration: float,
    timeout: float = 30.0,
    max_connections: int = 512,
) -> RunResult:
    """Send requests at a fixed ``rate`` per second regardless of answers (arrivals do not wait for the
    server, as with many independent rollout workers). Latency counts from the scheduled send time."""
    result = RunResult()
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(max_connections):
        pool.put_nowait(Connection(host, port))
    started = time.perf_counter()
    total = int(rate * duration)
    tasks = []

    async def one(i: int, scheduled: float) -> None:
        body, num_queries = bodies[i % len(bodies)]
        connection = await pool.get()
        try:
            status, _, _ = await asyncio.wait_for(connection.post("/retrieve", body), timeout)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status == 200:
                result.latencies.append(time.perf_counter() - scheduled)
                result.queries += num_queries
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            result.errors += 1
            await connection.close()
        finally:
            pool.put_nowait(connection)

    for i in range(total):
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        result.requests += 1
        tasks.append(asyncio.create_task(one(i, scheduled)))
    result.send_seconds = time.perf_counter() - started
    await asyncio.gather(*tasks)
    result.seconds = duration
    while not pool.empty():
        await pool.get_nowait().close()
    return result
