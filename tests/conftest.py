"""Suite-wide test settings: offline hub, a throwaway MLflow store and run folder per test session."""

from __future__ import annotations

import os

import pytest

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
