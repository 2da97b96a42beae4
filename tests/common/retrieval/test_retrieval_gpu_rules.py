"""GPU rules of the dense index that hold without a GPU: searches on a GPU index are serialised, and the
IVF-PQ settings chosen for GPU are ones FAISS GPU accepts (its GpuIndexIVFPQ checks, written out below)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rlcore.retrieval.dense import GPU_PQ_M, DenseIndex, DenseParams, gpu_ivfpq_problems, gpu_pq_m
from rlcore.retrieval.types import RetrievalError


class _OverlapRecorder:
    """A stand-in FAISS index whose ``search`` sleeps and records how many calls were inside it at once."""

    def __init__(self, dim: int = 4):
        self.d, self.ntotal = dim, 10
        self.inside = self.most_inside = 0
        self.guard = threading.Lock()

    def search(self, queries, topk):
        with self.guard:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        time.sleep(0.05)
        with self.guard:
            self.inside -= 1
        return np.zeros((len(queries), topk), np.float32), np.zeros((len(queries), topk), np.int64)


def _concurrent_searches(index: DenseIndex, calls: int = 4) -> None:
    with ThreadPoolExecutor(max_workers=calls) as pool:
        list(pool.map(lambda _: index.search(np.ones((2, 4), np.float32), 3), range(calls)))


def test_searches_on_a_gpu_index_run_one_at_a_time():
    fake = _OverlapRecorder()
    index = DenseIndex(fake, "flat", DenseParams())
    index.on_gpu = True
    _concurrent_searches(index)
    assert fake.most_inside == 1


def test_searches_on_a_cpu_index_may_overlap():
    """The control for the test above: without the GPU flag the same calls do overlap (CPU FAISS is re-entrant)."""
    fake = _OverlapRecorder()
    _concurrent_searches(DenseIndex(fake, "flat", DenseParams()))
    assert fake.most_inside > 1


@pytest.mark.parametrize(
    "dim, fp16, expected",
    [
        (1024, True, 64),  # dim / 8 = 128 is not a GPU code size; 96 does not divide 1024; 64 -> 16 dims each
        (1024, False, 32),  # 56/64/96 need fp16 lookup tables; 48 and 40 do not divide 1024
        (768, True, 96),  # e5-base: 8 dims each, lookup table 2 * 96 * 256 = 49,152 bytes, exactly the limit
        (768, False, 48),  # fp32 table 4 * 48 * 256 = 49,152 bytes
        (384, True, 48),  # MiniLM: dim / 8 = 48 is a GPU code size
        (32, True, 4),  # tiny hashing encoder: dim / 8 = 4
    ],
)
def test_gpu_pq_m_choice(dim, fp16, expected):
    assert gpu_pq_m(dim, fp16) == expected
    assert gpu_ivfpq_problems(dim, expected, 8, fp16) == []


@pytest.mark.parametrize(
    "dim, pq_m, nbits, fp16, message",
    [
        (384, 48, 4, True, "8-bit codes only"),  # the CPU default for corpora under 9,984 vectors
        (1024, 128, 8, True, "pq_m in"),  # the CPU default dim / 8 for a 1024-dim encoder
        (768, 96, 8, False, "needs fp16 lookup tables"),
        (1024, 48, 8, True, "dividing the dim 1024"),
        (960, 20, 8, True, "48 dims per sub-quantizer"),
    ],
)
def test_gpu_ivfpq_problems_name_the_refused_setting(dim, pq_m, nbits, fp16, message):
    problems = gpu_ivfpq_problems(dim, pq_m, nbits, fp16)
    assert any(message in problem for problem in problems), problems


def test_for_gpu_params_resolve_to_gpu_valid_settings():
    # the CPU defaults for a 1,000-vector, 1024-dim corpus are refused on GPU: 128 sub-quantizers, 4 bits
    cpu = DenseParams().resolved("ivfpq", 1000, 1024)
    assert (cpu.pq_m, cpu.pq_nbits) == (128, 4) and gpu_ivfpq_problems(1024, cpu.pq_m, cpu.pq_nbits)
    gpu = DenseParams(for_gpu=True).resolved("ivfpq", 1000, 1024)
    assert (gpu.pq_m, gpu.pq_nbits) == (64, 8)
    with pytest.raises(ValueError, match="8-bit codes only"):
        DenseParams(for_gpu=True, pq_nbits=4).resolved("ivfpq", 1000, 384)
    with pytest.raises(ValueError, match="use kind flat"):
        DenseParams(for_gpu=True).resolved("ivfpq", 100, 384)
    assert set(GPU_PQ_M) >= {gpu_pq_m(dim) for dim in (64, 128, 256, 384, 512, 768, 1024)}
    # 4096 dims would need >= 128 sub-quantizers to keep <= 32 dims each: no GPU IVF-PQ exists for it
    with pytest.raises(ValueError, match="no pq_m FAISS GPU accepts for dim 4096"):
        gpu_pq_m(4096)


def test_to_gpu_refuses_a_cpu_only_ivfpq_before_touching_the_gpu(monkeypatch):
    import faiss

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1, raising=False)
    index = DenseIndex.__new__(DenseIndex)
    index.index, index.kind, index.on_gpu = _OverlapRecorder(dim=1024), "ivfpq", False
    index.params = DenseParams().resolved("ivfpq", 1000, 1024)
    with pytest.raises(RetrievalError, match="--for-gpu"):
        index.to_gpu()
