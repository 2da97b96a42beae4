"""infra/gpu_check.py without a GPU: the table, the outcome of each kind of check result, the no-CUDA exit,
and every check's CPU fallback on the tiny model / small index (the GPU paths themselves run on a GPU node)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch
from infra_helpers import INFRA, REPO

spec = importlib.util.spec_from_file_location("gpu_check", INFRA / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check  # dataclasses look their module up there
spec.loader.exec_module(gpu_check)

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _raise(error: Exception):
    def check():
        raise error

    return check


def test_each_outcome_has_its_own_status():
    assert gpu_check.run_check("a", lambda: "fine").status == gpu_check.PASS
    missing = gpu_check.run_check("b", _raise(gpu_check.NotInstalled("`vllm` is not installed")))
    assert (missing.status, missing.detail) == ("not installed", "`vllm` is not installed")
    assert gpu_check.run_check("c", _raise(gpu_check.Skipped("needs CUDA"))).status == "skipped"
    broken = gpu_check.run_check("d", _raise(AssertionError("tokens\ndiffer")))
    assert (broken.status, broken.detail) == ("FAIL", "AssertionError: tokens differ")


def test_table_shows_every_check_with_status_and_seconds():
    results = [
        gpu_check.CheckResult("hf_bf16_logprobs", "pass", 1.234, "ok"),
        gpu_check.CheckResult("vllm_greedy_and_sync", "not installed", 0.0, "`vllm` is not installed"),
        gpu_check.CheckResult("faiss_gpu_topk", "FAIL", 12.0, "x" * 300),
    ]
    lines = gpu_check.render_table(results, width=40).splitlines()
    assert lines[0].split() == ["check", "status", "seconds", "detail"]
    assert lines[2].split()[:3] == ["hf_bf16_logprobs", "pass", "1.2"]
    assert "vllm_greedy_and_sync  not installed" in lines[3] and "pass" not in lines[3]
    assert lines[4].endswith("x" * 37 + "...")
    assert lines[-1] == "1 pass, 1 FAIL, 1 not installed"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA exit; this machine has CUDA")
def test_without_cuda_it_says_so_and_exits_0():
    result = subprocess.run(
        [sys.executable, str(INFRA / "gpu_check.py")], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert result.returncode == 0 and "no CUDA device visible to torch" in result.stdout


def test_a_failed_check_fails_the_run(monkeypatch, capsys):
    monkeypatch.setitem(
        gpu_check.CHECKS, "faiss_gpu_topk", lambda device: (_ for _ in ()).throw(ValueError("bad"))
    )
    monkeypatch.setitem(gpu_check.CHECKS, "vllm_greedy_and_sync", gpu_check.check_vllm)
    assert gpu_check.main(["--cpu", "--only", "faiss_gpu_topk", "vllm_greedy_and_sync"]) == 1
    out = capsys.readouterr().out
    assert "faiss_gpu_topk" in out and "ValueError: bad" in out


def test_hf_logprob_check_on_cpu_passes_and_catches_wrong_logprobs(monkeypatch):
    assert "max |logprob - recomputed|" in gpu_check.check_hf_logprobs("cpu")
    from rlcore.generation import HFBackend

    original = HFBackend.generate

    def off_by_a_bit(self, prompts, params):
        generations = original(self, prompts, params)
        generations[1].logprobs[3] -= 0.01  # one token's log-prob wrong by 0.01 nats
        return generations

    monkeypatch.setattr(HFBackend, "generate", off_by_a_bit)
    result = gpu_check.run_check("hf", lambda: gpu_check.check_hf_logprobs("cpu"))
    assert result.status == "FAIL" and "1.00e-02" in result.detail


def test_faiss_fallback_and_vllm_status_on_cpu():
    assert gpu_check.check_faiss("cpu").startswith("CPU fallback: Flat top-1 equals exact numpy top-1")
    expected = gpu_check.Skipped if HAS_VLLM else gpu_check.NotInstalled
    with pytest.raises(expected):
        gpu_check.check_vllm("cpu")


def test_retrieval_server_fallback_serves_what_the_cpu_retriever_finds():
    detail = gpu_check.check_retrieval_server("cpu", encoder="hashing:64")
    assert detail.startswith("CPU fallback: HTTP top-1 = in-process CPU top-1 for 8 queries")


@pytest.mark.slow
def test_deepspeed_zero3_fallback_matches_plain_steps():
    """In a subprocess: the check initialises torch.distributed for itself."""
    result = subprocess.run(
        [sys.executable, str(INFRA / "gpu_check.py"), "--cpu", "--only", "deepspeed_zero3_bf16"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith("deepspeed_zero3_bf16"))
    assert row.split()[1] == "pass" and "float32" in row
