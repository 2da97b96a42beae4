"""`make anesbench` end to end on the 2026-layout fixture through a real OpenAI-compatible server:
SmolLM2 served by `anessuite.bench.server` prints the table with both extraction columns; a server killed mid-run
leaves exactly the missing items for the re-run; a wrong model name fails fast with nothing cached; two models
whose folders are both named `final` are two rows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from openai_stub import StubOpenAI, free_port

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "anesbench_2026"


def _make(tmp_path, *args, timeout=600):
    env = dict(os.environ)
    src = [str(REPO / "packages" / name / "src") for name in ("common", "rexrag", "anessuite")]
    env.update(
        PYTHONPATH=os.pathsep.join([*src, env.get("PYTHONPATH", "")]),
        RUNS_DIR=str(tmp_path / "runs"),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )
    return subprocess.run(
        ["make", "--no-print-directory", "anesbench", *args, f"PY={sys.executable}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _bench(tmp_path):
    folder = tmp_path / "AnesBench"
    shutil.copytree(FIXTURE, folder)
    return folder


def _cached(tmp_path) -> int:
    return sum(len(f.read_text().splitlines()) for f in (tmp_path / "runs").rglob("anessuite-cache/*.jsonl"))


@pytest.mark.slow
def test_make_anesbench_against_a_smollm2_server(tmp_path):
    from anessuite.backends.hf import HFChatBackend
    from anessuite.bench.eval_speed import _serve

    url, server = _serve(HFChatBackend("smollm2-135m-instruct", batch_size=16), "smollm2-135m-instruct", 16)
    try:
        result = _make(
            tmp_path,
            "MODEL=smollm2-135m-instruct",
            f"BENCHMARK={_bench(tmp_path)}",
            f"BASE_URL={url}",
            f"OUT={tmp_path / 'table'}",
            "ANESBENCH_ARGS=max_new_tokens=24 tracking.enabled=false",
        )
    finally:
        server.should_exit = True
    assert result.returncode == 0, result.stderr[-3000:]
    header = next(line for line in result.stdout.splitlines() if line.startswith("| Model |"))
    assert "Avg. (official extraction)" in header and "abstained" in header and "truncated" in header
    row = next(line for line in result.stdout.splitlines() if line.startswith("| smollm2-135m-instruct |"))
    assert row.count("|") == header.count("|")
    flat = json.loads((tmp_path / "table" / "table3.json").read_text())
    assert flat[0]["n"] == 18 and flat[0]["EN n"] == 10 and flat[0]["ZH n"] == 8
    assert (tmp_path / "table" / "table3.png").exists() and (tmp_path / "table" / "table3.csv").exists()


def test_make_anesbench_killed_server_rerun_and_wrong_model(tmp_path):
    bench = _bench(tmp_path)
    out = tmp_path / "table"
    port = free_port()
    common = [
        f"BENCHMARK={bench}",
        f"OUT={out}",
        "ANESBENCH_ARGS=backend_options.max_outage_s=1 tracking.enabled=false",
    ]
    # a wrong model name: fails before any question is sent, nothing cached
    with StubOpenAI(port=port, models=["smollm2-135m-instruct"]) as server:
        wrong = _make(tmp_path, "MODEL=smollm2-135m", f"BASE_URL={server.url}", *common)
        assert server.bodies == []
    assert wrong.returncode != 0 and "does not serve model 'smollm2-135m'" in wrong.stderr
    assert _cached(tmp_path) == 0
    # the server dies after 6 answers: the run stops after the outage budget, keeping what was answered
    server = StubOpenAI(port=port, models=["smollm2-135m-instruct"], die_after=6).start()
    first = _make(tmp_path, "MODEL=smollm2-135m-instruct", f"BASE_URL={server.url}", *common)
    server.stop()
    assert first.returncode != 0 and "outage budget" in first.stderr
    cached = _cached(tmp_path)
    assert 1 <= cached <= 6
    with StubOpenAI(port=port, models=["smollm2-135m-instruct"]) as restarted:
        second = _make(tmp_path, "MODEL=smollm2-135m-instruct", f"BASE_URL={restarted.url}", *common)
        assert len(restarted.bodies) == 18 - cached  # only the missing items
    assert second.returncode == 0, second.stderr[-2000:]
    assert "| smollm2-135m-instruct |" in second.stdout


def test_two_final_folders_are_two_rows(tmp_path):
    from anessuite.anesbench import unique_labels

    # served models named like checkpoints of two runs: both end in "final"
    labels = unique_labels([("runs/a/final", None), ("runs/b/final", None), ("other/model", None)])
    assert labels == ["a/final", "b/final", "model"]
    # an earlier row of another model called "final" forces the wider label; the same model keeps its row
    assert unique_labels([("x/final", None)], {"final": "|y/final"}) == ["x/final"]
    assert unique_labels([("y/final", None)], {"final": "|y/final"}) == ["final"]
    with StubOpenAI(models=["runs/a/final", "runs/b/final"]) as server:
        for model in ("runs/a/final", "runs/b/final"):  # two commands, one accumulating table
            result = _make(
                tmp_path,
                f"MODEL={model}",
                f"BENCHMARK={_bench_once(tmp_path)}",
                f"BASE_URL={server.url}",
                f"OUT={tmp_path / 'table'}",
                "ANESBENCH_ARGS=tracking.enabled=false",
            )
            assert result.returncode == 0, result.stderr[-2000:]
    lines = (tmp_path / "table" / "table3.md").read_text().splitlines()
    rows = [line.split("|")[1].strip() for line in lines if line.startswith("|")]
    # the first command's only model is "final"; the second's clashes with that row and widens to "b/final"
    assert rows[2:4] == ["final", "b/final"]


def _bench_once(tmp_path):
    folder = tmp_path / "AnesBench"
    return folder if folder.exists() else _bench(tmp_path)


def test_an_explicit_row_name_never_takes_over_another_models_row(tmp_path):
    from anessuite.tables import Table3Config, run_table3
    from rlcore.tracking_store import MLflowSwitch

    with StubOpenAI(models=["model-a", "model-b"]) as server:
        common = dict(
            benchmark=str(FIXTURE),
            backend="openai",
            base_url=server.url,
            accumulate=True,
            output_dir=str(tmp_path / "t"),
            bootstrap_iters=5,
            tracking=MLflowSwitch(enabled=False),
        )
        run_table3(Table3Config(models=["model-a"], model_names=["mine"], **common))
        with pytest.raises(ValueError, match="row 'mine' already holds another model"):
            run_table3(Table3Config(models=["model-b"], model_names=["mine"], **common))
        run_table3(
            Table3Config(models=["model-a"], model_names=["mine"], **common)
        )  # the same model: its row
