"""rlcore.seeding and rlcore.runs."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from rlcore.runs import make_run_dir
from rlcore.seeding import derive_seed, get_rng_state, seed_everything, set_rng_state


def _draw():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_seed_everything_repeats_all_streams():
    seed_everything(5)
    first = _draw()
    seed_everything(5)
    assert _draw() == first
    seed_everything(6)
    assert _draw() != first


def test_rng_state_round_trip_continues_streams():
    seed_everything(1)
    _draw()
    state = get_rng_state()
    expected = [_draw() for _ in range(3)]
    _draw()
    set_rng_state(state)
    assert [_draw() for _ in range(3)] == expected


def test_seed_range_and_derive():
    with pytest.raises(ValueError):
        seed_everything(-1)
    assert derive_seed(1, "rank", 0) == derive_seed(1, "rank", 0)
    assert derive_seed(1, "rank", 0) != derive_seed(1, "rank", 1)


def test_run_dirs_are_unique_and_named(tmp_path):
    a = make_run_dir("grpo", {"seed": 1}, root=tmp_path)
    b = make_run_dir("grpo", {"seed": 1}, root=tmp_path)
    assert a != b and a.parent == tmp_path / "grpo" and b.is_dir()
    assert a.name.split("-")[2] == b.name.split("-")[2]  # same config hash in the name
