"""Mixed sampling: probe rollouts that restart a wrong original from an exploratory prompt.

The rollout engine calls :meth:`MixedSampler.on_answer` whenever a trajectory answers in a search-enabled round.
For an original whose answer is EM-wrong (and, in ``per_wrong_rollout`` mode, with probability ``probe_prob``) the
sampler returns one clone: the trajectory cut just before its answer block (everything it wrote earlier in that
turn is kept, e.g. its ``<think>`` block), followed by one prompt drawn uniformly from the pool, appended with
component INSERTED (trained on). The clone joins the active set and continues under the current policy, searching
again if it wants. Probes never spawn probes, and the forced search-free final round never spawns probes.

``dead_end_group`` mode needs the outcome of every original of a question, which is only known when the rollout
ends, so it clones *every* wrong original at answer time and :meth:`MixedSampler.select_dead_end_probes` later
keeps only the probes of all-wrong groups (each with probability ``probe_prob``). The extra generated tokens of
discarded probes are counted in ``discarded_probe_tokens``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from rexrag.correction import ProbeLayout
from rexrag.trie import PromptTrie, encode_prompt
from rexrag.trigger import ProbeTrigger, dead_end_rate
from rlcore.rewards.qa import exact_match
from rlcore.rollout import (
    INSERTED_COMPONENTS,
    LOSS_COMPONENTS,
    MODEL,
    RolloutConfig,
    Trajectory,
    clone_before_answer,
)

GOLD_KEY = "golden_answers"


def metadata_golds(traj: Trajectory) -> list[str]:
    """Gold answers stored in the rollout metadata (``metadata["golden_answers"]``)."""
    golds = traj.metadata.get(GOLD_KEY)
    if not golds:
        raise KeyError(
            f"trajectory {traj.trajectory_id!r} has no metadata[{GOLD_KEY!r}]; pass the gold answers "
            "in the rollout metadata or a gold_fn"
        )
    return list(golds)


def is_correct(traj: Trajectory, gold_fn: Callable[[Trajectory], list[str]] = metadata_golds) -> bool:
    """EM of the trajectory's final answer against its gold answers."""
    return exact_match(traj.final_answer, gold_fn(traj)) >= 1.0


def probe_generated_tokens(traj: Trajectory) -> int:
    """Tokens a probe sampled itself (after its inserted prompt): its extra generation cost."""
    inserted = [i for i, code in enumerate(traj.components) if code in INSERTED_COMPONENTS]
    start = inserted[-1] + 1 if inserted else 0
    return sum(1 for code in traj.components[start:] if code == MODEL)


class MixedSampler:
    """Probe spawning for one training run: pool + trie (built from the active tokenizer) + trigger."""

    def __init__(
        self,
        tokenizer,
        prompts: Sequence[str],
        trigger: ProbeTrigger,
        rollout_config: RolloutConfig | None = None,
        seed: int = 0,
        gold_fn: Callable[[Trajectory], list[str]] = metadata_golds,
    ):
        self.tokenizer = tokenizer
        self.prompts = list(prompts)
        self.prompt_ids = [encode_prompt(tokenizer, p) for p in self.prompts]
        self.trie = PromptTrie(self.prompt_ids)
        self.trigger = trigger
        self.rollout_config = rollout_config
        self._rng = random.Random(seed)
        self.discarded_probe_tokens = 0
        self.gold_fn = gold_fn
        self.gold_fn = gold_fn

    def on_answer(self, traj: Trajectory, round_index: int) -> list[Trajectory]:
        """The engine's ``on_answer`` hook (only called in search-enabled rounds)."""
        if not traj.is_original:
            return []
        correct = is_correct(traj, self.gold_fn)
        if self.trigger.mode == "per_wrong_rollout":
            if not self.trigger.at_answer(is_original=True, answer_correct=correct, search_enabled=True):
                return []
        elif correct:  # dead_end_group: clone every wrong original now, decide after the rollout
            return []
        choice = self._rng.randrange(len(self.prompts))
        clone = clone_before_answer(traj, self.tokenizer, self.prompt_ids[choice], self.rollout_config)
        clone.metadata["probe_prompt_index"] = choice
        clone.metadata["probe_round"] = round_index
        return [clone]

    def select_dead_end_probes(self, trajectories: list[Trajectory]) -> list[Trajectory]:
        """``dead_end_group`` mode: drop probes whose question has a correct original (identity otherwise)."""
        if self.trigger.mode != "dead_end_group":
            return trajectories
        originals = [t for t in trajectories if t.is_original]
        correct = {t.trajectory_id: is_correct(t, self.gold_fn) for t in originals}
        solved: dict[str, bool] = {}
        for t in originals:
            solved[t.group_id] = solved.get(t.group_id, False) or correct[t.trajectory_id]
        kept = []
        for traj in trajectories:
            if traj.is_original:
                kept.append(traj)
            elif not solved.get(traj.group_id, False) and self.trigger.draw():
                kept.append(traj)
            else:
                self.discarded_probe_tokens += probe_generated_tokens(traj)
        return kept

    def layout(self, traj: Trajectory) -> ProbeLayout:
        """Where the inserted prompt sits in ``traj`` and its per-token log-probs under the pool trie."""
        if traj.is_original:
            return ProbeLayout(is_probe=False)
        positions = [i for i, code in enumerate(traj.components) if code in INSERTED_COMPONENTS]
        if not positions:
            raise ValueError(f"probe {traj.trajectory_id!r} has no INSERTED tokens")
        start, length = positions[0], len(positions)
        if positions[-1] != start + length - 1:
            raise ValueError(f"probe {traj.trajectory_id!r}: inserted tokens are not contiguous")
        tokens = traj.response_ids[start : start + length]
        prefix_model = sum(1 for c in traj.components[:start] if c in LOSS_COMPONENTS)
        return ProbeLayout(True, start, self.trie.sequence_logprobs(tokens), prefix_model)


def probe_stats(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Accuracy of originals and probes, dead-end rate (groups whose originals are all wrong), probe count."""
    originals = [t for t in trajectories if t.is_original]
    probes = [t for t in trajectories if not t.is_original]
    orig_ok = [is_correct(t) for t in originals]
    stats = {
        "probe/num_probes": float(len(probes)),
        "probe/orig_accuracy": sum(orig_ok) / len(originals) if originals else 0.0,
        "probe/dead_end_rate": dead_end_rate([t.group_id for t in originals], orig_ok) if originals else 0.0,
    }
    if probes:
        stats["probe/accuracy"] = sum(is_correct(t) for t in probes) / len(probes)
    return stats
