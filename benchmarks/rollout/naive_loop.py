"""The baseline: a per-trajectory, per-turn decode -> regex -> re-encode loop, as Search-R1-style code does it.

Each trajectory is generated on its own with ``model.generate`` (KV cache inside one call, stop strings on);
the turn's text is decoded, cut after the first block, and the whole context is kept as *text* and re-encoded
before every turn. The loop also records what the policy really sampled, to count trajectories whose
re-tokenized ids differ from the sampled ids (the token mismatch bug).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import torch

from rlcore.rollout import RolloutConfig, format_observation


@dataclass
class NaiveTrajectory:
    prompt_text: str
    text: str = ""  # the response as text (what the naive loop keeps)
    turns: list[tuple[list[int], list[int]]] = field(default_factory=list)  # (context ids seen, ids sampled)
    turn_mismatch: bool = False  # some turn's text re-encoded on its own != its sampled ids
    context_mismatch: bool = (
        False  # encode(prompt + response text) does not extend some turn's context + sample
    )
    num_searches: int = 0
    answered: bool = False


def _block_pattern(config: RolloutConfig) -> re.Pattern[str]:
    tags = f"{re.escape(config.search_tag)}|{re.escape(config.answer_tag)}"
    return re.compile(rf"<({tags})>(.*?)</\1>", re.DOTALL)


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)


def naive_rollout(model, tokenizer, prompt_texts: list[str], config: RolloutConfig, retriever) -> dict:
    """Run the baseline over ``prompt_texts``; returns timing, token counts and mismatch counts."""
    pattern = _block_pattern(config)
    special_ids = set(tokenizer.all_special_ids)
    eos_ids = {tokenizer.eos_token_id} | set(_as_list(model.generation_config.eos_token_id))
    stops = [f"</{config.search_tag}>", f"</{config.answer_tag}>"]
    generated_tokens = 0
    trajectories = []
    started = time.perf_counter()
    for prompt_text in prompt_texts:
        traj = NaiveTrajectory(prompt_text)
        for round_index in range(config.num_rounds):
            search_enabled = round_index < config.max_turns
            context_ids = tokenizer.encode(
                prompt_text + traj.text, add_special_tokens=False
            )  # re-encode it all
            input_ids = torch.tensor([context_ids])
            with torch.inference_mode():
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    do_sample=not config.greedy,
                    temperature=config.temperature,
                    top_p=config.top_p,
                    top_k=max(config.top_k, 0),
                    max_new_tokens=config.max_new_tokens_per_turn,
                    stop_strings=stops,
                    tokenizer=tokenizer,
                    pad_token_id=tokenizer.pad_token_id,
                )
            sampled = output[0, len(context_ids) :].tolist()
            generated_tokens += len(sampled)
            turn_text = tokenizer.decode(sampled, skip_special_tokens=True)
            match = pattern.search(turn_text)
            cut_text = turn_text[: match.end()] if match else turn_text
            # Ids that produced the cut text: up to the token holding its last character.
            kept = sampled
            if match:
                for count in range(1, len(sampled) + 1):
                    if len(tokenizer.decode(sampled[:count], skip_special_tokens=True)) >= len(cut_text):
                        kept = sampled[:count]
                        break
            retokenized = tokenizer.encode(cut_text, add_special_tokens=False)
            traj.turn_mismatch |= retokenized != [t for t in kept if t not in special_ids]
            traj.text += cut_text
            traj.turns.append((context_ids, [t for t in kept if t not in special_ids]))
            query = match.group(2).strip() if match else ""
            last_round = round_index == config.num_rounds - 1
            if match and match.group(1) == config.answer_tag:
                traj.answered = True
                break
            if match and query and search_enabled and not last_round:
                passages = retriever.search([query], config.retrieval_topk)[0]
                observation = format_observation(passages, config)
                traj.num_searches += 1
            elif (
                (match and query) or last_round or (sampled and sampled[-1] in eos_ids and config.end_on_eos)
            ):
                break  # the same ends as the engine: search without a round left, out of rounds, EOS
            else:
                observation = config.invalid_action_feedback
            traj.text += observation
        # A trainer of this loop scores encode(prompt + text). Token-exact would mean that, for every turn, it
        # starts with the ids the policy was conditioned on followed by the ids it sampled (special tokens the
        # text drops, such as EOS, are left out so that only re-tokenization differences count).
        trained = tokenizer.encode(prompt_text + traj.text, add_special_tokens=False)
        traj.context_mismatch = any(
            trained[: len(seen) + len(kept)] != seen + kept for seen, kept in traj.turns
        )
        trajectories.append(traj)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "generated_tokens": generated_tokens,
        "tokens_per_second": generated_tokens / seconds,
        "trajectories": len(trajectories),
        "searches_per_trajectory": sum(t.num_searches for t in trajectories) / len(trajectories),
        "answered": sum(t.answered for t in trajectories),
        "turn_retokenization_mismatches": sum(
            t.turn_mismatch for t in trajectories
        ),  # Search-R1's per-turn way
        "context_reencode_mismatches": sum(
            t.context_mismatch for t in trajectories
        ),  # whole-context re-encode
        "mismatched_trajectories": sum(t.turn_mismatch or t.context_mismatch for t in trajectories),
    }
