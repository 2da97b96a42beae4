"""rlcore.tracking against a real sqlite store in tmp_path: artifacts follow the store, failures are recorded.

* Artifacts land next to the sqlite file named by MLFLOW_TRACKING_URI (or under MLFLOW_ARTIFACT_ROOT), never in
  the checkout's runs/ folder or the working directory.
* A recipe that fails before its run opened leaves a FAILED run with the error; one that fails inside or after
  its run marks that run FAILED with the error, and only once.
* Runs started at the same moment on a fresh store all succeed (the store's tables are created once).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rlcore.tracking import (
    ARTIFACT_ROOT_ENV,
    artifact_location,
    failures_recorded,
    record_failures,
    start_run,
)


@dataclass
class SmallConfig:
    seed: int = 3  # seed
    lr: float = 0.5  # learning rate


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A store outside the checkout, a separate runs/ folder standing for the checkout's, and a clean cwd."""
    store = tmp_path / "store" / "mlflow.db"
    checkout_runs = tmp_path / "checkout" / "runs"
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.setenv("RUNS_DIR", str(checkout_runs))
    monkeypatch.delenv(ARTIFACT_ROOT_ENV, raising=False)
    monkeypatch.chdir(workdir)
    return store, checkout_runs, workdir


def _files(folder: Path) -> list[str]:
    return (
        sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        if folder.exists()
        else []
    )


def _only_run(uri: str, experiment: str):
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, run


def test_artifacts_go_next_to_the_sqlite_file(elsewhere, tmp_path):
    store, checkout_runs, workdir = elsewhere
    note = tmp_path / "note.txt"
    note.write_text("hello")
    with start_run("exp-store", run_name="r", config=SmallConfig()) as run:
        run.log_artifact(note)
        run_id = run.run_id
    stored = _files(store.parent / "mlartifacts" / "exp-store")
    assert f"{run_id}/artifacts/config.yaml" in stored and f"{run_id}/artifacts/note.txt" in stored
    assert _files(checkout_runs) == [] and _files(workdir) == []
    expected = (store.parent / "mlartifacts" / "exp-store").as_uri()
    assert (
        MlflowClient(f"sqlite:///{store}").get_experiment_by_name("exp-store").artifact_location == expected
    )


def test_artifact_root_from_the_environment(elsewhere, tmp_path, monkeypatch):
    store, checkout_runs, workdir = elsewhere
    monkeypatch.setenv(ARTIFACT_ROOT_ENV, str(tmp_path / "artifacts"))
    with start_run("exp-root", run_name="r", config=SmallConfig()) as run:
        run_id = run.run_id
    assert f"{run_id}/artifacts/config.yaml" in _files(tmp_path / "artifacts" / "exp-root")
    assert (
        _files(store.parent / "mlartifacts") == [] and _files(checkout_runs) == [] and _files(workdir) == []
    )
    monkeypatch.setenv(ARTIFACT_ROOT_ENV, "s3://bucket/mlflow/")  # a URI is used as given
    assert artifact_location("exp", "http://127.0.0.1:5000") == "s3://bucket/mlflow/exp"


def test_artifact_location_rules(tmp_path, monkeypatch):
    monkeypatch.delenv(ARTIFACT_ROOT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    # three slashes: relative to the working directory; four: absolute
    assert artifact_location("e", "sqlite:///rel/mlflow.db") == (tmp_path / "rel/mlartifacts/e").as_uri()
    assert (
        artifact_location("e", f"sqlite:///{tmp_path}/abs/m.db") == (tmp_path / "abs/mlartifacts/e").as_uri()
    )
    assert artifact_location("e", "http://127.0.0.1:5000") is None  # a server decides for itself
    assert artifact_location("e", "sqlite:///:memory:") is None


def test_a_failure_before_the_run_opens_is_a_failed_run_with_the_error(elsewhere):
    store, _, _ = elsewhere
    with pytest.raises(ConnectionError, match="retrieval server"):
        with record_failures(
            "exp-setup", run_name="grpo-1", config=SmallConfig(), seeds=[3], tags={"method": "grpo"}
        ):
            raise ConnectionError("retrieval server http://127.0.0.1:9 is not reachable")
    client, run = _only_run(f"sqlite:///{store}", "exp-setup")
    assert run.info.status == "FAILED" and run.info.run_name == "grpo-1"
    assert run.data.tags["error"] == "ConnectionError: retrieval server http://127.0.0.1:9 is not reachable"
    assert run.data.tags["failed_during"] == "setup" and run.data.tags["method"] == "grpo"
    assert run.data.tags["seeds"] == "3" and run.data.params == {"seed": "3", "lr": "0.5"}
    traceback = Path(client.download_artifacts(run.info.run_id, "error.txt")).read_text()
    assert "Traceback" in traceback and "test_tracking_store.py" in traceback


def test_a_failure_inside_the_run_is_recorded_once(elsewhere):
    store, _, _ = elsewhere
    with pytest.raises(ValueError):
        with record_failures("exp-inside", run_name="outer"), record_failures("exp-inside", run_name="inner"):
            with start_run("exp-inside", run_name="the-run"):
                raise ValueError("nan loss")
    _, run = _only_run(f"sqlite:///{store}", "exp-inside")  # no extra "setup" run from either scope
    assert run.info.run_name == "the-run" and run.info.status == "FAILED"
    assert run.data.tags["error"] == "ValueError: nan loss" and "failed_during" not in run.data.tags


def test_nested_scopes_close_cleanly_when_the_recipe_reopens_its_run(elsewhere):
    """The REX-RAG recipe: a decorated recipe calls the decorated trainer (two scopes share the training run),
    then reopens that run for its final evaluation in the outer scope only. Closing the scopes must not mix
    them up (they compared equal while holding the same runs)."""
    store, _, _ = elsewhere
    with record_failures("exp-nested", run_name="recipe"):
        with record_failures("exp-nested", run_name="trainer"):
            with start_run("exp-nested", run_name="training") as run:
                run.log_metrics({"loss": 1.0}, step=1)
        with start_run("exp-nested", resume_run_id=run.run_id) as again:
            again.log_metrics({"eval/em": 0.5}, step=1)
    with pytest.raises(RuntimeError), record_failures("exp-nested", run_name="recipe"):
        raise RuntimeError("the next recipe still records into its own scope")
    runs = MlflowClient(f"sqlite:///{store}").search_runs(
        [MlflowClient(f"sqlite:///{store}").get_experiment_by_name("exp-nested").experiment_id]
    )
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]


def test_a_failure_after_the_run_closed_marks_that_run_failed(elsewhere):
    store, _, _ = elsewhere
    with pytest.raises(RuntimeError):
        with record_failures("exp-after", run_name="recipe"):
            with start_run("exp-after", run_name="training") as run:
                run.log_metrics({"loss": 1.0}, step=1)
            raise RuntimeError("final evaluation failed")
    _, run = _only_run(f"sqlite:///{store}", "exp-after")
    assert run.info.run_name == "training" and run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: final evaluation failed"


def test_ctrl_c_before_a_run_and_disabled_tracking_record_nothing(elsewhere):
    store, _, _ = elsewhere
    with pytest.raises(KeyboardInterrupt), record_failures("exp-quiet", run_name="r"):
        raise KeyboardInterrupt
    with pytest.raises(ValueError), record_failures("exp-quiet", run_name="r", enabled=False):
        raise ValueError("tracking off")
    assert MlflowClient(f"sqlite:///{store}").get_experiment_by_name("exp-quiet") is None


@dataclass
class _Tracking:
    enabled: bool = True  # log to MLflow
    experiment: str = "exp-decorated"  # experiment
    run_name: str | None = "decorated"  # run name
    tags: dict | None = None  # tags


@dataclass
class _Train:
    seed: int = 5  # seed


@dataclass
class _RecipeConfig:
    tracking: _Tracking  # MLflow settings
    train: _Train  # loop settings


def test_failures_recorded_decorator_reads_the_recipe_config(elsewhere, monkeypatch):
    store, _, _ = elsewhere

    @failures_recorded
    def recipe(cfg):
        raise FileNotFoundError("model folder runs/sft/model not found")

    cfg = _RecipeConfig(_Tracking(tags={"method": "rexrag"}), _Train())
    with pytest.raises(FileNotFoundError):
        recipe(cfg)
    _, run = _only_run(f"sqlite:///{store}", "exp-decorated")
    assert (
        run.info.status == "FAILED" and run.data.tags["seeds"] == "5" and run.data.tags["method"] == "rexrag"
    )
    monkeypatch.setenv("RANK", "1")  # other ranks of a distributed run record nothing
    cfg.tracking.experiment = "exp-rank1"
    with pytest.raises(FileNotFoundError):
        recipe(cfg)
    assert MlflowClient(f"sqlite:///{store}").get_experiment_by_name("exp-rank1") is None


def _start_at(uri: str, start_at: float, index: int, out: multiprocessing.Queue) -> None:
    os.environ["MLFLOW_TRACKING_URI"] = uri
    time.sleep(max(start_at - time.time(), 0))
    try:
        with start_run("exp-race", run_name=f"worker-{index}"):
            pass
        out.put("ok")
    except Exception as err:  # noqa: BLE001 - reported to the test
        out.put(f"{type(err).__name__}: {err}")


def test_runs_started_together_on_a_fresh_store_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 8  # every worker has imported mlflow by then, and they open the store together
    workers = [context.Process(target=_start_at, args=(uri, start_at, i, results)) for i in range(3)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert outcomes == ["ok"] * 3, outcomes
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("exp-race").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3


def test_resuming_a_run_the_store_does_not_hold_opens_a_new_tagged_run(
    elsewhere, tmp_path, monkeypatch, caplog
):
    """A checkpoint copied to another machine (or resumed under another MLFLOW_TRACKING_URI) names a run id the
    current store has never seen: one warning naming the id and the store, then a new run tagged with the old id
    that records as usual."""
    with start_run("exp-moved", run_name="first") as run:
        run.log_metrics({"loss": 1.0}, step=1)
    old_id = run.run_id
    other = f"sqlite:///{tmp_path / 'other-machine' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    with caplog.at_level("WARNING", logger="rlcore.tracking"):
        with start_run("exp-moved", run_name="second", resume_run_id=old_id) as again:
            again.log_metrics({"loss": 0.5}, step=2)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and old_id in warnings[0] and other in warnings[0], warnings
    assert again.run_id != old_id
    _, moved = _only_run(other, "exp-moved")
    assert moved.info.run_id == again.run_id and moved.info.status == "FINISHED"
    assert moved.data.tags["resumed_from_run_id"] == old_id and moved.data.tags["resumed"] == "true"
    assert moved.data.metrics == {"loss": 0.5}
    _, original = _only_run(f"sqlite:///{elsewhere[0]}", "exp-moved")  # the first store is untouched
    assert original.info.run_id == old_id and original.data.metrics == {"loss": 1.0}


def test_resuming_a_run_of_the_same_store_reopens_it(elsewhere):
    with start_run("exp-same", run_name="first") as run:
        run.log_metrics({"loss": 1.0}, step=1)
    with start_run("exp-same", resume_run_id=run.run_id) as again:
        again.log_metrics({"loss": 0.5}, step=2)
    assert again.run_id == run.run_id
    _, only = _only_run(f"sqlite:///{elsewhere[0]}", "exp-same")
    assert only.data.tags["resumed"] == "true" and "resumed_from_run_id" not in only.data.tags
