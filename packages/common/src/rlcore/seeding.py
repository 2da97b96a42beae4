"""Seeding and RNG-state capture so that runs are repeatable and resumable bit for bit on CPU."""

from __future__ import annotations

import hashlib
import os
import random
from typing import Any

import numpy as np
import torch

__all__ = [
    "seed_everything",
    "get_rng_state",
    "set_rng_state",
    "derive_seed",
    "rng_state_to_json",
    "rng_state_from_json",
]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices). ``deterministic`` also asks torch for deterministic kernels."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def derive_seed(base_seed: int, *parts: Any) -> int:
    """A child seed from a base seed and labels (e.g. rank, step), stable across processes and Python runs."""
    text = ":".join([str(base_seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def get_rng_state() -> dict[str, Any]:
    """Everything needed to continue the random streams exactly: Python, NumPy, torch CPU and CUDA."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a state produced by :func:`get_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_state_to_json(state: dict[str, Any]) -> dict[str, Any]:
    """A :func:`get_rng_state` result as plain JSON data (lists of ints; floats round-trip exactly), so a
    checkpoint holds no pickle of it."""
    version, internal, gauss_next = state["python"]
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    data: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "numpy": [name, [int(k) for k in keys], int(position), int(has_gauss), float(cached_gaussian)],
        "torch": state["torch"].tolist(),
    }
    if "cuda" in state:
        data["cuda"] = [device_state.tolist() for device_state in state["cuda"]]
    return data


def rng_state_from_json(data: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`rng_state_to_json`: a state :func:`set_rng_state` accepts."""
    version, internal, gauss_next = data["python"]
    name, keys, position, has_gauss, cached_gaussian = data["numpy"]
    state: dict[str, Any] = {
        "python": (version, tuple(internal), gauss_next),
        "numpy": (name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian),
        "torch": torch.tensor(data["torch"], dtype=torch.uint8),
    }
    if "cuda" in data:
        state["cuda"] = [torch.tensor(device_state, dtype=torch.uint8) for device_state in data["cuda"]]
    return state
