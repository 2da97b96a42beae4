"""ReservedLayer appends in place and holds exactly what transformers' DynamicLayer holds, through decode steps,
row selection (finished rows leave), repeats and a buffer that must grow; reserve() converts only filled
full-attention layers."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from anessuite.backends.kv_cache import ReservedLayer, is_full_attention, reserve


def _states(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    keys = torch.randn((batch, 2, length, 4), generator=generator)  # (batch, kv_heads, seq, dim)
    return keys, torch.randn((batch, 2, length, 4), generator=generator)


def test_reserved_layer_matches_dynamic_layer_step_by_step():
    dynamic, prefill = DynamicLayer(), _states(3, 5, seed=0)
    dynamic.update(*prefill)
    reserved = ReservedLayer(*prefill, capacity=7)  # room for 2 steps; the third forces a doubling
    buffer = reserved._keys
    for step in range(4):
        new = _states(3 if step < 2 else 2, 1, seed=step + 1)
        if step == 2:  # row 1 finished: both keep rows 0 and 2
            keep = torch.tensor([0, 2])
            dynamic.batch_select_indices(keep)
            reserved.batch_select_indices(keep)
        expected = dynamic.update(*new)
        got = reserved.update(*new)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        assert reserved.get_seq_length() == dynamic.get_seq_length() == 6 + step
        if step < 2:  # written into the first buffer, no new allocation
            assert reserved._keys is buffer and got[0].data_ptr() == buffer.data_ptr()
    assert reserved._keys.shape[-2] == 14  # grew once, to twice its capacity
    dynamic.batch_repeat_interleave(2)
    reserved.batch_repeat_interleave(2)
    assert torch.equal(reserved.keys, dynamic.keys) and torch.equal(reserved.values, dynamic.values)


def test_reserve_converts_filled_full_attention_layers():
    cache = DynamicCache()
    keys, values = _states(2, 4, seed=5)
    cache.update(keys, values, layer_idx=0)
    cache.update(keys * 2, values * 2, layer_idx=1)
    reserve(cache, room=8)
    assert all(type(layer) is ReservedLayer and is_full_attention(layer) for layer in cache.layers)
    assert cache.layers[0]._keys.shape[-2] == 12 and torch.equal(cache.layers[1].keys, keys * 2)
    assert cache.get_seq_length() == 4
