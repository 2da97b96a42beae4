"""Fixtures shared by the REX-RAG tests (use them as fixtures; never import this module)."""

import pytest

from rexrag.data.world import WorldConfig


@pytest.fixture(scope="session")
def small_world() -> WorldConfig:
    """A world small enough for end-to-end tests: 30 people, 10 organisations, 16 / 4 / 6 questions."""
    return WorldConfig(
        seed=5,
        num_countries=3,
        num_cities=8,
        num_orgs=10,
        num_people=30,
        num_surnames=20,
        num_train_questions=16,
        num_dev_questions=4,
        num_test_questions=6,
    )
