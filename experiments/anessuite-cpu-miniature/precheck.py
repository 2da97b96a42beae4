"""The miniature's model pre-check (README.md, "Model"): measure each candidate on this machine and estimate the
wall-clock of the whole make target from the budgets in pipeline.yaml, before any training run.

Per candidate: CPT training throughput (tokens/s: packed blocks of the corpus, AdamW, timed after warm-up steps)
and greedy evaluation throughput (benchmark items/s through the same HF backend the evaluation uses, 128 new
tokens). Writes ``precheck.json`` with the figures, the machine, and the estimate in minutes.

    python experiments/anessuite-cpu-miniature/precheck.py --world runs/anessuite-miniature/world \
        --candidates runs/anessuite-miniature/base-scratch smollm2-135m-instruct --out experiments/anessuite-cpu-miniature/precheck
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def cpt_tokens_per_s(
    spec: str, texts: Sequence[str], block: int, batch: int, steps: int, warmup: int
) -> float:
    """Training tokens per second on packed ``block``-token sequences, ``batch`` per step."""
    import torch

    from rlcore.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(spec)
    model = load_causal_lm(spec, dtype=torch.float32)
    model.train()
    stream: list[int] = []
    eos = tokenizer.eos_token_id
    for text in texts:
        stream += [*tokenizer(text, add_special_tokens=False)["input_ids"], eos]
        if len(stream) >= block * batch * (steps + warmup):
            break
    blocks = [stream[i : i + block] for i in range(0, len(stream) - block + 1, block)]
    if len(blocks) < batch:
        raise ValueError(
            f"{spec}: the corpus gives {len(blocks)} blocks of {block} tokens, fewer than {batch}"
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    elapsed = 0.0
    for step in range(warmup + steps):
        rows = [blocks[(step * batch + i) % len(blocks)] for i in range(batch)]
        ids = torch.tensor(rows)
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= warmup:
            elapsed += time.perf_counter() - start
    return steps * batch * block / elapsed


def eval_items_per_s(spec: str, benchmark: Path, n_items: int, max_new_tokens: int, batch_size: int) -> float:
    """Greedy completions per second on the first ``n_items`` benchmark items (the evaluation's backend)."""
    from anessuite.backends.hf import HFChatBackend
    from anessuite.benchmark import load_anesbench
    from anessuite.prompts import PromptConfig, build_messages

    items = load_anesbench(benchmark, languages=["en", "zh"])[:n_items]
    prompt = PromptConfig(use_system_prompt=False)
    backend = HFChatBackend(spec, batch_size=batch_size, dtype="float32")
    start = time.perf_counter()
    done = sum(1 for _ in backend.complete([build_messages(i, prompt) for i in items], max_new_tokens))
    return done / (time.perf_counter() - start)


def estimate_minutes(tokens_per_s: float, items_per_s: float, pipeline: dict[str, Any]) -> dict[str, float]:
    """Wall-clock of the make target from the configured budgets (README.md, "Model")."""
    cpt, sft, grpo = pipeline["cpt"], pipeline["sft"], pipeline["grpo"]
    cpt_s = cpt["total_steps"] * cpt["micro_batch_size"] * cpt["max_length"] / tokens_per_s
    # SFT examples are shorter than max_length; half of it is a generous average for this world's chats
    sft_s = sft["total_steps"] * sft["micro_batch_size"] * sft["max_length"] / 2 / tokens_per_s
    rollouts = grpo["objective"]["num_generations"] * grpo["objective"]["prompts_per_step"]
    new_tokens = grpo["rollout"]["max_new_tokens_per_turn"]
    # one rollout costs about one evaluation item to generate; its update ~3x a forward over prompt + response
    grpo_s = grpo["total_steps"] * (rollouts / items_per_s + rollouts * (new_tokens + 128) / tokens_per_s)
    eval_s = 600 / items_per_s
    seeds = 3
    with_cpt = seeds * (cpt_s + sft_s + grpo_s + 4 * eval_s)
    no_cpt = seeds * (sft_s + grpo_s + 3 * eval_s)  # base evaluation again (cached responses make it cheaper)
    table5 = 4 * (sft_s + eval_s)  # the four SFT stages Tables 3/4 do not already train
    return {
        "cpt_min": cpt_s / 60,
        "sft_min": sft_s / 60,
        "grpo_min": grpo_s / 60,
        "eval_600_items_min": eval_s / 60,
        "total_min": (with_cpt + no_cpt + table5) / 60,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure the miniature's model candidates.")
    parser.add_argument(
        "--world", required=True, help="folder written by `anessuite synth --design miniature`"
    )
    parser.add_argument("--candidates", nargs="+", required=True, help="model folders or embedded names")
    parser.add_argument("--out", required=True, help="folder for precheck.json")
    parser.add_argument("--steps", type=int, default=20, help="timed CPT steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed CPT steps first")
    parser.add_argument("--eval-items", type=int, default=32, help="benchmark items to generate")
    parser.add_argument("--pipeline", default=str(HERE / "pipeline.yaml"), help="budgets to estimate from")
    args = parser.parse_args(argv)

    import pyarrow.parquet as pq

    world = Path(args.world)
    texts = [
        t for f in sorted((world / "corpus").glob("*.parquet")) for t in pq.read_table(f).to_pydict()["text"]
    ]
    from dataclasses import asdict

    from anessuite.pipeline.config import PipelineConfig
    from rlcore.config import load_config

    # the resolved config (its base: files and defaults), not the file's own keys: pipeline.yaml leaves to
    # pipeline_cpu.yaml what that file already gives
    pipeline = asdict(load_config(PipelineConfig, args.pipeline))
    cpt, ev = pipeline["cpt"], pipeline["eval"]
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor(),
            "load_1min": os.getloadavg()[0],
        },
        "settings": {"steps": args.steps, "warmup": args.warmup, "eval_items": args.eval_items},
        "candidates": {},
    }
    for spec in args.candidates:
        tps = cpt_tokens_per_s(
            spec, texts, cpt["max_length"], cpt["micro_batch_size"], args.steps, args.warmup
        )
        ips = eval_items_per_s(
            spec, world / "benchmark", args.eval_items, ev["max_new_tokens"], ev["batch_size"]
        )
        report["candidates"][spec] = {
            "cpt_tokens_per_s": tps,
            "eval_items_per_s": ips,
            "estimate": estimate_minutes(tps, ips, pipeline),
        }
        print(
            f"{spec}: {tps:.0f} CPT tokens/s, {ips:.2f} items/s, est. {report['candidates'][spec]['estimate']['total_min']:.0f} min"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "precheck.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
