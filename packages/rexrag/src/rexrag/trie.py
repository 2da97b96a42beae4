"""Prefix trie over a tokenized prompt pool: the exact probe-prompt distribution under a uniform draw.

A probe inserts prompt ``p`` drawn uniformly from a pool of ``N`` entries. Its token sequence ``x_1..x_L`` then
has probability ``count(p) / N``. The trie factorises that probability token by token:

    P(x_t | x_<t) = n(x_1..x_t) / n(x_1..x_{t-1}),     n(prefix) = #pool entries whose tokens start with prefix,

so the product along a prompt telescopes to ``n(x_1..x_L) / N``. When one prompt's tokens are a strict prefix of
another's, ``n(x_1..x_L)`` also counts the longer prompt, so the last token additionally carries the stop factor
``count(p) / n(x_1..x_L)`` (see :meth:`PromptTrie.sequence_logprobs`); the full product is then exactly
``count(p) / N``: ``1 / N`` for distinct prompts, ``k / N`` for a prompt listed ``k`` times.

The trie is rebuilt at run time from the active tokenizer (token ids differ between tokenizers), so there is no
stored index that can fall out of sync with the pool or the model (official bug 8).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


class TrieLookupError(KeyError):
    """A token sequence is not a path of the trie (tokenizer or pool differs from the one the trie was built with)."""


@dataclass
class _Node:
    count: int = 0  # pool entries whose tokens pass through this node
    stops: int = 0  # pool entries whose tokens end exactly here
    children: dict[int, _Node] = field(default_factory=dict)


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of an inserted prompt exactly as the rollout appends it: no special tokens, no chat template."""
    return list(tokenizer.encode(text, add_special_tokens=False))


class PromptTrie:
    """Trie over token-id sequences (one per pool entry, duplicates allowed)."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        if not sequences:
            raise ValueError("PromptTrie needs at least one sequence")
        self.root = _Node()
        self.sequences = [tuple(int(t) for t in seq) for seq in sequences]
        for index, seq in enumerate(self.sequences):
            if not seq:
                raise ValueError(f"pool entry {index} tokenizes to an empty sequence")
            node = self.root
            node.count += 1
            for token in seq:
                node = node.children.setdefault(token, _Node())
                node.count += 1
            node.stops += 1

    @classmethod
    def from_prompts(
        cls, prompts: Sequence[str], tokenizer=None, encode: Callable[[str], list[int]] | None = None
    ):
        """Build from prompt strings with ``tokenizer`` (HF-style ``encode``) or an explicit ``encode`` function."""
        if encode is None:
            if tokenizer is None:
                raise ValueError("PromptTrie.from_prompts needs a tokenizer or an encode function")
            encode = lambda text: encode_prompt(tokenizer, text)  # noqa: E731
        return cls([encode(p) for p in prompts])

    @property
    def num_prompts(self) -> int:
        return self.root.count

    def _walk(self, prefix: Sequence[int]) -> _Node:
        node = self.root
        for depth, token in enumerate(prefix):
            child = node.children.get(int(token))
            if child is None:
                raise TrieLookupError(
                    f"token {int(token)} at position {depth} is not in the prompt trie; was the trie built with the "
                    "same tokenizer and pool as the rollout?"
                )
            node = child
        return node

    def num_prefix_nodes(self) -> int:
        """Distinct non-empty prefixes stored (shared prefixes are merged into one node)."""
        stack, total = [self.root], 0
        while stack:
            node = stack.pop()
            total += len(node.children)
            stack.extend(node.children.values())
        return total

    def next_token_prob(self, prefix: Sequence[int], token: int) -> float:
        """P(token | prefix) under a uniform draw from the pool; 0.0 when the path leaves the trie."""
        try:
            node = self._walk(prefix)
        except TrieLookupError:
            return 0.0
        child = node.children.get(int(token))
        return 0.0 if child is None else child.count / node.count

    def next_token_distribution(self, prefix: Sequence[int]) -> dict[int, float]:
        """Full next-token PMF after ``prefix`` (sums to 1 minus the stop mass at that node)."""
        node = self._walk(prefix)
        return {token: child.count / node.count for token, child in node.children.items()}

    def sequence_logprobs(self, tokens: Sequence[int], include_stop: bool = True) -> list[float]:
        """Per-token log P(x_t | x_<t) along ``tokens`` (shape ``(L,)``), natural log.

        With ``include_stop`` the last entry also holds log(stops / count) of the final node, so that
        ``sum(result) == log(count(prompt) / N)`` exactly (up to float rounding). Raises
        :class:`TrieLookupError` if ``tokens`` is not a complete pool entry (or leaves the trie).
        """
        node, out = self.root, []
        for depth, token in enumerate(tokens):
            child = node.children.get(int(token))
            if child is None:
                raise TrieLookupError(
                    f"inserted token {int(token)} at offset {depth} is not in the prompt trie; was the trie built with "
                    "the same tokenizer and pool as the rollout?"
                )
            out.append(math.log(child.count) - math.log(node.count))
            node = child
        if include_stop and out:
            if node.stops == 0:
                raise TrieLookupError(
                    f"token sequence of length {len(tokens)} is a strict prefix of pool entries only"
                )
            out[-1] += math.log(node.stops) - math.log(node.count)
        return out

    def sequence_logprob(self, tokens: Sequence[int]) -> float:
        """log P(prompt) = log(count(prompt) / N)."""
        return float(sum(self.sequence_logprobs(tokens)))
