"""ONNX Runtime encoder backend: spec parsing, the same fingerprint as the torch encoder (so indexes are shared),
fp32 equal to torch, int8 close to it, an index built with torch served with int8 (and the reverse), and the
server's choice of backend for the index's own encoder (ONNX on CPU by default, torch on request)."""

from __future__ import annotations

import numpy as np
import pytest

from rlcore.retrieval import load_retriever
from rlcore.retrieval.build import build_index
from rlcore.retrieval.encoders import load_encoder
from rlcore.retrieval.onnx_encoder import backend_for, split_backend

pytest.importorskip("onnxruntime", reason="the onnx backend needs onnxruntime (requirements/cpu.txt)")

QUERIES = ["What organ produces insulin?", "1968 film by Stanley Kubrick", "capital city of France", "a"]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("minilm", ("minilm", "torch")),  # no suffix: the torch encoder, as before
        ("minilm@onnx", ("minilm", "onnx")),
        ("e5:/models/e5@onnx-int8", ("e5:/models/e5", "onnx-int8")),
        ("minilm@torch", ("minilm", "torch")),  # explicit default
    ],
)
def test_split_backend(spec, expected):
    assert split_backend(spec) == expected


def test_bad_backend_specs_are_refused_clearly():
    with pytest.raises(ValueError, match="unknown encoder backend 'tensorrt'.*torch, onnx, onnx-int8"):
        load_encoder("minilm@tensorrt")
    with pytest.raises(ValueError, match="hashing encoder has no onnx backend"):
        load_encoder("hashing:64@onnx")


@pytest.mark.parametrize(
    "recorded, backend, device, expected",
    [
        ("minilm", "auto", "cpu", "minilm@onnx"),  # the default on CPU: ONNX Runtime fp32
        ("e5:/m/e5", "auto", "cpu", "e5:/m/e5@onnx"),
        ("minilm", "auto", "cuda", None),  # torch on a GPU, as recorded
        ("minilm@onnx-int8", "auto", "cpu", None),  # a recorded backend is kept
        ("hashing:64", "auto", "cpu", None),  # nothing to export
        (None, "auto", "cpu", None),  # bm25: no encoder
        ("minilm", "torch", "cpu", "minilm"),
        ("minilm@onnx", "torch", "cpu", "minilm"),
        ("minilm", "onnx-int8", "cuda", "minilm@onnx-int8"),  # asked for explicitly
    ],
)
def test_backend_for_the_index_encoder(recorded, backend, device, expected):
    assert backend_for(recorded, backend, device) == expected


def test_backend_for_refuses_unknown_backends():
    with pytest.raises(ValueError, match="auto or one of torch, onnx, onnx-int8, got 'fast'"):
        backend_for("minilm", "fast", "cpu")


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """torch, onnx and onnx-int8 MiniLM; the exported files go to a temporary RLCORE_CACHE."""
    patch = pytest.MonkeyPatch()
    patch.setenv("RLCORE_CACHE", str(tmp_path_factory.mktemp("rlcore-cache")))
    try:
        yield {
            backend: load_encoder(f"minilm@{backend}", device="cpu")
            for backend in ("torch", "onnx", "onnx-int8")
        }
    finally:
        patch.undo()


def test_onnx_backends_share_the_torch_fingerprint_and_match_it(encoders):
    torch_encoder = encoders["torch"]
    reference = torch_encoder.encode_queries(QUERIES)
    for backend in ("onnx", "onnx-int8"):
        encoder = encoders[backend]
        assert encoder.spec == f"minilm@{backend}"
        assert (encoder.fingerprint, encoder.dim, encoder.normalize) == (
            torch_encoder.fingerprint,
            torch_encoder.dim,
            True,
        )
        out = encoder.encode_queries(QUERIES)
        assert out.shape == (len(QUERIES), 384) and out.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
        cosine = (out * reference).sum(axis=1)
        if backend == "onnx":
            np.testing.assert_allclose(out, reference, atol=1e-5)  # same function, fp32
        else:
            assert cosine.min() > 0.98, cosine  # int8 weights: close, not equal


def test_length_sorted_batches_keep_the_input_order(encoders):
    encoder = encoders["onnx"]
    texts = [
        "short",
        "a much longer text about the history of the city of Athens and its harbour",
        "mid sized",
    ]
    one_by_one = np.concatenate([encoder.encode_passages([t]) for t in texts])
    np.testing.assert_allclose(encoder.encode_passages(texts), one_by_one, atol=1e-5)


def test_index_built_with_torch_is_served_with_int8_and_the_reverse(encoders, wiki300, tmp_path):
    corpus = tmp_path / "wiki60.jsonl"  # 60 passages keep two MiniLM builds short
    corpus.write_text("".join(wiki300.read_text().splitlines(keepends=True)[:60]))
    torch_built, int8_built = tmp_path / "torch", tmp_path / "int8"
    build_index(corpus, torch_built, kind="flat", encoder=encoders["torch"], chunk_size=128)
    build_index(corpus, int8_built, kind="flat", encoder=encoders["onnx-int8"], chunk_size=128)
    exact = load_retriever(torch_built, kind="flat", encoder=encoders["torch"]).search(QUERIES[:3], 3)
    served = load_retriever(torch_built, kind="flat", encoder=encoders["onnx-int8"]).search(QUERIES[:3], 3)
    assert [hits[0].id for hits in served] == [hits[0].id for hits in exact]
    reverse = load_retriever(int8_built, kind="flat", encoder=encoders["torch"]).search(QUERIES[:3], 3)
    assert [hits[0].id for hits in reverse] == [hits[0].id for hits in exact]


def test_server_runs_a_torch_built_index_with_onnx_unless_told_torch(encoders, wiki300, tmp_path):
    from server_thread import ServerThread

    from rlcore.retrieval import RetrievalClient
    from rlcore.retrieval.server import ServerConfig, create_app

    corpus = tmp_path / "wiki40.jsonl"
    corpus.write_text("".join(wiki300.read_text().splitlines(keepends=True)[:40]))
    build_index(corpus, tmp_path / "index", kind="flat", encoder=encoders["torch"], chunk_size=128)
    exact = load_retriever(tmp_path / "index", kind="flat", encoder=encoders["torch"]).search(QUERIES[:3], 3)
    for backend, spec in (("auto", "minilm@onnx"), ("torch", "minilm")):
        config = ServerConfig(index=str(tmp_path / "index"), device="cpu", encoder_backend=backend)
        with ServerThread(create_app(config)) as served, RetrievalClient(served.url) as client:
            assert client.wait_until_ready(timeout=120)["encoder"] == spec
            hits = client.search(QUERIES[:3], 3)
            assert [[p.id for p in h] for h in hits] == [[p.id for p in h] for h in exact]
