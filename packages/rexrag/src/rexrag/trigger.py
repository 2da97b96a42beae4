"""When does an original rollout spawn a probe?

- ``per_wrong_rollout`` (official behaviour): an *original* trajectory that answers in a search-enabled turn with an
  EM-wrong answer spawns one probe with probability ``probe_prob``. The official code draws
  ``random.randint(0, 100) < 20``, i.e. p = 20/101 = 0.198 (``randint`` includes both ends, official bug 3); our
  default is exactly 0.2 and ``OFFICIAL_PROBE_PROB`` reproduces the official value.
- ``dead_end_group`` (the paper's story): only questions whose original rollouts are *all* wrong ("dead ends") are
  probed; each of their wrong originals spawns a probe with probability ``probe_prob``. This needs every original of
  the group to have finished, so the decision is taken after the original rollouts end.

Probes never spawn probes; answers in the forced final turn (no search allowed) never spawn probes.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

TRIGGER_MODES = ("per_wrong_rollout", "dead_end_group")
OFFICIAL_PROBE_PROB = 20 / 101


class ProbeTrigger:
    """Seeded Bernoulli trigger; its RNG is private so probe draws do not perturb sampling RNGs."""

    def __init__(self, mode: str = "per_wrong_rollout", probe_prob: float = 0.2, seed: int = 0):
        if mode not in TRIGGER_MODES:
            raise ValueError(f"probe trigger mode must be one of {TRIGGER_MODES}, got {mode!r}")
        if not 0.0 <= probe_prob <= 1.0:
            raise ValueError(f"probe_prob must lie in [0, 1], got {probe_prob}")
        self.mode = mode
        self.probe_prob = probe_prob
        self._rng = random.Random(seed)

    def draw(self) -> bool:
        """One Bernoulli(probe_prob) draw."""
        return self._rng.random() < self.probe_prob

    def at_answer(self, is_original: bool, answer_correct: bool, search_enabled: bool) -> bool:
        """Decision at answer time (per_wrong_rollout only; dead_end_group defers to :meth:`dead_end_candidates`)."""
        if self.mode != "per_wrong_rollout" or not is_original or answer_correct or not search_enabled:
            return False
        return self.draw()

    def dead_end_candidates(
        self, group_ids: Sequence[str], correct: Sequence[bool], eligible: Sequence[bool]
    ) -> list[int]:
        """Indices of originals to probe in ``dead_end_group`` mode.

        Args:
            group_ids: group id of each finished original (N,).
            correct: whether each original's answer is EM-correct (N,).
            eligible: whether each original answered in a search-enabled turn, i.e. has a clone point (N,).
        A group is a dead end when none of its originals is correct; each eligible member is then drawn with
        ``probe_prob``.
        """
        if self.mode != "dead_end_group":
            return []
        solved: dict[str, bool] = defaultdict(bool)
        for group, ok in zip(group_ids, correct, strict=True):
            solved[group] |= bool(ok)
        chosen = []
        for index, (group, ok, can_probe) in enumerate(zip(group_ids, correct, eligible, strict=True)):
            if not solved[group] and not ok and can_probe and self.draw():
                chosen.append(index)
        return chosen


def dead_end_rate(group_ids: Sequence[str], correct: Sequence[bool]) -> float:
    """Fraction of groups (questions) whose trajectories are all wrong."""
    solved: dict[str, bool] = defaultdict(bool)
    for group, ok in zip(group_ids, correct, strict=True):
        solved[group] |= bool(ok)
    return 0.0 if not solved else sum(not s for s in solved.values()) / len(solved)
