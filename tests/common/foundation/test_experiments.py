"""rlcore.experiments: planning seeds x arms, skipping finished runs (and refusing changed ones), README blocks."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rlcore.config import load_config, to_dict
from rlcore.experiments import (
    ExperimentError,
    ExperimentSpec,
    changed_keys,
    execute,
    experiment_main,
    plan,
    update_last_run,
)


@dataclass
class Train:
    seed: int = 0  # run seed
    output_dir: str = ""  # run folder
    steps: int = 10  # training steps


@dataclass
class Arm:
    lr: float = 0.1  # learning rate
    train: Train = field(default_factory=Train)  # loop


def make_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "exp"
    (folder / "arms").mkdir(parents=True)
    (folder / "config.yaml").write_text("train:\n  steps: 3\n")
    (folder / "arms" / "slow.yaml").write_text("base: ../config.yaml\nlr: 0.01\n")
    (folder / "arms" / "fast.yaml").write_text("base: ../config.yaml\nlr: 1.0\n")
    (folder / "warmup.yaml").write_text("train:\n  steps: 1\n")
    spec = f"""
runs_dir: {tmp_path / "runs"}
seeds: [0, 1]
stages:
  warmup: {{recipe: sft, config: warmup.yaml, creates: {tmp_path / "runs" / "warmup" / "done"}}}
groups:
  main: {{arms: [slow, fast], stages: [warmup]}}
"""
    (folder / "experiment.yaml").write_text(spec)
    return folder


def test_plan_runs_seeds_times_arms_with_the_seed_and_folder_set(tmp_path: Path):
    folder = make_folder(tmp_path)
    spec = load_config(ExperimentSpec, folder / "experiment.yaml")
    stages, runs = plan(spec, folder, Arm)
    assert [s.name for s in stages] == ["warmup"] and stages[0].config == folder / "warmup.yaml"
    assert [r.name for r in runs] == ["slow-seed0", "fast-seed0", "slow-seed1", "fast-seed1"]
    fast1 = runs[3]
    assert fast1.resolved == {
        "lr": 1.0,
        "train": {"seed": 1, "output_dir": str(tmp_path / "runs" / "fast-seed1"), "steps": 3},
    }
    assert fast1.done_marker == tmp_path / "runs" / "fast-seed1" / "results.json"
    assert fast1.config_hash != runs[1].config_hash  # another seed, another config
    spec.groups["main"].arms = ["medium"]
    with pytest.raises(ValueError, match="arm 'medium' has no file .*arms: \\['fast', 'slow'\\]"):
        plan(spec, folder, Arm)


def _fake_runner(calls: list[list[str]]):
    """Stands in for `python -m <cli> ...`: writes results.json with the config the command line asks for."""

    def run(argv: list[str]) -> int:
        calls.append(argv)
        config = Path(argv[argv.index("--config") + 1])
        overrides = argv[argv.index("--config") + 2 :]
        if "sft" in argv:
            marker = Path(str(config.parent.parent / "runs" / "warmup" / "done"))
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("")
            return 0
        cfg = to_dict(load_config(Arm, config, overrides))
        out = Path(cfg["train"]["output_dir"])
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps({"config": cfg}))
        return 0

    return run


def test_execute_skips_finished_runs_and_refuses_a_changed_one(tmp_path: Path):
    folder = make_folder(tmp_path)
    spec = load_config(ExperimentSpec, folder / "experiment.yaml")
    stages, runs = plan(spec, folder, Arm)
    calls: list[list[str]] = []
    assert execute(stages, "pkg", _fake_runner(calls)) == 1
    assert execute(runs, "pkg", _fake_runner(calls)) == 4
    assert calls[1][:6] == [
        sys.executable,
        "-m",
        "pkg",
        "train",
        "--config",
        str(folder / "arms" / "slow.yaml"),
    ]
    assert calls[1][6:] == ["train.seed=0", f"train.output_dir={tmp_path / 'runs' / 'slow-seed0'}"]
    # everything finished: nothing runs again
    assert execute(stages, "pkg", _fake_runner(calls)) == 0 and execute(runs, "pkg", _fake_runner(calls)) == 0
    assert len(calls) == 5
    # an arm edited after its runs finished: the old runs are not silently reused
    (folder / "arms" / "fast.yaml").write_text("base: ../config.yaml\nlr: 2.0\n")
    _, runs = plan(spec, folder, Arm)
    with pytest.raises(
        ExperimentError, match=r"fast-seed0 finished with another config \(lr: ran 1.0, now 2.0\)"
    ):
        execute(runs, "pkg", _fake_runner(calls))


def test_execute_names_a_failed_run(tmp_path: Path):
    folder = make_folder(tmp_path)
    _, runs = plan(load_config(ExperimentSpec, folder / "experiment.yaml"), folder, Arm)
    with pytest.raises(ExperimentError, match=r"slow-seed0 failed \(exit 3\)"):
        execute(runs, "pkg", lambda argv: 3)
    with pytest.raises(ExperimentError, match="slow-seed0 exited 0 but did not write .*results.json"):
        execute(runs, "pkg", lambda argv: 0)


def test_changed_keys_ignores_keys_only_one_side_has_and_values_filled_at_run_time():
    planned = {"lr": 0.1, "train": {"steps": 3, "new_field": 1, "out": ""}, "tags": {}, "template": None}
    recorded = {"lr": 0.1, "train": {"steps": 4, "out": "runs/x"}, "tags": {"method": "grpo"}, "old_field": 2}
    recorded["template"] = "Question: {question}"  # filled in by the recipe at run time
    assert changed_keys(planned, recorded) == ["train.steps"]
    # a value the plan sets is compared, even when the run recorded an empty one
    assert changed_keys({"lr": 0.1, "name": "a"}, {"lr": 0.1, "name": ""}) == ["name"]


def test_update_last_run_replaces_only_its_block(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "# t\n<!-- last-run:start -->\nold main\n<!-- last-run:end -->\n"
        "<!-- last-run:ablations:start -->\nold ablations\n<!-- last-run:ablations:end -->\nend\n"
    )
    assert update_last_run(readme, "new main\n\n| a |", "main")
    assert update_last_run(readme, "new ablations", "ablations")
    assert readme.read_text() == (
        "# t\n<!-- last-run:start -->\nnew main\n\n| a |\n<!-- last-run:end -->\n"
        "<!-- last-run:ablations:start -->\nnew ablations\n<!-- last-run:ablations:end -->\nend\n"
    )
    assert not update_last_run(readme, "x", "other") and not update_last_run(tmp_path / "none.md", "x")


def test_experiment_main_dry_run_lists_the_planned_runs(tmp_path: Path, capsys):
    import yaml

    folder = make_folder(tmp_path)
    summaries: list = []
    argv = ["--config", str(folder / "experiment.yaml"), "--dry-run", "seeds=[5]"]
    assert experiment_main(argv, "x", "pkg", Arm, lambda *a: summaries.append(a)) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["seeds"] == [5] and summaries == []
    assert [(r["name"], r["done"]) for r in printed["planned_runs"]] == [
        ("warmup", False),
        ("slow-seed5", False),
        ("fast-seed5", False),
    ]
    assert (
        experiment_main(["--config", str(folder / "experiment.yaml"), "group=other"], "x", "pkg", Arm, print)
        == 2
    )
    assert "group 'other' is not one of the groups: main" in capsys.readouterr().err


def test_only_stages_runs_the_chosen_groups_stages_and_no_arm(tmp_path: Path, capsys):
    """`only=stages` plans the selected group's stages (a group can hold a subset: `make demo-warmup` runs the
    mechanism experiment's warm-up stages without its pre-checks) and no arm run."""
    import yaml

    folder = make_folder(tmp_path)
    (folder / "check.yaml").write_text("train:\n  steps: 2\n")
    spec = (folder / "experiment.yaml").read_text()
    spec = spec.replace("stages:\n", "stages:\n  check: {recipe: sft, config: check.yaml}\n", 1)
    spec = spec.replace("stages: [warmup]}", "stages: [warmup, check]}\n  warm: {stages: [warmup]}")
    (folder / "experiment.yaml").write_text(spec)
    for group, names in (("main", ["warmup", "check"]), ("warm", ["warmup"])):
        argv = ["--config", str(folder / "experiment.yaml"), "--dry-run", f"group={group}", "only=stages"]
        assert experiment_main(argv, "x", "pkg", Arm, print) == 0
        assert [r["name"] for r in yaml.safe_load(capsys.readouterr().out)["planned_runs"]] == names
