"""A REX-RAG training run whose retrieval server is down fails before its first step, and MLflow records it."""

import socket

import pytest
from mlflow.tracking import MlflowClient

from rexrag.data.template import DEFAULT_TEMPLATE
from rexrag.recipes.common import WorldDataConfig
from rexrag.recipes.train import QAConfig, RetrieverConfig, RexRagTrainConfig, run
from rlcore.trainer.config import TrackingConfig, TrainLoopConfig


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def test_unreachable_retrieval_server_before_the_first_step_is_a_failed_run(
    small_world, tmp_path, monkeypatch
):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    url = f"http://127.0.0.1:{_closed_port()}"
    cfg = RexRagTrainConfig(
        train=TrainLoopConfig(total_steps=1, output_dir=str(tmp_path / "out"), seed=2),
        tracking=TrackingConfig(enabled=True, experiment="rexrag-unreachable", run_name="no-server"),
        qa=QAConfig(
            world=WorldDataConfig(world=small_world, dir=str(tmp_path / "world"), template=DEFAULT_TEMPLATE)
        ),
        retriever=RetrieverConfig(kind="http", url=url, max_outage_s=0.0),
    )
    with pytest.raises(Exception, match="127.0.0.1"):
        run(cfg)
    client = MlflowClient(tracking_uri=uri)
    (failed,) = client.search_runs([client.get_experiment_by_name("rexrag-unreachable").experiment_id])
    assert failed.info.status == "FAILED" and failed.info.run_name == "no-server"
    assert url in failed.data.tags["error"] and failed.data.tags["failed_during"] == "setup"
    assert not (tmp_path / "out" / "metrics.jsonl").exists()  # it never reached a step
