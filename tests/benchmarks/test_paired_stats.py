"""The retrieval benchmark's statistics (benchmarks/retrieval/paired.py) and acceptance lines (bench_server.checks):
per-round ratios summarised by their median and min-max, pooled latency percentiles, and the verdicts, on
hand-made rounds whose answers are known."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "retrieval"))

import bench_server  # noqa: E402
import paired  # noqa: E402


def _cell(size: int, concurrency: int, qps: list[float], latency_ms: float = 10.0) -> dict:
    record = paired._record(size, concurrency)
    for value in qps:
        record["rounds"].append(
            {
                "qps": value,
                "p99_ms": latency_ms,
                "errors": 0,
                "statuses": {"200": 10},
                "queries": 100,
                "server_cpu_s": 1.0,
                "load_avg_1m": 1.0,
            }
        )
    record["latencies"] = [latency_ms / 1000] * 99 + [latency_ms * 20 / 1000]  # one slow request in 100
    paired._summarise(record)
    return record


def test_paired_ratio_is_the_median_of_per_round_ratios_with_min_max():
    stat = paired.paired([110.0, 90.0, 105.0], [100.0, 100.0, 100.0])
    assert (stat["median"], stat["min"], stat["max"], stat["rounds"]) == (1.05, 0.9, 1.1, 3)
    assert paired.coverage(6) == pytest.approx(0.96875)


@pytest.mark.parametrize(
    "ratios, expected",
    [
        ([1.02, 1.05, 1.01], "ok; min-max entirely >= 1"),
        ([0.95, 0.97, 0.99], "below; min-max entirely < 1"),
        ([0.98, 1.01, 1.03], "ok on the median; the min-max contains 1: within the noise"),
        ([0.97, 0.99, 1.03], "below on the median; the min-max contains 1: within the noise"),
    ],
)
def test_verdict_reads_the_median_and_says_whether_the_spread_settles_it(ratios, expected):
    assert paired.verdict(paired.paired(ratios, [1.0] * len(ratios)), 1.0) == expected


def test_summary_takes_median_qps_and_pooled_percentiles():
    cell = _cell(1, 32, [300.0, 500.0, 400.0], latency_ms=10.0)
    assert (cell["qps"], cell["qps_min"], cell["qps_max"]) == (400.0, 300.0, 500.0)
    assert cell["p50_ms"] == 10.0 and cell["p99_ms"] > 10.0  # the slow request reaches the pooled p99
    assert cell["queries_per_cpu_s"] == 100.0 and "latencies" not in cell


def test_acceptance_lines_on_known_rounds():
    rounds = 6
    throughput = {
        "ours": [
            _cell(1, 1, [101, 99, 103, 102, 98, 104]),
            _cell(1, 32, [460, 470, 450, 455, 465, 300], latency_ms=60.0),
            _cell(32, 8, [500] * rounds),
        ],
        "naive": [_cell(1, 1, [100] * rounds), _cell(1, 32, [100] * rounds), _cell(32, 8, [480] * rounds)],
    }
    results = {
        "throughput": throughput,
        "design": {"rounds": rounds, "seconds_per_cell": 1.5, "coverage": 0.97},
    }
    lines, stats = bench_server.checks(results)
    assert stats["ours/naive@1"]["median"] == pytest.approx(1.015)
    assert "within the noise" in lines[0] and lines[0].startswith("concurrency 1: ours / naive 1.015x")
    # 100 queries per round on 1.0 server CPU-second: 10 ms per query on both sides
    assert "server CPU per query: ours 10.00 ms, naive 10.00 ms" in lines[0]
    share = stats["share@32:ours"]
    assert share["median"] == pytest.approx(0.915) and share["min"] == pytest.approx(0.6)
    assert "[ok on the median" in lines[1]  # one disturbed round does not decide the median
    assert lines[2].startswith("p99 at concurrency 32, ours: ") and "[ok]" in lines[2]
