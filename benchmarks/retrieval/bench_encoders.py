"""Query-encoder backends side by side: fp32 PyTorch (sentence-transformers) against ONNX Runtime fp32 and int8.

    python benchmarks/retrieval/bench_encoders.py                  # wiki MiniLM Flat index, 1,000 queries
    python benchmarks/retrieval/bench_encoders.py --backends torch,onnx-int8 --threads 1

For each backend: queries/s encoding batches of ``--batch-size`` (32) queries, the backends interleaved over
``--repeats`` rounds with the fastest round kept (a shared machine drifts); then, over the same Flat index, the
top-3 agreement with the fp32 PyTorch encoder (fraction of queries whose top-3 ids are identical, in order) and
recall@10 against the fp32 PyTorch results. Called by ``bench_server.py``; runs on its own too.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def encoder_table(
    index: Path,
    queries: list[str],
    backends: list[str],
    batch_size: int = 32,
    repeats: int = 3,
    threads: int = 1,
) -> dict:
    """``{backend: {qps, speedup, top3_agreement, recall@10}}`` measured in this process."""
    import torch

    from rlcore.retrieval import load_retriever
    from rlcore.retrieval.encoders import load_encoder
    from rlcore.retrieval.manifest import read_manifest

    torch.set_num_threads(threads)
    base_spec = read_manifest(index)["indexes"]["flat"]["encoder"].partition("@")[0]
    flat = load_retriever(index, kind="flat", device="cpu")
    # torch.set_num_threads above also sets ONNX Runtime's intra-op threads (the encoder reads it), so the
    # ratio compares the kernels, not the thread counts
    encoders = {"torch": load_encoder(base_spec, device="cpu")}
    for backend in backends:
        if backend != "torch":
            encoders[backend] = load_encoder(f"{base_spec}@{backend}")
    batches = [queries[i : i + batch_size] for i in range(0, len(queries) - batch_size + 1, batch_size)][:10]
    speeds: dict[str, list[float]] = {b: [] for b in encoders}
    for encoder in encoders.values():
        encoder.encode_queries(batches[0])  # warm-up
    for repeat in range(repeats):
        order = list(encoders) if repeat % 2 == 0 else list(encoders)[::-1]
        for backend in order:
            started = time.perf_counter()
            for batch in batches:
                encoders[backend].encode_queries(batch)
            speeds[backend].append(sum(map(len, batches)) / (time.perf_counter() - started))
    index_search = flat.searcher.index.search
    _, reference = index_search(encoders["torch"].encode_queries(queries), 10)
    out = {}
    for backend, encoder in encoders.items():
        _, rows = index_search(encoder.encode_queries(queries), 10)
        out[backend] = {
            "qps": round(max(speeds[backend]), 1),
            "speedup": round(max(speeds[backend]) / max(speeds["torch"]), 2),
            "top3_agreement": round(
                float(np.mean([list(a[:3]) == list(e[:3]) for a, e in zip(rows, reference)])), 4
            ),
            "recall@10": round(
                float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(rows, reference)])), 4
            ),
        }
    return {
        "batch_size": batch_size,
        "threads": threads,
        "queries": len(queries),
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "backends": out,
    }


def render(table: dict) -> str:
    lines = [
        f"| encoder backend (batch {table['batch_size']}, {table['threads']} thread) | queries/s | vs fp32 torch "
        f"| top-3 identical | recall@10 vs fp32 Flat |",
        "|---|---:|---:|---:|---:|",
    ]
    for backend, row in table["backends"].items():
        lines.append(
            f"| {backend} | {row['qps']:.0f} | {row['speedup']:.2f}x | {row['top3_agreement']:.3f} "
            f"| {row['recall@10']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    from bench_server import ensure_index, real_queries

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", default=str(ROOT / ".cache/retrieval/wiki-minilm"))
    parser.add_argument("--corpus", default=str(ROOT / ".cache/retrieval/wiki.jsonl"))
    parser.add_argument("--backends", default="torch,onnx,onnx-int8")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ensure_index(Path(args.corpus), Path(args.index), "minilm", ["flat"])
    table = encoder_table(
        Path(args.index),
        real_queries(args.queries),
        args.backends.split(","),
        args.batch_size,
        args.repeats,
        args.threads,
    )
    print(json.dumps(table, indent=2))
    print(render(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
