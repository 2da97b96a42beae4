"""Index builder: corpus -> docstore -> chunked embeddings (resumable) -> FAISS / BM25 index + manifest.

    python -m rlcore.retrieval.build --corpus wiki.jsonl --out runs/indexes/wiki --kind flat [--encoder minilm]

Memory stays bounded: passages stream to the docstore; embeddings are computed ``chunk_size`` passages at a
time and written through a memory-mapped window of ``OUT/embeddings/embeddings.f32`` that is unmapped after
each chunk; the FAISS index is filled chunk by chunk from that file with plain reads. Peak RSS is the final
index plus a fixed working set (encoder weights, one chunk, IVF-PQ training sample).

Resuming: ``OUT/embeddings/progress.json`` records how many rows are done, written only after the chunk is
flushed to disk. Re-running the same command after a crash or Ctrl-C continues from the last finished chunk.
Several kinds (flat, hnsw, ivfpq, bm25) can live in one OUT and share its docstore and embeddings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rlcore.logging_utils import setup_logging

from .bm25 import build_bm25
from .corpus import corpus_files, iter_corpus
from .dense import DENSE_KINDS, DenseIndex, DenseParams, build_faiss_index
from .docstore import DocStore, build_docstore
from .encoders import DEFAULT_ENCODER, Encoder, load_encoder
from .manifest import write_entry
from .types import IndexMismatchError

__all__ = ["build_index", "ensure_docstore", "encode_corpus", "peak_rss_mb", "main"]

logger = logging.getLogger(__name__)

BUILD_KINDS = (*DENSE_KINDS, "bm25")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _source_signature(corpus: Path) -> list[dict[str, Any]]:
    return [
        {
            "path": str(f.resolve()),
            "size": f.stat().st_size if f.is_file() else None,
            "mtime": int(f.stat().st_mtime),
        }
        for f in corpus_files(corpus)
    ]


def ensure_docstore(corpus: str | Path, out: Path) -> DocStore:
    """Reuse ``OUT/docstore`` when it was built from the same corpus files (path, size, mtime), else build it."""
    folder = out / "docstore"
    signature = _source_signature(Path(corpus))
    signature_path = folder / "source.json"
    if (folder / "docstore.json").exists() and signature_path.exists():
        if json.loads(signature_path.read_text()) == signature:
            logger.info("reusing docstore %s", folder)
            return DocStore(folder)
        raise IndexMismatchError(
            f"{out} already holds a docstore built from other corpus files ({signature_path}); "
            f"use a new OUT folder or delete {out}"
        )
    store = build_docstore(iter_corpus(corpus), folder, source=str(corpus))
    signature_path.write_text(json.dumps(signature, indent=2))
    return store


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def encode_corpus(
    store: DocStore, encoder: Encoder, folder: Path, chunk_size: int = 8192, progress_every: int = 1024
) -> Path:
    """Fill ``folder/embeddings.f32`` (raw float32, ``(N, dim)``) chunk by chunk; resumable.

    Returns the file path. ``progress.json`` holds ``completed_rows``; it is rewritten (atomically) only
    after the chunk's memory-mapped window has been flushed, so a crash loses at most one chunk of work.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path, progress_path = folder / "embeddings.f32", folder / "progress.json"
    num, dim = len(store), encoder.dim
    identity = {
        "encoder": encoder.spec,
        "encoder_fingerprint": encoder.fingerprint,
        "dim": dim,
        "normalized": bool(encoder.normalize),
        "corpus_hash": store.corpus_hash,
        "num_passages": num,
    }
    done = 0
    if progress_path.exists():
        progress = json.loads(progress_path.read_text())
        if {k: progress.get(k) for k in identity} != identity:
            raise IndexMismatchError(
                f"{folder} holds embeddings from encoder {progress.get('encoder')!r} "
                f"(fingerprint {progress.get('encoder_fingerprint')}) for corpus {str(progress.get('corpus_hash'))[:12]}...; "
                f"this build uses {encoder.spec!r} ({encoder.fingerprint}) on corpus {store.corpus_hash[:12]}...: "
                "use a new OUT folder for another encoder"
            )
        done = int(progress["completed_rows"])
        if path.stat().st_size != num * dim * 4:
            raise IndexMismatchError(
                f"{path} has the wrong size for ({num}, {dim}) float32; delete {folder} and rebuild"
            )
        if done:
            logger.info("resuming embeddings at row %d / %d", done, num)
    else:
        with open(path, "wb") as handle:
            handle.truncate(num * dim * 4)  # sparse file, filled chunk by chunk
        _write_json_atomic(progress_path, {**identity, "completed_rows": 0})
    with tqdm(total=num, initial=done, desc=f"encode ({encoder.spec})", unit=" passages") as bar:
        for start in range(done, num, chunk_size):
            end = min(start + chunk_size, num)
            texts = list(store.iter_range(start, end))
            window = np.memmap(path, dtype="<f4", mode="r+", offset=4 * dim * start, shape=(end - start, dim))
            for sub in range(0, len(texts), progress_every):  # sub-batches only to move the progress bar
                vectors = encoder.encode_passages(texts[sub : sub + progress_every])
                if vectors.shape != (min(progress_every, len(texts) - sub), dim):
                    raise ValueError(
                        f"encoder returned shape {vectors.shape} for {len(texts[sub : sub + progress_every])} texts"
                    )
                window[sub : sub + len(vectors)] = vectors
                bar.update(len(vectors))
            window.flush()
            del window
            _write_json_atomic(progress_path, {**identity, "completed_rows": end})
    return path


def build_index(
    corpus: str | Path,
    out: str | Path,
    kind: str = "flat",
    encoder: Encoder | str = DEFAULT_ENCODER,
    params: DenseParams | None = None,
    chunk_size: int = 8192,
    device: str = "auto",
    batch_size: int | None = None,
    max_length: int | None = None,
) -> dict[str, Any]:
    """Build one ``kind`` of index over ``corpus`` into ``out`` and return its manifest entry."""
    if kind not in BUILD_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose from {BUILD_KINDS}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    store = ensure_docstore(corpus, out)
    entry: dict[str, Any] = {
        "kind": kind,
        "corpus_hash": store.corpus_hash,
        "num_passages": len(store),
        "source": str(corpus),
    }
    if kind == "bm25":
        index = build_bm25(store)
        index.save(out / "bm25")
        entry.update(
            file="bm25",
            encoder=None,
            encoder_fingerprint=None,
            dim=None,
            normalized=None,
            metric="bm25",
            params={"stemmer": index.stemmer_language, "stopwords": index.stopwords, "k1": 1.5, "b": 0.75},
        )
    else:
        if isinstance(encoder, str):
            encoder = load_encoder(encoder, device=device, batch_size=batch_size, max_length=max_length)
        embeddings = encode_corpus(store, encoder, out / "embeddings", chunk_size=chunk_size)
        resolved = (params or DenseParams()).resolved(kind, len(store), encoder.dim)
        dense = DenseIndex(
            build_faiss_index(kind, embeddings, len(store), encoder.dim, resolved), kind, resolved
        )
        dense.save(out / f"{kind}.faiss")
        entry.update(
            file=f"{kind}.faiss",
            encoder=encoder.spec,
            encoder_fingerprint=encoder.fingerprint,
            dim=encoder.dim,
            normalized=bool(encoder.normalize),
            metric="inner_product",
            params=asdict(resolved),
        )
    entry["build"] = {
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_entry(out, kind, entry)
    logger.info(
        "built %s index over %d passages in %.1fs, peak RSS %.0f MiB -> %s",
        kind,
        len(store),
        entry["build"]["seconds"],
        entry["build"]["peak_rss_mb"],
        out,
    )
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rlcore.retrieval.build", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--corpus", required=True, help="JSONL(.gz)/Parquet file, folder of shards, or saved HF dataset"
    )
    parser.add_argument("--out", required=True, help="index folder (created; several kinds can share it)")
    parser.add_argument("--kind", default="flat", choices=BUILD_KINDS)
    parser.add_argument(
        "--encoder", default=DEFAULT_ENCODER, help="minilm | hashing:DIM | st:PATH | e5:PATH | PATH"
    )
    parser.add_argument("--device", default="auto", help="encoder device: auto | cpu | cuda | cuda:1")
    parser.add_argument("--batch-size", type=int, default=None, help="encoder batch size")
    parser.add_argument("--max-length", type=int, default=None, help="encoder max tokens per passage")
    parser.add_argument("--chunk-size", type=int, default=8192, help="passages per resumable chunk")
    for field, value in asdict(DenseParams()).items():
        if isinstance(value, bool):
            parser.add_argument(
                f"--{field.replace('_', '-')}", action="store_true", help=f"dense param {field}"
            )
            continue
        parser.add_argument(
            f"--{field.replace('_', '-')}", type=int, default=value, help=f"dense param (default {value})"
        )
    args = parser.parse_args(argv)
    setup_logging()
    for noisy in ("faiss.loader", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    params = DenseParams(**{f: getattr(args, f) for f in asdict(DenseParams())})
    entry = build_index(
        args.corpus,
        args.out,
        kind=args.kind,
        encoder=args.encoder,
        params=params,
        chunk_size=args.chunk_size,
        device=args.device,
        batch_size=args.batch_size,
        max_length=args.max_length,
    )
    print(json.dumps({"out": str(args.out), **entry}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
