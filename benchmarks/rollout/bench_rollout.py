"""Multi-turn rollout throughput: our engine (batched, KV cache, token-exact) vs a naive per-turn re-encode loop.

    make bench-rollout                       # = python benchmarks/rollout/bench_rollout.py
    python benchmarks/rollout/bench_rollout.py --scenarios format --questions 16 --samples 4

Two policies, each rolled out by both loops with the same prompts, sampling settings and fake retriever:

- ``random``: ``rlcore.models.load_causal_lm("tiny-qwen2")`` (random Qwen2, Qwen vocabulary). It never closes
  a tag, so every turn is a full-length invalid action: a pure multi-turn decode workload.
- ``format``: a tiny Qwen2 on an in-code BPE tokenizer, fitted for a few seconds to follow the search
  protocol (``format_policy.py``), so rollouts search, read observations and answer.

Throughput = sampled tokens / wall-clock seconds of the whole rollout (generation, retrieval, bookkeeping).
The naive loop also counts trajectories whose re-tokenized ids differ from the sampled ids; ours runs
``verify_trajectory`` on every trajectory. Results go to OUT/<time>/results.json and results.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from format_policy import chat_prompt_text, question, train_format_policy  # noqa: E402
from naive_loop import naive_rollout  # noqa: E402

from rlcore.generation import HFBackend  # noqa: E402
from rlcore.logging_utils import setup_logging  # noqa: E402
from rlcore.rollout import (  # noqa: E402
    DEFAULT_SEARCH_INSTRUCTION,
    RolloutConfig,
    RolloutEngine,
    TrajectoryMismatchError,
    rollout_metrics,
    verify_trajectory,
)
from rlcore.rollout.testing import FakeRetriever  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
logger = logging.getLogger("bench_rollout")

RANDOM_QUESTIONS = [
    "who wrote Pride and Prejudice?",
    "what is the capital of France?",
    "which river flows through Vienna?",
    "how high is Mount Everest?",
    "what is the capital of Germany?",
    "who painted the Mona Lisa?",
    "when did the Berlin Wall fall?",
    "what is the largest ocean?",
]


def random_scenario(num_questions: int):
    from rlcore.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer("tiny-qwen2")
    model = load_causal_lm("tiny-qwen2", dtype=torch.float32).eval()
    questions = [RANDOM_QUESTIONS[i % len(RANDOM_QUESTIONS)] for i in range(num_questions)]
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": DEFAULT_SEARCH_INSTRUCTION.format(question=q)}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for q in questions
    ]
    return tokenizer, model, prompts, FakeRetriever()


def format_scenario(num_questions: int, seed: int, cache: Path):
    tokenizer, model, world, retriever = train_format_policy(seed=seed, cache=cache)
    countries = [world[i % len(world)][0] for i in range(num_questions)]
    logger.info("format policy questions, e.g. %r", question(countries[0]))
    return tokenizer, model, [chat_prompt_text(tokenizer, c) for c in countries], retriever


def run_engine(
    model, tokenizer, prompt_texts: list[str], config: RolloutConfig, retriever, batch_size: int
) -> dict:
    engine = RolloutEngine(HFBackend(model, tokenizer, batch_size=batch_size), tokenizer, config, retriever)
    prompt_ids = [tokenizer.encode(text, add_special_tokens=False) for text in prompt_texts]
    started = time.perf_counter()
    trajectories = engine.run(prompt_ids, [f"p{i}" for i in range(len(prompt_ids))])
    seconds = time.perf_counter() - started
    mismatched = 0
    for traj in trajectories:
        try:
            verify_trajectory(traj)
        except TrajectoryMismatchError:
            mismatched += 1
    metrics = rollout_metrics(trajectories)
    tokens = int(engine.last_stats["generated_tokens"])
    return {
        "seconds": seconds,
        "generated_tokens": tokens,
        "tokens_per_second": tokens / seconds,
        "trajectories": len(trajectories),
        "searches_per_trajectory": metrics["rollout/num_searches"],
        "answered": sum(t.final_answer is not None for t in trajectories),
        "mismatched_trajectories": mismatched,
        "generate_seconds": engine.last_stats["generate_seconds"],
        "retrieve_seconds": engine.last_stats["retrieve_seconds"],
    }


def git_sha() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "packages", "benchmarks"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout
        return sha.strip() + ("-dirty" if dirty.strip() else "")
    except OSError:
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="random,format", help="comma list of random, format")
    parser.add_argument("--questions", type=int, default=8, help="distinct prompts")
    parser.add_argument("--samples", type=int, default=2, help="rollouts per prompt")
    parser.add_argument(
        "--max-turns", type=int, default=2, help="search rounds (+1 final round without search)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=32, help="sampled tokens per turn")
    parser.add_argument("--batch-size", type=int, default=64, help="HFBackend batch size")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 keeps a shared machine fair)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache", default=str(ROOT / ".cache" / "bench-rollout"), help="fitted format policy"
    )
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-rollout"))
    args = parser.parse_args()
    setup_logging()
    torch.set_num_threads(args.threads)
    config = RolloutConfig(
        max_turns=args.max_turns,
        max_new_tokens_per_turn=args.max_new_tokens,
        max_response_tokens=4096,
        temperature=1.0,
        end_on_eos=True,
    )
    results = {
        "command": " ".join(sys.argv),
        "git": git_sha(),
        "torch": torch.__version__,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_start": os.getloadavg()[0],
        "args": vars(args),
        "scenarios": {},
    }
    for scenario in args.scenarios.split(","):
        if scenario == "random":
            tokenizer, model, prompts, retriever = random_scenario(args.questions)
        elif scenario == "format":
            tokenizer, model, prompts, retriever = format_scenario(
                args.questions, args.seed, Path(args.cache)
            )
        else:
            parser.error(f"unknown scenario {scenario!r} (random, format)")
        prompts = [p for p in prompts for _ in range(args.samples)]
        logger.info("%s: %d rollouts, engine first", scenario, len(prompts))
        torch.manual_seed(args.seed)
        ours = run_engine(model, tokenizer, prompts, config, retriever, args.batch_size)
        logger.info("%s: engine %.1f tok/s; naive loop next", scenario, ours["tokens_per_second"])
        torch.manual_seed(args.seed)
        naive = naive_rollout(model, tokenizer, prompts, config, retriever)
        results["scenarios"][scenario] = {
            "engine": ours,
            "naive": naive,
            "speedup": ours["tokens_per_second"] / naive["tokens_per_second"],
        }
    results["load_average_end"] = os.getloadavg()[0]

    table = Table(title=f"multi-turn rollout throughput (CPU, {args.threads} torch thread(s))")
    for column in (
        "policy",
        "loop",
        "rollouts",
        "sampled tokens",
        "seconds",
        "tokens/s",
        "speedup",
        "searches/traj",
        "answered",
        "re-tokenized != sampled",
    ):
        table.add_column(column, justify="right" if column not in ("policy", "loop") else "left")
    lines = [
        "| policy | loop | rollouts | sampled tokens | seconds | tokens/s | speedup | searches/traj | answered | "
        "re-tokenized != sampled |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario, entry in results["scenarios"].items():
        for loop in ("engine", "naive"):
            r = entry[loop]
            row = [
                scenario,
                loop,
                str(r["trajectories"]),
                str(r["generated_tokens"]),
                f"{r['seconds']:.1f}",
                f"{r['tokens_per_second']:.1f}",
                f"{entry['speedup']:.2f}x" if loop == "engine" else "1.00x",
                f"{r['searches_per_trajectory']:.2f}",
                str(r["answered"]),
                f"{r['mismatched_trajectories']}/{r['trajectories']}",
            ]
            table.add_row(*row)
            lines.append("| " + " | ".join(row) + " |")
    Console(width=160).print(table)
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
