"""Shared pieces of the trainer tests: a config on the tiny random Qwen2, prompt records, simple rewards."""

from __future__ import annotations

import json
from pathlib import Path

from rlcore.config import load_config
from rlcore.trainer import RLTrainConfig

RECORDS = [
    {"id": f"q{i}", "prompt": f"Question {i}: what is {i} plus {i}?", "golden_answers": [str(2 * i)]}
    for i in range(8)
]

# Small but not trivial: 2 prompts x 4 rollouts x 8 tokens, two PPO epochs over two mini-batches of two
# micro-batches (so pi_old is recomputed and ratios move away from 1), a k3 KL to the frozen reference, and a
# learning rate high enough that every parameter visibly moves in one step (tiny gradients otherwise stall).
BASE = [
    "model.path=tiny-qwen2",
    "rollout.max_new_tokens_per_turn=8",
    "objective.prompts_per_step=2",
    "objective.num_generations=4",
    "objective.ppo_epochs=2",
    "objective.minibatch_size=4",
    "objective.micro_batch_size=2",
    "objective.kl_coef=0.05",
    "optim.lr=0.01",
    "optim.weight_decay=0.0",
    "train.seed=7",
    "train.save_final_model=false",
    "tracking.enabled=false",
]


def make_cfg(output_dir: Path, *overrides: str) -> RLTrainConfig:
    return load_config(RLTrainConfig, overrides=[*BASE, f"train.output_dir={output_dir}", *overrides])


def letter_reward(completions, **columns):
    """Share of ASCII letters in the decoded text: continuous in [0, 1], so random rollouts of the same prompt
    almost never tie and every group carries a learning signal."""
    return [sum(ch.isascii() and ch.isalpha() for ch in text) / max(len(text), 1) for text in completions]


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]


def deterministic(metrics: dict) -> dict:
    """Drop wall-clock metrics, which legitimately differ between runs."""
    return {k: v for k, v in metrics.items() if not k.startswith(("time/", "throughput/"))}
