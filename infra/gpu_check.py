"""GPU-node self-check (``make gpu-check``): do our GPU paths work on this node? A pass/fail table with timings.

    python infra/gpu_check.py [--only NAME ...] [--cpu]

Checks, each small enough that all of them finish in a few minutes on one GPU:

``hf_bf16_logprobs``
    ``HFBackend`` samples from a tiny random Qwen2 in bf16; the log-prob it reports for every sampled token
    matches a recomputed forward pass over prompt + completion.
``vllm_greedy_and_sync``
    The colocated ``VLLMBackend`` generates the same greedy tokens as HF from the same weights, then takes a
    weight update (``sleep`` -> ``update_weights``) and generates what the updated HF model generates.
``faiss_gpu_topk``
    A Flat index moved to the GPUs (fp16, sharded) returns the CPU index's top-k, and an IVF-PQ index built
    with ``for_gpu`` settings moves to the GPUs and agrees with its CPU copy.
``deepspeed_zero3_bf16``
    Two DeepSpeed ZeRO-3 SGD steps in bf16 (one process) give the losses and the weight change of two plain
    fp32 PyTorch SGD steps within bf16 tolerance.
``retrieval_server_gpu``
    ``python -m rlcore.retrieval.server --gpu`` over a small built index answers over HTTP with the ids the
    in-process CPU retriever returns.

A library that is not installed is reported as ``not installed`` (never as passed). Without CUDA the script
says so and exits 0; ``--cpu`` runs every check's CPU fallback instead (fp32, CPU FAISS, no vLLM), which is
how the tests exercise the plumbing. Exit status 1 when any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PASS, FAIL, NOT_INSTALLED, SKIPPED = "pass", "FAIL", "not installed", "skipped"


class NotInstalled(Exception):
    """The library a check needs is absent (reported as ``not installed``)."""


class Skipped(Exception):
    """The check cannot run on this device (reported as ``skipped``, with the reason)."""


@dataclass
class CheckResult:
    name: str
    status: str  # PASS | FAIL | NOT_INSTALLED | SKIPPED
    seconds: float
    detail: str


def run_check(name: str, check: Callable[[], str]) -> CheckResult:
    """Run one check: its return value is the pass detail; NotInstalled/Skipped/any other error say why not."""
    start = time.perf_counter()
    try:
        detail, status = check(), PASS
    except NotInstalled as err:
        detail, status = str(err), NOT_INSTALLED
    except Skipped as err:
        detail, status = str(err), SKIPPED
    except Exception as err:  # noqa: BLE001 - a check's failure of any kind is a FAIL row, not a crash
        detail, status = f"{type(err).__name__}: {err}", FAIL
    return CheckResult(name, status, time.perf_counter() - start, " ".join(detail.split()))


def render_table(results: list[CheckResult], width: int = 100) -> str:
    """A fixed-width text table: check, status, seconds, detail (cut to ``width`` characters)."""
    name_width = max([len("check")] + [len(r.name) for r in results])
    lines = [f"{'check':<{name_width}}  {'status':<13}  {'seconds':>8}  detail"]
    lines.append("-" * len(lines[0]) + "-" * 20)
    for r in results:
        detail = r.detail if len(r.detail) <= width else r.detail[: width - 3] + "..."
        lines.append(f"{r.name:<{name_width}}  {r.status:<13}  {r.seconds:>8.1f}  {detail}")
    counts = {
        status: sum(r.status == status for r in results) for status in (PASS, FAIL, NOT_INSTALLED, SKIPPED)
    }
    lines.append(", ".join(f"{count} {status}" for status, count in counts.items() if count))
    return "\n".join(lines)


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise NotInstalled(f"`{module}` is not installed")


def _tiny_model(device: str, dtype_name: str, hidden_size: int = 128):
    """The tiny tokenizer and a random Qwen2 (head_dim 32, which vLLM's attention kernels need) on ``device``."""
    import torch

    from rlcore.generation.testing import build_tiny_qwen2, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    model = build_tiny_qwen2(tokenizer, hidden_size=hidden_size)
    return tokenizer, model.to(device=device, dtype=getattr(torch, dtype_name))


def _prompts(tokenizer) -> list[list[int]]:
    texts = ["Question: who wrote the novel?", "<search> capital of France </search>", "Answer: the river"]
    return [tokenizer.encode(text, add_special_tokens=False) for text in texts]


def check_hf_logprobs(device: str) -> str:
    import torch

    from rlcore.generation import HFBackend, SamplingParams, sampling_logprobs

    dtype = "bfloat16" if device == "cuda" else "float32"
    tolerance = 5e-2 if dtype == "bfloat16" else 1e-4  # bf16 KV cache vs one full forward pass
    tokenizer, model = _tiny_model(device, dtype)
    params = SamplingParams(max_new_tokens=24, temperature=0.8, seed=0, ignore_eos=True)
    generations = HFBackend(model, tokenizer).generate(_prompts(tokenizer), params)
    worst, tokens = 0.0, 0
    with torch.no_grad():
        for prompt, generation in zip(_prompts(tokenizer), generations):
            ids = torch.tensor([prompt + generation.token_ids], device=device)
            logits = model(ids).logits[0, len(prompt) - 1 : -1]
            picked = torch.tensor(generation.token_ids, device=device)[:, None]
            expected = sampling_logprobs(logits, params.temperature).gather(-1, picked).squeeze(-1).cpu()
            worst = max(worst, float((torch.tensor(generation.logprobs) - expected).abs().max()))
            tokens += len(generation.token_ids)
    if worst > tolerance:
        raise AssertionError(f"max |logprob - recomputed| = {worst:.2e} > {tolerance:g} ({dtype})")
    return f"{tokens} sampled tokens, max |logprob - recomputed| = {worst:.1e} ({dtype})"


def check_vllm(device: str) -> str:
    _need("vllm")
    if device != "cuda":
        raise Skipped("the colocated vLLM engine needs CUDA")
    import torch

    from rlcore.generation import HFBackend, SamplingParams, VLLMBackend

    tokenizer, model = _tiny_model(device, "float32")  # fp32 on both sides: greedy ties cannot differ
    greedy = SamplingParams(max_new_tokens=16, greedy=True, ignore_eos=True)
    prompts = _prompts(tokenizer)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        engine = VLLMBackend(
            folder, tokenizer, gpu_memory_utilization=0.2, dtype="float32", max_model_len=256
        )
        hf = HFBackend(model, tokenizer)
        before = [g.token_ids for g in engine.generate(prompts, greedy)]
        if before != [g.token_ids for g in hf.generate(prompts, greedy)]:
            raise AssertionError("vLLM and HF greedy tokens differ for the same weights")
        engine.sleep(level=1)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(-1.0)
        engine.update_weights(model)
        after = [g.token_ids for g in engine.generate(prompts, greedy)]
        if after == before:
            raise AssertionError(
                "vLLM generates the same tokens after update_weights: the update did not land"
            )
        if after != [g.token_ids for g in hf.generate(prompts, greedy)]:
            raise AssertionError(
                "after update_weights vLLM's greedy tokens differ from the updated HF model's"
            )
    return f"greedy tokens equal to HF before and after update_weights (sync {engine.last_sync_seconds:.2f}s)"


def check_faiss(device: str) -> str:
    import numpy as np

    from rlcore.retrieval.dense import DenseIndex, DenseParams, build_faiss_index

    _need("faiss")
    import faiss

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((20_000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(len(vectors), 256, replace=False)] + 0.05 * rng.standard_normal((256, 384))
    flat = faiss.IndexFlatIP(384)
    flat.add(vectors)
    _, cpu_rows = flat.search(queries.astype(np.float32), 10)
    if device != "cuda":  # fallback: our wrapper against exact numpy top-k
        exact = np.argsort(-(queries.astype(np.float32) @ vectors.T), axis=1)[:, :10]
        _, ours = DenseIndex(flat, "flat", DenseParams()).search(queries, 10)
        if not (ours[:, 0] == exact[:, 0]).all():
            raise AssertionError("CPU Flat top-1 differs from exact numpy top-1")
        return "CPU fallback: Flat top-1 equals exact numpy top-1 for 256 queries"
    if not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() < 1:
        raise NotInstalled(
            "faiss sees no GPU: faiss-gpu is not installed (or CUDA_VISIBLE_DEVICES hides them)"
        )
    gpu = DenseIndex(faiss.clone_index(flat), "flat", DenseParams()).to_gpu(fp16=True)
    _, gpu_rows = gpu.search(queries, 10)
    top1 = float((gpu_rows[:, 0] == cpu_rows[:, 0]).mean())
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(gpu_rows.tolist(), cpu_rows.tolist())]))
    if top1 < 0.99 or recall < 0.98:
        raise AssertionError(f"GPU Flat vs CPU: top-1 agreement {top1:.3f}, recall@10 {recall:.3f}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "emb.f32"
        vectors.tofile(path)
        params = DenseParams(for_gpu=True).resolved("ivfpq", len(vectors), 384)
        ivf = build_faiss_index("ivfpq", path, len(vectors), 384, params)
    ivf_cpu = DenseIndex(ivf, "ivfpq", params)
    _, ivf_cpu_rows = ivf_cpu.search(queries, 10)
    ivf_gpu = DenseIndex(faiss.clone_index(ivf), "ivfpq", params).to_gpu(fp16=True)
    _, ivf_gpu_rows = ivf_gpu.search(queries, 10)
    overlap = float((ivf_gpu_rows[:, 0] == ivf_cpu_rows[:, 0]).mean())
    if overlap < 0.9:
        raise AssertionError(
            f"GPU IVF-PQ (pq_m={params.pq_m}) top-1 agrees with its CPU copy on {overlap:.2f}"
        )
    return (
        f"Flat top-1 {top1:.3f}, recall@10 {recall:.3f} (fp16, {faiss.get_num_gpus()} GPU); "
        f"IVF-PQ pq_m={params.pq_m} 8-bit on GPU, top-1 = CPU copy on {overlap:.2f}"
    )


def check_deepspeed(device: str) -> str:
    _need("deepspeed")
    import deepspeed
    import torch
    import torch.distributed as dist

    dtype = "bfloat16" if device == "cuda" else "float32"
    tolerance = 3e-2 if dtype == "bfloat16" else 1e-4
    tokenizer, reference = _tiny_model("cpu", "float32", hidden_size=64)
    batch = torch.tensor([ids[:6] for ids in _prompts(tokenizer)[:2]])

    def plain_losses() -> tuple[list[float], torch.nn.Module]:
        model = _tiny_model(device, "float32", hidden_size=64)[1].train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        losses = []
        for _ in range(2):
            loss = model(input_ids=batch.to(device), labels=batch.to(device)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss))
        return losses, model

    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"})
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")
    model = _tiny_model("cpu", "float32", hidden_size=64)[1].train()
    config = {
        "train_micro_batch_size_per_gpu": len(batch),
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 3},
        "bf16": {"enabled": dtype == "bfloat16"},
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": 0.0,  # DeepSpeed clips at 1.0 unless told; the plain steps do not clip
    }
    # plain SGD: the weight change is linear in the gradient, so the comparison sees any gradient error
    # (Adam would normalise away scale errors and amplify noise on near-zero gradients)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    losses = []
    for _ in range(2):
        loss = engine(input_ids=batch.to(engine.device), labels=batch.to(engine.device)).loss
        engine.backward(loss)
        engine.step()
        losses.append(float(loss))
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        zero_delta = torch.cat(
            [
                (p.detach().float().cpu() - r.detach()).flatten()
                for p, r in zip(engine.module.parameters(), reference.parameters())
            ]
        )
    expected_losses, plain = plain_losses()
    plain_delta = torch.cat(
        [
            (p.detach().float().cpu() - r.detach()).flatten()
            for p, r in zip(plain.parameters(), reference.parameters())
        ]
    )
    loss_gap = max(abs(a - b) / max(abs(b), 1e-6) for a, b in zip(losses, expected_losses))
    cosine = float(torch.nn.functional.cosine_similarity(zero_delta, plain_delta, dim=0))
    if loss_gap > tolerance or cosine < (0.98 if dtype == "bfloat16" else 0.9999):
        raise AssertionError(
            f"ZeRO-3 vs plain: loss rel. gap {loss_gap:.2e}, weight-change cosine {cosine:.4f}"
        )
    return f"2 ZeRO-3 steps ({dtype}): loss rel. gap {loss_gap:.1e}, weight-change cosine {cosine:.4f}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def check_retrieval_server(device: str, encoder: str = "minilm") -> str:
    from rlcore.retrieval import load_retriever
    from rlcore.retrieval.build import build_index
    from rlcore.retrieval.client import RetrievalClient
    from rlcore.retrieval.corpora import wiki_records
    from rlcore.retrieval.corpus import write_jsonl

    gpu = device == "cuda"
    if gpu:
        import faiss

        if not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() < 1:
            raise NotInstalled("faiss sees no GPU: faiss-gpu is not installed")
    records = wiki_records()[:400]
    queries = [record["title"] for record in records[::50]]
    with tempfile.TemporaryDirectory() as folder:
        corpus, index = Path(folder) / "corpus.jsonl", Path(folder) / "index"
        write_jsonl(((r["id"], f"{r['title']}\n{r['extract']}") for r in records), corpus)
        build_index(corpus, index, kind="flat", encoder=encoder)
        expected = [[p.id for p in hits] for hits in load_retriever(index, kind="flat").search(queries, 5)]
        port = _free_port()
        command = [
            sys.executable,
            "-m",
            "rlcore.retrieval.server",
            "--index",
            str(index),
            "--kind",
            "flat",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *(["--gpu"] if gpu else []),
        ]
        log = Path(folder) / "server.log"
        with open(log, "w") as sink:
            server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        try:
            with RetrievalClient(f"http://127.0.0.1:{port}") as client:
                client.wait_until_ready(timeout=180)
                served = [[p.id for p in hits] for hits in client.search(queries, topk=5)]
        except Exception as err:
            raise AssertionError(f"{err}; server log tail: {log.read_text()[-800:]}") from err
        finally:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=30)
    top1 = sum(a[:1] == b[:1] for a, b in zip(served, expected))
    if top1 != len(queries):
        raise AssertionError(f"served top-1 equals the CPU retriever's for {top1}/{len(queries)} queries")
    where = "FAISS on GPU (fp16)" if gpu else "CPU fallback"
    return f"{where}: HTTP top-1 = in-process CPU top-1 for {len(queries)} queries ({encoder}, 400 passages)"


CHECKS: dict[str, Callable[[str], str]] = {
    "hf_bf16_logprobs": check_hf_logprobs,
    "vllm_greedy_and_sync": check_vllm,
    "faiss_gpu_topk": check_faiss,
    "deepspeed_zero3_bf16": check_deepspeed,
    "retrieval_server_gpu": check_retrieval_server,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(CHECKS), help="run these checks only")
    parser.add_argument("--cpu", action="store_true", help="run the CPU fallbacks (plumbing; no GPU needed)")
    args = parser.parse_args(argv)
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print(
            "no CUDA device visible to torch: nothing to check here (run on a GPU node; --cpu runs the "
            "CPU fallbacks)"
        )
        return 0
    device = "cpu" if args.cpu else "cuda"
    if device == "cuda":
        print(
            f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, torch {torch.__version__} "
            f"(CUDA {torch.version.cuda})",
            flush=True,
        )
    results = []
    for name in args.only or list(CHECKS):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results.append(run_check(name, lambda check=CHECKS[name]: check(device)))
    print(render_table(results))
    return 1 if any(r.status == FAIL for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
