"""rlcore.experiments: per-seed stages, and stages run side by side (`jobs`) in the order their `after` allows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rlcore.config import load_config
from rlcore.experiments import ExperimentError, ExperimentSpec, execute, experiment_main, plan

# a stage process: sleeps SECONDS, or with a number below 0 waits (up to a minute) for the file WAIT_FOR that another
# stage writes, then records when it started and ended (and the thread count it was given) and exits with CODE
STAGE = """
import json, os, sys, time
out, seconds, code, wait_for = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
start = time.time()
if seconds >= 0:
    time.sleep(seconds)
else:
    while not os.path.exists(wait_for):
        if time.time() - start > 60:
            sys.exit(9)
        time.sleep(0.05)
print("working on", out)
open(out, "w").write(json.dumps({"start": start, "end": time.time(), "threads": os.environ.get("OMP_NUM_THREADS")}))
sys.exit(code)
"""


def write_spec(tmp_path: Path, stages: dict, group: list[str], **top) -> Path:
    folder = tmp_path / "exp"
    folder.mkdir(exist_ok=True)
    (folder / "stage.py").write_text(STAGE)
    spec = {"runs_dir": str(tmp_path / "runs"), "seeds": [0, 1], **top, "stages": stages}
    spec["groups"] = {"main": {"stages": group}}
    (folder / "experiment.yaml").write_text(yaml.safe_dump(spec))
    return folder


def stage(tmp_path: Path, name: str, seconds: float = 0.0, code: int = 0, wait_for: str = "", **keys) -> dict:
    out, waited = tmp_path / f"{name}.json", str(tmp_path / f"{wait_for}.json") if wait_for else "-"
    command = [
        str(tmp_path / "exp" / "stage.py"),
        str(out),
        "-1" if wait_for else str(seconds),
        str(code),
        waited,
    ]
    return {"command": command, **keys}


def times(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / f"{name}.json").read_text())


def test_a_per_seed_stage_runs_once_per_seed_with_the_seed_filled_in(tmp_path: Path):
    stages = {
        "train": {
            "recipe": "pipeline",
            "config": "p.yaml",
            "per_seed": True,
            "overrides": ["seed={seed}", "output_dir=runs/p-seed{seed}"],
            "creates": "runs/p-seed{seed}/DONE",
        },
        "probe": {
            "command": ["-m", "probe", "--model", "runs/p-seed{seed}"],
            "per_seed": True,
            "after": ["train-seed{seed}"],
        },
        "report": {"command": ["report.py"], "after": ["train"]},
    }
    folder = write_spec(tmp_path, stages, ["train", "probe-seed1", "report"])
    spec = load_config(ExperimentSpec, folder / "experiment.yaml")
    spec.validate()
    planned, _ = plan(spec, folder, dict)
    assert [r.name for r in planned] == ["train-seed0", "train-seed1", "probe-seed1", "report"]
    assert planned[1].overrides == ["seed=1", "output_dir=runs/p-seed1"]
    assert planned[1].done_marker == Path("runs/p-seed1/DONE") and not planned[1].writes_marker
    assert planned[2].command == ["-m", "probe", "--model", "runs/p-seed1"]
    assert planned[2].done_marker == tmp_path / "runs" / "stages" / "probe-seed1.done"
    # after: its own seed's run; a bare per-seed name means every seed; left out, every stage before it
    assert planned[2].after == ["train-seed1"]
    assert planned[3].after == ["train-seed0", "train-seed1"]
    assert planned[1].after == ["train-seed0"]
    # seeds=[1]: the bare name gives seed 1 only
    spec.seeds = [1]
    assert [r.name for r in plan(spec, folder, dict)[0]] == ["train-seed1", "probe-seed1", "report"]


def test_per_seed_without_the_seed_and_unknown_after_names_are_refused(tmp_path: Path):
    folder = write_spec(tmp_path, {"a": {"command": ["x.py"], "per_seed": True}}, ["a"])
    spec = load_config(ExperimentSpec, folder / "experiment.yaml")
    with pytest.raises(ValueError, match=r"stages.a: per_seed needs \{seed\}"):
        spec.validate()
    folder = write_spec(tmp_path, {"a": {"command": ["x.py"], "after": ["trian"]}}, ["a"])
    spec = load_config(ExperimentSpec, folder / "experiment.yaml")
    with pytest.raises(ValueError, match=r"stages.a.after names unknown stages \['trian'\]"):
        spec.validate()
    spec.stages["a"].after = None
    spec.jobs = 0
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        spec.validate()


def test_stages_run_side_by_side_as_their_after_allows(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    # `long` ends only once `then` has run: it fails (exit 9) if `then` waited for it or did not run beside it
    stages = {
        "long": stage(tmp_path, "long", wait_for="then", after=[]),
        "short": stage(tmp_path, "short", 0.2, after=[]),
        "then": stage(tmp_path, "then", 0.0, after=["short"]),
        "last": stage(tmp_path, "last", 0.0, after=["long"]),
    }
    folder = write_spec(tmp_path, stages, ["long", "short", "then", "last"], jobs=2, only="stages")
    assert experiment_main(["--config", str(folder / "experiment.yaml")], "p", "rlcore", dict, None) == 0
    long, short, then, last = (times(tmp_path, name) for name in ("long", "short", "then", "last"))
    assert short["start"] < long["end"] and then["end"] <= long["end"]  # side by side
    assert short["end"] <= then["start"]  # waited for short
    assert last["start"] >= long["end"]
    assert {t["threads"] for t in (long, short, then, last)} == {"2"}  # 4 cores / 2 jobs
    logs = tmp_path / "runs" / "logs"
    assert "working on" in (logs / "long.log").read_text()
    timings = [json.loads(line) for line in (logs / "timings.jsonl").read_text().splitlines()]
    assert sorted(t["run"] for t in timings) == ["last", "long", "short", "then"]
    assert next(t for t in timings if t["run"] == "long")["seconds"] >= then["end"] - long["start"] - 1
    assert all((tmp_path / "runs" / "stages" / f"{name}.done").is_file() for name in stages)
    # a second invocation finds everything finished and runs nothing
    (tmp_path / "long.json").unlink()
    assert experiment_main(["--config", str(folder / "experiment.yaml")], "p", "rlcore", dict, None) == 0
    assert not (tmp_path / "long.json").exists()


def test_without_after_a_stage_waits_for_every_stage_listed_before_it(tmp_path: Path):
    stages = {"first": stage(tmp_path, "first", 0.5), "second": stage(tmp_path, "second", 0.0)}
    folder = write_spec(tmp_path, stages, ["first", "second"], jobs=2)
    spec = load_config(ExperimentSpec, folder / "experiment.yaml")
    planned, _ = plan(spec, folder, dict)
    assert execute(planned, "rlcore", jobs=2, log_dir=tmp_path / "logs") == 2
    assert times(tmp_path, "second")["start"] >= times(tmp_path, "first")["end"]


def test_a_failed_stage_stops_what_waits_on_it_and_lets_the_others_finish(tmp_path: Path):
    stages = {
        "broken": stage(tmp_path, "broken", 0.2, code=3, after=[]),
        "other": stage(tmp_path, "other", 0.6, after=[]),
        "needs-broken": stage(tmp_path, "needs-broken", after=["broken"]),
    }
    folder = write_spec(tmp_path, stages, list(stages), jobs=2)
    spec = load_config(ExperimentSpec, folder / "experiment.yaml")
    planned, _ = plan(spec, folder, dict)
    with pytest.raises(ExperimentError, match=r"broken failed \(exit 3\).*not started: needs-broken"):
        execute(planned, "rlcore", jobs=2, log_dir=tmp_path / "logs")
    assert (tmp_path / "other.json").is_file() and (tmp_path / "runs" / "stages" / "other.done").is_file()
    assert not (tmp_path / "runs" / "stages" / "broken.done").exists()
    assert not (tmp_path / "needs-broken.json").exists()
    exits = {
        json.loads(line)["run"]: json.loads(line)["exit"]
        for line in (tmp_path / "logs" / "timings.jsonl").open()
    }
    assert exits == {"broken": 3, "other": 0}


def test_stages_that_wait_on_each_other_are_named(tmp_path: Path):
    stages = {"a": stage(tmp_path, "a", after=["b"]), "b": stage(tmp_path, "b", after=["a"])}
    folder = write_spec(tmp_path, stages, ["a", "b"], jobs=2)
    spec = load_config(ExperimentSpec, folder / "experiment.yaml")
    planned, _ = plan(spec, folder, dict)
    with pytest.raises(ExperimentError, match=r"wait on each other.*a after \['b'\], b after \['a'\]"):
        execute(planned, "rlcore", jobs=2, log_dir=tmp_path / "logs")


def test_one_job_runs_in_list_order_and_records_timings(tmp_path: Path):
    stages = {"x": stage(tmp_path, "x", after=["y"]), "y": stage(tmp_path, "y")}
    folder = write_spec(tmp_path, stages, ["x", "y"])
    spec = load_config(ExperimentSpec, folder / "experiment.yaml")
    planned, _ = plan(spec, folder, dict)
    assert execute(planned, "rlcore", log_dir=tmp_path / "logs") == 2
    assert times(tmp_path, "x")["end"] <= times(tmp_path, "y")["start"]
    assert [json.loads(line)["run"] for line in (tmp_path / "logs" / "timings.jsonl").open()] == ["x", "y"]
