"""Read the runs of one MLflow experiment (params, tags, full metric histories) into plain dataclasses.

Only the MLflow client API is used, so any tracking URI works: the local sqlite store ``runs/mlflow.db``,
another sqlite file, or an ``http://`` tracking server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from rlcore.tracking import tracking_uri

__all__ = ["CompareError", "MetricPoint", "RunRecord", "default_tracking_uri", "load_runs"]

logger = logging.getLogger(__name__)

_FULL_RUN_ID_LENGTH = 32


class CompareError(ValueError):
    """The comparison cannot be built: unknown experiment, unknown run id, empty experiment, missing store."""


@dataclass(frozen=True)
class MetricPoint:
    step: int
    value: float
    timestamp: int  # ms since epoch, breaks ties between values logged at the same step


@dataclass
class RunRecord:
    """One MLflow run with everything the report needs."""

    run_id: str
    name: str
    status: str
    start_time: int | None  # ms since epoch
    end_time: int | None
    params: dict[str, str]
    tags: dict[str, str]
    # metric key -> its history sorted by (step, timestamp)
    metrics: dict[str, list[MetricPoint]] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.run_id[:8]

    @property
    def label(self) -> str:
        """Column header / legend entry: the run name plus its short id (names are not unique)."""
        return f"{self.name} ({self.short_id})" if self.name else self.short_id


def default_tracking_uri() -> str:
    """The project's store: ``rlcore.tracking.tracking_uri()`` (``$MLFLOW_TRACKING_URI`` or runs/mlflow.db)."""

    return tracking_uri()


def _check_store_exists(uri: str) -> None:
    """A sqlite URI whose file does not exist would silently create an empty store; say so instead."""
    if not uri.startswith("sqlite:///"):
        return
    # SQLAlchemy form: sqlite:///relative/path or sqlite:////absolute/path
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    if path and path != ":memory:" and not Path(path).exists():
        raise CompareError(
            f"no MLflow store at {path} (tracking URI {uri}); run a recipe first or set MLFLOW_TRACKING_URI"
        )


def _resolve_run_ids(wanted: list[str], available: dict[str, object], experiment: str) -> list[str]:
    """Full ids for ``wanted``, accepting unique prefixes (the report shows 8-character ids)."""
    resolved = []
    for item in wanted:
        matches = [run_id for run_id in available if run_id.startswith(item)]
        if item in available:
            matches = [item]
        if not matches:
            raise CompareError(f"run '{item}' is not in experiment '{experiment}' (or was deleted)")
        if len(matches) > 1 and len(item) < _FULL_RUN_ID_LENGTH:
            raise CompareError(f"run id prefix '{item}' is ambiguous in '{experiment}': {', '.join(matches)}")
        resolved.append(matches[0])
    return resolved


def load_runs(
    experiment: str, run_ids: list[str] | None = None, tracking_uri: str | None = None, max_runs: int = 50
) -> list[RunRecord]:
    """Runs of ``experiment`` (all active ones, oldest first, at most ``max_runs``; or exactly ``run_ids``).

    Raises:
        CompareError: the store does not exist, the experiment is unknown (the message lists the known
            ones), a run id is unknown or ambiguous, or there is no run to compare.
    """
    # mlflow is heavy (~1 s to import) and only logging needs it
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    _check_store_exists(uri)
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        known = sorted(e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY))
        raise CompareError(
            f"unknown experiment '{experiment}' in {uri}; known experiments: {', '.join(known) or '(none)'}"
        )
    runs = list(
        client.search_runs(
            [found.experiment_id], max_results=max(max_runs, 1000), order_by=["attributes.start_time ASC"]
        )
    )
    if run_ids:
        by_id = {run.info.run_id: run for run in runs}
        runs = [by_id[run_id] for run_id in _resolve_run_ids(run_ids, by_id, experiment)]
    elif len(runs) > max_runs:
        logger.warning(
            "experiment '%s' has %d runs; comparing the latest %d (pass --runs to choose)",
            experiment,
            len(runs),
            max_runs,
        )
        runs = runs[-max_runs:]
    if not runs:
        raise CompareError(f"experiment '{experiment}' has no runs to compare")

    records = []
    for run in tqdm(runs, desc="reading runs", unit="run", disable=len(runs) < 4):
        histories = {}
        for key in sorted(run.data.metrics):
            points = [
                MetricPoint(int(m.step), float(m.value), int(m.timestamp))
                for m in client.get_metric_history(run.info.run_id, key)
            ]
            histories[key] = sorted(points, key=lambda p: (p.step, p.timestamp))
        records.append(
            RunRecord(
                run_id=run.info.run_id,
                name=run.info.run_name or "",
                status=run.info.status,
                start_time=run.info.start_time,
                end_time=run.info.end_time,
                params=dict(run.data.params),
                tags=dict(run.data.tags),
                metrics=histories,
            )
        )
    return records
