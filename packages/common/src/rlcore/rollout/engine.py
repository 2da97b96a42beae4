"""Multi-turn tool rollouts with token-exact bookkeeping.

Each round: one batched ``backend.generate`` over every active trajectory's exact ids (prompt + response so
far), one batched ``retriever.search`` for every trajectory that searched, then observations / feedback are
tokenized once and appended. Sampled ids are appended as returned, never decoded and re-encoded, so the ids a
trainer scores are the ids the policy was conditioned on and produced; :func:`verify_trajectory` proves it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from rlcore.generation.types import FINISH_STOP, Generation, GenerationBackend, SamplingParams
from rlcore.rollout.config import RolloutConfig
from rlcore.rollout.protocol import encode_observation, parse_action, stop_strings
from rlcore.rollout.trajectory import (
    FEEDBACK,
    INSERTED_COMPONENTS,
    MODEL,
    OBSERVATION,
    Trajectory,
    TurnRecord,
    fingerprint,
    verify_trajectory,
)
from rlcore.seeding import derive_seed

__all__ = ["RolloutEngine", "OnAnswer", "rollout_metrics"]

logger = logging.getLogger(__name__)

OnAnswer = Callable[[Trajectory, int], list[Trajectory]]
_FINISHED_TERMINATIONS = ("answer", "eos")


def _end(traj: Trajectory, termination: str) -> None:
    traj.termination = termination
    traj.finished = termination in _FINISHED_TERMINATIONS


def _ended_by_eos(generation: Generation) -> bool:
    """EOS or a stop id (not a stop string) ended the generation."""
    return generation.finish_reason == FINISH_STOP and not isinstance(generation.stop_reason, str)


class RolloutEngine:
    """Runs the Search-R1 turn loop (or single-turn generation with tools off) for a batch of prompts.

    ``backend``: a :class:`~rlcore.generation.types.GenerationBackend`; ``tokenizer``: encodes observations and
    feedback (never the policy's own tokens); ``retriever``: ``search(queries, topk) -> list[list[Passage]]``.
    After :meth:`run`, ``last_stats`` holds the time split and token counts of that run.
    """

    def __init__(
        self, backend: GenerationBackend, tokenizer, config: RolloutConfig | None = None, retriever=None
    ):
        self.backend = backend
        self.tokenizer = tokenizer
        self.config = config if config is not None else RolloutConfig()
        self.config.validate()
        if self.config.tools_enabled and retriever is None:
            raise ValueError(
                "RolloutEngine: tools_enabled=True needs a retriever (or set tools_enabled=False, "
                "max_turns=1 for single-turn generation)"
            )
        self.retriever = retriever
        self._feedback_ids = tokenizer.encode(self.config.invalid_action_feedback, add_special_tokens=False)
        self.run_index = 0
        self.last_stats: dict[str, float] = {}

    def sampling_params(self, round_index: int, max_new_tokens: int) -> SamplingParams:
        """The sampling params of one round (seed derived per run and round when ``config.seed`` is set)."""
        cfg = self.config
        seed = None if cfg.seed is None else derive_seed(cfg.seed, self.run_index, round_index)
        return SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            stop=stop_strings(cfg),
            seed=seed,
            greedy=cfg.greedy,
        )

    def _append_capped(self, traj: Trajectory, ids: list[int], component: int) -> bool:
        """Append ``ids`` cut to the response budget; True if anything had to be cut."""
        room = self.config.max_response_tokens - len(traj)
        traj.append(ids[: max(room, 0)], component)
        return len(ids) > room

    def run(
        self,
        prompt_ids: list[list[int]],
        group_ids: list[str],
        metadata: list[dict] | None = None,
        on_answer: OnAnswer | None = None,
    ) -> list[Trajectory]:
        """Roll out every prompt; returns the originals in input order, then trajectories added by ``on_answer``.

        ``on_answer(traj, round_index)`` runs when a trajectory answers in a search-enabled round; the
        trajectories it returns (unfinished, e.g. REX-RAG probes) join the active set from the next round.
        """
        cfg = self.config
        if len(prompt_ids) != len(group_ids):
            raise ValueError(f"RolloutEngine.run: {len(prompt_ids)} prompts but {len(group_ids)} group ids")
        if metadata is not None and len(metadata) != len(prompt_ids):
            raise ValueError(
                f"RolloutEngine.run: {len(prompt_ids)} prompts but {len(metadata)} metadata entries"
            )
        for index, ids in enumerate(prompt_ids):
            if not ids:
                raise ValueError(f"RolloutEngine.run: prompt_ids[{index}] is empty")
        seen: Counter[str] = Counter()
        trajectories = []
        start_cut = 0
        for index, (ids, group) in enumerate(zip(prompt_ids, group_ids)):
            if cfg.max_start_tokens and len(ids) > cfg.max_start_tokens:
                ids = ids[
                    -cfg.max_start_tokens :
                ]  # Search-R1 keeps the prompt's last max_start_length tokens
                start_cut += 1
            trajectories.append(
                Trajectory(
                    prompt_ids=[int(t) for t in ids],
                    group_id=str(group),
                    trajectory_id=f"{group}#{seen[group]}",
                    metadata=dict(metadata[index]) if metadata is not None else {},
                )
            )
            seen[group] += 1
        if start_cut:
            logger.warning(
                "%d of %d prompts are longer than rollout.max_start_tokens=%d: kept their last %d tokens",
                start_cut,
                len(prompt_ids),
                cfg.max_start_tokens,
                cfg.max_start_tokens,
            )
        stats = Counter(
            truncated_prompts=start_cut,
            generate_seconds=0.0,
            retrieve_seconds=0.0,
            generated_tokens=0,
            generate_calls=0,
            retrieval_calls=0,
            rounds=0,
            spawned=0,
        )
        active = list(trajectories)
        for round_index in range(cfg.num_rounds):
            if not active:
                break
            last_round = round_index == cfg.num_rounds - 1
            search_enabled = cfg.tools_enabled and round_index < cfg.max_turns
            runnable = []
            for traj in active:
                if cfg.max_response_tokens - len(traj) < 1:
                    _end(traj, "max_response_tokens")
                else:
                    runnable.append(traj)
            if not runnable:
                active = []
                break
            budget = max(cfg.max_response_tokens - len(traj) for traj in runnable)
            params = self.sampling_params(round_index, min(cfg.max_new_tokens_per_turn, budget))
            contexts = [traj.prompt_ids + traj.response_ids for traj in runnable]
            started = time.perf_counter()
            generations = self.backend.generate(contexts, params)
            stats["generate_seconds"] += time.perf_counter() - started
            stats["generate_calls"] += 1
            stats["rounds"] += 1
            if len(generations) != len(runnable):
                raise RuntimeError(
                    f"backend returned {len(generations)} generations for {len(runnable)} prompts"
                )

            next_active: list[Trajectory] = []
            spawned: list[Trajectory] = []
            searches: list[tuple[Trajectory, str]] = []
            for traj, context, generation in zip(runnable, contexts, generations):
                stats["generated_tokens"] += len(generation.token_ids)
                room = cfg.max_response_tokens - len(traj)
                kept = list(generation.token_ids[:room])
                kept_logprobs = list(generation.logprobs[: len(kept)])
                cut_by_budget = len(kept) < len(generation.token_ids)
                action = parse_action(generation.text, cfg)
                if (
                    not cut_by_budget
                    and self._continues_after_eos(generation, action, last_round)
                    and kept
                    and kept[-1] in self._eos_ids(generation)
                ):
                    kept, kept_logprobs = kept[:-1], kept_logprobs[:-1]
                record = TurnRecord(
                    round_index=round_index,
                    start=len(traj),
                    num_tokens=len(kept),
                    context_fingerprint=fingerprint(context),
                    sampled_fingerprint=fingerprint(kept),
                    search_enabled=search_enabled,
                    context_ids=context if cfg.debug_keep_contexts else None,
                    sampled_ids=list(generation.token_ids) if cfg.debug_keep_contexts else None,
                )
                traj.append_sampled(kept, kept_logprobs, record)
                traj.num_turns += 1
                if cut_by_budget:
                    _end(traj, "max_response_tokens")
                    continue
                if not cfg.tools_enabled:
                    if action is not None:
                        record.action = "answer"
                        traj.final_answer = action.content
                        _end(traj, "answer")
                    else:
                        _end(traj, "eos" if _ended_by_eos(generation) else "length")
                    continue
                if action is not None and action.kind == "answer":
                    record.action = "answer"
                    traj.final_answer = action.content
                    _end(traj, "answer")
                    if search_enabled and on_answer is not None:
                        spawned.extend(self._accept_spawned(traj, on_answer(traj, round_index), len(spawned)))
                elif action is not None and action.content and search_enabled and not last_round:
                    record.action = "search"
                    searches.append((traj, action.content))
                elif action is not None and action.content and search_enabled:
                    record.action = "search"  # no round left to read the results: skip the retrieval
                    _end(traj, "max_turns")
                elif action is not None and action.kind == "search" and not search_enabled:
                    record.action = "search"
                    _end(traj, "search_without_tools")
                elif _ended_by_eos(generation) and cfg.end_on_eos:
                    _end(traj, "eos")
                elif last_round:
                    record.action = "invalid"
                    _end(traj, "max_turns")
                else:  # no action, or an empty query
                    record.action = "invalid"
                    traj.num_invalid_actions += 1
                    if self._append_capped(traj, self._feedback_ids, FEEDBACK):
                        _end(traj, "max_response_tokens")
                    else:
                        next_active.append(traj)

            if searches:
                queries = [query for _, query in searches]
                started = time.perf_counter()
                results = self.retriever.search(queries, cfg.retrieval_topk)
                stats["retrieve_seconds"] += time.perf_counter() - started
                stats["retrieval_calls"] += 1
                if len(results) != len(queries):
                    raise RuntimeError(
                        f"retriever returned {len(results)} result lists for {len(queries)} queries"
                    )
                for (traj, query), passages in zip(searches, results):
                    observation, truncated = encode_observation(list(passages), cfg, self.tokenizer)
                    traj.num_searches += 1
                    traj.metadata.setdefault("queries", []).append(query)
                    if truncated:
                        traj.metadata["obs_truncations"] = traj.metadata.get("obs_truncations", 0) + 1
                    if self._append_capped(traj, observation, OBSERVATION):
                        _end(traj, "max_response_tokens")
                    else:
                        next_active.append(traj)
            stats["spawned"] += len(spawned)
            trajectories.extend(spawned)
            order = {id(traj): position for position, traj in enumerate(runnable)}
            next_active.sort(key=lambda traj: order[id(traj)])
            active = next_active + spawned
        for traj in active:
            _end(traj, "max_turns")

        if cfg.verify:
            for traj in trajectories:
                verify_trajectory(traj)
        stats["num_trajectories"] = len(trajectories)
        self.last_stats = {key: float(value) for key, value in stats.items()}
        self.run_index += 1
        return trajectories

    def _continues_after_eos(self, generation: Generation, action, last_round: bool) -> bool:
        """The turn ended by EOS without an action, and the trajectory goes on with feedback whose EOS is dropped."""
        cfg = self.config
        return (
            cfg.tools_enabled
            and cfg.drop_eos_before_feedback
            and not cfg.end_on_eos
            and action is None
            and not last_round
            and _ended_by_eos(generation)
        )

    def _eos_ids(self, generation: Generation) -> set[int]:
        """Ids that may have ended a turn by EOS: the reported stop id, the tokenizer's and the backend's EOS."""
        ids = {generation.stop_reason} if isinstance(generation.stop_reason, int) else set()
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        backend_ids = getattr(self.backend, "eos_token_ids", None)
        if callable(backend_ids):
            backend_ids = backend_ids()
        if backend_ids:
            ids.update(int(i) for i in backend_ids)
        return ids

    def _accept_spawned(self, parent: Trajectory, new: Any, already: int) -> list[Trajectory]:
        if new is None:
            return []
        if not isinstance(new, list) or not all(isinstance(t, Trajectory) for t in new):
            raise TypeError(f"on_answer must return a list of Trajectory, got {type(new).__name__}")
        for offset, traj in enumerate(new):
            if traj is parent:
                raise ValueError("on_answer returned the answering trajectory itself; return a clone")
            if traj.finished:
                raise ValueError(
                    f"on_answer returned a finished trajectory (from {parent.trajectory_id}); "
                    "a spawned trajectory must still be active"
                )
            if not traj.trajectory_id or traj.trajectory_id == parent.trajectory_id:
                traj.trajectory_id = f"{parent.trajectory_id}/clone{already + offset}"
            traj.termination = ""
        return new


def rollout_metrics(trajectories: list[Trajectory]) -> dict[str, float]:
    """Per-batch means for logging: turns, searches, invalid actions, lengths by component, finished fraction."""
    count = len(trajectories)
    if count == 0:
        return {}

    def mean(values) -> float:
        return float(sum(values)) / count

    metrics = {
        "rollout/num_turns": mean(t.num_turns for t in trajectories),
        "rollout/num_searches": mean(t.num_searches for t in trajectories),
        "rollout/num_invalid_actions": mean(t.num_invalid_actions for t in trajectories),
        "rollout/finished": mean(t.finished for t in trajectories),
        "rollout/answered": mean(t.final_answer is not None for t in trajectories),
        "rollout/response_tokens": mean(len(t) for t in trajectories),
        "rollout/model_tokens": mean(t.components.count(MODEL) for t in trajectories),
        "rollout/observation_tokens": mean(t.components.count(OBSERVATION) for t in trajectories),
        "rollout/feedback_tokens": mean(t.components.count(FEEDBACK) for t in trajectories),
        "rollout/inserted_tokens": mean(
            sum(code in INSERTED_COMPONENTS for code in t.components) for t in trajectories
        ),
        "rollout/clones": float(sum(not t.is_original for t in trajectories)),
    }
    for reason, number in Counter(t.termination for t in trajectories).items():
        metrics[f"rollout/termination/{reason or 'none'}"] = number / count
    return metrics
