"""`python -m anessuite experiment`: stages given as commands, markers for stages without one, and the pooled
seed statistics (two-level bootstrap) the miniature's results.json and tables are built from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from anessuite import experiment as experiment_module
from anessuite import stage_timeline
from anessuite.experiment import AnessuiteExperimentSpec, pool_row, summarize
from anessuite.pipeline.config import PipelineConfig
from rlcore.config import config_hash, load_config
from rlcore.experiments import execute, plan


def _items(correct_by_level: dict[tuple[str, str], list[int]]) -> list[tuple[str, str, float]]:
    return [(lang, level, float(v)) for (lang, level), values in correct_by_level.items() for v in values]


def test_pool_row_point_estimates_are_seed_means_of_cell_accuracies():
    seed0 = _items({("en", "system1"): [1, 1, 0, 0], ("zh", "system1"): [1, 0]})
    seed1 = _items({("en", "system1"): [1, 1, 1, 1], ("zh", "system1"): [0, 0]})
    pooled = pool_row([seed0, seed1], iters=200, seed=0)
    en, zh = pooled["by_language"]["en"], pooled["by_language"]["zh"]
    assert en["system1"] == pytest.approx((0.5 + 1.0) / 2)
    assert zh["system1"] == pytest.approx((0.5 + 0.0) / 2)
    assert en["per_seed"]["system1"] == [0.5, 1.0]
    assert pooled["avg"] == pytest.approx((0.75 + 0.25) / 2)
    low, high = en["ci95"]["system1"]
    assert 0.0 <= low <= en["system1"] <= high <= 1.0 and low < high


def test_pool_row_interval_is_a_point_when_every_item_agrees():
    seeds = [_items({("en", "system2"): [1, 1, 1]}), _items({("en", "system2"): [1, 1, 1]})]
    pooled = pool_row(seeds, iters=100, seed=3)
    assert pooled["by_language"]["en"]["ci95"]["system2"] == [1.0, 1.0]


def test_pool_row_is_reproducible_by_seed():
    seeds = [_items({("en", "system1"): [1, 0, 1, 0, 1]}), _items({("en", "system1"): [0, 0, 1, 1, 1]})]
    assert pool_row(seeds, 300, 7) == pool_row(seeds, 300, 7)


def _write_scores(path: Path, correct: list[tuple[str, str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"key": f"{lang}/{i}", "language": lang, "level": level, "correct": bool(c)})
        for i, (lang, level, c) in enumerate(correct)
    ]
    path.write_text("\n".join(lines) + "\n")


def test_command_stage_runs_and_the_driver_writes_its_marker(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "experiments" / "mini"
    folder.mkdir(parents=True)
    (folder / "README.md").write_text("# mini\n\n<!-- last-run:start -->\nold\n<!-- last-run:end -->\n")
    script = folder / "make_scores.py"
    script.write_text(
        "import json, pathlib, sys\n"
        "seed = sys.argv[1]\n"
        "p = pathlib.Path(f'runs/mini/run-seed{seed}/scored.jsonl'); p.parent.mkdir(parents=True, exist_ok=True)\n"
        "rows = [{'language': l, 'level': 'system1', 'correct': c} for l in ('en', 'zh') for c in (True, False)]\n"
        "p.write_text(''.join(json.dumps(r) + '\\n' for r in rows))\n"
    )
    spec_file = folder / "experiment.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "runs_dir": "runs/mini",
                "seeds": [0, 1],
                "stages": {f"scores-seed{k}": {"command": [str(script), str(k)]} for k in (0, 1)},
                "groups": {"main": {"out": "results", "stages": ["scores-seed0", "scores-seed1"]}},
                "rows": {"stage": "runs/mini/run-seed{seed}/scored.jsonl"},
                "tables": {"table3": ["stage"]},
                "probes": {"before": "runs/mini/probe-base.json", "after": "runs/mini/probe-seed{seed}.json"},
            }
        )
    )
    spec = load_config(AnessuiteExperimentSpec, spec_file)
    spec.validate()
    stages, runs = plan(spec, folder, AnessuiteExperimentSpec)
    assert [s.done for s in stages] == [False, False] and runs == []
    assert execute(stages, "anessuite") == 2
    assert (tmp_path / "runs/mini/stages/scores-seed0.done").read_text().startswith(str(script))
    assert execute(stages, "anessuite") == 0  # finished stages are skipped

    def probe(accuracy: float) -> dict:
        entry = {"n": 72, "accuracy": accuracy, "chance": 0.19, "mean_rank": 2.0, "mean_margin": 1.5}
        return {
            "model": "m",
            "summary": {"all": entry, "by_phrasing": {"en/corpus": entry}},
            "per_statement": [],
        }

    (tmp_path / "runs/mini/probe-base.json").write_text(json.dumps(probe(0.2)))
    for k, accuracy in ((0, 0.8), (1, 0.9)):
        (tmp_path / f"runs/mini/probe-seed{k}.json").write_text(json.dumps(probe(accuracy)))
    path = summarize(spec, folder, runs)
    body = json.loads(path.read_text())
    assert body["rows"]["stage"]["by_language"]["en"]["system1"] == 0.5
    assert (folder / "results" / "table3.md").is_file() and (
        folder / "results" / "table3_levels.png"
    ).is_file()
    readme = (folder / "README.md").read_text()
    assert "old" not in readme and "python -m anessuite experiment" in readme and "| base" not in readme
    assert "| after | 2 | 0.85 (+1.50) |" in readme and (folder / "results" / "probes.png").is_file()
    assert [p["summary"]["all"]["accuracy"] for p in body["probes"]["after"]] == [0.8, 0.9]


def test_a_stage_with_both_a_command_and_a_recipe_is_refused(tmp_path: Path):
    spec_file = tmp_path / "experiment.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "runs_dir": "runs/x",
                "stages": {"bad": {"recipe": "table3", "config": "c.yaml", "command": [sys.executable]}},
                "groups": {"main": {"stages": ["bad"]}},
            }
        )
    )
    spec = load_config(AnessuiteExperimentSpec, spec_file)
    with pytest.raises(ValueError, match="stages.bad: give either recipe"):
        spec.validate()


def test_the_preregistration_commit_is_the_first_or_the_one_that_added_the_marker(
    tmp_path: Path, monkeypatch
):
    """A design registered later in the same README (a revision) names the commit that added its registration."""
    names = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")
    env = {**os.environ, **{name: "t" for name in names}}

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    git("init", "-q")
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "README.md").write_text("# design 1\n")
    git("add", ".")
    git("commit", "-qm", "design 1")
    first = git("rev-parse", "HEAD")
    (folder / "README.md").write_text("# design 1\n\n8. **Revision 8 (recorded today)**\n")
    git("commit", "-qam", "revision 8")
    revision = git("rev-parse", "HEAD")
    (folder / "README.md").write_text("# design 1\n\n8. **Revision 8 (recorded today)**\n\nresults\n")
    git("commit", "-qam", "results")
    monkeypatch.chdir(tmp_path)
    spec = AnessuiteExperimentSpec(runs_dir=str(tmp_path / "runs"))
    assert experiment_module.provenance(spec, folder)["preregistration_commit"] == first
    spec.preregistration_marker = "8. **Revision 8 (recorded"
    assert experiment_module.provenance(spec, folder)["preregistration_commit"] == revision


def test_provenance_gives_the_stage_wall_clock_from_the_drivers_timings(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logs = tmp_path / "runs" / "logs"
    logs.mkdir(parents=True)
    (tmp_path / "runs" / "train").mkdir()
    (tmp_path / "runs" / "train" / "model.bin").write_text("x")
    records = [
        {"run": "a", "started_at": "2026-12-07T10:00:00+00:00", "seconds": 600.0, "exit": 0},
        {"run": "b", "started_at": "2026-12-07T10:00:05+00:00", "seconds": 1200.0, "exit": 0},
        {
            "run": "c",
            "started_at": "2026-12-07T10:10:00+00:00",
            "seconds": 30.0,
            "exit": 1,
        },  # failed: not counted
        {"run": "c", "started_at": "2026-12-07T10:20:05+00:00", "seconds": 300.0, "exit": 0},
    ]
    (logs / "timings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    timeline = experiment_module.provenance(AnessuiteExperimentSpec(runs_dir="runs"), tmp_path)
    assert timeline["stage_minutes"] == {"a": 10.0, "b": 20.0, "c": 5.0}
    assert timeline["stage_minutes_total"] == 35.0
    assert timeline["first_stage_started_at"] == "2026-12-07T10:00:00+00:00"
    assert timeline["span_minutes"] == 25.1  # 10:00:00 to 10:25:05
    # the chart puts b beside a, and c (started after a ended) on a's lane
    runs = stage_timeline.timings(logs / "timings.jsonl")
    assert [r["run"] for r in runs] == ["a", "b", "c"]
    assert stage_timeline.job_lanes(runs) == [0, 1, 0]
    chart = stage_timeline.plot_stage_timeline(runs, tmp_path / "stages.png")
    assert chart is not None and chart.stat().st_size > 5_000
    assert stage_timeline.plot_stage_timeline([], tmp_path / "none.png") is None
    # the driver's logs are not run files
    assert timeline["first_run_file_written_at"] == experiment_module._iso(
        (tmp_path / "runs" / "train" / "model.bin").stat().st_mtime
    )


def test_a_spec_showing_fewer_tables_pools_only_their_rows(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "experiments" / "view"
    folder.mkdir(parents=True)
    (folder / "README.md").write_text("# view\n\n<!-- last-run:start -->\n<!-- last-run:end -->\n")
    rows = [
        {"language": lang, "level": "system1", "correct": c} for lang in ("en", "zh") for c in (True, False)
    ]
    for name in ("a", "b"):
        p = tmp_path / f"runs/{name}.jsonl"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "full.yaml").write_text(
        yaml.safe_dump(
            {
                "runs_dir": "runs",
                "groups": {"main": {"out": "results"}},
                "rows": {"a": "runs/a.jsonl", "b": "runs/b.jsonl"},
                "tables": {"t3": ["a"], "t4": ["b"]},
            }
        )
    )
    (folder / "experiment.yaml").write_text("base: full.yaml\ntables:\n  t4: []\n")
    spec = load_config(AnessuiteExperimentSpec, folder / "experiment.yaml")
    body = json.loads(summarize(spec, folder, []).read_text())
    assert list(body["rows"]) == ["a"]
    assert (folder / "results" / "t3.md").is_file() and not (folder / "results" / "t4.md").exists()


def test_the_cpu_table3_runs_the_miniatures_pipelines_from_its_own_folder():
    """`make reproduce-table3`'s default: the miniature's registered Table 3 stages, each run through a config of
    experiments/anessuite-table3 that resolves to the very config (same hash) the miniature's own stage runs."""
    repo = Path(__file__).resolve().parents[2]
    table3 = load_config(AnessuiteExperimentSpec, repo / "experiments/anessuite-table3/experiment.yaml")
    miniature = load_config(
        AnessuiteExperimentSpec, repo / "experiments/anessuite-cpu-miniature/experiment.yaml"
    )
    table3.validate()
    assert table3.runs_dir == miniature.runs_dir and list(table3.tables["table4"]) == []
    mine, _ = plan(table3, repo / "experiments/anessuite-table3", PipelineConfig)
    theirs = {
        s.name: s for s in plan(miniature, repo / "experiments/anessuite-cpu-miniature", PipelineConfig)[0]
    }
    recipes = [s for s in mine if s.recipe]
    assert [s.name for s in recipes] == ["table3-seed0", "table3-seed1", "table3-seed2"]
    for stage in recipes:
        assert stage.config.resolve().parent == (repo / "experiments/anessuite-table3").resolve()
        other = theirs[stage.name]
        assert stage.overrides == other.overrides and stage.done_marker == other.done_marker
        assert config_hash(load_config(PipelineConfig, stage.config, stage.overrides)) == config_hash(
            load_config(PipelineConfig, other.config, other.overrides)
        )
