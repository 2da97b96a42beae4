"""Exploratory prompt pools: the sentences a probe rollout is restarted from.

A pool is a plain JSON list of strings shipped in ``rexrag/prompt_pools/`` (never a pickle). Every prompt opens a
``<think>`` block with one first-person sentence of self-doubt and leaves the block open, so the policy has to
continue the thought and close it itself. Shipped pools (all written for this project):

- ``self_doubt_30``: the default pool of 30 prompts (the official pool size).
- ``self_doubt_15`` / ``self_doubt_5``: fixed random subsets of it, for the pool-size ablation.
- ``paraphrase_30``: 30 rephrasings in a more uniform style (most open with "I"), for the diversity ablation.
"""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path

POOL_PACKAGE = "rexrag.prompt_pools"
THINK_OPEN = "<think> "
THINK_CLOSE = "</think>"
MIN_WORDS = 12
MAX_WORDS = 19


class PoolError(ValueError):
    """A prompt pool file is missing or malformed."""


def available_pools() -> list[str]:
    """Names of the pools shipped with the package (file stems in ``rexrag/prompt_pools``)."""
    return sorted(
        p.name[: -len(".json")] for p in resources.files(POOL_PACKAGE).iterdir() if p.name.endswith(".json")
    )


def load_pool(name_or_path: str, validate: bool = True) -> list[str]:
    """Load a pool by shipped name (``"self_doubt_30"``) or by a path to a JSON list of strings.

    With ``validate`` (default) every prompt must start with ``"<think> "``, contain no ``</think>`` and have
    12-19 words after the opening tag; violations raise :class:`PoolError` naming the file and the entry.
    """
    if name_or_path.endswith(".json") or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise PoolError(f"prompt pool file not found: {path}")
        text = path.read_text(encoding="utf-8")
        source = str(path)
    else:
        resource = resources.files(POOL_PACKAGE) / f"{name_or_path}.json"
        if not resource.is_file():
            raise PoolError(f"unknown prompt pool {name_or_path!r}; shipped pools: {available_pools()}")
        text = resource.read_text(encoding="utf-8")
        source = f"{POOL_PACKAGE}/{name_or_path}.json"
    try:
        prompts = json.loads(text)
    except json.JSONDecodeError as err:
        raise PoolError(f"{source}: invalid JSON at line {err.lineno}: {err.msg}") from err
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise PoolError(f"{source}: expected a non-empty JSON list of strings")
    if validate:
        for index, prompt in enumerate(prompts):
            problem = prompt_problem(prompt)
            if problem:
                raise PoolError(f"{source}: entry {index} ({prompt[:40]!r}...): {problem}")
    return prompts


def prompt_problem(prompt: str) -> str | None:
    """Return why ``prompt`` breaks the pool style, or None if it is fine."""
    if not prompt.startswith(THINK_OPEN):
        return f"must start with {THINK_OPEN!r}"
    if THINK_CLOSE in prompt:
        return f"must not contain {THINK_CLOSE!r} (the policy closes the thought itself)"
    num_words = len(prompt[len(THINK_OPEN) :].split())
    if not MIN_WORDS <= num_words <= MAX_WORDS:
        return f"has {num_words} words after the tag; expected {MIN_WORDS}-{MAX_WORDS}"
    return None


class PromptSampler:
    """Uniform draw of one prompt from a pool with its own seeded RNG (independent of torch/numpy state)."""

    def __init__(self, prompts: list[str], seed: int = 0):
        if not prompts:
            raise PoolError("cannot sample from an empty prompt pool")
        self.prompts = list(prompts)
        self._rng = random.Random(seed)

    def draw(self) -> str:
        return self.prompts[self._rng.randrange(len(self.prompts))]
