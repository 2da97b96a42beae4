"""Retrieval benchmark: our micro-batching server vs a naive one (one request = one encode + one search).

    make bench-retrieval                # = python benchmarks/retrieval/bench_server.py
    python benchmarks/retrieval/bench_server.py --duration 8 --out runs/bench-retrieval

Steps (wiki corpus, 10,033 passages; MiniLM + FAISS Flat unless told otherwise):
1. build (or reuse) the flat/hnsw/ivfpq/bm25 indexes under .cache/retrieval/wiki-minilm, each in its own
   process, and report build time and peak RSS from the index manifest;
2. recall@3/@10 of HNSW and IVF-PQ against Flat on 1,000 real queries (article descriptions);
3. both servers started by the same command (``python -m rlcore.retrieval.server --mode batched|naive``);
   closed-loop QPS and p50/p99 at concurrency 1/8/32/64 with 1-query and 32-query requests, each cell run
   on one server then the other;
4. identical-results check (same 1,000 queries, topk 10, both servers);
5. 10,000 valid single-query requests at concurrency 32, counting every non-200 answer or transport error;
6. overload: open-loop arrivals at 4x the capacity measured in step 5, for our server (restarted with a
   small queue bound, ``--max-queue-queries``) and for the naive one.
Results go to OUT/<time>/results.json and results.md, and the tables are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from loadgen import closed_loop, make_body, open_loop

from rlcore.retrieval import RetrievalClient, load_retriever
from rlcore.retrieval.corpora import wiki_records
from rlcore.retrieval.corpus import write_jsonl
from rlcore.retrieval.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_index(corpus: Path, out: Path, encoder: str, kinds: list[str]) -> dict:
    """Build missing kinds in subprocesses (so each reports its own peak RSS); return the manifest."""
    if not corpus.exists():
        write_jsonl(((r["id"], f"{r['title']}\n{r['extract']}") for r in wiki_records()), corpus)
    for kind in kinds:
        if kind not in read_manifest(out)["indexes"]:
            print(f"building {kind} index in {out} ...", flush=True)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "rlcore.retrieval.build",
                    "--corpus",
                    str(corpus),
                    "--out",
                    str(out),
                    "--kind",
                    kind,
                    "--encoder",
                    encoder,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
    return read_manifest(out)


def real_queries(num: int, seed: int = 0) -> list[str]:
    """Article descriptions ("1968 film by Stanley Kubrick") as natural short queries, deduplicated."""
    descriptions = sorted({r["description"] for r in wiki_records() if len(r["description"]) > 8})
    rng = np.random.default_rng(seed)
    return [descriptions[i] for i in rng.permutation(len(descriptions))[:num]]


def recall_table(index: Path, queries: list[str]) -> dict:
    flat = load_retriever(index, kind="flat", device="cpu")
    vectors = flat.searcher.encoder.encode_queries(queries)
    _, exact = flat.searcher.index.search(vectors, 10)
    out = {}
    for kind in ("hnsw", "ivfpq"):
        approx_retriever = load_retriever(index, kind=kind, encoder=flat.searcher.encoder)
        started = time.perf_counter()
        _, approx = approx_retriever.searcher.index.search(vectors, 10)
        seconds = time.perf_counter() - started
        out[kind] = {
            f"recall@{k}": round(
                float(np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact)])), 4
            )
            for k in (3, 10)
        }
        out[kind]["search_qps"] = round(len(queries) / seconds)
        out[kind]["params"] = {k: v for k, v in approx_retriever.searcher.index.params.__dict__.items() if v}
    return out


class Server:
    """``python -m rlcore.retrieval.server`` in a subprocess; the same command for both modes."""

    def __init__(self, index: Path, mode: str, extra: list[str]):
        self.port = free_port()
        self.command = [
            sys.executable,
            "-m",
            "rlcore.retrieval.server",
            "--index",
            str(index),
            "--port",
            str(self.port),
            "--mode",
            mode,
            "--device",
            "cpu",
            "--log-level",
            "warning",
            *extra,
        ]
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with RetrievalClient(f"http://127.0.0.1:{self.port}") as client:
            client.wait_until_ready(timeout=300)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process (all its threads) so far."""
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()  # SIGTERM: graceful shutdown
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def throughput(
    port: int, queries: list[str], duration: float, concurrencies: list[int], sizes: list[int]
) -> list[dict]:
    rows = []
    for size in sizes:
        bodies = [
            (make_body(queries[i : i + size], 3), size) for i in range(0, len(queries) - size + 1, size)
        ]
        asyncio.run(closed_loop("127.0.0.1", port, bodies, 4, 1.5))  # warm-up
        for concurrency in concurrencies:
            result = asyncio.run(closed_loop("127.0.0.1", port, bodies, concurrency, duration))
            rows.append({"queries_per_request": size, "concurrency": concurrency, **result.summary()})
            print(
                f"  size {size:>2} conc {concurrency:>2}: {rows[-1]['qps']:>7} q/s  p50 {rows[-1]['p50_ms']:>7} ms  "
                f"p99 {rows[-1]['p99_ms']:>7} ms  errors {rows[-1]['errors']} statuses {rows[-1]['statuses']}",
                flush=True,
            )
    return rows


def fetch_all(port: int, queries: list[str], concurrency: int = 16) -> list:
    """topk-10 results with scores for every query, sent as 1-query requests with ``concurrency`` in flight."""
    from rlcore.retrieval import AsyncRetrievalClient

    async def run():
        async with AsyncRetrievalClient(
            f"http://127.0.0.1:{port}", batch_size=1, max_concurrency=concurrency
        ) as client:
            return await client.search(queries, 10)

    return asyncio.run(run())


def compare(a: list, b: list) -> dict:
    same_ids = sum([p.id for p in x] == [p.id for p in y] for x, y in zip(a, b))
    diff = max(abs(p.score - q.score) for x, y in zip(a, b) for p, q in zip(x, y))
    return {"queries": len(a), "identical_rankings": same_ids, "max_score_diff": float(diff)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", default=str(ROOT / ".cache/retrieval/wiki-minilm"))
    parser.add_argument("--corpus", default=str(ROOT / ".cache/retrieval/wiki.jsonl"))
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per throughput cell")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--sizes", default="1,32", help="queries per request")
    parser.add_argument("--overload-seconds", type=float, default=10.0)
    parser.add_argument("--overload-factor", type=float, default=4.0)
    parser.add_argument(
        "--max-queue-queries", type=int, default=256, help="our server's queue bound in the run"
    )
    parser.add_argument(
        "--max-queue-wait-ms", type=float, default=1000.0, help="our server's queue-wait shedding in the run"
    )
    parser.add_argument("--valid-requests", type=int, default=10_000)
    parser.add_argument("--out", default=str(ROOT / "runs/bench-retrieval"))
    args = parser.parse_args()
    index, concurrencies = Path(args.index), [int(c) for c in args.concurrency.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict = {
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()}
    }
    try:
        results["git_sha"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        results["git_sha"] = None

    manifest = ensure_index(Path(args.corpus), index, args.encoder, ["flat", "hnsw", "ivfpq", "bm25"])
    results["build"] = {
        k: {
            "seconds": e["build"]["seconds"],
            "peak_rss_mb": e["build"]["peak_rss_mb"],
            "passages": e["num_passages"],
            "encoder": e["encoder"],
        }
        for k, e in manifest["indexes"].items()
    }
    print("build:", json.dumps(results["build"]), flush=True)

    queries = real_queries(2048)
    results["recall"] = recall_table(index, queries[:1000])
    print("recall vs flat:", json.dumps(results["recall"]), flush=True)

    # Both servers run at once (an idle one costs no CPU) and every cell alternates between them, so load
    # from other processes on a shared machine hits both sides alike. Each cell also records the server's
    # own CPU seconds: queries per CPU-second stays meaningful when the machine is shared.
    servers = {"batched": Server(index, "batched", []), "naive": Server(index, "naive", [])}
    results["server_commands"] = {mode: " ".join(s.command[1:]) for mode, s in servers.items()}
    results["throughput"] = {"batched": [], "naive": []}
    results["overload"], answers = {}, {}
    bounded = None
    try:
        for size in sizes:
            bodies = [
                (make_body(queries[i : i + size], 3), size) for i in range(0, len(queries) - size + 1, size)
            ]
            for server in servers.values():
                asyncio.run(closed_loop("127.0.0.1", server.port, bodies, 4, 1.5))  # warm-up
            for concurrency in concurrencies:
                for mode, server in servers.items():
                    cpu_before = server.cpu_seconds()
                    run = asyncio.run(
                        closed_loop("127.0.0.1", server.port, bodies, concurrency, args.duration)
                    )
                    cpu = server.cpu_seconds() - cpu_before
                    row = {
                        "queries_per_request": size,
                        "concurrency": concurrency,
                        **run.summary(),
                        "server_cpu_s": round(cpu, 2),
                        "queries_per_cpu_s": round(run.queries / cpu, 1) if cpu > 0 else None,
                        "load_avg_1m": round(os.getloadavg()[0], 1),
                    }
                    results["throughput"][mode].append(row)
                    print(
                        f"  {mode:>7} size {size:>2} conc {concurrency:>2}: {row['qps']:>7} q/s "
                        f"{row['queries_per_cpu_s']} q/cpu-s  p50 {row['p50_ms']:>7} ms  p99 {row['p99_ms']:>7} ms  "
                        f"errors {row['errors']} statuses {row['statuses']}  load {row['load_avg_1m']}",
                        flush=True,
                    )
        for mode, server in servers.items():
            answers[mode] = fetch_all(server.port, queries[:1000])
        bodies = [(make_body([q], 3), 1) for q in queries]
        valid = asyncio.run(
            closed_loop(
                "127.0.0.1", servers["batched"].port, bodies, 32, 3600, max_requests=args.valid_requests
            )
        )
        results["valid_requests"] = valid.summary()
        print(f"  {args.valid_requests} valid requests: {results['valid_requests']}", flush=True)
        # Overload: open-loop arrivals at 4x the capacity measured by the 10,000-request run. Our server runs
        # again with a small queue bound (the latency bound is about bound / throughput); naive has no bound.
        servers["batched"].stop()
        bounded = Server(
            index,
            "batched",
            [
                "--max-queue-queries",
                str(args.max_queue_queries),
                "--max-queue-wait-ms",
                str(args.max_queue_wait_ms),
            ],
        )
        results["server_commands"]["batched-overload"] = " ".join(bounded.command[1:])
        rate = args.overload_factor * valid.summary()["rps"]
        for mode, server in (("batched", bounded), ("naive", servers["naive"])):
            overload = asyncio.run(
                open_loop("127.0.0.1", server.port, bodies, rate, args.overload_seconds, timeout=30)
            )
            results["overload"][mode] = {"offered_rps": round(rate, 1), **overload.summary()}
            print(f"  {mode} overload at {rate:.0f} req/s: {results['overload'][mode]}", flush=True)
            time.sleep(5)  # let a backlog drain before the next phase
    finally:
        for server in [*servers.values(), bounded]:
            if server is not None:
                server.stop()
    results["identical"] = compare(answers["batched"], answers["naive"])
    print("identical results:", results["identical"], flush=True)

    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    markdown = render(results)
    (out / "results.md").write_text(markdown)
    print(markdown)
    print(f"written to {out}")
    return 0


def render(results: dict) -> str:
    lines = [
        "| queries/request | concurrency | ours q/s | naive q/s | ratio | ours / naive q per server CPU-s | ratio "
        "| ours p50 / p99 ms | naive p50 / p99 ms | load avg |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ours, naive in zip(results["throughput"]["batched"], results["throughput"]["naive"]):
        ratio = ours["qps"] / naive["qps"] if naive["qps"] else float("inf")
        cpu_ratio = (
            (ours["queries_per_cpu_s"] or 0) / naive["queries_per_cpu_s"] if naive["queries_per_cpu_s"] else 0
        )
        lines.append(
            f"| {ours['queries_per_request']} | {ours['concurrency']} | {ours['qps']:.0f} | {naive['qps']:.0f} | "
            f"{ratio:.2f}x | {ours['queries_per_cpu_s']} / {naive['queries_per_cpu_s']} | {cpu_ratio:.2f}x | "
            f"{ours['p50_ms']:.0f} / {ours['p99_ms']:.0f} | {naive['p50_ms']:.0f} / {naive['p99_ms']:.0f} | "
            f"{ours['load_avg_1m']} / {naive['load_avg_1m']} |"
        )
    lines += [
        "",
        "| overload (open loop) | offered req/s | answered 200 | 503 | timeouts/errors | p50 / p99 / max ms (200s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode, o in results["overload"].items():
        lines.append(
            f"| {mode} | {o['offered_rps']:.0f} | {o['ok']} | {o['statuses'].get('503', 0)} | {o['errors']} | "
            f"{o['p50_ms']:.0f} / {o['p99_ms']:.0f} / {o['max_ms']:.0f} |"
        )
    lines += [
        "",
        "| index | recall@3 | recall@10 | search q/s (1,000 queries, 1 batch) |",
        "|---|---:|---:|---:|",
    ]
    for kind, r in results["recall"].items():
        lines.append(f"| {kind} | {r['recall@3']:.3f} | {r['recall@10']:.3f} | {r['search_qps']} |")
    lines += ["", "| build (wiki, 10,033 passages) | seconds | peak RSS MiB |", "|---|---:|---:|"]
    for kind, b in results["build"].items():
        lines.append(f"| {kind} ({b['encoder'] or 'bm25s'}) | {b['seconds']} | {b['peak_rss_mb']:.0f} |")
    v, same = results["valid_requests"], results["identical"]
    lines += [
        "",
        f"valid requests: {v['requests']} sent, {v['ok']} answered 200, {v['errors']} errors, "
        f"statuses {v['statuses']}; identical results: {same['identical_rankings']}/{same['queries']} rankings equal, "
        f"max score difference {same['max_score_diff']:.2e}",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
