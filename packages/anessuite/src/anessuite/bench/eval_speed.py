"""``make bench-eval``: evaluation throughput, measured side by side on the same model and questions.

1. In-process: our batched HF backend (``batch_size`` prompts per decode loop, each batch's shared prompt prefix
   prefilled once) against a one-question-at-a-time loop (batch size 1, what a naive script does), and the
   batched backend without prefix sharing (to show what each part buys); all greedy, same prompts, same token
   cap. Reports questions/s, generated tokens/s, the speed-up ratios and how many responses are identical.
2. HTTP: the OpenAI-compatible client against a local server (``anessuite.bench.server``, dynamic batching)
   with ``concurrency`` requests in flight against one request at a time (the official evaluator's pattern
   with 1 worker; it uses 16 threads against an 8-replica SGLang router).

On a shared machine the load drifts during a run, so the two arms of each comparison alternate (A B, then B A)
and each keeps its fastest repeat; the 1-minute load average at start and end goes into the results.

    python -m anessuite.bench.eval_speed --questions 32 --max-new-tokens 128 --out experiments/anessuite-bench-eval
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from anessuite.bench.server import build_app
from anessuite.benchmark import load_anesbench
from anessuite.prompts import PromptConfig, build_messages
from anessuite.report import render_markdown, update_readme
from anessuite.synthetic.generate import ensure_default_world
from rlcore.logging_utils import setup_logging
from rlcore.tracking import write_results_json

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _timed(backend, conversations, max_new_tokens: int) -> tuple[float, dict[int, Any], float]:
    """Wall seconds, results, and CPU seconds of this process (all threads): on a shared machine the wall time
    depends on the neighbours, the CPU time much less."""
    started, cpu_started = time.perf_counter(), time.process_time()
    results = dict(backend.complete(conversations, max_new_tokens))
    return time.perf_counter() - started, results, time.process_time() - cpu_started


def _summary(seconds: float, results: dict[int, Any], cpu_seconds: float) -> dict[str, float]:
    tokens = sum(r.num_tokens or 0 for r in results.values())
    return {
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "questions_per_s": round(len(results) / seconds, 4),
        "generated_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 2),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(backend, model_name: str, max_batch: int) -> tuple[str, Any]:
    # uvicorn is needed only to serve
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(backend, model_name, max_batch), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("benchmark server did not start within 60 s")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/v1", server


def _best(runs: list[tuple[float, dict[int, Any], float]]) -> dict[str, float]:
    summary = _summary(*min(runs, key=lambda run: run[0]))
    summary["cpu_seconds"] = round(min(run[2] for run in runs), 3)  # the least CPU any repeat needed
    return summary


def run(
    model: str,
    questions: int,
    max_new_tokens: int,
    batch_size: int,
    concurrency: int,
    repeats: int = 2,
    http: bool = True,
    plain: bool = True,
) -> dict[str, Any]:
    # heavy and optional here: loads httpx, torch, transformers
    from anessuite.backends.hf import HFChatBackend
    from anessuite.backends.openai_compat import OpenAIChatBackend

    items = load_anesbench(ensure_default_world()["benchmark"])
    english = [item for item in items if item.language == "en"][: questions // 2]
    chinese = [item for item in items if item.language == "zh"][: questions - len(english)]
    conversations = [build_messages(item, PromptConfig()) for item in english + chinese]
    backend = HFChatBackend(model, batch_size=batch_size)
    dict(backend.complete(conversations[:2], 4))  # warm-up (allocations, first-call overheads)
    report: dict[str, Any] = {
        "model": model,
        "questions": len(conversations),
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "concurrency": concurrency,
        "repeats": repeats,
        "load_average_start": round(os.getloadavg()[0], 2),
    }

    def configure(size: int, share_prefix: bool) -> None:
        backend.batch_size = backend.generator.batch_size = size
        backend.share_prefix = share_prefix

    # The arms rotate (A B C, then C B A, ...) and each keeps its fastest repeat, so load drift on a shared
    # machine does not land on one arm only.
    arms = [
        ("in_process_loop", 1, False),
        ("in_process_batched_no_prefix", batch_size, False),
        ("in_process_batched", batch_size, True),
    ]
    if not plain:
        arms.pop(1)
    local: dict[str, list] = {name: [] for name, _, _ in arms}
    for repeat in range(repeats):
        for name, size, share in arms if repeat % 2 == 0 else arms[::-1]:
            configure(size, share)
            local[name].append(_timed(backend, conversations, max_new_tokens))
            logger.info("%s: %.1f s", name, local[name][-1][0])
    configure(batch_size, True)
    for name, _, _ in arms:
        report[name] = _best(local[name])
    for name in [arm for arm, _, _ in arms[1:]]:
        suffix = "" if name == "in_process_batched" else "_no_prefix"
        report[f"in_process_speedup{suffix}"] = round(
            report["in_process_loop"]["seconds"] / report[name]["seconds"], 3
        )
        report[f"in_process_cpu_speedup{suffix}"] = round(
            report["in_process_loop"]["cpu_seconds"] / report[name]["cpu_seconds"], 3
        )
        loop_results, results = local["in_process_loop"][0][1], local[name][0][1]
        report[f"identical_responses{suffix}"] = sum(
            loop_results[i].text == results[i].text for i in loop_results
        )
    if not http:
        report["load_average_end"] = round(os.getloadavg()[0], 2)
        return report

    url, server = _serve(backend, model, batch_size)
    try:
        http: dict[str, list] = {"http_sequential": [], "http_concurrent": []}
        for repeat in range(repeats):
            order = [("http_sequential", 1), ("http_concurrent", concurrency)]
            for name, workers in order if repeat % 2 == 0 else order[::-1]:
                client = OpenAIChatBackend(url, model, concurrency=workers, timeout_s=3600)
                http[name].append(_timed(client, conversations, max_new_tokens))
                client.close()
        report["http_sequential"], report["http_concurrent"] = (
            _best(http["http_sequential"]),
            _best(http["http_concurrent"]),
        )
        report["http_speedup"] = round(
            report["http_sequential"]["seconds"] / report["http_concurrent"]["seconds"], 3
        )
    finally:
        server.should_exit = True
    report["load_average_end"] = round(os.getloadavg()[0], 2)
    return report


def _update_readme(out: Path, report: dict[str, Any]) -> None:
    """Write the measured table into the experiment README's "Last run" block."""

    names = ["in_process_loop", "in_process_batched_no_prefix", "in_process_batched"]
    names = [name for name in names + ["http_sequential", "http_concurrent"] if name in report]
    rows = [{"path": name, **report[name]} for name in names]
    table = render_markdown(
        rows, ["path", "seconds", "cpu_seconds", "questions_per_s", "tokens_per_s", "generated_tokens"], 3
    )
    prov = report["provenance"]
    body = (
        f"Written by the run at {prov.get('written_at')} (git {str(prov.get('git.sha'))[:10]}, "
        f"{prov.get('host.cpus')} CPUs, GPUs: {prov.get('host.gpus')}; load average "
        f"{report['load_average_start']} -> {report['load_average_end']}); {report['questions']} questions, "
        f"{report['max_new_tokens']} new tokens, {report['model']}.\n\n{table}\n"
        f"{_headline(report)}."
    )
    update_readme(out / "README.md", body)


def _headline(report: dict[str, Any]) -> str:
    line = (
        f"In-process batched / one-at-a-time: **{report['in_process_speedup']}x** wall, "
        f"**{report['in_process_cpu_speedup']}x** CPU time; identical greedy responses batched vs "
        f"one-at-a-time: {report['identical_responses']} of {report['questions']}"
    )
    if "in_process_speedup_no_prefix" in report:
        line += (
            f" (without prefix sharing: {report['in_process_speedup_no_prefix']}x / "
            f"{report['in_process_cpu_speedup_no_prefix']}x, {report['identical_responses_no_prefix']} identical)"
        )
    if "http_speedup" in report:
        line += f"; HTTP with {report['concurrency']} in flight / sequential: **{report['http_speedup']}x**"
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anessuite.bench.eval_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model folder or embedded name")
    parser.add_argument("--questions", type=int, default=32, help="benchmark questions (half EN, half ZH)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="greedy token cap per response")
    parser.add_argument(
        "--batch-size", type=int, default=32, help="in-process batch size and server max batch"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="HTTP requests in flight")
    parser.add_argument(
        "--repeats", type=int, default=2, help="alternating repeats per arm (the fastest is kept)"
    )
    parser.add_argument("--no-http", action="store_true", help="only the in-process arms")
    parser.add_argument("--no-plain", action="store_true", help="skip the batched arm without prefix sharing")
    parser.add_argument("--out", default="experiments/anessuite-bench-eval", help="folder for results.json")
    args = parser.parse_args(argv)
    setup_logging()
    report = run(
        args.model,
        args.questions,
        args.max_new_tokens,
        args.batch_size,
        args.concurrency,
        args.repeats,
        http=not args.no_http,
        plain=not args.no_plain,
    )
    path = write_results_json(Path(args.out) / "results.json", report)
    _update_readme(Path(args.out), json.loads(path.read_text()))
    print(json.dumps(report, indent=2))
    print(_headline(report))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
