"""Pieces the REX-RAG recipes share: the synthetic world on disk, its BM25 index, a tokenizer and a tiny model
trained from scratch on it, and greedy multi-turn evaluation."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from rexrag.data.qa import QAExample
from rexrag.data.template import chat_prompt_ids, render_prompt
from rexrag.data.world import WorldConfig, write_world
from rexrag.evaluation import score_records, summarize_samples
from rlcore.config import config_hash
from rlcore.generation import HFBackend
from rlcore.models import scratch_qwen2_config
from rlcore.retrieval import build_index, load_retriever
from rlcore.rollout import RolloutConfig, RolloutEngine, Trajectory, encode_chat_prompt

logger = logging.getLogger(__name__)

# A short template for tiny models (same tag protocol as DEFAULT_TEMPLATE, fewer tokens per rollout).
SHORT_TEMPLATE = (
    "Search with <search> query </search> and answer with <answer> answer </answer>. Question: {question}\n"
)


@dataclass
class SampledEvalConfig:
    """Sampled evaluation beside the greedy one (the official validation sampled at T = 1: bug 1 in docs/rexrag.md)."""

    samples: int = 0  # sampled passes over the evaluation questions (0 = greedy only)
    temperature: float = 1.0  # sampling temperature of those passes (the official runs: 1.0)
    top_p: float = 1.0  # nucleus mass of those passes (the official runs: 1.0)
    seed: int = 0  # pass k samples with seed + k (reproducible)

    def validate(self, where: str) -> None:
        if self.samples < 0:
            raise ValueError(f"{where}.samples must be >= 0, got {self.samples}")
        if self.samples and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError(
                f"{where}: sampled passes need temperature > 0 and 0 < top_p <= 1, "
                f"got temperature={self.temperature} top_p={self.top_p}"
            )


@dataclass
class TinyModelConfig:
    """A small Qwen2 trained from scratch (``init=scratch``) or any model spec for rlcore.models."""

    # "scratch" (new tiny Qwen2 + BPE tokenizer trained on the world) or a model spec/path
    init: str = "scratch"
    vocab_size: int = 2048  # BPE vocabulary of the world tokenizer (scratch only)
    hidden_size: int = 128  # transformer width (scratch only)
    num_layers: int = 4  # decoder layers (scratch only)
    num_heads: int = 4  # attention heads (scratch only)
    num_kv_heads: int = 2  # key/value heads (grouped-query attention; scratch only)
    intermediate_size: int = 384  # MLP width (scratch only)
    max_positions: int = 1024  # longest context (scratch only)


@dataclass
class WorldDataConfig:
    """Where the synthetic world lives and how prompts are rendered."""

    world: WorldConfig = field(default_factory=WorldConfig)  # world generator settings
    dir: str = "runs/rexrag/world"  # output folder (rebuilt when the world config changes)
    template: str = SHORT_TEMPLATE  # prompt template with a {question} placeholder


def ensure_world(cfg: WorldDataConfig) -> dict[str, Path]:
    """Write the world (corpus, questions) and its BM25 index unless an identical one is already there."""

    out = Path(cfg.dir)
    stamp = out / "world_config_hash.txt"
    digest = config_hash(cfg.world)
    names = ("corpus", "world", "train", "dev", "test")
    paths = {
        name: out
        / ("corpus.jsonl" if name == "corpus" else "world.json" if name == "world" else f"{name}.jsonl")
        for name in names
    }
    if not (
        stamp.is_file() and stamp.read_text().strip() == digest and all(p.is_file() for p in paths.values())
    ):
        logger.info("writing synthetic world (seed %d) to %s", cfg.world.seed, out)
        write_world(cfg.world, out, cfg.template)
        build_index(paths["corpus"], out / "index", kind="bm25")
        stamp.write_text(digest + "\n")
    paths["index"] = out / "index"
    return paths


def load_world_retriever(paths: dict[str, Path], cache_size: int = 65536):
    return load_retriever(paths["index"], kind="bm25", cache_size=cache_size)


def world_tokenizer_texts(paths: dict[str, Path], template: str, pool: list[str]) -> list[str]:
    """Text the world tokenizer is trained on: passages, rendered questions, the pool and the tag protocol."""
    texts = [
        json.loads(line)["contents"] for line in paths["corpus"].read_text(encoding="utf-8").splitlines()
    ]
    for split in ("train", "dev"):
        for line in paths[split].read_text(encoding="utf-8").splitlines():
            texts.append(render_prompt(json.loads(line)["question"], template))
    protocol = (
        "<think> I need to look up X. </think>\n<search> X </search>\n\n<information>Doc 1(Title: X) y\n"
        "</information>\n\n<think> Next I need Y. </think><think> So the answer is Z. </think>\n"
        "<answer> Z </answer><think> I already know this. </think>\n"
    )
    return texts + list(pool) * 5 + [protocol] * 50


def build_scratch_model(tokenizer, cfg: TinyModelConfig, seed: int):
    """A randomly initialised Qwen2ForCausalLM sized to ``tokenizer`` (fp32)."""
    # transformers is heavy and only this path needs it
    from transformers import Qwen2ForCausalLM

    config = scratch_qwen2_config(tokenizer, cfg)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    return model


def rollout_inputs(
    examples: list[QAExample],
    tokenizer,
    template: str,
    use_chat_template: bool,
    repeat: int = 1,
    group_suffix: str = "",
) -> tuple[list[list[int]], list[str], list[dict]]:
    """Prompt ids, group ids (``source:index`` + suffix, unique per prompt instance) and metadata for the engine."""
    prompts, groups, metadata = [], [], []
    for example in examples:
        # stored messages are used only when they were rendered from this run's template
        if example.prompt_messages is not None and use_chat_template and example.template == template:
            ids = encode_chat_prompt(tokenizer, example.prompt_messages)
        else:
            ids = chat_prompt_ids(tokenizer, render_prompt(example.question, template), use_chat_template)
        for _ in range(repeat):
            prompts.append(ids)
            groups.append(example.group_key + group_suffix)
            metadata.append(
                {"golden_answers": list(example.golden_answers), "data_source": example.data_source}
            )
    return prompts, groups, metadata


def trajectory_record(traj: Trajectory, tokenizer) -> dict[str, Any]:
    """One predictions-file record (the layout ``python -m rexrag eval`` reads)."""
    return {
        "data_source": traj.metadata["data_source"],
        "golden_answers": traj.metadata["golden_answers"],
        "prediction": tokenizer.decode(traj.response_ids, skip_special_tokens=True),
        "answer": traj.final_answer,
        "num_searches": traj.num_searches,
        "num_turns": traj.num_turns,
        "termination": traj.termination,
    }


def evaluate_examples(
    model,
    tokenizer,
    retriever,
    examples: list[QAExample],
    rollout: RolloutConfig,
    template: str,
    use_chat_template: bool = True,
    greedy: bool = True,
    batch_size: int = 64,
    predictions_path: str | Path | None = None,
) -> dict[str, Any]:
    """Multi-turn rollouts on ``examples`` (greedy unless ``greedy=False``, which samples at the rollout
    temperature) and their per-source EM/F1; optionally writes the predictions JSONL."""
    config = replace(rollout, greedy=greedy, verify=False)
    engine = RolloutEngine(HFBackend(model, tokenizer, batch_size=batch_size), tokenizer, config, retriever)
    prompts, groups, metadata = rollout_inputs(examples, tokenizer, template, use_chat_template)
    trajectories = engine.run(prompts, groups, metadata)
    records = [trajectory_record(t, tokenizer) for t in trajectories]
    if predictions_path is not None:
        path = Path(predictions_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return score_records(records)


def sampled_evaluation(
    model,
    tokenizer,
    retriever,
    examples: list[QAExample],
    rollout: RolloutConfig,
    template: str,
    sampled: SampledEvalConfig,
    use_chat_template: bool = True,
    batch_size: int = 64,
    predictions_dir: str | Path | None = None,
) -> dict[str, Any]:
    """``sampled.samples`` passes at ``sampled.temperature`` (pass k seeded with ``sampled.seed + k``), summarised
    as mean and spread per source (:func:`rexrag.evaluation.summarize_samples`). The global RNG is left as found."""
    passes = []
    for number in range(sampled.samples):
        config = replace(
            rollout,
            temperature=sampled.temperature,
            top_p=sampled.top_p,
            top_k=-1,
            seed=sampled.seed + number,
        )
        with torch.random.fork_rng():
            torch.manual_seed(sampled.seed + number)
            passes.append(
                evaluate_examples(
                    model,
                    tokenizer,
                    retriever,
                    examples,
                    config,
                    template,
                    use_chat_template,
                    greedy=False,
                    batch_size=batch_size,
                    predictions_path=None
                    if predictions_dir is None
                    else Path(predictions_dir) / f"predictions_sample{number}.jsonl",
                )
            )
        logger.info(
            "sampled pass %d/%d: average EM %.3f", number + 1, sampled.samples, passes[-1]["average_em"]
        )
    return summarize_samples(passes, sampled.temperature)


def eval_metrics(scores: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics of an evaluation: greedy EM/F1 per source and Avg., and the sampled passes' mean and std."""
    metrics = {
        "eval/average_em": scores["average_em"],
        "eval/average_f1": scores["average_f1"],
        **{f"eval/em/{source}": v["em"] for source, v in scores["by_source"].items()},
    }
    sampled = scores.get("sampled")
    if sampled:
        metrics["eval/sampled/average_em_mean"] = sampled["average_em"]["mean"]
        metrics["eval/sampled/average_em_std"] = sampled["average_em"]["std"]
        metrics.update({f"eval/sampled/em/{s}": v["em"]["mean"] for s, v in sampled["by_source"].items()})
    return metrics
