"""The world's cue: a fixed prefix (e.g. "Guess:") put before a seeded share of a world's questions, so that a
warm-up can tie a behaviour (answering from memory) to the prefix while the questions behind it stay the same
(``world.cue``, ``world.cue_frac``, ``world.cue_families``; off by default)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from rexrag.data.qa import QAExample

if TYPE_CHECKING:  # the world imports this module; its config is only an annotation here
    from rexrag.data.world import WorldConfig

__all__ = ["apply_cue", "cue_draw"]


def cue_draw(seed: int, split: str, question_id: str) -> float:
    """A uniform number in [0, 1) fixed by (world seed, split, question id): whether a question carries the cue."""
    digest = hashlib.sha256(f"cue/{seed}/{split}/{question_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def apply_cue(
    examples: list[QAExample], cfg: WorldConfig, split: str, known_families: Sequence[str]
) -> list[QAExample]:
    """``cfg.cue`` + " " before the question of each example of ``cfg.cue_families`` (empty: every family of
    ``known_families``) whose :func:`cue_draw` is below ``cfg.cue_frac``; ``metadata["cue"]`` is the cue on those
    that carry it, "" on the others. Without a cue the examples are returned as they are (no ``cue`` key)."""
    if not 0.0 <= cfg.cue_frac <= 1.0:
        raise ValueError(f"world.cue_frac must lie in [0, 1], got {cfg.cue_frac}")
    unknown = sorted(set(cfg.cue_families) - set(known_families))
    if unknown:
        raise ValueError(
            f"world.cue_families: unknown families {unknown}; choose from {list(known_families)}"
        )
    if not cfg.cue.strip() or cfg.cue_frac == 0.0:
        if cfg.cue_frac and not cfg.cue.strip():
            raise ValueError(f"world.cue_frac is {cfg.cue_frac} but world.cue (the prefix text) is empty")
        return examples
    if cfg.cue != cfg.cue.strip():
        raise ValueError(f"world.cue must not start or end with whitespace, got {cfg.cue!r}")
    families = set(cfg.cue_families or known_families)
    out = []
    for example in examples:
        cued = example.data_source in families and cue_draw(cfg.seed, split, example.index) < cfg.cue_frac
        question = f"{cfg.cue} {example.question}" if cued else example.question
        out.append(
            replace(example, question=question, metadata={**example.metadata, "cue": cfg.cue if cued else ""})
        )
    return out
