"""`make mlflow-ui` (rlcore.mlflow_ui) on a real sqlite store: experiments are marked as model training, the
printed links open each experiment's runs, and (with headless Chromium installed) the real UI served on
127.0.0.1 shows the demo's parent run and its nested runs on that page."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rlcore.mlflow_ui import ML_WORKFLOW, experiment_links, runs_page_url, ui_command
from rlcore.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, PARENT_ENV, start_run

REPO = Path(__file__).resolve().parents[3]
CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)
PARENT = "demo-20261206-120000"
NESTED = ("rexrag-sft-cpu", "rexrag-train-cpu", "anesbench-eval-smollm2")


def _demo_store(root: Path, monkeypatch) -> tuple[str, str]:
    """A store laid out like `make demo` leaves it: a parent run in experiment `demo`, and each stage's run
    nested under it through RLCORE_PARENT_RUN_ID, as the demo's stage processes do."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with start_run("demo", run_name=PARENT, tags={"demo.id": "20261206-120000"}) as parent:
        monkeypatch.setenv(PARENT_ENV, parent.run_id)
        for step, name in enumerate(NESTED):
            with start_run("demo", run_name=name) as stage:
                stage.log_metrics({"reward/mean": 0.25 * step, "loss/total": 1.0 / (step + 1)}, step=1)
        monkeypatch.delenv(PARENT_ENV)
    return uri, parent.experiment_id


def test_experiments_are_marked_as_model_training(tmp_path, monkeypatch):
    uri, experiment_id = _demo_store(tmp_path, monkeypatch)
    client = MlflowClient(uri)
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    legacy = client.create_experiment("made-before-marking")  # an experiment from an older store
    with start_run("made-before-marking", run_name="r"):
        pass
    assert client.get_experiment(legacy).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    client.set_experiment_tag(legacy, EXPERIMENT_KIND_TAG, "genai_development")  # a user's own choice stays
    with start_run("made-before-marking", run_name="r2"):
        pass
    assert client.get_experiment(legacy).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_links_open_each_experiment_on_its_runs(tmp_path, monkeypatch):
    uri, experiment_id = _demo_store(tmp_path, monkeypatch)
    links = experiment_links(uri, "http://127.0.0.1:5999")
    assert links == [
        ("demo", 4, f"http://127.0.0.1:5999/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    ]
    out = subprocess.run(
        [sys.executable, "-m", "rlcore.mlflow_ui", "--port", "5999", "--links-only"],
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        check=True,
    ).stdout
    assert links[0][2] in out and uri in out
    command = ui_command(uri, "127.0.0.1", 5999)
    assert command[1:7] == ["ui", "--host", "127.0.0.1", "--port", "5999", "--backend-store-uri"]
    assert command[-2:] == ["--artifacts-destination", str(tmp_path / "mlartifacts")]  # beside the store


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ui(tmp_path, monkeypatch):
    """`python -m rlcore.mlflow_ui` (what `make mlflow-ui` runs) serving the demo store on 127.0.0.1."""
    uri, experiment_id = _demo_store(tmp_path / "store", monkeypatch)
    port = _free_port()
    log = (tmp_path / "ui.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "rlcore.mlflow_ui", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "ui.log").read_text()
            assert time.time() < deadline, "the MLflow UI did not come up in 240 s"
            time.sleep(1)
        yield base, experiment_id
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()


def _text(html: str) -> str:
    """The visible text of a DOM dump (for failure messages)."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _dump_dom(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran, from headless Chromium with a fresh, empty profile."""
    profile.mkdir()
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=60000",
        "--dump-dom",
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=True).stdout


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (Debian: apt-get install -y chromium chromium-driver)",
)
def test_the_ui_opens_the_demo_experiment_on_its_parent_and_nested_runs(ui, tmp_path):
    """The link `make mlflow-ui` prints lands on the runs table (not the GenAI overview) with the parent run;
    the parent's own link there opens its page, which lists the nested runs."""
    base, experiment_id = ui
    runs_page = _dump_dom(runs_page_url(base, experiment_id), tmp_path / "profile-runs")
    text = _text(runs_page)
    assert "Runs - Experiment" in text and "No data available" not in text, text[:3000]
    assert PARENT in text and "4 matching runs" in text, text[
        :3000
    ]  # the parent row; its 3 nested runs count
    parent_link = re.search(
        rf'href="(#/experiments/{experiment_id}/runs/[0-9a-f]+)"><span[^>]*>{PARENT}<', runs_page
    )
    assert parent_link, "no link to the parent run in the runs table"
    parent_page = _dump_dom(f"{base}/{parent_link.group(1)}?{ML_WORKFLOW}", tmp_path / "profile-parent")
    parent_text = _text(parent_page)
    assert "Child runs" in parent_text, parent_text[:3000]
    missing = [name for name in NESTED if name not in parent_text]
    assert not missing, f"nested runs not listed on the parent run's page: {missing}"
