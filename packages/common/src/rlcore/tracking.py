"""MLflow tracking with full provenance.

Default store: a local sqlite file ``runs/mlflow.db`` (no server needed); ``MLFLOW_TRACKING_URI`` overrides it.
One MLflow experiment per recipe, nested runs for pipelines, one batched call per step for metrics, and
provenance tags on every run. A run that raises ends FAILED with the error (``error`` tag, ``error.txt``
artifact); Ctrl-C or SIGTERM ends KILLED; never RUNNING. A recipe wrapped in :func:`record_failures` that fails
before it opened its run (model, data or retrieval server missing) still leaves a FAILED run with the error.

Artifacts follow the store: ``$MLFLOW_ARTIFACT_ROOT/<experiment>`` when set, else ``mlartifacts/<experiment>``
next to the sqlite file (``runs/mlartifacts`` for the default store); a server store decides for itself.

An orchestrator that launches recipes as subprocesses nests them by environment: a new top-level run takes
``RLCORE_PARENT_RUN_ID`` as its parent and adds the tags of ``RLCORE_RUN_TAGS`` (a JSON object).

    with start_run("rexrag-train", config=cfg, seeds=[cfg.seed]) as run:
        run.log_metrics({"reward/mean": 0.4, "kl": 0.01}, step=1)
        with run.child("eval") as child:
            child.log_metrics({"em": 0.3}, step=1)
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from rlcore.config import config_hash, to_dict, to_yaml
from rlcore.runs import repo_root
from rlcore.tracking_store import (
    ARTIFACT_ROOT_ENV,
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    artifact_location,
    ensure_experiment,
    mlflow_client,
    sqlite_path,
    tracking_uri,
)

__all__ = [
    "tracking_uri",
    "mlflow_client",
    "sqlite_path",
    "artifact_location",
    "provenance",
    "start_run",
    "record_failures",
    "failures_recorded",
    "Run",
    "write_results_json",
    "flatten",
    "PARENT_ENV",
    "TAGS_ENV",
    "ARTIFACT_ROOT_ENV",
    "EXPERIMENT_KIND_TAG",
    "MODEL_TRAINING_KIND",
]

PARENT_ENV = "RLCORE_PARENT_RUN_ID"  # parent of every new top-level run of this process
TAGS_ENV = "RLCORE_RUN_TAGS"  # JSON object of extra tags for every new run of this process

logger = logging.getLogger(__name__)

TRACKED_PACKAGES = (
    "rlcore",
    "rexrag",
    "anessuite",
    "torch",
    "transformers",
    "trl",
    "peft",
    "datasets",
    "accelerate",
    "deepspeed",
    "vllm",
    "faiss-cpu",
    "faiss-gpu",
    "sentence-transformers",
    "mlflow",
    "omegaconf",
    "numpy",
)
_MAX_PARAMS_PER_BATCH = 100
_MAX_PARAM_CHARS = 6000
_MAX_ERROR_CHARS = 5000
_ERROR_ARTIFACT = "error.txt"


def _git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _gpu_list() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return ";".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001 - provenance must never break a run
        pass
    return "none"


def provenance(config: Any | None = None, seeds: Sequence[int] = ()) -> dict[str, str]:
    """Tags that identify exactly what produced a run: code, config, seeds, software and hardware."""
    tags: dict[str, str] = {}
    root = repo_root(Path(__file__).resolve().parent) or repo_root()
    if root is not None:
        tags["git.sha"] = _git(["rev-parse", "HEAD"], root) or "unknown"
        status = _git(["status", "--porcelain", "--untracked-files=no"], root)
        tags["git.dirty"] = "unknown" if status is None else str(bool(status)).lower()
    else:
        tags["git.sha"], tags["git.dirty"] = "unknown", "unknown"
    if config is not None:
        tags["config.hash"] = config_hash(config)
    tags["seeds"] = ",".join(str(s) for s in seeds) if seeds else "none"
    for name in TRACKED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            tags[f"version.{name}"] = metadata.version(name)
    tags["python.version"] = platform.python_version()
    try:
        import torch

        tags["torch.cuda"] = str(torch.version.cuda or "none")
    except Exception:  # noqa: BLE001
        tags["torch.cuda"] = "unknown"
    tags["host.name"] = socket.gethostname()
    tags["host.cpus"] = str(os.cpu_count())
    tags["host.gpus"] = _gpu_list()
    tags["command"] = " ".join(sys.argv)[:_MAX_PARAM_CHARS]
    return tags


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``; lists are kept as JSON strings."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{full}."))
        elif isinstance(value, list | tuple):
            flat[full] = json.dumps(value, default=str)
        else:
            flat[full] = value
    return flat


def _to_float(value: Any) -> float | None:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


class Run:
    """An open MLflow run. Use :func:`start_run` to create one."""

    def __init__(self, client: Any, run_id: str, experiment_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log all metrics of one step in one call. Non-numeric values are skipped; NaN/inf are kept."""
        # mlflow is heavy (~1 s to import) and only logging needs it
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = []
        for key, value in metrics.items():
            number = _to_float(value)
            if number is None:
                continue
            batch.append(Metric(key=key, value=number, timestamp=stamp, step=int(step)))
        if batch:
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (flattened) parameters, 100 per call (MLflow's batch limit), long values cut to 6000 chars."""
        # mlflow is heavy (~1 s to import) and only logging needs it
        from mlflow.entities import Param

        items = [Param(key, str(value)[:_MAX_PARAM_CHARS]) for key, value in flatten(params).items()]
        for start in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + _MAX_PARAMS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        # mlflow is heavy (~1 s to import) and only logging needs it
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)[:_MAX_PARAM_CHARS]) for k, v in tags.items()]
        for start in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=items[start : start + _MAX_PARAMS_PER_BATCH])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_dict(self, obj: Any, name: str) -> None:
        """Write ``obj`` as JSON (or YAML when ``name`` ends in .yaml) into the run's artifacts."""
        if name.endswith((".yaml", ".yml")):
            self.log_text(yaml.safe_dump(obj, sort_keys=False, allow_unicode=True), name)
        else:
            self.log_text(json.dumps(obj, indent=2, default=str, ensure_ascii=False), name)

    @contextlib.contextmanager
    def child(
        self,
        name: str,
        config: Any | None = None,
        seeds: Sequence[int] = (),
        tags: Mapping[str, Any] | None = None,
    ) -> Iterator[Run]:
        """A nested run (e.g. one pipeline stage) under this run, in the same experiment."""
        with _open_run(
            self.client, self.experiment_id, name, config, seeds, tags, parent_run_id=self.run_id
        ) as run:
            yield run


class _Terminated(BaseException):
    """Raised inside the main thread when SIGTERM arrives, so the run is closed as KILLED."""


@contextlib.contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        # someone (e.g. the trainer's checkpoint-on-SIGTERM handler) already owns the signal
        yield
        return

    def _handler(signum: int, frame: Any) -> None:
        raise _Terminated()

    signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _environment_tags() -> dict[str, str]:
    raw = os.environ.get(TAGS_ENV)
    if not raw:
        return {}
    try:
        tags = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{TAGS_ENV} must be a JSON object of tags, got {raw!r} ({err.msg})") from err
    if not isinstance(tags, dict):
        raise ValueError(f"{TAGS_ENV} must be a JSON object of tags, got {type(tags).__name__}")
    return {str(k): str(v) for k, v in tags.items()}


def _run_exists(client: Any, run_id: str) -> bool:
    """Whether ``run_id`` is in ``client``'s store (a checkpoint copied to another machine, or resumed under a
    different ``MLFLOW_TRACKING_URI``, names a run the current store has never seen)."""
    # mlflow is heavy (~1 s to import) and only logging needs it
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def _store_name(client: Any) -> str:
    return str(getattr(client, "tracking_uri", None) or tracking_uri())


@contextlib.contextmanager
def _open_run(
    client: Any,
    experiment_id: str,
    run_name: str | None,
    config: Any | None,
    seeds: Sequence[int],
    tags: Mapping[str, Any] | None,
    parent_run_id: str | None = None,
    resume_run_id: str | None = None,
) -> Iterator[Run]:
    all_tags = provenance(config, seeds)
    all_tags.update(_environment_tags())
    if tags:
        all_tags.update({str(k): str(v) for k, v in tags.items()})
    top_level = parent_run_id is None  # not a child of a run of this process (record_failures sees it)
    if parent_run_id is None and resume_run_id is None and os.environ.get(PARENT_ENV):
        parent_run_id = os.environ[PARENT_ENV]
    if parent_run_id is not None:
        all_tags["mlflow.parentRunId"] = parent_run_id
    if resume_run_id is not None and not _run_exists(client, resume_run_id):
        logger.warning(
            "MLflow run %s (named by the checkpoint) is not in the tracking store %s; "
            "opening a new run tagged resumed_from_run_id=%s",
            resume_run_id,
            _store_name(client),
            resume_run_id,
        )
        all_tags.update({"resumed": "true", "resumed_from_run_id": resume_run_id})
        resume_run_id = None
    if resume_run_id is not None:
        client.update_run(resume_run_id, status="RUNNING")
        run = Run(client, resume_run_id, experiment_id)
        run.set_tags({**all_tags, "resumed": "true"})
    else:
        created = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
        run = Run(client, created.info.run_id, experiment_id)
        if config is not None:
            run.log_params(to_dict(config))
            run.log_text(to_yaml(config), "config.yaml")
    if top_level:
        for scope in _SCOPES:
            scope.append(run)
    status = "FINISHED"
    try:
        with _sigterm_as_exception():
            yield run
    except (KeyboardInterrupt, _Terminated) as err:
        status = "KILLED"
        _mark_recorded(err)
        raise
    except SystemExit as exit_:
        status = "FINISHED" if exit_.code in (0, None) else "KILLED"
        raise
    except BaseException as err:
        status = "FAILED"
        _record_error(run, err)
        raise
    finally:
        try:
            client.set_terminated(run.run_id, status=status)
        except Exception as err:  # noqa: BLE001 - never mask the original error
            logger.warning("could not close MLflow run %s as %s: %s", run.run_id, status, err)


def _mark_recorded(err: BaseException) -> None:
    with contextlib.suppress(AttributeError):
        err._rlcore_tracked = True  # an enclosing record_failures scope leaves it alone


def _record_error(run: Run, err: BaseException) -> None:
    """The error on the run: an ``error`` tag (type and message) and the traceback as ``error.txt``."""
    _mark_recorded(err)
    message = f"{type(err).__name__}: {err}"[:_MAX_ERROR_CHARS]
    try:
        run.set_tags({"error": message})
        run.log_text("".join(traceback.format_exception(err)), _ERROR_ARTIFACT)
    except Exception as log_err:  # noqa: BLE001 - never mask the original error
        logger.warning("could not record the error on MLflow run %s: %s", run.run_id, log_err)


# Open record_failures scopes, innermost last; every top-level run opened meanwhile is appended to each.
_SCOPES: list[list[Run]] = []


@contextlib.contextmanager
def record_failures(
    experiment: str,
    run_name: str | None = None,
    config: Any | None = None,
    seeds: Sequence[int] = (),
    tags: Mapping[str, Any] | None = None,
    enabled: bool = True,
    uri: str | None = None,
) -> Iterator[None]:
    """Around a whole recipe: an exception is recorded on an MLflow run, whatever the phase it comes from.

    Raised while a run is open, the run ends FAILED with the error as usual. Raised before any run of the
    recipe was opened (a missing model, a malformed data file, an unreachable retrieval server), a new run
    named ``run_name`` is created in ``experiment`` and ended FAILED with the error, tagged
    ``failed_during=setup``. Raised after the recipe's run closed (a final evaluation), that run is set to
    FAILED with the error. Ctrl-C and ``SystemExit`` are not recorded here. Scopes nest: the innermost records.
    """
    runs: list[Run] = []
    _SCOPES.append(runs)
    try:
        yield
    except Exception as err:
        if enabled and not getattr(err, "_rlcore_tracked", False):
            try:
                if runs:
                    _record_error(runs[-1], err)
                    runs[-1].client.set_terminated(runs[-1].run_id, status="FAILED")
                else:
                    _record_setup_failure(experiment, run_name, config, seeds, tags, err, uri)
            except Exception as track_err:  # noqa: BLE001 - never mask the original error
                logger.warning("could not record the failure in MLflow: %s", track_err)
            _mark_recorded(err)
        raise
    finally:
        # By identity: scopes holding the same runs compare equal, and list.remove would take the outer one.
        del _SCOPES[next(i for i in range(len(_SCOPES) - 1, -1, -1) if _SCOPES[i] is runs)]


def _record_setup_failure(
    experiment: str,
    run_name: str | None,
    config: Any | None,
    seeds: Sequence[int],
    tags: Mapping[str, Any] | None,
    err: BaseException,
    uri: str | None,
) -> None:
    client = mlflow_client(uri or tracking_uri())
    experiment_id = ensure_experiment(client, experiment)
    all_tags = provenance(config, seeds)
    all_tags.update(_environment_tags())
    all_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
    all_tags["failed_during"] = "setup"
    if os.environ.get(PARENT_ENV):
        all_tags["mlflow.parentRunId"] = os.environ[PARENT_ENV]
    created = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    run = Run(client, created.info.run_id, experiment_id)
    if config is not None:
        run.log_params(to_dict(config))
        run.log_text(to_yaml(config), "config.yaml")
    _record_error(run, err)
    client.set_terminated(run.run_id, status="FAILED")
    logger.info("recorded the failure as MLflow run %s (FAILED)", run.run_id)


def failures_recorded(recipe: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for ``recipe(cfg, ...)`` where ``cfg`` has ``tracking`` (``enabled``, ``experiment``,
    ``run_name``, ``tags``) and ``train.seed``, like every RL training config: the recipe runs inside
    :func:`record_failures`, on the main process only (``RANK`` 0 or unset)."""

    @functools.wraps(recipe)
    def wrapper(cfg: Any, *args: Any, **kwargs: Any) -> Any:
        tracking = cfg.tracking
        main_process = int(os.environ.get("RANK", "0")) == 0
        with record_failures(
            tracking.experiment,
            run_name=tracking.run_name,
            config=cfg,
            seeds=[cfg.train.seed],
            tags=dict(tracking.tags),
            enabled=tracking.enabled and main_process,
        ):
            return recipe(cfg, *args, **kwargs)

    return wrapper


@contextlib.contextmanager
def start_run(
    experiment: str,
    run_name: str | None = None,
    config: Any | None = None,
    seeds: Sequence[int] = (),
    tags: Mapping[str, Any] | None = None,
    resume_run_id: str | None = None,
    uri: str | None = None,
) -> Iterator[Run]:
    """Open a top-level run in ``experiment`` (created if missing); close it FINISHED/FAILED/KILLED.

    ``resume_run_id`` re-opens an earlier run (e.g. after resuming from a checkpoint) instead of creating one.
    """
    client = mlflow_client(uri or tracking_uri())
    experiment_id = ensure_experiment(client, experiment)
    with _open_run(client, experiment_id, run_name, config, seeds, tags, resume_run_id=resume_run_id) as run:
        yield run


def _without_root(value: Any, prefix: str) -> Any:
    """Paths inside the checkout written relative to it: a committed results.json names no machine's folders."""
    if isinstance(value, str):
        return value.replace(prefix, "")
    if isinstance(value, Mapping):
        return {key: _without_root(item, prefix) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_root(item, prefix) for item in value]
    return value


def write_results_json(
    path: str | Path, results: Mapping[str, Any], config: Any | None = None, seeds: Sequence[int] = ()
) -> Path:
    """Write ``results`` plus a ``provenance`` block atomically (temp file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        **results,
        "provenance": {**provenance(config, seeds), "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    }
    if config is not None:
        payload["config"] = to_dict(config)
    root = repo_root(path.parent.resolve())
    if root is not None:
        payload = _without_root(payload, f"{root.resolve()}{os.sep}")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, default=str, ensure_ascii=False)
        handle.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
    os.replace(tmp, path)
    return path
