"""How the in-process backend cuts a set of prompts into decoding batches: groups sharing a template prefix,
sorted by length, and runs of similar length prefilled in one forward pass (pure functions on token ids)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MIN_SHARED_PREFIX", "common_prefix_length", "length_runs", "plan_batches"]

# A shared prefix shorter than this is prefilled with the rest of the prompt (a separate forward pass and a
# cache copy cost more than a few tokens of prefill).
MIN_SHARED_PREFIX = 8


def plan_batches(prompts: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Prompt indices cut into groups of at most ``batch_size`` that share a long prefix and similar lengths.

    In token order, prompts that share at least ``MIN_SHARED_PREFIX`` tokens with the first prompt of the current
    run form one group (one template: system prompt and instructions); each group is sorted by length and cut
    into chunks of ``batch_size``. Groups join the running batch one at a time, so small groups leave no row idle.
    """
    groups: list[list[int]] = []
    for index in sorted(range(len(prompts)), key=lambda i: (list(prompts[i]), i)):
        first = groups[-1][0] if groups else None
        if first is None or common_prefix_length([prompts[first], prompts[index]]) < MIN_SHARED_PREFIX:
            groups.append([])
        groups[-1].append(index)
    batches = []
    for group in groups:
        members = sorted(group, key=lambda i: (len(prompts[i]), i))
        batches += [members[start : start + batch_size] for start in range(0, len(members), batch_size)]
    return batches


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix that every prompt starts with."""
    first, length = prompts[0], min(len(prompt) for prompt in prompts)
    for prompt in prompts[1:]:
        position = 0
        while position < length and prompt[position] == first[position]:
            position += 1
        length = position
    return length


def length_runs(lengths: Sequence[int], waste: float = 0.1) -> list[int]:
    """Sizes of consecutive runs of ``lengths`` (sorted ascending) whose left-padded prefill computes at most
    ``waste`` more tokens than the run holds: ``[77, 78, 99, 140]`` -> ``[2, 1, 1]``. A new run starts only
    where padding would exceed that, so rows of similar length stay in one forward."""
    runs: list[int] = []
    total = count = 0
    for length in lengths:
        if count and length * (count + 1) > (1 + waste) * (total + length):
            runs.append(count)
            total = count = 0
        total, count = total + length, count + 1
    return runs + [count] if count else runs
