"""rlcore.tracking: provenance tags, batched metrics, nested runs, terminal statuses, results.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest
from mlflow.tracking import MlflowClient

from rlcore.tracking import start_run, tracking_uri, write_results_json

REQUIRED_TAGS = {
    "git.sha",
    "git.dirty",
    "config.hash",
    "seeds",
    "python.version",
    "torch.cuda",
    "host.name",
    "host.gpus",
    "version.torch",
    "version.transformers",
    "version.trl",
    "version.mlflow",
    "version.rlcore",
}


@dataclass
class SmallConfig:
    seed: int = 11  # seed
    lr: float = 0.1  # learning rate


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return MlflowClient(tracking_uri=uri)


def _runs(client, name):
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id])


def test_run_has_provenance_metrics_params_and_config(store):
    with start_run("exp-a", run_name="r1", config=SmallConfig(), seeds=[11, 12]) as run:
        run.log_metrics({"reward/mean": 0.5, "kl": 0.01, "note": "skipped"}, step=3)
        run.log_metrics({"reward/mean": 0.75}, step=4)
    (found,) = _runs(store, "exp-a")
    assert found.info.status == "FINISHED"
    assert REQUIRED_TAGS <= set(found.data.tags)
    assert found.data.tags["seeds"] == "11,12"
    assert found.data.tags["git.dirty"] in {"true", "false"}
    assert found.data.params == {"seed": "11", "lr": "0.1"}
    history = store.get_metric_history(found.info.run_id, "reward/mean")
    assert [(m.step, m.value) for m in history] == [(3, 0.5), (4, 0.75)]
    assert "note" not in found.data.metrics
    artifacts = [a.path for a in store.list_artifacts(found.info.run_id)]
    assert "config.yaml" in artifacts


def test_nested_runs_share_parent(store):
    with start_run("pipeline", run_name="parent") as parent:
        with parent.child("cpt") as cpt:
            cpt.log_metrics({"loss": 1.0}, step=0)
        with parent.child("sft") as sft:
            sft.log_metrics({"loss": 0.5}, step=0)
    runs = {r.info.run_name: r for r in _runs(store, "pipeline")}
    assert set(runs) == {"parent", "cpt", "sft"}
    assert runs["cpt"].data.tags["mlflow.parentRunId"] == runs["parent"].info.run_id
    assert runs["sft"].data.tags["mlflow.parentRunId"] == runs["parent"].info.run_id


def test_exception_ends_failed_and_ctrl_c_ends_killed(store):
    with pytest.raises(ValueError), start_run("status", run_name="crash"):
        raise ValueError("boom")
    with pytest.raises(KeyboardInterrupt), start_run("status", run_name="ctrlc"):
        raise KeyboardInterrupt
    statuses = {r.info.run_name: r.info.status for r in _runs(store, "status")}
    assert statuses == {"crash": "FAILED", "ctrlc": "KILLED"}


def test_sigterm_ends_killed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = textwrap.dedent(
        """
        import os, signal, time
        from rlcore.tracking import start_run
        with start_run("term", run_name="victim") as run:
            print("ready", flush=True)
            time.sleep(60)
        """
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    (found,) = _runs(MlflowClient(tracking_uri=uri), "term")
    assert found.info.status == "KILLED"


def test_resume_reopens_same_run(store):
    with start_run("resume", run_name="first") as run:
        run.log_metrics({"x": 1}, step=1)
        run_id = run.run_id
    with start_run("resume", resume_run_id=run_id) as again:
        again.log_metrics({"x": 2}, step=2)
    (found,) = _runs(store, "resume")
    assert found.info.run_id == run_id and found.data.tags["resumed"] == "true"
    assert [m.value for m in store.get_metric_history(run_id, "x")] == [1.0, 2.0]


def test_default_uri_is_sqlite_under_runs(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RUNS_DIR", str(tmp_path / "myruns"))
    assert tracking_uri() == f"sqlite:///{tmp_path / 'myruns' / 'mlflow.db'}"


def test_results_json_carries_provenance(tmp_path):
    path = write_results_json(tmp_path / "out" / "results.json", {"em": 0.25}, SmallConfig(), seeds=[1, 2, 3])
    data = json.loads(path.read_text())
    assert data["em"] == 0.25
    assert data["config"] == {"seed": 11, "lr": 0.1}
    assert data["provenance"]["seeds"] == "1,2,3" and "git.sha" in data["provenance"]
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_results_json_inside_a_checkout_names_paths_relative_to_it(tmp_path):
    """A committed results.json must not carry the absolute folder of the machine that ran it."""
    checkout = tmp_path / "checkout"
    (checkout / ".git").mkdir(parents=True)
    inside = checkout / "runs" / "p" / "final"
    path = write_results_json(
        checkout / "experiments" / "x" / "results.json",
        {
            "rows": [{"model": str(inside)}],
            "elsewhere": str(tmp_path / "data"),
            "cmd": f"{checkout}/a.py run",
        },
    )
    data = json.loads(path.read_text())
    assert data["rows"][0]["model"] == "runs/p/final"
    assert data["cmd"] == "a.py run"
    assert data["elsewhere"] == str(tmp_path / "data"), "paths outside the checkout are left as they are"


def test_parent_and_tags_from_the_environment(store, monkeypatch):
    """A subprocess recipe launched by an orchestrator nests under the orchestrator's run."""
    with start_run("orchestrated", run_name="parent") as parent:
        monkeypatch.setenv("RLCORE_PARENT_RUN_ID", parent.run_id)
        monkeypatch.setenv("RLCORE_RUN_TAGS", '{"demo.id": "d7", "method": "grpo"}')
        with start_run("orchestrated", run_name="stage", tags={"method": "rexrag"}) as stage:  # explicit wins
            with stage.child("eval"):
                pass
    runs = {r.info.run_name: r for r in _runs(store, "orchestrated")}
    assert runs["stage"].data.tags["mlflow.parentRunId"] == runs["parent"].info.run_id
    assert (
        runs["eval"].data.tags["mlflow.parentRunId"] == runs["stage"].info.run_id
    )  # own children stay its own
    assert runs["stage"].data.tags["demo.id"] == "d7" and runs["stage"].data.tags["method"] == "rexrag"
    assert runs["eval"].data.tags["demo.id"] == "d7"
    monkeypatch.setenv("RLCORE_RUN_TAGS", "[1, 2]")
    with pytest.raises(ValueError, match="RLCORE_RUN_TAGS must be a JSON object"):
        with start_run("orchestrated", run_name="bad"):
            pass
