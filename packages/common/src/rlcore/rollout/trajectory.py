"""A rollout as token ids with a component code per token, and the check that it is token-exact.

Component codes (Search-R1's numbering; 2 is unused there and here):

====  ============  =====================================================  ========
code  name          what                                                   in loss
====  ============  =====================================================  ========
0     PROMPT        the question prompt (only in ``full_components``)      no
1     MODEL         tokens the policy sampled                              yes
3     FEEDBACK      invalid-action feedback text                           no
4     OBSERVATION   retrieved ``<information>`` block, wrapper included    no
5     INSERTED      inserted text, e.g. a REX-RAG exploratory prompt       yes
6     INSERTED_CONTEXT  inserted text that is conditioned on, not trained  no
====  ============  =====================================================  ========
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PROMPT",
    "MODEL",
    "FEEDBACK",
    "OBSERVATION",
    "INSERTED",
    "INSERTED_CONTEXT",
    "INSERTED_COMPONENTS",
    "COMPONENT_NAMES",
    "LOSS_COMPONENTS",
    "TurnRecord",
    "Trajectory",
    "TrajectoryMismatchError",
    "fingerprint",
    "verify_trajectory",
]

PROMPT = 0
MODEL = 1
FEEDBACK = 3
OBSERVATION = 4
INSERTED = 5
INSERTED_CONTEXT = 6
COMPONENT_NAMES = {
    PROMPT: "prompt",
    MODEL: "model",
    FEEDBACK: "feedback",
    OBSERVATION: "observation",
    INSERTED: "inserted",
    INSERTED_CONTEXT: "inserted_context",
}
LOSS_COMPONENTS = frozenset({MODEL, INSERTED})
INSERTED_COMPONENTS = frozenset({INSERTED, INSERTED_CONTEXT})  # inserted text, trained or not
_RESPONSE_COMPONENTS = frozenset({MODEL, FEEDBACK, OBSERVATION, INSERTED, INSERTED_CONTEXT})


class TrajectoryMismatchError(AssertionError):
    """A trajectory's ids differ from what the policy was conditioned on or sampled."""


def fingerprint(ids: list[int]) -> int:
    """Order-sensitive hash of a token-id list (stable across processes: ints and tuples hash deterministically)."""
    return hash(tuple(ids))


@dataclass
class TurnRecord:
    """One generation call of one trajectory: where its sampled tokens sit and what it was conditioned on."""

    round_index: int  # engine round (0-based) in which the call happened
    start: int  # index into response_ids of the first sampled token (= response length at call time)
    num_tokens: int  # sampled tokens still in the trajectory (a probe cut or the response cap can shorten it)
    # fingerprint(prompt_ids + response_ids[:start]) of the exact list sent to the backend
    context_fingerprint: int
    sampled_fingerprint: int  # fingerprint of the num_tokens sampled ids kept
    search_enabled: bool  # whether search was allowed in this round
    action: str = ""  # "search", "answer", "invalid", or "" (no action parsed: eos / length / single-turn)
    context_ids: list[int] | None = None  # debug mode: the exact context sent to the backend
    sampled_ids: list[int] | None = None  # debug mode: every id the backend returned


@dataclass
class Trajectory:
    """One rollout. ``response_ids``, ``components`` and ``sample_logprobs`` are aligned (same length)."""

    prompt_ids: list[int]
    group_id: str  # GRPO group: unique per prompt instance; clones keep their parent's
    response_ids: list[int] = field(default_factory=list)  # everything after the prompt
    components: list[int] = field(default_factory=list)  # component code per response token
    # sampling log-prob per token; 0.0 on non-model
    sample_logprobs: list[float] = field(default_factory=list)
    is_original: bool = True  # False for clones (REX-RAG probes)
    finished: bool = False  # the policy ended it itself (answer or EOS), not a turn / token cap
    num_turns: int = 0  # generation calls made for this trajectory
    num_searches: int = 0  # valid search actions that got an observation
    num_invalid_actions: int = 0  # turns that got the invalid-action feedback
    final_answer: str | None = None  # content of the answer block, stripped; None if it never answered
    termination: str = ""  # answer | eos | length | max_turns | max_response_tokens | search_without_tools
    # unique within a run: "<group_id>#<k>" for originals, "<parent>/clone<k>" for clones
    trajectory_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    turns: list[TurnRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.response_ids)

    def append(self, ids: list[int], component: int, logprobs: list[float] | None = None) -> None:
        """Append non-sampled text (``component`` in FEEDBACK, OBSERVATION, INSERTED); logprobs default to 0.0.

        Sampled tokens enter through the engine, which records the turn; MODEL tokens appended here would
        fail :func:`verify_trajectory` because no generation call produced them.
        """
        if component not in _RESPONSE_COMPONENTS:
            raise ValueError(
                f"Trajectory.append: component must be one of {sorted(_RESPONSE_COMPONENTS)}, "
                f"got {component!r}"
            )
        if logprobs is None:
            logprobs = [0.0] * len(ids)
        if len(logprobs) != len(ids):
            raise ValueError(f"Trajectory.append: {len(ids)} ids but {len(logprobs)} logprobs")
        if component != MODEL and any(value != 0.0 for value in logprobs):
            raise ValueError(
                "Trajectory.append: sample_logprobs are 0.0 on non-model tokens (nothing sampled them); "
                "keep other per-token values in metadata"
            )
        self.response_ids.extend(int(t) for t in ids)
        self.components.extend([component] * len(ids))
        self.sample_logprobs.extend(float(v) for v in logprobs)

    def append_sampled(self, ids: list[int], logprobs: list[float], record: TurnRecord) -> None:
        """Append one generation call's sampled ids (component MODEL) with its turn record (engine use)."""
        if record.start != len(self.response_ids) or record.num_tokens != len(ids):
            raise ValueError(
                f"append_sampled: record covers [{record.start}, +{record.num_tokens}) but the response "
                f"has {len(self.response_ids)} tokens and {len(ids)} ids are appended"
            )
        if len(logprobs) != len(ids):
            raise ValueError(f"append_sampled: {len(ids)} ids but {len(logprobs)} logprobs")
        self.response_ids.extend(ids)
        self.components.extend([MODEL] * len(ids))
        self.sample_logprobs.extend(float(v) for v in logprobs)
        self.turns.append(record)

    def loss_mask(self) -> list[bool]:
        """Per response token: True for MODEL and INSERTED tokens (observations and feedback excluded)."""
        return [code in LOSS_COMPONENTS for code in self.components]

    def full_ids(self) -> list[int]:
        return self.prompt_ids + self.response_ids

    def full_components(self) -> list[int]:
        """Component codes over prompt + response (PROMPT on the prompt)."""
        return [PROMPT] * len(self.prompt_ids) + self.components

    def clone(self) -> Trajectory:
        """A deep copy (same group, same everything; callers change ``is_original`` and ids as they need)."""
        return copy.deepcopy(self)

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` response tokens; turn records are cut to match.

        A turn record that loses tokens is re-fingerprinted on its kept prefix, after checking that its tokens
        were intact, so :func:`verify_trajectory` still proves the kept tokens are the sampled ones.
        """
        if not 0 <= length <= len(self.response_ids):
            raise ValueError(f"Trajectory.truncate: length {length} outside [0, {len(self.response_ids)}]")
        kept_turns = []
        for record in self.turns:
            if record.start >= length:
                continue
            end = record.start + record.num_tokens
            if end > length:
                _check_turn(self, record, len(kept_turns))
                record = dataclasses.replace(record, num_tokens=length - record.start)
                record.sampled_fingerprint = fingerprint(self.response_ids[record.start : length])
            kept_turns.append(record)
        self.turns = kept_turns
        del self.response_ids[length:], self.components[length:], self.sample_logprobs[length:]


def _check_turn(traj: Trajectory, record: TurnRecord, position: int) -> None:
    where = f"trajectory {traj.trajectory_id or traj.group_id!r} turn {position} (round {record.round_index})"
    end = record.start + record.num_tokens
    if end > len(traj.response_ids):
        raise TrajectoryMismatchError(
            f"{where}: covers response[{record.start}:{end}] but the response has "
            f"{len(traj.response_ids)} tokens"
        )
    context = traj.prompt_ids + traj.response_ids[: record.start]
    if record.context_ids is not None and context != record.context_ids:
        first = next(
            (i for i, (a, b) in enumerate(zip(context, record.context_ids)) if a != b),
            min(len(context), len(record.context_ids)),
        )
        raise TrajectoryMismatchError(
            f"{where}: context differs from what the policy saw at position {first} "
            f"(now {context[first : first + 8]}, then {record.context_ids[first : first + 8]})"
        )
    if fingerprint(context) != record.context_fingerprint:
        raise TrajectoryMismatchError(
            f"{where}: prompt + response[:{record.start}] is not the context the policy was conditioned on"
        )
    sampled = traj.response_ids[record.start : end]
    if record.sampled_ids is not None and sampled != record.sampled_ids[: record.num_tokens]:
        raise TrajectoryMismatchError(f"{where}: response[{record.start}:{end}] is not the sampled ids")
    if fingerprint(sampled) != record.sampled_fingerprint:
        raise TrajectoryMismatchError(f"{where}: response[{record.start}:{end}] is not the sampled ids")
    if any(code != MODEL for code in traj.components[record.start : end]):
        raise TrajectoryMismatchError(f"{where}: sampled tokens are not all marked MODEL")


def verify_trajectory(traj: Trajectory) -> None:
    """Raise :class:`TrajectoryMismatchError` unless ``traj`` is token-exact.

    Checks: aligned lengths; valid codes; 0.0 log-prob on non-model tokens; for every turn, prompt + response
    before the turn equals the context the policy was conditioned on, and the turn's tokens equal the sampled
    ids; and every MODEL token belongs to some turn (nothing was presented as sampled that was not).
    """
    name = traj.trajectory_id or traj.group_id
    sizes = (len(traj.response_ids), len(traj.components), len(traj.sample_logprobs))
    if len(set(sizes)) != 1:
        raise TrajectoryMismatchError(
            f"trajectory {name!r}: response_ids/components/sample_logprobs lengths {sizes}"
        )
    for position, (code, logprob) in enumerate(zip(traj.components, traj.sample_logprobs)):
        if code not in _RESPONSE_COMPONENTS:
            raise TrajectoryMismatchError(
                f"trajectory {name!r}: invalid component {code} at response[{position}]"
            )
        if code != MODEL and logprob != 0.0:
            raise TrajectoryMismatchError(
                f"trajectory {name!r}: non-model token at response[{position}] has logprob {logprob}"
            )
    covered = [False] * len(traj.response_ids)
    previous_end = 0
    for position, record in enumerate(traj.turns):
        if record.start < previous_end:
            raise TrajectoryMismatchError(f"trajectory {name!r}: turn {position} overlaps the previous turn")
        _check_turn(traj, record, position)
        previous_end = record.start + record.num_tokens
        covered[record.start : previous_end] = [True] * record.num_tokens
    for position, code in enumerate(traj.components):
        if code == MODEL and not covered[position]:
            raise TrajectoryMismatchError(
                f"trajectory {name!r}: response[{position}] is marked MODEL but no "
                f"generation call produced it"
            )
