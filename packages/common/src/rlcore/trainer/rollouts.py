"""Phases 1-2 of a training step: sample this step's prompts and roll them out.

Every rank draws the same ``prompts_per_step`` record indices and rolls out its own slice (slots
``rank, rank + world, ...``). Group ids are ``<step>:<slot>:<record id>``, so each prompt *instance* is its own
GRPO group, even when the same question is drawn twice in one step.
"""

from __future__ import annotations

from typing import Any

from rlcore.faults import fault_point
from rlcore.rollout import OnAnswer, Trajectory
from rlcore.trainer.config import RLTrainConfig
from rlcore.trainer.data import encode_record_prompt, record_id
from rlcore.trainer.metrics import PhaseTimer
from rlcore.trainer.optim import generation_context
from rlcore.trainer.setup import TrainerParts

__all__ = ["PromptBatch", "sample_prompts", "generate_rollouts"]

# (prompt token ids, group id, metadata) per rollout; num_generations consecutive entries share a group
PromptBatch = tuple[list[list[int]], list[str], list[dict[str, Any]]]


def sample_prompts(
    cfg: RLTrainConfig,
    records: list[dict[str, Any]],
    indices: list[int],
    tokenizer: Any,
    step: int,
    rank: int,
    world: int,
) -> PromptBatch:
    """This rank's rollout requests for the global prompt list ``indices``: ``num_generations`` copies of each
    of its prompts, with the prompt's group id and ``{"record_index": i}`` metadata."""
    prompt_ids, group_ids, metadata = [], [], []
    for slot in range(rank, len(indices), world):
        record = records[indices[slot]]
        ids = encode_record_prompt(
            tokenizer,
            record,
            cfg.data.prompt_field,
            cfg.data.use_chat_template,
            cfg.data.system_prompt,
        )
        group = f"{step}:{slot}:{record_id(record, indices[slot], cfg.data.id_field)}"
        for _ in range(cfg.objective.num_generations):
            prompt_ids.append(ids)
            group_ids.append(group)
            metadata.append({"record_index": indices[slot]})
    return prompt_ids, group_ids, metadata


def generate_rollouts(
    cfg: RLTrainConfig, parts: TrainerParts, step: int, timer: PhaseTimer, on_answer: OnAnswer | None
) -> list[Trajectory]:
    """Draw the step's prompts, sample ``num_generations`` trajectories per prompt, time generate/retrieve."""
    indices = parts.sampler.next_indices(cfg.objective.prompts_per_step)
    prompt_ids, group_ids, metadata = sample_prompts(
        cfg, parts.records, indices, parts.tokenizer, step, parts.rank, parts.world
    )
    accelerator, engine = parts.accelerator, parts.engine
    # vLLM samples from its own copy of the weights: nothing to gather under ZeRO-3 while it does
    reads_policy = cfg.generation.backend != "vllm"
    with (
        timer.phase("rollout"),
        accelerator.autocast(),
        generation_context(accelerator, parts.model, gather=reads_policy),
    ):
        trajectories = engine.run(prompt_ids, group_ids, metadata, on_answer=on_answer)
    fault_point("rollout", step)
    if cfg.generation.backend == "vllm" and cfg.generation.vllm_sleep:
        parts.backend.sleep(level=1)
    timer.add("generate", engine.last_stats.get("generate_seconds", 0.0))
    timer.add("retrieve", engine.last_stats.get("retrieve_seconds", 0.0))
    return trajectories
