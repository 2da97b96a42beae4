"""Fixtures for the rollout tests: the in-code tokenizer and a per-prompt turn script."""

from __future__ import annotations

import pytest

from rlcore.generation.testing import build_tiny_tokenizer


@pytest.fixture(scope="session")
def tok():
    return build_tiny_tokenizer()
