"""Clone a trajectory that just answered, cut before its answer block, and append inserted text (REX-RAG probes).

The cut is in tokens: at the sampled token in which the answer block's opening tag starts. Every kept token
is a sampled token, so the clone stays token-exact (nothing is decoded and re-encoded); characters that share
that token with the text before the tag (e.g. a newline) are dropped with it.
"""

from __future__ import annotations

from collections.abc import Callable

from rlcore.rollout.config import RolloutConfig
from rlcore.rollout.protocol import parse_action
from rlcore.rollout.trajectory import INSERTED, Trajectory

__all__ = ["token_index_at_char", "clone_before_answer", "make_probe_hook"]


def token_index_at_char(
    tokenizer, token_ids: list[int], char_offset: int, skip_special_tokens: bool = True
) -> int:
    """Index of the first token whose decoding reaches past ``char_offset`` of ``decode(token_ids)``.

    So ``decode(token_ids[:index])`` ends at or before ``char_offset``. Returns ``len(token_ids)`` if no token
    reaches it.
    """
    for index in range(len(token_ids)):
        text = tokenizer.decode(token_ids[: index + 1], skip_special_tokens=skip_special_tokens)
        if len(text) > char_offset:
            return index
    return len(token_ids)


def clone_before_answer(
    traj: Trajectory,
    tokenizer,
    inserted_ids: list[int],
    config: RolloutConfig | None = None,
    skip_special_tokens: bool = True,
) -> Trajectory:
    """A clone of ``traj`` with its last turn's answer block removed and ``inserted_ids`` appended as INSERTED.

    ``traj`` must have just answered: its last turn produced the answer block and nothing follows that turn.
    The clone is not original, not finished, has no final answer, shares ``group_id``, and records its parent in
    ``metadata["parent_id"]``.
    """
    config = config if config is not None else RolloutConfig()
    if not traj.turns:
        raise ValueError(f"clone_before_answer: trajectory {traj.trajectory_id!r} has no generation turn")
    record = traj.turns[-1]
    end = record.start + record.num_tokens
    if record.action != "answer" or end != len(traj.response_ids):
        raise ValueError(
            f"clone_before_answer: trajectory {traj.trajectory_id!r} did not just answer (last turn "
            f"action {record.action!r}, response continues {len(traj.response_ids) - end} tokens after it)"
        )
    turn_ids = traj.response_ids[record.start : end]
    text = tokenizer.decode(turn_ids, skip_special_tokens=skip_special_tokens)
    action = parse_action(text, config)
    if action is None or action.kind != "answer":
        raise ValueError(
            f"clone_before_answer: no answer block in the last turn of {traj.trajectory_id!r}: {text!r:.200}"
        )
    cut = token_index_at_char(tokenizer, turn_ids, action.start, skip_special_tokens)
    clone = traj.clone()
    clone.truncate(record.start + cut)
    if clone.turns and clone.turns[-1].round_index == record.round_index:
        clone.turns[-1].action = "cut"
    clone.is_original = False
    clone.finished = False
    clone.final_answer = None
    clone.termination = ""
    clone.metadata["parent_id"] = traj.trajectory_id
    clone.trajectory_id = ""
    clone.append(list(inserted_ids), INSERTED)
    return clone


def make_probe_hook(
    tokenizer,
    choose_insert: Callable[[Trajectory, int], list[int] | None],
    config: RolloutConfig | None = None,
    originals_only: bool = True,
    skip_special_tokens: bool = True,
) -> Callable[[Trajectory, int], list[Trajectory]]:
    """An ``on_answer`` hook: at most one clone per answering trajectory.

    ``choose_insert(traj, round_index)`` returns the token ids to insert (e.g. a tokenized exploratory prompt),
    or None for no probe. With ``originals_only`` clones never spawn clones (REX-RAG's rule).
    """

    def on_answer(traj: Trajectory, round_index: int) -> list[Trajectory]:
        if originals_only and not traj.is_original:
            return []
        inserted = choose_insert(traj, round_index)
        if inserted is None:
            return []
        return [clone_before_answer(traj, tokenizer, inserted, config, skip_special_tokens)]

    return on_answer
