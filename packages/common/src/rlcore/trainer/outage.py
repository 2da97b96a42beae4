"""A retrieval outage longer than the client's budget (``retriever.max_outage_s``) during a step's rollouts.

The client has already waited the whole budget out when it gives up. The trainer then puts the run back where
the last completed step left it (rollouts touch no weights, but they do advance the prompt sampler, the
rollout counter, the random streams and the method's stateful objects), writes that step's checkpoint unless
it is already on disk, and raises the error again with what was saved: the process exits non-zero, and
``train.resume=auto`` continues exactly as if the failed step had never started.

Under several processes each rank has its own client and may or may not have lost the server. After the
rollouts every rank says whether its budget ran out (one reduction, :func:`rlcore.trainer.collectives.any_rank`);
if any did, all of them restore their own step start, write the checkpoint together (it is a collective) and
raise, the ranks whose own searches succeeded with an error saying that another rank's did not.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from rlcore.retrieval.types import RetrievalUnavailableError
from rlcore.seeding import get_rng_state, set_rng_state
from rlcore.trainer.checkpoint import list_checkpoints
from rlcore.trainer.collectives import any_rank
from rlcore.trainer.saving import save_now
from rlcore.trainer.setup import TrainerParts

__all__ = ["StepStart", "checkpoint_after_outage"]

logger = logging.getLogger(__name__)


@dataclass
class StepStart:
    """What a step's rollouts change besides nothing on disk: taken before them, restored after an outage."""

    sampler: dict[str, int]
    run_index: int
    rng: dict[str, Any]
    stateful: dict[str, Any]

    @classmethod
    def take(cls, parts: TrainerParts) -> StepStart:
        return cls(
            sampler=parts.sampler.state_dict(),
            run_index=parts.engine.run_index,
            rng=get_rng_state(),
            stateful={name: copy.deepcopy(obj.state_dict()) for name, obj in parts.checkpointed.items()},
        )

    def restore(self, parts: TrainerParts) -> None:
        parts.sampler.load_state_dict(self.sampler)
        parts.engine.run_index = self.run_index
        set_rng_state(self.rng)
        for name, obj in parts.checkpointed.items():
            obj.load_state_dict(self.stateful[name])


def checkpoint_after_outage(
    cfg: Any,
    parts: TrainerParts,
    step: int,
    start: StepStart,
    run_id: str | None,
    skipped_total: int,
    error: RetrievalUnavailableError | None,
) -> RetrievalUnavailableError:
    """Checkpoint the last completed step (``step - 1``) on every rank; the error to raise, saying what was saved.

    Called on every rank at once (a collective). ``error`` is this rank's own, or None on a rank whose searches
    succeeded while another rank's budget ran out.
    """
    if error is None:
        error = RetrievalUnavailableError(
            f"rank {parts.rank}: another rank's retrieval server stayed unavailable for longer than its outage "
            "budget (retriever.max_outage_s); see that rank's log"
        )
    done = step - 1
    if done == 0:
        note = f"step {step} lost its retrieval server before any step completed; nothing to checkpoint"
    else:
        start.restore(parts)
        # every rank reads the folder before any writes to it, and all take the same decision
        on_disk = any_rank(parts.accelerator, done in [s for s, _ in list_checkpoints(parts.output_dir)])
        if not on_disk:
            save_now(cfg, parts, done, run_id, skipped_total)
        note = (
            f"step {step} lost its retrieval server for longer than its outage budget; checkpoint of step "
            f"{done} is in {parts.output_dir / 'checkpoints'}: start the server and rerun with "
            f"train.resume=auto to continue exactly where it stopped"
        )
    logger.error("%s (%s)", note, error)
    return RetrievalUnavailableError(f"{error}; {note}")
