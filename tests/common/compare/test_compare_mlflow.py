"""rlcore.compare against a real MLflow sqlite store: three runs logged with mlflow.start_run, the markdown
table's contents, the PNG curves, missing metrics, run selection, and the errors."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from PIL import Image

from rlcore.compare import CompareError, compare_experiment

EXPERIMENT = "rexrag-train-test"
REPO = Path(__file__).resolve().parents[3]


def _log_run(name: str, params: dict, tags: dict, metrics: dict[str, list[tuple[int, float]]]) -> str:
    with mlflow.start_run(run_name=name) as active:
        mlflow.log_params(params)
        mlflow.set_tags(tags)
        steps = sorted({step for series in metrics.values() for step, _ in series})
        for step in steps:
            mlflow.log_metrics(
                {key: value for key, series in metrics.items() for s, value in series if s == step}, step=step
            )
        return active.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("compare_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment(EXPERIMENT)
        base = {"model.path": "tiny-qwen2", "optim.lr": "1e-06", "objective.num_generations": "5"}
        ids = {
            "grpo": _log_run(
                "grpo",
                {**base, "seed": "1"},
                {
                    "git.sha": "a" * 40,
                    "git.dirty": "false",
                    "config.hash": "c0ffee000001",
                    "seeds": "1",
                    "method": "grpo",
                },
                {
                    "reward/mean": [(0, 0.10), (1, 0.30), (2, 0.50), (3, 0.40), (4, 0.45)],
                    "val/em": [(2, 0.20), (4, 0.30)],
                    "kl": [(0, 0.0), (1, 0.010), (2, 0.020), (3, 0.030), (4, 0.025)],
                    "entropy": [(0, 2.0), (2, 1.6), (4, 1.2)],
                },
            ),
            "rexrag": _log_run(
                "rexrag",
                {**base, "seed": "2", "probe.keep_ratio": "0.08"},
                {
                    "git.sha": "b" * 40,
                    "git.dirty": "true",
                    "config.hash": "c0ffee000002",
                    "seeds": "2",
                    "method": "rexrag",
                },
                {
                    "reward/mean": [(0, 0.20), (1, 0.40), (2, 0.60), (3, 0.70), (4, 0.65)],
                    "val/em": [(2, 0.25), (4, 0.40)],
                    "kl": [(0, 0.0), (2, 0.015), (4, 0.020)],
                    "rollout/dead_end_rate": [(0, 0.60), (2, 0.40), (4, 0.30)],
                },
            ),
            # a third run with a different lr, only a reward curve, and no provenance tags at all
            "lr-sweep": _log_run(
                "lr-sweep",
                {**base, "seed": "1", "optim.lr": "3e-06"},
                {},
                {"reward/mean": [(0, 0.05), (2, 0.25)]},
            ),
        }
        mlflow.set_experiment("another-experiment")
        _log_run("other", {"x": "1"}, {}, {"loss": [(0, 1.0)]})
    finally:
        mlflow.set_tracking_uri(previous)
    return {"uri": uri, "ids": ids, "root": root}


@pytest.fixture(scope="module")
def report(store: dict, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("compare_out")
    return compare_experiment(EXPERIMENT, out, tracking_uri=store["uri"])


def _section(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(f"## {title}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def test_runs_are_in_start_order_with_provenance(report, store: dict):
    text = report.markdown.read_text()
    assert [run.name for run in report.runs] == ["grpo", "rexrag", "lr-sweep"]
    rows = _section(text, "Runs and provenance")
    header = rows[2]
    for name, run_id in store["ids"].items():
        assert f"{name} ({run_id[:8]})" in header
    assert "| git sha | aaaaaaaaaaaa | bbbbbbbbbbbb | — |" in rows
    assert "| dirty | false | true | — |" in rows
    assert "| config hash | c0ffee000001 | c0ffee000002 | — |" in rows
    assert "| seeds | 1 | 2 | 1 |" in rows  # lr-sweep has no seeds tag: its config's `seed` param is shown
    assert "| method | grpo | rexrag | — |" in rows
    assert "| status | FINISHED | FINISHED | FINISHED |" in rows


def test_config_differences_only(report):
    rows = _section(report.markdown.read_text(), "Config differences")
    assert "| optim.lr | 1e-06 | 1e-06 | 3e-06 |" in rows
    assert "| seed | 1 | 2 | 1 |" in rows
    assert "| probe.keep_ratio | — | 0.08 | — |" in rows
    assert not any("model.path" in row or "num_generations" in row for row in rows)
    assert "2 parameters are identical across the runs (not shown)." in rows


def test_final_metrics_table(report):
    rows = _section(report.markdown.read_text(), "Final metrics")
    # reward/mean final values: grpo 0.45 @4, rexrag 0.65 @4 (highest -> bold), lr-sweep 0.25 @2
    assert "| reward/mean ↑ | 0.4500 @4 | **0.6500 @4** | 0.2500 @2 |" in rows
    # kl is lower-is-better: rexrag's 0.020 beats grpo's 0.025
    assert "| kl ↓ | 0.0250 @4 | **0.0200 @4** | — |" in rows
    assert "| val/em ↑ | 0.3000 @4 | **0.4000 @4** | — |" in rows
    # entropy has no direction: no bold, and runs that did not log it show a dash
    assert "| entropy · | 1.2000 @4 | — | — |" in rows
    assert "| rollout/dead_end_rate ↓ | — | 0.3000 @4 | — |" in rows


def test_best_metrics_table(report):
    rows = _section(report.markdown.read_text(), "Best metrics")
    # best reward: grpo max 0.50 at step 2, rexrag 0.70 at step 3, lr-sweep 0.25 at step 2
    assert "| reward/mean ↑ | 0.5000 @2 | **0.7000 @3** | 0.2500 @2 |" in rows
    # best kl is the minimum: both runs logged 0.0 at step 0 -> a tie, nobody in bold
    assert "| kl ↓ | 0 @0 | 0 @0 | — |" in rows
    assert not any(row.startswith("| entropy") for row in rows)


def test_curves_are_pngs_for_each_family_present(report):
    names = sorted(p.name for p in report.plots)
    assert names == [
        "curves-accuracy.png",
        "curves-dead_end.png",
        "curves-entropy.png",
        "curves-kl.png",
        "curves-reward.png",
    ]
    for path in report.plots:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.width >= 400 and image.height >= 300
            # not a blank canvas: the lines put several colours on it
            assert len(image.convert("RGB").getcolors(maxcolors=1_000_000)) > 20
    text = report.markdown.read_text()
    assert "![Reward](curves-reward.png)" in text
    assert "- `entropy` not logged by: rexrag" in text


def test_json_summary_has_the_same_numbers(report, store: dict):
    data = json.loads(report.summary.read_text())
    by_name = {run["name"]: run for run in data["runs"]}
    reward = by_name["rexrag"]["metrics"]["reward/mean"]
    assert (reward["final"], reward["best"], reward["best_step"], reward["direction"]) == (
        0.65,
        0.7,
        3,
        "max",
    )
    assert "entropy" not in by_name["rexrag"]["metrics"]
    assert data["config_differences"]["probe.keep_ratio"] == [None, "0.08", None]
    assert by_name["grpo"]["run_id"] == store["ids"]["grpo"]


def test_selected_runs_by_prefix(store: dict, tmp_path: Path):
    ids = store["ids"]
    result = compare_experiment(
        EXPERIMENT, tmp_path, run_ids=[ids["rexrag"][:8], ids["grpo"]], tracking_uri=store["uri"]
    )
    assert [run.name for run in result.runs] == ["rexrag", "grpo"]
    rows = _section(result.markdown.read_text(), "Config differences")
    assert not any("optim.lr" in row for row in rows), "lr only differed in the run left out"


def test_unknown_experiment_lists_the_known_ones(store: dict, tmp_path: Path):
    with pytest.raises(CompareError) as err:
        compare_experiment("rexrag-trian", tmp_path, tracking_uri=store["uri"])
    message = str(err.value)
    assert "unknown experiment 'rexrag-trian'" in message
    assert EXPERIMENT in message and "another-experiment" in message


def test_run_from_another_experiment_is_rejected(store: dict, tmp_path: Path):
    with pytest.raises(CompareError, match="is not in experiment"):
        compare_experiment(
            "another-experiment", tmp_path, run_ids=[store["ids"]["grpo"]], tracking_uri=store["uri"]
        )


def test_missing_store_is_an_error_and_is_not_created(tmp_path: Path):
    db = tmp_path / "nothing-here.db"
    with pytest.raises(CompareError, match="no MLflow store at"):
        compare_experiment(EXPERIMENT, tmp_path / "out", tracking_uri=f"sqlite:///{db}")
    assert not db.exists()


def test_cli_writes_the_report_and_fails_clearly(store: dict, tmp_path: Path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": store["uri"], "HF_HUB_OFFLINE": "1"}
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlcore.compare",
            "--experiment",
            EXPERIMENT,
            "--runs",
            ",".join(store["ids"][n][:10] for n in ("grpo", "rexrag")),
            "--out",
            str(tmp_path / "cmp"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    assert f"table:  {tmp_path / 'cmp' / 'comparison.md'}" in ok.stdout
    assert (tmp_path / "cmp" / "curves-reward.png").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "rlcore.compare", "--experiment", "nope", "--out", str(tmp_path / "bad")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2
    assert "error: unknown experiment 'nope'" in bad.stderr


def test_make_compare_target_passes_experiment_runs_and_out():
    result = subprocess.run(
        [
            "make",
            "-n",
            "--no-print-directory",
            "compare",
            "EXPERIMENT=rexrag-train",
            "RUNS=abc,def",
            "OUT=/tmp/cmp",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    compare_line = next(
        line for line in result.stdout.replace("\\\n", " ").splitlines() if "rlcore.compare" in line
    )
    argv = shlex.split(compare_line)
    assert argv[argv.index("-m") :] == [
        "-m",
        "rlcore.compare",
        "--experiment",
        "rexrag-train",
        "--runs",
        "abc,def",
        "--out",
        "/tmp/cmp",
    ]


def test_make_compare_without_experiment_explains_itself():
    result = subprocess.run(
        ["make", "--no-print-directory", "compare"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "EXPERIMENT=<mlflow experiment name>" in result.stderr


def test_provenance_written_by_rlcore_tracking_is_shown(tmp_path: Path):
    """Runs logged through rlcore.tracking.start_run carry the tags the report reads (no silent '—')."""
    from dataclasses import dataclass

    from rlcore.config import config_hash
    from rlcore.tracking import start_run

    @dataclass
    class Cfg:
        seed: int = 5  # seed
        lr: float = 1e-6  # learning rate

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for lr in (1e-6, 2e-6):
        cfg = Cfg(lr=lr)
        with start_run(
            "tracked", run_name=f"lr{lr}", config=cfg, seeds=[cfg.seed], tags={"method": "grpo"}, uri=uri
        ) as tracked:
            tracked.log_metrics({"reward/mean": 0.5, "kl": 0.01}, step=1)
    result = compare_experiment("tracked", tmp_path / "out", tracking_uri=uri)
    rows = dict(
        (line.split("|")[1].strip(), line)
        for line in result.markdown.read_text().splitlines()
        if line.startswith("| ")
    )
    for label in ("git sha", "dirty", "config hash", "seeds", "method"):
        assert "—" not in rows[label], f"{label} missing from runs logged by rlcore.tracking: {rows[label]}"
    assert config_hash(Cfg(lr=2e-6)) in rows["config hash"] and "| seeds | 5 | 5 |" == rows["seeds"]
    assert rows["lr"].startswith("| lr | 1e-06 | 2e-06 |")
