"""Subprocess body of the REX-RAG kill-point tests: a short REX-RAG training over the HTTP retrieval server.

usage: python kill_worker.py OUTPUT_DIR WORLD_DIR MODEL_DIR SERVER_URL TOTAL_STEPS

The rollout policy is scripted (wrong answer first; after an inserted self-doubt prompt a search over HTTP, then
the gold answer), so every step searches, spawns probes and uses the method's RNG streams; the tiny Qwen2 is
trained for real. ``RLCORE_FAULT_POINT=<point>:<step>`` in the environment kills it at that point.
"""

import re
import sys
from pathlib import Path
from typing import Any

from faults_helpers import SMALL_WORLD

from rexrag.data.qa import load_flashrag_jsonl
from rexrag.data.template import DEFAULT_TEMPLATE
from rexrag.data.world import WorldConfig
from rexrag.method import RexRag, RexRagConfig
from rexrag.recipes.common import WorldDataConfig, ensure_world
from rexrag.recipes.train import QAConfig, RetrieverConfig, RexRagTrainConfig, open_retriever, to_records
from rlcore.generation.testing import ScriptedBackend
from rlcore.logging_utils import setup_logging
from rlcore.models import load_tokenizer
from rlcore.rollout import RolloutConfig
from rlcore.trainer.config import ObjectiveConfig, TrackingConfig, TrainLoopConfig
from rlcore.trainer.grpo import train


def scripted_policy(examples):
    gold = {ex.question: ex.golden_answers[0] for ex in examples}
    first_hop = {ex.question: ex.metadata["chain"][0] for ex in examples}

    def respond(context_ids, text):
        question = re.findall(r"Question: (.*?\?)", text)[-1]
        response = text.split("assistant")[-1]
        if "</information>" in response:
            return f"<answer> {gold[question]} </answer>"
        if "<think> I" in response:
            return f" </think>\n<search> {first_hop[question]} </search>"
        return "<think> I know this. </think>\n<answer> Nobody </answer>"

    return respond


def small_run(
    output_dir: Path, world_dir: Path, model_dir: Path, total_steps: int, minibatch_size: int, save_every: int
) -> tuple[RexRagTrainConfig, list, list, Any, RexRag]:
    """The short REX-RAG run both fault workers train: its config, the world's train examples and records, the
    tokenizer of the tiny Qwen2 at ``model_dir`` and the method (probes with probability 0.5)."""
    world_cfg = WorldDataConfig(
        world=WorldConfig(**SMALL_WORLD), dir=str(world_dir), template=DEFAULT_TEMPLATE
    )
    examples = load_flashrag_jsonl(ensure_world(world_cfg)["train"])
    records = to_records(examples, DEFAULT_TEMPLATE)
    cfg = RexRagTrainConfig(
        rollout=RolloutConfig(max_turns=3, max_new_tokens_per_turn=48, max_response_tokens=600),
        objective=ObjectiveConfig(
            num_generations=2,
            prompts_per_step=2,
            micro_batch_size=2,
            minibatch_size=minibatch_size,
            kl_coef=0.001,
        ),
        train=TrainLoopConfig(
            total_steps=total_steps, output_dir=str(output_dir), seed=1, save_every=save_every
        ),
        tracking=TrackingConfig(enabled=False),
        qa=QAConfig(world=world_cfg),
        rexrag=RexRagConfig(probe_prob=0.5, keep_ratio_init=1.0, pool="paraphrase_30"),
    )
    cfg.model.path = str(model_dir)
    cfg.optim.lr = 1e-2
    tokenizer = load_tokenizer(model_dir)
    return cfg, examples, records, tokenizer, RexRag(cfg.rexrag, tokenizer, cfg.rollout, records)


def main() -> None:
    setup_logging("WARNING")
    output_dir, world_dir, model_dir = (Path(a) for a in sys.argv[1:4])
    url, total_steps = sys.argv[4], int(sys.argv[5])
    cfg, examples, records, tokenizer, method = small_run(
        output_dir, world_dir, model_dir, total_steps, minibatch_size=4, save_every=1
    )
    result = train(
        cfg,
        records=records,
        retriever=open_retriever(RetrieverConfig(kind="http", url=url), None),
        after_rollout=method.after_rollout,
        behaviour_logprobs=method.behaviour_logprobs,
        on_answer=method.on_answer,
        stateful={"rexrag": method},
        backend=ScriptedBackend(tokenizer, scripted_policy(examples)),
    )
    print(f"LAST_STEP {result.last_step} STOPPED {result.stopped_early}")


if __name__ == "__main__":
    main()
