"""Retrieval benchmark: our micro-batching server against a naive one (one request = one encode + one search),
optionally against Search-R1's own server, all in one run on the same index and client.

    make bench-retrieval                          # = python benchmarks/retrieval/bench_server.py
    make bench-retrieval PEER=../Search-R1        # adds Search-R1's retrieval_server.py (peer_searchr1.py)
    python benchmarks/retrieval/bench_server.py --duration 3 --rounds 8 --out runs/bench-retrieval

Steps (wiki corpus, 10,033 passages; MiniLM + FAISS Flat unless told otherwise):
1. build (or reuse) the flat/hnsw/ivfpq/bm25 indexes under .cache/retrieval/wiki-minilm, each in its own
   process, and report build time and peak RSS from the index manifest;
2. recall@3/@10 of HNSW and IVF-PQ against Flat on 1,000 real queries (article descriptions);
3. query-encoder backends (``bench_encoders.py``): fp32 PyTorch vs ONNX Runtime fp32 / int8 at batch 32, with
   top-3 agreement and recall@10 against the fp32 Flat results;
4. the servers, started side by side: ours (``python -m rlcore.retrieval.server``, default encoder backend:
   ONNX Runtime on CPU), the naive one (the same command with ``--mode naive``, so the same encoder), ours again
   with ``--encoder-backend torch``, and the peer: closed-loop q/s and p50/p99 with single-query requests at
   concurrency 1/2/8/32/64, and 32-query requests at concurrency 8 (the encoder's batched ceiling), run in
   ``--rounds`` interleaved rounds; ratios and shares are medians of per-round ratios with their min-max
   (``paired.py`` says why);
5. identical-results check (same ``--identical-queries`` queries, topk 10, every server);
6. ``--valid-requests`` valid single-query requests at concurrency 32, counting every non-200 answer or error;
7. overload: open-loop arrivals at 4x the capacity measured in step 6, for our server (restarted with a
   small queue bound, ``--max-queue-queries``) and for the naive one.
Results go to OUT/<time>/results.json and results.md; the tables and the acceptance checks are printed.
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

import httpx
import numpy as np
import psutil
from bench_encoders import encoder_table
from bench_encoders import render as render_encoders
from loadgen import closed_loop, make_body, open_loop
from paired import coverage, paired, qps_per_round, run_rounds, verdict
from peer_searchr1 import script_path

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
    """A server in a subprocess: ours (``python -m rlcore.retrieval.server``, the same command for every mode)
    or, with ``peer`` set, Search-R1's through ``peer_searchr1.py``."""

    def __init__(self, index: Path, mode: str, extra: list[str], peer: dict | None = None):
        self.port = free_port()
        if peer is None:
            self.command = [sys.executable, "-m", "rlcore.retrieval.server", "--index", str(index)]
            self.command += ["--port", str(self.port), "--mode", mode, "--device", "cpu"]
            self.command += ["--log-level", "warning", *extra]
        else:
            self.command = [sys.executable, str(Path(__file__).with_name("peer_searchr1.py"))]
            self.command += ["--checkout", peer["checkout"], "--port", str(self.port), "--index"]
            self.command += [str(index / "flat.faiss"), "--corpus", peer["corpus"], "--model", peer["model"]]
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.peer, self.health = peer, {}

    def wait_ready(self) -> Server:
        """Block until the server answers; ours report their ``/health`` (the encoder they serve with)."""
        if self.peer is None:
            with RetrievalClient(f"http://127.0.0.1:{self.port}") as client:
                self.health = client.wait_until_ready(timeout=600)
            return self
        deadline = time.monotonic() + 600  # their server has no health endpoint: ready once a search answers
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"peer server exited with {self.process.returncode}: {self.command}")
            try:
                # return_scores must be true: without it their endpoint unpacks one value into two (HTTP 500)
                body = {"queries": ["warm-up query"], "topk": 1, "return_scores": True}
                httpx.post(f"http://127.0.0.1:{self.port}/retrieve", json=body, timeout=60).raise_for_status()
                return self
            except httpx.HTTPStatusError:  # up but failing: waiting will not help
                raise
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

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


def measure(servers: dict, queries: list[str], args) -> dict:
    """Single-query cells at every ``--concurrency`` plus the ceiling cell (``--ceiling-size``-query requests at
    ``--ceiling-concurrency``, twice as long), run in ``--rounds`` interleaved rounds (``paired.run_rounds``)."""
    sizes = (1, args.ceiling_size)
    bodies = {
        size: [(make_body(queries[i : i + size], 3), size) for i in range(0, len(queries) - size + 1, size)]
        for size in sizes
    }
    cells = [(1, c, args.duration) for c in args.concurrency]
    cells.append((args.ceiling_size, args.ceiling_concurrency, 2 * args.duration))
    return run_rounds(servers, cells, bodies, args.rounds)


def checks(results: dict) -> tuple[list[str], dict]:
    """The acceptance lines, on the statistics of ``paired`` (fixed before measuring): ours / naive at
    concurrency 1 and 2 (median per-round ratio >= 1.0), ours' single-query q/s at concurrency 32 as a share of
    its own ceiling cell (median per-round share >= 90%), pooled p99 at concurrency 32 (<= 150 ms)."""
    throughput, stats, lines = results["throughput"], {}, []
    single = {r["concurrency"]: r for r in throughput["ours"] if r["queries_per_request"] == 1}
    for concurrency in (1, 2):
        if concurrency not in single:
            continue
        base = next(
            r
            for r in throughput["naive"]
            if r["queries_per_request"] == 1 and r["concurrency"] == concurrency
        )
        mine = single[concurrency]
        stat = stats[f"ours/naive@{concurrency}"] = paired(qps_per_round(mine), qps_per_round(base))
        lines.append(
            f"concurrency {concurrency}: ours / naive {stat['median']:.3f}x (min-max {stat['min']:.3f}-{stat['max']:.3f}"
            f" over {stat['rounds']} rounds; ours {mine['qps']} q/s p50 {mine['p50_ms']} ms, naive {base['qps']} q/s "
            f"p50 {base['p50_ms']} ms; server CPU per query: ours {_cpu_ms(mine)}, naive {_cpu_ms(base)}) "
            f"[{verdict(stat, 1.0)}]"
        )
    if 32 not in single:
        return lines, stats
    for name, rows in throughput.items():
        if not name.startswith("ours"):
            continue
        row = next(r for r in rows if r["queries_per_request"] == 1 and r["concurrency"] == 32)
        ceiling = next(r for r in rows if r["queries_per_request"] > 1)
        stat = stats[f"share@32:{name}"] = paired(qps_per_round(row), qps_per_round(ceiling))
        lines.append(
            f"concurrency 32, {name}: single-query requests reach {stat['median']:.0%} of the same server's "
            f"{ceiling['queries_per_request']}-query requests at concurrency {ceiling['concurrency']} (min-max "
            f"{stat['min']:.0%}-{stat['max']:.0%}; {row['qps']} against {ceiling['qps']} q/s) "
            f"[{verdict(stat, 0.9)}]"
        )
        lines.append(
            f"p99 at concurrency 32, {name}: {row['p99_ms']} ms over all {stat['rounds']} rounds' requests "
            f"[{'ok' if row['p99_ms'] <= 150 else 'above 150 ms'}] (load average {row['load_avg_1m']})"
        )
    return lines, stats


def _cpu_ms(record: dict) -> str:
    """Server CPU milliseconds per query over every round of a cell."""
    per_cpu_s = record["queries_per_cpu_s"]
    return f"{1000 / per_cpu_s:.2f} ms" if per_cpu_s else "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", default=str(ROOT / ".cache/retrieval/wiki-minilm"))
    parser.add_argument("--corpus", default=str(ROOT / ".cache/retrieval/wiki.jsonl"))
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument(
        "--duration",
        type=float,
        default=1.5,
        help="seconds per cell and round (the ceiling cell: twice that)",
    )
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds over every cell and server")
    parser.add_argument("--concurrency", default="1,2,8,32,64", help="single-query request concurrencies")
    parser.add_argument(
        "--ceiling-size", type=int, default=32, help="queries per request of the ceiling cell"
    )
    parser.add_argument("--ceiling-concurrency", type=int, default=8)
    parser.add_argument(
        "--extra-backend",
        default="torch",
        help="also run our server with the index's encoder on this backend ('' to skip)",
    )
    parser.add_argument("--encoder-backends", default="torch,onnx,onnx-int8", help="'' skips step 3")
    parser.add_argument("--peer", default="", help="a Search-R1 checkout: run its retrieval_server.py too")
    parser.add_argument("--overload-seconds", type=float, default=3.0)
    parser.add_argument("--overload-factor", type=float, default=4.0)
    parser.add_argument(
        "--max-queue-queries", type=int, default=256, help="our server's queue bound in the overload run"
    )
    parser.add_argument(
        "--max-queue-wait-ms", type=float, default=1000.0, help="our server's queue-wait shedding (overload)"
    )
    parser.add_argument("--valid-requests", type=int, default=2000)
    parser.add_argument(
        "--identical-queries", type=int, default=500, help="queries of the identical-results check"
    )
    parser.add_argument("--out", default=str(ROOT / "runs/bench-retrieval"))
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    # one intra-op thread per computing thread, in every server alike (ours computes two batches at once on
    # two cores, the naive and peer servers one request per pool thread); the caller's setting wins
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    index = Path(args.index)
    peer = None
    if args.peer:
        script_path(args.peer)  # clear error before anything is built
        peer = {"checkout": args.peer, "corpus": args.corpus, "model": args.encoder}
    results: dict = {
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
        "load_avg_1m_start": round(os.getloadavg()[0], 1),
        "threads": {name: os.environ[name] for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "design": {
            "rounds": args.rounds,
            "seconds_per_cell": args.duration,
            "coverage": coverage(args.rounds),
        },
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
    if args.encoder_backends:
        results["encoders"] = encoder_table(index, queries[:1000], args.encoder_backends.split(","))
        print(render_encoders(results["encoders"]), flush=True)

    # All servers run at once (an idle one costs no CPU) and every cell alternates between them, so load from
    # other processes on a shared machine hits every side alike. Each cell also records the server's own CPU
    # seconds: queries per CPU-second stays meaningful when the machine is shared.
    # ours and naive: the same command but --mode, so both run the same encoder (the server's default).
    servers = {"ours": Server(index, "batched", []), "naive": Server(index, "naive", [])}
    if args.extra_backend:
        servers[f"ours+{args.extra_backend}"] = Server(
            index, "batched", ["--encoder-backend", args.extra_backend]
        )
    if peer is not None:
        servers["search-r1"] = Server(index, "", [], peer=peer)
    for server in servers.values():
        server.wait_ready()
    results["server_commands"] = {name: " ".join(s.command[1:]) for name, s in servers.items()}
    results["server_encoders"] = {name: s.health.get("encoder", args.encoder) for name, s in servers.items()}
    print("servers:", results["server_encoders"], flush=True)
    results["overload"], answers = {}, {}
    bounded = None
    try:
        results["throughput"] = measure(servers, queries, args)
        for name, server in servers.items():
            answers[name] = fetch_all(server.port, queries[: args.identical_queries])
        bodies = [(make_body([q], 3), 1) for q in queries]
        valid = asyncio.run(
            closed_loop("127.0.0.1", servers["ours"].port, bodies, 32, 3600, max_requests=args.valid_requests)
        )
        results["valid_requests"] = valid.summary()
        print(f"  {args.valid_requests} valid requests: {results['valid_requests']}", flush=True)
        # Overload: open-loop arrivals at 4x the capacity measured by the valid-requests run. Our server runs
        # again with a small queue bound (the latency bound is about bound / throughput); naive has no bound.
        for name in [n for n in servers if n not in ("ours", "naive")]:
            servers[name].stop()
        servers["ours"].stop()
        bounded = Server(
            index,
            "batched",
            [
                "--max-queue-queries",
                str(args.max_queue_queries),
                "--max-queue-wait-ms",
                str(args.max_queue_wait_ms),
            ],
        ).wait_ready()
        results["server_commands"]["ours-overload"] = " ".join(bounded.command[1:])
        rate = args.overload_factor * valid.summary()["rps"]
        for mode, server in (("ours", bounded), ("naive", servers["naive"])):
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
    results["identical"] = {
        name: compare(answers["ours"], answers[name]) for name in answers if name != "ours"
    }
    print("identical results vs ours:", results["identical"], flush=True)
    results["checks"], results["paired"] = checks(results)
    results["load_avg_1m_end"] = round(os.getloadavg()[0], 1)

    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    markdown = render(results)
    (out / "results.md").write_text(markdown)
    print(markdown)
    print(f"written to {out}")
    return 0


def render(results: dict) -> str:
    names = list(results["throughput"])
    others = [n for n in names if n != "ours"]
    encoders = results.get("server_encoders", {})
    rounds = results["design"]["rounds"]
    head = "| queries/request | concurrency | " + " | ".join(
        f"{n} ({encoders.get(n, '?')}) q/s (p50 / p99 ms)" for n in names
    )
    # the peer runs torch: it is compared with ours on the same encoder when that column exists
    numerators = {n: "ours+torch" if n == "search-r1" and "ours+torch" in names else "ours" for n in others}
    head += " | " + " | ".join(f"{numerators[n]} / {n} median (min-max)" for n in others)
    head += " | ours / naive per server CPU-s | load avg |"
    lines = [
        f"Median q/s over {rounds} interleaved rounds of {results['design']['seconds_per_cell']} s cells (the "
        "ceiling cell twice as long); p50 / p99 over every request of every round; ratios: median and min-max of "
        f"the per-round ratios (the min-max holds the median with probability {results['design']['coverage']:.1%}).",
        "",
        head,
        "|" + "---:|" * (3 + 2 * len(others) + 1 + 1),
    ]
    for i, ours in enumerate(results["throughput"]["ours"]):
        cells = [results["throughput"][n][i] for n in names]
        naive = results["throughput"]["naive"][i]
        row = f"| {ours['queries_per_request']} | {ours['concurrency']} | "
        row += " | ".join(f"{c['qps']:.1f} ({c['p50_ms']:.0f} / {c['p99_ms']:.0f})" for c in cells)
        ratios = [
            paired(qps_per_round(results["throughput"][numerators[n]][i]), qps_per_round(c))
            for n, c in zip(names[1:], cells[1:])
        ]
        cpu_ratio = (ours["queries_per_cpu_s"] or 0) / (naive["queries_per_cpu_s"] or float("inf"))
        row += " | " + " | ".join(f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})" for r in ratios)
        row += f" | {cpu_ratio:.2f}x | {ours['load_avg_1m']} |"
        lines.append(row)
    lines += ["", *[f"- {line}" for line in results["checks"]]]
    if "encoders" in results:
        lines += ["", render_encoders(results["encoders"]).rstrip()]
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
    v = results["valid_requests"]
    lines += [
        "",
        f"valid requests: {v['requests']} sent, {v['ok']} answered 200, {v['errors']} errors, "
        f"statuses {v['statuses']}",
    ]
    for name, same in results["identical"].items():
        lines.append(
            f"identical results, ours vs {name}: {same['identical_rankings']}/{same['queries']} rankings equal "
            f"(topk 10), max score difference {same['max_score_diff']:.2e}"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
