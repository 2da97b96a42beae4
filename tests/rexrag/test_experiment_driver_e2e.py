"""`python -m rexrag experiment` end to end on a tiny experiment folder: the warm-up stage, seeds x arms through the
real recipes, the summary (results.json with each run's config hash, tables, curves, README block), finished runs
skipped on a second call and refused once their arm has changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

# the small world of tests/conftest.py (small_world)
WORLD = {
    "seed": 5,
    "num_countries": 3,
    "num_cities": 8,
    "num_orgs": 10,
    "num_people": 30,
    "num_surnames": 20,
    "num_train_questions": 16,
    "num_dev_questions": 4,
    "num_test_questions": 6,
}


def _write_experiment(root: Path) -> Path:
    folder = root / "exp"
    (folder / "arms").mkdir(parents=True)
    runs = root / "runs"
    world = {"dir": str(root / "world"), "world": WORLD}
    (folder / "sft.yaml").write_text(
        "# recipe: rexrag sft\n"
        + yaml.safe_dump({"data": world})
        + "model:\n  vocab_size: 400\n  hidden_size: 32\n  num_layers: 1\n  intermediate_size: 64\n"
        "use_chat_template: false\n"
        "rollout:\n  max_turns: 1\n  max_new_tokens_per_turn: 6\n  max_response_tokens: 64\n"
        f"train:\n  total_steps: 2\n  batch_size: 4\n  output_dir: {runs / 'sft'}\n"
        "eval:\n  num_questions: 0\ntracking:\n  experiment: driver-test\nnum_threads: 1\n"
    )
    (folder / "config.yaml").write_text(
        "# recipe: rexrag train\n"
        f"model:\n  path: {runs / 'sft' / 'model'}\n"
        "data:\n  use_chat_template: false\n"
        + yaml.safe_dump({"qa": {"world": world, "max_eval_examples": 3}})
        + "rollout:\n  max_turns: 1\n  max_new_tokens_per_turn: 6\n  max_response_tokens: 64\n"
        "objective:\n  num_generations: 2\n  prompts_per_step: 2\n  micro_batch_size: 4\n  kl_coef: 0.0\n"
        "train:\n  total_steps: 2\n"
        "tracking:\n  experiment: driver-test\n"
        "heldout_curve:\n  every: 1\n  split: test\n  max_examples: 3\n"
        "num_threads: 1\n"
    )
    (folder / "arms" / "grpo.yaml").write_text(
        "# recipe: rexrag train\nbase: ../config.yaml\nrexrag:\n  enabled: false\n"
    )
    (folder / "arms" / "rexrag.yaml").write_text("# recipe: rexrag train\nbase: ../config.yaml\n")
    (folder / "experiment.yaml").write_text(
        "# recipe: rexrag experiment\n"
        f"runs_dir: {runs}\nseeds: [0]\n"
        f"stages:\n  sft: {{recipe: sft, config: sft.yaml, creates: {runs / 'sft' / 'model' / 'config.json'}}}\n"
        "groups:\n  main: {arms: [grpo, rexrag], stages: [sft]}\n"
    )
    (folder / "README.md").write_text("# tiny\n\n<!-- last-run:start -->\nnot run\n<!-- last-run:end -->\n")
    return folder


def _driver(folder: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "RUNS_DIR": str(root / "runs-default"),
    }
    command = [
        sys.executable,
        "-m",
        "rexrag",
        "experiment",
        "--config",
        str(folder / "experiment.yaml"),
        *args,
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)


def test_driver_runs_skips_and_refuses_changed_runs(tmp_path: Path):
    folder = _write_experiment(tmp_path)
    plan = _driver(folder, tmp_path, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    planned = {r["name"]: r for r in yaml.safe_load(plan.stdout)["planned_runs"]}
    assert list(planned) == ["sft", "grpo-seed0", "rexrag-seed0"] and not any(
        r["done"] for r in planned.values()
    )

    first = _driver(folder, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((folder / "results.json").read_text())
    assert list(results["arms"]) == ["grpo", "rexrag"] and results["seeds"] == [0]
    # the summary records the config each run was planned with, and the run ran exactly that config
    for name in ("grpo-seed0", "rexrag-seed0"):
        assert results["runs"][name]["config_hash"] == planned[name]["config_hash"]
        run = json.loads((tmp_path / "runs" / name / "results.json").read_text())
        assert run["config"]["train"]["seed"] == 0 and run["config"]["rexrag"]["enabled"] == (
            name == "rexrag-seed0"
        )
    assert (folder / "table.md").read_text().startswith("| Method |") and (
        folder / "curves.png"
    ).stat().st_size
    readme = (folder / "README.md").read_text()
    assert "not run" not in readme and "| grpo |" in readme and "python -m rexrag experiment" in readme

    stamp = (tmp_path / "runs" / "grpo-seed0" / "results.json").stat().st_mtime_ns
    again = _driver(folder, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("skipped") == 3  # the stage and both runs
    assert (tmp_path / "runs" / "grpo-seed0" / "results.json").stat().st_mtime_ns == stamp

    (folder / "arms" / "rexrag.yaml").write_text(
        "# recipe: rexrag train\nbase: ../config.yaml\nrexrag:\n  probe_prob: 0.9\n"
    )
    changed = _driver(folder, tmp_path)
    assert changed.returncode == 1
    assert "rexrag-seed0 finished with another config (rexrag.probe_prob: ran 0.2, now 0.9)" in changed.stderr
