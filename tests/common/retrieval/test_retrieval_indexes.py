"""Encoders, FAISS / BM25 / hybrid search, save/load round trips and refusal of mismatched metadata."""

from __future__ import annotations

import json
import shutil
import zlib

import numpy as np
import pytest

from rlcore.retrieval import IndexMismatchError, Passage, RetrievalError, load_retriever
from rlcore.retrieval.build import build_index
from rlcore.retrieval.corpora import wiki_records
from rlcore.retrieval.corpus import write_jsonl
from rlcore.retrieval.encoders import HashingEncoder, load_encoder
from rlcore.retrieval.retriever import CachedRetriever, HybridSearcher

QUERIES = [
    "ancient greek philosopher",
    "number zero arithmetic",
    "abstract art painting",
    "Africa history",
    "acid",
]


def test_hashing_encoder_golden():
    # "cat cat dog": bucket(cat) gets 2 * sign(cat), bucket(dog) gets 1 * sign(dog); |e| = sqrt(4 + 1) = sqrt(5),
    # so the entries are +-2/sqrt(5) = +-0.894427 and +-1/sqrt(5) = +-0.447214 (buckets differ for dim 64).
    encoder = HashingEncoder(64)
    vector = encoder.encode_queries(["Cat cat, dog!"])[0]
    cat, dog = b"cat", b"dog"
    sign = {w: 1.0 if zlib.crc32(w, 0x5BD1E995) % 2 == 0 else -1.0 for w in (cat, dog)}
    assert zlib.crc32(cat) % 64 != zlib.crc32(dog) % 64
    assert vector[zlib.crc32(cat) % 64] == pytest.approx(2 / np.sqrt(5) * sign[cat], abs=1e-6)
    assert vector[zlib.crc32(dog) % 64] == pytest.approx(1 / np.sqrt(5) * sign[dog], abs=1e-6)
    assert np.count_nonzero(vector) == 2
    assert not encoder.encode_passages([""]).any()  # no words -> zero vector, not NaN


def test_unknown_encoder_spec_is_explained():
    with pytest.raises(ValueError, match="unknown encoder 'no/such/model'"):
        load_encoder("no/such/model")
    with pytest.raises(ValueError, match="hashing:DIM"):
        load_encoder("hashing:abc")


def test_flat_equals_bruteforce_numpy(hash_index):
    retriever = load_retriever(hash_index, kind="flat")
    encoder = retriever.searcher.encoder
    embeddings = np.fromfile(hash_index / "embeddings" / "embeddings.f32", dtype="<f4").reshape(
        300, encoder.dim
    )
    assert np.allclose(embeddings, encoder.encode_passages([retriever.store[r] for r in range(300)]))
    scores, rows = retriever.search_rows(QUERIES, 10)
    brute = encoder.encode_queries(QUERIES) @ embeddings.T  # (5, 300)
    for q in range(len(QUERIES)):
        order = sorted(range(300), key=lambda r: (-brute[q, r], r))[:10]
        assert rows[q].tolist() == order
        np.testing.assert_allclose(scores[q], brute[q, order], rtol=0, atol=1e-5)


def test_passages_carry_ids_contents_scores(hash_index):
    retriever = load_retriever(hash_index, kind="flat")
    (hits,) = retriever.search(["Abstract art"], 3)
    assert len(hits) == 3 and all(isinstance(p, Passage) for p in hits)
    assert [p.score for p in hits] == sorted((p.score for p in hits), reverse=True)
    top = hits[0]
    assert retriever.store.get(top.id) == top.contents and top.title == top.contents.split("\n")[0]


def test_save_load_roundtrip_gives_identical_results(hash_index, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(hash_index, copy)
    for kind in ("flat", "hnsw", "ivfpq", "bm25", "hybrid"):
        a = load_retriever(hash_index, kind=kind).search(QUERIES, 5)
        b = load_retriever(copy, kind=kind, mmap=kind != "hnsw").search(QUERIES, 5)
        assert a == b, kind


def test_encoder_mismatch_refused(hash_index):
    with pytest.raises(IndexMismatchError, match="64-dim embeddings from encoder 'hashing:64'.*'hashing:32'"):
        load_retriever(hash_index, kind="flat", encoder="hashing:32")


def test_fingerprint_mismatch_refused(hash_index):
    class Other(HashingEncoder):
        def __init__(self):
            super().__init__(64)
            self.spec, self.fingerprint = "other", "different"

    with pytest.raises(IndexMismatchError, match="built with encoder 'hashing:64'.*fingerprint different"):
        load_retriever(hash_index, kind="flat", encoder=Other())


def test_corpus_change_refused(hash_index, tmp_path):
    copy = tmp_path / "changed"
    shutil.copytree(hash_index, copy)
    meta_path = copy / "docstore" / "docstore.json"
    meta = json.loads(meta_path.read_text())
    meta["corpus_hash"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    for kind in ("flat", "bm25"):
        with pytest.raises(IndexMismatchError, match="passages changed since the index was built"):
            load_retriever(copy, kind=kind)


def test_missing_kind_lists_what_exists(tmp_path, wiki300):
    build_index(wiki300, tmp_path / "only-bm25", kind="bm25")
    with pytest.raises(RetrievalError, match=r"holds no complete 'flat' index \(it holds: bm25\)"):
        load_retriever(tmp_path / "only-bm25", kind="flat")
    with pytest.raises(RetrievalError, match="does not exist"):
        load_retriever(tmp_path / "nowhere")


def test_bm25_finds_exact_title_and_pads(hash_index):
    retriever = load_retriever(hash_index, kind="bm25")
    (hits,) = retriever.search(["Acropolis of Athens"], 1)
    assert hits[0].title == "Acropolis of Athens"
    scores, rows = retriever.search_rows(["Acropolis"], 305)  # more than the 300 passages
    assert (rows[0, :300] >= 0).all() and (rows[0, 300:] == -1).all()
    assert len(retriever.search(["Acropolis"], 305)[0]) == 300


def test_reciprocal_rank_fusion_golden():
    class Fixed:
        def __init__(self, rows):
            self.rows = np.array([rows])

        def search_texts(self, queries, topk):
            return np.zeros_like(self.rows, dtype=np.float32), self.rows

    # rrf(d) = sum 1 / (60 + rank): row 1 = 1/61 + 1/62 = 0.032522, row 3 = 1/63 + 1/61 = 0.032266,
    # row 2 = 1/62 = 0.016129, row 4 = 1/63 = 0.015873, so the order is 1, 3, 2, 4.
    fused = HybridSearcher(Fixed([1, 2, 3]), Fixed([3, 1, 4]), rrf_k=60, depth=3)
    scores, rows = fused.search_texts(["q"], 4)
    assert rows[0].tolist() == [1, 3, 2, 4]
    np.testing.assert_allclose(scores[0], [1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62, 1 / 63], rtol=1e-6)


def test_approximate_indexes_recall(hash_index):
    _, exact = load_retriever(hash_index, kind="flat").search_rows(QUERIES, 10)
    for kind, floor in (("hnsw", 0.9), ("ivfpq", 0.3)):
        _, approx = load_retriever(hash_index, kind=kind).search_rows(QUERIES, 10)
        recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.tolist(), exact.tolist())])
        assert recall >= floor, (kind, recall)


def test_lru_cache(hash_index):
    base = load_retriever(hash_index, kind="bm25")
    cached = CachedRetriever(base, maxsize=2)
    first = cached.search(["acid", "acid", "art"], 2)
    assert first == base.search(["acid", "acid", "art"], 2)
    assert (cached.hits, cached.misses) == (0, 3)  # the duplicate in one call is searched once but counted
    first[0].clear()  # callers get copies: mutating them must not poison the cache
    assert cached.search(["acid"], 2) == base.search(["acid"], 2) and cached.hits == 1
    cached.search(["x1", "x2"], 2)  # evicts "acid" and "art" (maxsize 2)
    cached.search(["acid"], 2)
    assert cached.misses == 6


def test_minilm_semantic_retrieval(tmp_path):
    """The real MiniLM model: a question whose words barely overlap the answer passage still finds it."""
    wanted = {"Insulin", "Pancreas", "Liver", "Anesthesia", "Paris", "Moon", "Photosynthesis", "Volcano"}
    records = [r for r in wiki_records() if r["title"] in wanted] + wiki_records()[:40]
    write_jsonl(((r["id"], f"{r['title']}\n{r['extract']}") for r in records), tmp_path / "c.jsonl")
    build_index(tmp_path / "c.jsonl", tmp_path / "idx", kind="flat", encoder="minilm", device="cpu")
    retriever = load_retriever(tmp_path / "idx", kind="flat", device="cpu")
    hits = retriever.search(
        ["Which organ makes the hormone that lowers blood sugar?", "capital of France"], 2
    )
    assert {p.title for p in hits[0]} & {"Insulin", "Pancreas"}
    assert hits[1][0].title == "Paris"
    assert retriever.searcher.encoder.dim == 384


def _num_gpus() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


@pytest.mark.skipif(_num_gpus() > 0, reason="checks the CPU-only error path")
def test_to_gpu_without_gpu_is_explained(hash_index):
    retriever = load_retriever(hash_index, kind="flat")
    with pytest.raises(RetrievalError, match="no GPU visible to faiss: install the gpu extra"):
        retriever.searcher.index.to_gpu()


@pytest.mark.gpu
@pytest.mark.skipif(_num_gpus() == 0, reason="needs faiss-gpu (the gpu extra) and a CUDA GPU")
def test_gpu_flat_matches_cpu(hash_index):
    cpu = load_retriever(hash_index, kind="flat")
    gpu = load_retriever(hash_index, kind="flat", gpu=True)
    cpu_scores, cpu_rows = cpu.search_rows(QUERIES, 5)
    gpu_scores, gpu_rows = gpu.search_rows(QUERIES, 5)
    np.testing.assert_allclose(gpu_scores, cpu_scores, atol=2e-3)  # fp16 storage: ~3 significant digits
    assert (gpu_rows[:, 0] == cpu_rows[:, 0]).all()


def test_e5_style_encoder_pooling_and_prefixes(tmp_path):
    """A tiny random BERT saved as an e5-style folder: prefixes, masked mean pooling and L2 norm by hand."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rlcore.retrieval.encoders import E5Encoder, minilm_path

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(0)
    BertModel(config).eval().save_pretrained(tmp_path / "e5")
    tokenizer.save_pretrained(tmp_path / "e5")
    encoder = load_encoder(str(tmp_path / "e5"), device="cpu")  # no modules.json -> e5-style
    assert isinstance(encoder, E5Encoder) and encoder.dim == 32 and encoder.spec.startswith("e5:")
    texts = ["short", "a much longer passage about anesthesia and analgesics"]  # different lengths -> padding
    got_q, got_p = encoder.encode_queries(texts), encoder.encode_passages(texts)
    model = BertModel.from_pretrained(tmp_path / "e5").eval()
    for prefix, got in (("query: ", got_q), ("passage: ", got_p)):
        for text, row in zip(texts, got):
            ids = tokenizer(prefix + text, return_tensors="pt")  # one text alone: no padding at all
            with torch.no_grad():
                hidden = model(**ids).last_hidden_state[0]  # (seq, 32)
            mean = hidden.mean(dim=0)
            np.testing.assert_allclose(row, (mean / mean.norm()).numpy(), atol=1e-5)
    assert not np.allclose(got_q, got_p)  # the prefixes change the embedding
    assert np.allclose(np.linalg.norm(got_q, axis=1), 1.0, atol=1e-6)
