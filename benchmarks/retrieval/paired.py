"""Interleaved rounds of closed-loop cells and the paired statistics the retrieval benchmark reports.

Why this design (chosen before measuring, kept whatever it shows): on a small shared machine one server's q/s
in one cell moves by up to ±15% from one repeat to the next (other processes, frequency, cache), which is more
than the differences the benchmark has to decide (ours against the naive server at one request in flight).
So every cell runs on every server once per *round*, the servers in alternating order, and the rounds repeat
the whole sweep. Servers measured back to back within a round see the same background, so the ratio of their
q/s within a round cancels the slow drift that moves both; what remains varies from round to round.

- **Ratio of two servers in a cell**: the median over rounds of the per-round ratio. Its spread is the
  min–max over rounds: with ``R`` independent rounds the min–max of the per-round ratios contains their
  population median with probability ``1 - 2^(1-R)`` (96.9% at 6 rounds), whatever the noise's shape. The
  interval says whether a difference is resolved (it excludes 1.0) or within noise (it contains 1.0).
- **Share of the batched ceiling** (single-query requests at concurrency 32 against 32-query requests at
  concurrency 8, same server): the median over rounds of the per-round share, with its min–max.
- **q/s of a server in a cell**: the median over rounds; **p50 / p99**: over every request of every round
  (pooled), so p99 counts the worst rounds too.
"""

from __future__ import annotations

import asyncio
import os
from statistics import median

import numpy as np
from loadgen import closed_loop


def run_rounds(servers: dict, cells: list[tuple[int, int, float]], bodies: dict, rounds: int) -> dict:
    """``cells``: ``(queries per request, concurrency, seconds)``; ``bodies[size]``: the request bodies.
    Returns ``{name: [cell record, ...]}`` in the order of ``cells``, each with its per-round rows."""
    records: dict = {name: [_record(size, conc) for size, conc, _ in cells] for name in servers}
    for server in servers.values():  # warm every server once: first requests pay lazy set-up
        for size in sorted(bodies):
            asyncio.run(closed_loop("127.0.0.1", server.port, bodies[size], 4, 1.0))
    for round_ in range(rounds):
        order = list(servers) if round_ % 2 == 0 else list(servers)[::-1]
        for i, (size, concurrency, seconds) in enumerate(cells):
            for name in order:
                server = servers[name]
                cpu_before = server.cpu_seconds()
                run = asyncio.run(closed_loop("127.0.0.1", server.port, bodies[size], concurrency, seconds))
                cpu = server.cpu_seconds() - cpu_before
                summary = run.summary()
                record = records[name][i]
                record["rounds"].append(
                    {
                        "qps": summary["qps"],
                        "p99_ms": summary["p99_ms"],
                        "errors": summary["errors"],
                        "statuses": summary["statuses"],
                        "queries": run.queries,
                        "server_cpu_s": round(cpu, 3),
                        "load_avg_1m": round(os.getloadavg()[0], 2),
                    }
                )
                record["latencies"].extend(run.latencies)
                print(
                    f"  round {round_ + 1}/{rounds} {name:>10} size {size:>2} conc {concurrency:>2}: "
                    f"{summary['qps']:>7} q/s  p99 {summary['p99_ms']:>7} ms  errors {summary['errors']} "
                    f"statuses {summary['statuses']}  load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    for name in records:
        for record in records[name]:
            _summarise(record)
    return records


def _record(size: int, concurrency: int) -> dict:
    return {"queries_per_request": size, "concurrency": concurrency, "rounds": [], "latencies": []}


def _summarise(record: dict) -> None:
    """Median q/s over rounds, pooled latency percentiles, CPU per query; drops the raw latencies."""
    rows = record["rounds"]
    latencies = np.array(record.pop("latencies") or [np.nan]) * 1000
    queries = sum(r["queries"] for r in rows)
    cpu = sum(r["server_cpu_s"] for r in rows)
    record.update(
        qps=round(median(r["qps"] for r in rows), 1),
        qps_min=min(r["qps"] for r in rows),
        qps_max=max(r["qps"] for r in rows),
        p50_ms=round(float(np.percentile(latencies, 50)), 1),
        p99_ms=round(float(np.percentile(latencies, 99)), 1),
        errors=sum(r["errors"] for r in rows),
        queries_per_cpu_s=round(queries / cpu, 1) if cpu > 0 else None,
        load_avg_1m=round(median(r["load_avg_1m"] for r in rows), 1),
    )


def paired(first: list[float], second: list[float]) -> dict:
    """Per-round ratios ``first[r] / second[r]``: their median and min–max (see the module docstring)."""
    ratios = [a / b if b else float("inf") for a, b in zip(first, second)]
    return {
        "median": round(median(ratios), 3),
        "min": round(min(ratios), 3),
        "max": round(max(ratios), 3),
        "rounds": len(ratios),
        "per_round": [round(r, 3) for r in ratios],
    }


def coverage(rounds: int) -> float:
    """Probability that the min–max of ``rounds`` independent ratios contains their median."""
    return 1 - 2 ** (1 - rounds)


def qps_per_round(record: dict) -> list[float]:
    return [r["qps"] for r in record["rounds"]]


def verdict(stat: dict, threshold: float) -> str:
    """``ok`` / ``below`` on the median, and whether the min–max over rounds settles it."""
    if stat["min"] >= threshold:
        return f"ok; min-max entirely >= {threshold:g}"
    if stat["max"] < threshold:
        return f"below; min-max entirely < {threshold:g}"
    side = "ok" if stat["median"] >= threshold else "below"
    return f"{side} on the median; the min-max contains {threshold:g}: within the noise"
