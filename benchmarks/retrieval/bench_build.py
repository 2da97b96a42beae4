"""Index build time and peak RSS at scale: a generated 1M-passage corpus, BM25 and a dense Flat index.

    make bench-retrieval-scale        # = python benchmarks/retrieval/bench_build.py --num 1000000

The dense index uses the ``hashing:384`` encoder (weight-free, shipped as a real option) so that the run
measures the builder's memory behaviour at MiniLM's dimension without hours of CPU encoding; with MiniLM the
index and embedding files are the same size, only encoding is slower (~90 passages/s on 2 CPU cores).
Each build runs in its own process and records its own ``ru_maxrss`` in the index manifest.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from rlcore.retrieval.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[2]


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=1_000_000)
    parser.add_argument("--encoder", default="hashing:384")
    parser.add_argument("--kinds", default="bm25,flat")
    parser.add_argument("--cache", default=str(ROOT / ".cache/retrieval"))
    args = parser.parse_args()
    cache = Path(args.cache)
    corpus = cache / f"synth-{args.num}.jsonl"
    out = cache / f"synth-{args.num}-index"
    results: dict = {"num_passages": args.num, "encoder": args.encoder}
    if not corpus.exists():
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "rlcore.retrieval.corpora",
                "synthetic",
                "--num",
                str(args.num),
                "--out",
                str(corpus),
            ],
            check=True,
        )
        results["generate_seconds"] = round(time.perf_counter() - started, 1)
    results["corpus_mb"] = round(corpus.stat().st_size / 2**20, 1)
    for kind in args.kinds.split(","):
        started = time.perf_counter()
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
                args.encoder,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        entry = read_manifest(out)["indexes"][kind]
        index_path = out / entry["file"]
        index_mb = folder_mb(index_path) if index_path.is_dir() else index_path.stat().st_size / 2**20
        results[kind] = {
            "wall_seconds": round(time.perf_counter() - started, 1),
            **entry["build"],
            "index_mb": round(index_mb, 1),
        }
        print(kind, json.dumps(results[kind]), flush=True)
    results["docstore_mb"] = round(folder_mb(out / "docstore"), 1)
    if (out / "embeddings").exists():
        results["embeddings_mb"] = round(folder_mb(out / "embeddings"), 1)
    print(json.dumps(results, indent=2))
    report = ROOT / "runs/bench-retrieval" / f"build-{args.num}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(results, indent=2))
    print(f"written to {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
