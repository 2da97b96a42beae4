"""Suite-wide test settings: offline hub, a throwaway MLflow store and run folder per test session; the small
synthetic world the end-to-end tests share."""

from __future__ import annotations

import os

# `make test` runs two pytest-xdist workers on a 2-core machine: with torch's default of one intra-op thread per core
# in each worker, four threads compete for two cores. Each worker gets one thread unless the environment sets
# another number; a serial run keeps torch's default.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402

from rexrag.data.world import WorldConfig  # noqa: E402

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


@pytest.fixture(autouse=True, scope="session")
def _isolated_tracking(tmp_path_factory: pytest.TempPathFactory):
    """Tests never write into the user's runs/ folder or MLflow store."""
    root = tmp_path_factory.mktemp("runs")
    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "RUNS_DIR")}
    os.environ["RUNS_DIR"] = str(root)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files that hold a ``slow`` test run first, those with the largest declared ``timeout`` first among them, each
    file's own order kept: `make test` spreads files over parallel workers (pytest-xdist, ``--dist loadfile``), and
    a long file started last would run alone at the end."""
    budget: dict = {}
    for item in items:
        if item.get_closest_marker("slow"):
            timeout = item.get_closest_marker("timeout")
            seconds = float(timeout.args[0]) if timeout and timeout.args else 0.0
            budget[item.path] = max(budget.get(item.path, 0.0), seconds)
    # stable sort: the rest keeps the collection order
    items.sort(key=lambda item: (item.path not in budget, -budget.get(item.path, 0.0)))
