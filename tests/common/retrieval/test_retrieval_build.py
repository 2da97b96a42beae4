"""Index builder: resumable chunked encoding, reuse of docstore/embeddings, CLI, recorded build stats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlcore.retrieval import IndexMismatchError, load_retriever
from rlcore.retrieval.build import build_index
from rlcore.retrieval.build import main as build_main
from rlcore.retrieval.encoders import HashingEncoder

QUERIES = ["philosophy of mind", "ancient Egypt", "acid base chemistry", "Algebraic number theory"]


class CrashingEncoder(HashingEncoder):
    """Hashing encoder that counts encoded rows and fails on its ``crash_on``-th passage batch."""

    def __init__(self, crash_on: int | None = None):
        super().__init__(64)
        self.crash_on, self.calls, self.rows = crash_on, 0, 0

    def encode_passages(self, texts, show_progress=False):
        self.calls += 1
        if self.crash_on is not None and self.calls == self.crash_on:
            raise KeyboardInterrupt("simulated Ctrl-C in the middle of the build")
        self.rows += len(texts)
        return super().encode_passages(texts, show_progress)


def test_interrupted_build_resumes_to_identical_index(tmp_path, wiki300):
    reference = build_index(wiki300, tmp_path / "ref", kind="flat", encoder=CrashingEncoder(), chunk_size=64)
    crashing = CrashingEncoder(crash_on=3)  # chunks of 64: rows 0-127 done, dies on rows 128-191
    with pytest.raises(KeyboardInterrupt):
        build_index(wiki300, tmp_path / "resumed", kind="flat", encoder=crashing, chunk_size=64)
    progress = json.loads((tmp_path / "resumed" / "embeddings" / "progress.json").read_text())
    assert progress["completed_rows"] == 128
    assert not (tmp_path / "resumed" / "index.json").exists()  # nothing half-built is advertised
    resumed_encoder = CrashingEncoder()
    entry = build_index(wiki300, tmp_path / "resumed", kind="flat", encoder=resumed_encoder, chunk_size=64)
    assert resumed_encoder.rows == 300 - 128  # only the missing rows were encoded again
    assert entry["corpus_hash"] == reference["corpus_hash"]
    ref_bytes = (tmp_path / "ref" / "embeddings" / "embeddings.f32").read_bytes()
    assert (tmp_path / "resumed" / "embeddings" / "embeddings.f32").read_bytes() == ref_bytes
    assert (tmp_path / "resumed" / "flat.faiss").read_bytes() == (
        tmp_path / "ref" / "flat.faiss"
    ).read_bytes()
    a = load_retriever(tmp_path / "ref", kind="flat").search(QUERIES, 5)
    b = load_retriever(tmp_path / "resumed", kind="flat").search(QUERIES, 5)
    assert a == b


def test_resume_with_other_encoder_refused(tmp_path, wiki300):
    with pytest.raises(KeyboardInterrupt):
        build_index(wiki300, tmp_path / "x", kind="flat", encoder=CrashingEncoder(crash_on=2), chunk_size=64)
    with pytest.raises(IndexMismatchError, match="holds embeddings from encoder 'hashing:64'.*'hashing:32'"):
        build_index(wiki300, tmp_path / "x", kind="flat", encoder="hashing:32", chunk_size=64)


def test_kinds_share_docstore_and_embeddings(tmp_path, wiki300):
    counting = CrashingEncoder()
    build_index(wiki300, tmp_path / "i", kind="flat", encoder=counting, chunk_size=100)
    build_index(wiki300, tmp_path / "i", kind="hnsw", encoder=counting, chunk_size=100)
    assert counting.rows == 300  # the hnsw build reused the finished embeddings
    manifest = json.loads((tmp_path / "i" / "index.json").read_text())
    assert sorted(manifest["indexes"]) == ["flat", "hnsw"]
    entry = manifest["indexes"]["hnsw"]
    for key in ("encoder", "dim", "normalized", "corpus_hash", "num_passages"):
        assert entry[key] == manifest["indexes"]["flat"][key]
    assert entry["num_passages"] == 300 and entry["dim"] == 64 and entry["normalized"] is True
    assert entry["build"]["peak_rss_mb"] > 0 and entry["build"]["seconds"] >= 0


def test_other_corpus_into_same_folder_refused(tmp_path, wiki300):
    build_index(wiki300, tmp_path / "i", kind="bm25")
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "1", "contents": "x"}\n')
    with pytest.raises(IndexMismatchError, match="docstore built from other corpus files"):
        build_index(other, tmp_path / "i", kind="bm25")


def test_cli(tmp_path, wiki300, capsys):
    assert (
        build_main(
            [
                "--corpus",
                str(wiki300),
                "--out",
                str(tmp_path / "c"),
                "--kind",
                "ivfpq",
                "--encoder",
                "hashing:32",
                "--chunk-size",
                "128",
                "--nprobe",
                "4",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    # 300 passages: nlist = min(4 sqrt(300), 300 // 39) = min(69, 7) = 7; pq_m = 32 / 8 = 4; nbits 4 (< 9,984)
    assert (
        printed["params"]["nlist"] == 7
        and printed["params"]["pq_m"] == 4
        and printed["params"]["pq_nbits"] == 4
    )
    retriever = load_retriever(tmp_path / "c", kind="ivfpq")
    assert retriever.searcher.index.params.nprobe == 4
    scores, rows = retriever.search_rows(QUERIES, 3)
    assert rows.shape == (4, 3) and np.isfinite(scores).all()
