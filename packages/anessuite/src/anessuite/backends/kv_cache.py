"""A key/value cache layer for batched greedy decoding that appends in place.

transformers' ``DynamicLayer`` appends each step's keys and values with ``torch.cat``, which copies the whole
cache every decode step: on CPU that copy was 40% of a 16-row SmolLM2 decode step (profiled over 300 cached
tokens), and it grows with the batch. :class:`ReservedLayer` keeps the cache in a buffer with room for the
tokens still to come, writes each step into that room and hands attention views of the filled part; the values
are the same, only the copies are gone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

__all__ = ["DecodingRows", "ReservedLayer", "reserve", "is_full_attention"]


class ReservedLayer(DynamicLayer):
    """A full-attention cache layer over a ``(batch, kv_heads, capacity, dim)`` buffer; ``keys`` and ``values``
    are views of its first ``length`` positions. The buffer doubles if an update outgrows it."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int):
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._fill(keys, values, capacity)

    def _fill(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        batch, heads, length, dim = keys.shape
        capacity = max(capacity, length)
        self._keys = keys.new_empty((batch, heads, capacity, dim))
        self._values = values.new_empty((batch, values.shape[1], capacity, values.shape[-1]))
        self._keys[:, :, :length] = keys
        self._values[:, :, :length] = values
        self._view(length)

    def _view(self, length: int) -> None:
        self.length = length
        self.keys = self._keys[:, :, :length]
        self.values = self._values[:, :, :length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.length, self.length + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            self._fill(self.keys, self.values, max(end, 2 * self._keys.shape[-2]))
        self._keys[:, :, start:end] = key_states
        self._values[:, :, start:end] = value_states
        self._view(end)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._view(self.length)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._keys = self._keys.repeat_interleave(repeats, dim=0)
        self._values = self._values.repeat_interleave(repeats, dim=0)
        self._view(self.length)

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("ReservedLayer is for greedy decoding; it is never cropped")


def is_full_attention(layer: Any) -> bool:
    """A layer whose cache holds every position (no sliding window, no linear-attention state)."""
    return type(layer) in (DynamicLayer, ReservedLayer)


def reserve(cache: Any, room: int) -> None:
    """Turn every filled full-attention layer of ``cache`` into a :class:`ReservedLayer` with room for ``room``
    more positions (layers already reserved keep their buffer)."""
    for index, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer and layer.get_seq_length() > 0:
            cache.layers[index] = ReservedLayer(layer.keys, layer.values, layer.get_seq_length() + room)


@dataclass
class DecodingRows:
    """Rows decoding together: KV cache, attention mask ``(rows, length)`` matching the cache length, the next
    position id per row ``(rows,)`` and the logits ``(rows, vocab)`` whose tokens are still to be chosen."""

    rows: list[int]  # prompt index of each row
    cache: Any
    mask: torch.Tensor
    next_position: torch.Tensor
    logits: torch.Tensor

    def select(self, keep: list[int]) -> None:
        if len(keep) == len(self.rows):  # nobody finished: no copy of the cache
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.rows = [self.rows[j] for j in keep]
        self.mask, self.next_position, self.logits = (
            self.mask[index],
            self.next_position[index],
            self.logits[index],
        )

    def joinable(self) -> bool:
        """Whether other rows can join (full-attention cache layers only; sliding windows cannot be padded)."""
        return all(is_full_attention(layer) for layer in self.cache.layers)

    def join(self, other: DecodingRows, room: int) -> DecodingRows:
        """Both row sets in one batch: the shorter cache and mask are left-padded (masked) to the longer; the
        joined cache has room for ``room`` more positions."""
        length = max(self.mask.shape[1], other.mask.shape[1])
        for index, (mine, theirs) in enumerate(zip(self.cache.layers, other.cache.layers)):
            if not is_full_attention(mine) or not is_full_attention(theirs):
                raise TypeError(
                    f"continuous batching needs full-attention cache layers, got {type(mine).__name__}"
                )
            keys = torch.cat([_left_pad(mine.keys, length), _left_pad(theirs.keys, length)])
            values = torch.cat([_left_pad(mine.values, length), _left_pad(theirs.values, length)])
            self.cache.layers[index] = ReservedLayer(keys, values, length + room)
        self.mask = torch.cat([_left_pad(self.mask, length), _left_pad(other.mask, length)])
        self.rows = self.rows + other.rows
        self.next_position = torch.cat([self.next_position, other.next_position])
        self.logits = torch.cat([self.logits, other.logits])
        return self


def _left_pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad the sequence axis (``-2`` of a ``(batch, heads, seq, dim)`` cache, ``-1`` of a mask) on the left."""
    axis = -1 if tensor.dim() == 2 else -2
    missing = length - tensor.shape[axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)
