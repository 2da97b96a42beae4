"""Where MLflow data goes: the tracking URI, the artifact location of each experiment, and the store's client.

``$MLFLOW_TRACKING_URI`` or ``sqlite:///<runs root>/mlflow.db``. A new experiment keeps its artifacts in
``$MLFLOW_ARTIFACT_ROOT/<experiment>`` when set, else in ``mlartifacts/<experiment>`` next to a sqlite store (a
server store decides for itself), and is tagged as a model-training experiment for MLflow 3's UI.
"""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlcore.runs import runs_root

__all__ = [
    "MLflowSwitch",
    "MLflowConfig",
    "ARTIFACT_ROOT_ENV",
    "EXPERIMENT_KIND_TAG",
    "MODEL_TRAINING_KIND",
    "tracking_uri",
    "sqlite_path",
    "artifact_location",
    "mlflow_client",
    "ensure_experiment",
]

logger = logging.getLogger(__name__)

ARTIFACT_ROOT_ENV = "MLFLOW_ARTIFACT_ROOT"  # where new experiments keep their artifacts (a folder or a URI)
# MLflow 3's experiment type: "custom_model_development" is the UI's "Machine learning" kind (runs, metrics,
# models), as opposed to "genai_development" (traces, evaluations). Every experiment our recipes use carries it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


@dataclass
class MLflowSwitch:
    """A recipe's ``tracking:`` block when the recipe logs under the experiment of what it calls."""

    enabled: bool = True  # log to MLflow


@dataclass
class MLflowConfig(MLflowSwitch):
    """A recipe's ``tracking:`` block: whether and under which experiment it logs to MLflow (the store is
    :func:`tracking_uri`). The trainers' block (``rlcore.trainer.config.TrackingConfig``) adds run naming."""

    experiment: str = "rlcore"  # MLflow experiment name


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<runs root>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///<path>`` URI (absolute with four slashes, else relative to the working
    directory); None for any other store and for an in-memory database."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path).expanduser().resolve()


def artifact_location(experiment: str, uri: str | None = None) -> str | None:
    """Where a new experiment keeps its artifacts: ``$MLFLOW_ARTIFACT_ROOT/<experiment>`` when set, else
    ``mlartifacts/<experiment>`` next to a sqlite store; None (the store's own default) for a server or
    another backend. Never a folder of the working directory or the checkout unless the store is there."""
    root = os.environ.get(ARTIFACT_ROOT_ENV, "").strip()
    if root:
        if "://" in root:  # s3://, gs://, file://, mlflow-artifacts://...
            return f"{root.rstrip('/')}/{experiment}"
        return (Path(root).expanduser().resolve() / experiment).as_uri()
    database = sqlite_path(uri or tracking_uri())
    if database is None:
        return None
    return (database.parent / "mlartifacts" / experiment).as_uri()


_READY_STORES: set[str] = set()


def mlflow_client(uri: str):
    """An ``MlflowClient`` whose sqlite store exists. The first process to open a new sqlite file creates its
    tables (MLflow's schema migrations) under a file lock: two runs started at once on a fresh store would
    otherwise both migrate it and one would fail (``table ... already exists``)."""
    # mlflow is heavy (~1 s to import) and only logging needs it
    from mlflow.tracking import MlflowClient

    database = sqlite_path(uri)
    if database is None or uri in _READY_STORES:
        return MlflowClient(tracking_uri=uri)
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # opens the store: creates or migrates its tables
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _READY_STORES.add(uri)
    return client


def ensure_experiment(client: Any, name: str) -> str:
    """The id of experiment ``name``, created (artifact location, model-training kind) if missing."""
    # mlflow is heavy (~1 s to import) and only logging needs it
    from mlflow.exceptions import MlflowException

    uri = client.tracking_uri if hasattr(client, "tracking_uri") else tracking_uri()
    location = artifact_location(name, str(uri))
    found = client.get_experiment_by_name(name)
    if found is not None:
        if location is not None and found.artifact_location.rstrip("/") != location.rstrip("/"):
            logger.info(
                "MLflow experiment %r keeps its artifacts in %s (set when it was created), not %s",
                name,
                found.artifact_location,
                location,
            )
        if EXPERIMENT_KIND_TAG not in found.tags:  # created before experiments were marked
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return found.experiment_id
    try:
        return client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
        )
    except MlflowException:
        # another process created it between our lookup and create
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id
