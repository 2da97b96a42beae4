"""``make mlflow-ui``: the MLflow UI over this project's store on 127.0.0.1, with links that open on the runs.

MLflow 3's UI (checked on 3.17) chooses what an experiment page opens on from a per-browser switch in its
sidebar, "GenAI apps & agents" (the default: an empty GenAI overview for our experiments) or "Model training"
(the runs table). The switch is stored in the browser (localStorage ``mlflow.workflowType``) and a URL can set
it (``?workflowType=machine_learning``); the experiment's own ``mlflow.experimentKind`` tag, which our recipes
set to ``custom_model_development`` ("Machine learning"), is what earlier MLflow 3 UIs read instead. So this
launcher prints every experiment's runs page with the URL switch, then runs ``mlflow ui`` in the foreground,
bound to 127.0.0.1, with uploaded artifacts kept beside the store (never in the working directory).

    python -m rlcore.mlflow_ui [--port 5000] [--links-only]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from rlcore.tracking import mlflow_client, sqlite_path, tracking_uri

__all__ = ["ML_WORKFLOW", "runs_page_url", "experiment_links", "ui_command", "main"]

ML_WORKFLOW = "workflowType=machine_learning"  # the UI's "Model training" switch, set from the URL


def runs_page_url(base_url: str, experiment_id: str) -> str:
    """The runs table of one experiment, in the UI's model-training mode."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{ML_WORKFLOW}"


def experiment_links(uri: str, base_url: str) -> list[tuple[str, int, str]]:
    """``(experiment name, number of runs, runs page URL)`` for every active experiment with runs, newest first."""
    client = mlflow_client(uri)
    links = []
    for experiment in client.search_experiments(order_by=["last_update_time DESC"]):
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        if runs:
            links.append((experiment.name, len(runs), runs_page_url(base_url, experiment.experiment_id)))
    return links


def ui_command(uri: str, host: str, port: int) -> list[str]:
    """``mlflow ui`` over ``uri``; artifacts uploaded through the server go beside a sqlite store."""
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    command = [mlflow, "ui", "--host", host, "--port", str(port), "--backend-store-uri", uri]
    database = sqlite_path(uri)
    if database is not None:
        command += ["--artifacts-destination", str(database.parent / "mlartifacts")]
    return command


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlcore.mlflow_ui", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    parser.add_argument("--links-only", action="store_true", help="print the links and exit")
    args = parser.parse_args(argv)
    uri = tracking_uri()
    server = uri.startswith(("http://", "https://"))  # a running tracking server has its own UI
    base_url = uri if server else f"http://{args.host}:{args.port}"
    links = experiment_links(uri, base_url)
    print(f"MLflow store: {uri}")
    if links:
        print("Runs of each experiment (the UI in 'Model training' mode):")
        for name, count, url in links:
            print(f"  {name:<32} {count:>5} runs  {url}")
    else:
        print("No runs yet: `make demo` or any recipe logs here.")
    print(f"All experiments: {base_url}/#/experiments?{ML_WORKFLOW}")
    if args.links_only or server:
        return 0
    command = ui_command(uri, args.host, args.port)
    sys.stdout.flush()
    os.execv(command[0], command)  # the UI in the foreground; Ctrl-C stops it
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
