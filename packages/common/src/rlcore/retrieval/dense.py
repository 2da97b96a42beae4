"""FAISS dense indexes (Flat inner product, HNSW, IVF-PQ), built in chunks from an embedding file.

Scores are inner products ``s(q, p) = <e(q), e(p)>``; with L2-normalised embeddings this is cosine
similarity. Flat is exact; HNSW and IVF-PQ are approximate (recall measured by ``make bench-retrieval``).
``to_gpu`` moves a Flat or IVF index onto every visible GPU (fp16 storage, sharded), the layout Search-R1
uses for wiki-18; faiss-gpu is imported lazily and only when asked for.

Concurrency: searches on a CPU index may run in several threads at once. FAISS GPU indexes are not
thread-safe, not even for search (they share one stream and scratch memory per device), so while the index
is on GPU :meth:`DenseIndex.search` holds a lock: searches from concurrent server batches run one at a time.

GPU IVF-PQ (``GpuIndexIVFPQ``, as ``index_cpu_to_gpu`` builds it: no interleaved layout, no cuVS) accepts
only 8-bit codes, ``pq_m`` in :data:`GPU_PQ_M` dividing the dim (56, 64 and 96 only with fp16 lookup tables),
and lookup tables of at most 48 KiB (``bytes * pq_m * 256``). ``DenseParams(for_gpu=True)`` chooses such
settings at build time (:func:`gpu_pq_m`); :func:`gpu_ivfpq_problems` says what a built index violates.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .types import RetrievalError

__all__ = [
    "DenseParams",
    "DenseIndex",
    "build_faiss_index",
    "read_embedding_rows",
    "DENSE_KINDS",
    "GPU_PQ_M",
    "gpu_pq_m",
    "gpu_ivfpq_problems",
]

logger = logging.getLogger(__name__)

DENSE_KINDS = ("flat", "hnsw", "ivfpq")

# Code sizes (bytes per vector = pq_m at 8 bits) FAISS GPU's IVFPQ supports (IVFPQ::isSupportedPQCodeLength);
# the last three need fp16 lookup tables. Dims per sub-quantizer kept to the set its distance kernels take
# without precomputed tables (isSupportedNoPrecomputedSubDimSize in earlier FAISS releases).
GPU_PQ_M = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
_GPU_PQ_M_FP16_ONLY = (56, 64, 96)
_GPU_SUBDIMS = (1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 28, 32)
_GPU_SHARED_MEMORY = 48 * 1024  # bytes per block FAISS checks the lookup table against


def gpu_ivfpq_problems(dim: int, pq_m: int, pq_nbits: int, fp16: bool = True) -> list[str]:
    """Why FAISS GPU would refuse an IVF-PQ index with these settings (empty when it accepts them)."""
    problems = []
    if pq_nbits != 8:
        problems.append(f"pq_nbits={pq_nbits}: GPU IVF-PQ takes 8-bit codes only")
    if pq_m not in GPU_PQ_M or dim % pq_m:
        problems.append(f"pq_m={pq_m}: GPU IVF-PQ takes pq_m in {GPU_PQ_M} dividing the dim {dim}")
    elif pq_m in _GPU_PQ_M_FP16_ONLY and not fp16:
        problems.append(f"pq_m={pq_m} needs fp16 lookup tables on GPU (serve with fp16)")
    elif dim // pq_m not in _GPU_SUBDIMS:
        problems.append(f"pq_m={pq_m}: {dim // pq_m} dims per sub-quantizer; GPU kernels take {_GPU_SUBDIMS}")
    table = (2 if fp16 else 4) * pq_m * 2 ** max(pq_nbits, 0)
    if table > _GPU_SHARED_MEMORY:
        problems.append(
            f"pq_m={pq_m}: a {table}-byte lookup table exceeds the {_GPU_SHARED_MEMORY} bytes FAISS GPU allows"
        )
    return problems


def gpu_pq_m(dim: int, fp16: bool = True) -> int:
    """The largest GPU-valid ``pq_m`` (8-bit codes) for ``dim``, at most ``dim / 8`` (the CPU default's code size).

    For example 1024 -> 64 (16 dims per sub-quantizer; the CPU default 128 is refused on GPU), 768 -> 96,
    384 -> 48; without fp16 lookup tables 1024 -> 32 and 768 -> 48.
    """
    fitting = [m for m in GPU_PQ_M if m <= max(1, dim // 8) and not gpu_ivfpq_problems(dim, m, 8, fp16)]
    if not fitting:
        raise ValueError(f"no pq_m FAISS GPU accepts for dim {dim} (needs a divisor in {GPU_PQ_M})")
    return max(fitting)


@dataclass
class DenseParams:
    """Build and search settings of a FAISS index (0 means "choose from the corpus size")."""

    hnsw_m: int = 32  # HNSW graph degree
    ef_construction: int = 200  # HNSW candidate list size while building
    ef_search: int = 128  # HNSW candidate list size while searching (raised to topk when smaller)
    nlist: int = 0  # IVF cells; 0 -> min(4 sqrt(N), N / 39)
    pq_m: int = 0  # PQ sub-quantizers; 0 -> dim / 8 (must divide dim)
    pq_nbits: int = 0  # bits per PQ code; 0 -> 8 when N >= 9,984 (256 x 39 training points) else 4
    nprobe: int = 32  # IVF cells visited per query
    train_size: int = 0  # IVF-PQ training sample; 0 -> min(N, max(64 nlist, 20,000))
    for_gpu: bool = False  # IVF-PQ to be served on GPU: 8-bit codes and a pq_m FAISS GPU accepts (gpu_pq_m)

    def resolved(self, kind: str, num_vectors: int, dim: int) -> DenseParams:
        """A copy with the automatic (0) fields filled in for ``num_vectors`` vectors of size ``dim``."""
        out = DenseParams(**asdict(self))
        if kind == "ivfpq":
            if out.nlist <= 0:
                out.nlist = max(1, min(int(4 * math.sqrt(num_vectors)), num_vectors // 39))
            if out.pq_m <= 0:
                out.pq_m = gpu_pq_m(dim) if out.for_gpu else max(1, dim // 8)
            if dim % out.pq_m:
                raise ValueError(f"pq_m={out.pq_m} must divide the embedding dim {dim}")
            if out.pq_nbits <= 0:
                out.pq_nbits = 8 if out.for_gpu or num_vectors >= 256 * 39 else 4
            if out.for_gpu:
                if num_vectors < 256:
                    raise ValueError(
                        f"for_gpu IVF-PQ needs 8-bit codes, whose 256 centroids need >= 256 vectors; the corpus "
                        f"has {num_vectors}: use kind flat"
                    )
                problems = gpu_ivfpq_problems(dim, out.pq_m, out.pq_nbits)
                if problems:
                    raise ValueError("for_gpu IVF-PQ settings FAISS GPU refuses: " + "; ".join(problems))
            if out.train_size <= 0:
                out.train_size = min(num_vectors, max(64 * out.nlist, 20_000))
        return out


def read_embedding_rows(path: Path, dim: int, start: int, end: int) -> np.ndarray:
    """Rows ``start..end-1`` of a raw float32 ``(N, dim)`` file, read (not mapped): ``(end - start, dim)``."""
    count = (end - start) * dim
    out = np.fromfile(path, dtype="<f4", count=count, offset=4 * dim * start)
    if out.size != count:
        raise RetrievalError(f"{path}: embedding file is shorter than expected (rows {start}..{end})")
    return out.reshape(end - start, dim)


def _sample_rows(path: Path, dim: int, num_vectors: int, size: int, seed: int = 0) -> np.ndarray:
    """``(size, dim)`` random rows of the embedding file, read one ``pread`` each (bounded memory)."""
    rows = np.sort(np.random.default_rng(seed).choice(num_vectors, size=size, replace=False))
    out = np.empty((size, dim), dtype=np.float32)
    fd = os.open(path, os.O_RDONLY)
    try:
        for i, row in enumerate(rows):
            out[i] = np.frombuffer(os.pread(fd, 4 * dim, 4 * dim * int(row)), dtype="<f4")
    finally:
        os.close(fd)
    return out


def build_faiss_index(
    kind: str, embeddings: Path, num_vectors: int, dim: int, params: DenseParams, chunk_rows: int = 65536
):
    """Build a CPU FAISS index of ``kind`` from a raw ``(num_vectors, dim)`` float32 file, adding it in chunks.

    Peak memory is the index itself plus one chunk (``chunk_rows x dim x 4`` bytes) plus, for IVF-PQ, the
    training sample.
    """
    # faiss comes from the cpu/gpu extra and only dense indexes need it
    import faiss

    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
    elif kind == "ivfpq":
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(
            quantizer, dim, params.nlist, params.pq_m, params.pq_nbits, faiss.METRIC_INNER_PRODUCT
        )
        sample = _sample_rows(embeddings, dim, num_vectors, params.train_size)
        logger.info(
            "training IVF%d,PQ%dx%d on %d vectors", params.nlist, params.pq_m, params.pq_nbits, len(sample)
        )
        index.train(sample)
        del sample
    else:
        raise ValueError(f"unknown dense index kind {kind!r}; choose from {DENSE_KINDS}")
    for start in tqdm(range(0, num_vectors, chunk_rows), desc=f"add {kind}", unit=" chunk"):
        index.add(read_embedding_rows(embeddings, dim, start, min(start + chunk_rows, num_vectors)))
    return index


class DenseIndex:
    """A FAISS index plus its search settings. ``search(vectors (n, dim), k) -> (scores (n, k), rows (n, k))``;
    rows are corpus rows, ``-1`` where the index returned fewer than ``k`` hits."""

    def __init__(self, index, kind: str, params: DenseParams):
        self.index, self.kind, self.params = index, kind, params
        self.on_gpu = False
        self._gpu_lock = threading.Lock()  # serialises searches while on GPU (see the module docstring)
        self._apply_search_params(topk=1)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def _apply_search_params(self, topk: int) -> None:
        # faiss comes from the cpu/gpu extra and only dense indexes need it
        import faiss

        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.params.ef_search, topk)
        elif self.kind == "ivfpq":
            if self.on_gpu:
                faiss.GpuParameterSpace().set_index_parameter(self.index, "nprobe", self.params.nprobe)
            else:
                faiss.extract_index_ivf(self.index).nprobe = self.params.nprobe

    def search(self, vectors: np.ndarray, topk: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``topk`` by inner product. ``vectors``: ``(n, dim)`` float32 -> ``(n, topk)`` float32, int64."""
        if self.kind == "hnsw" and topk > self.params.ef_search:
            self._apply_search_params(topk)
        queries = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.on_gpu:
            with self._gpu_lock:
                return self.index.search(queries, topk)
        return self.index.search(queries, topk)

    @classmethod
    def load(cls, path: Path, kind: str, params: DenseParams, mmap: bool = False) -> DenseIndex:
        """Read a saved index; ``mmap=True`` maps Flat/IVF data instead of reading it (lower resident memory)."""
        # faiss comes from the cpu/gpu extra and only dense indexes need it
        import faiss

        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        return cls(faiss.read_index(str(path), flags), kind, params)

    def save(self, path: Path) -> None:
        # faiss comes from the cpu/gpu extra and only dense indexes need it
        import faiss

        if self.on_gpu:
            raise RetrievalError("save the CPU index before moving it to GPU")
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self.index, str(tmp))
        tmp.replace(path)

    def to_gpu(self, fp16: bool = True, shard: bool = True) -> DenseIndex:
        """Move onto all visible GPUs (sharded, fp16 storage). HNSW has no GPU version and stays on CPU."""
        try:
            import faiss
        except ImportError as err:  # pragma: no cover - faiss is a hard dependency
            raise RetrievalError("faiss is not installed") from err
        num_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if num_gpus == 0:
            raise RetrievalError(
                "no GPU visible to faiss: install the gpu extra (faiss-gpu instead of faiss-cpu) and check "
                "CUDA_VISIBLE_DEVICES, or serve on CPU"
            )
        if self.kind == "hnsw":
            logger.warning("FAISS has no GPU HNSW; keeping the HNSW index on CPU")
            return self
        if self.kind == "ivfpq":
            problems = gpu_ivfpq_problems(self.dim, self.params.pq_m, self.params.pq_nbits, fp16)
            if problems:
                raise RetrievalError(
                    "this IVF-PQ index cannot go to GPU: " + "; ".join(problems) + ". Rebuild it with "
                    "`python -m rlcore.retrieval.build ... --kind ivfpq --for-gpu`, or serve it on CPU"
                )
        options = faiss.GpuMultipleClonerOptions()
        options.useFloat16 = fp16
        options.shard = shard
        self.index = faiss.index_cpu_to_all_gpus(self.index, co=options)
        self.on_gpu = True
        self._apply_search_params(topk=1)
        logger.info("moved %s index to %d GPU(s) (fp16=%s, shard=%s)", self.kind, num_gpus, fp16, shard)
        return self
