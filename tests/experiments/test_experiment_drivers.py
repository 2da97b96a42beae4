"""Experiments own what they run: every `reproduce-*` target runs configs of its own folder, the arms resolve to the
configs that produced the committed numbers, and the driver regenerates the committed summaries from run folders."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from config_harness import REPO

from anessuite.pipeline.config import PipelineConfig
from rexrag.experiment import RexRagExperimentSpec, summarize
from rexrag.recipes.evaluate import EvalConfig
from rexrag.recipes.sft import SFTConfig
from rexrag.recipes.train import RexRagTrainConfig
from rlcore.config import load_config, move_key, to_dict
from rlcore.experiments import PlannedRun, changed_keys, plan

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "pre_driver_configs.json").read_text())
SCHEMAS = {
    "rexrag train": RexRagTrainConfig,
    "rexrag sft": SFTConfig,
    "rexrag evaluate": EvalConfig,
    "anessuite pipeline": PipelineConfig,
}


def _driver(spec_file: Path) -> str:
    """The package whose driver runs an experiment.yaml (its ``# recipe: <package> experiment`` line)."""
    found = re.search(r"^# recipe: (\w+) experiment$", spec_file.read_text(), re.M)
    assert found, f"{spec_file}: no '# recipe: <package> experiment' line"
    return found.group(1)


SPECS = sorted((REPO / "experiments").glob("*/experiment.yaml"))
DRIVEN = [p.parent.name for p in SPECS if _driver(p) == "rexrag"]
ANESSUITE_DRIVEN = [p.parent.name for p in SPECS if _driver(p) == "anessuite"]


def _spec(name: str, **overrides: Any) -> RexRagExperimentSpec:
    argv = [f"{key}={value}" for key, value in overrides.items()]
    return load_config(RexRagExperimentSpec, REPO / "experiments" / name / "experiment.yaml", argv)


def planned_configs(name: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Run name -> (recipe, resolved config) of every stage and arm run of every group of an experiment."""
    folder = REPO / "experiments" / name
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    if (folder / "experiment.yaml").is_file():
        spec = _spec(name)
        for group in spec.groups:
            spec.group = group
            stages, runs = plan(spec, folder, RexRagTrainConfig)
            for run in runs:
                found[run.name] = (f"rexrag {spec.arm_recipe}", run.resolved)
            for stage in stages:
                recipe = f"rexrag {stage.recipe}"
                found[stage.name] = (
                    recipe,
                    to_dict(load_config(SCHEMAS[recipe], stage.config, stage.overrides)),
                )
    else:  # an AnesSuite table: the experiment config names the pipeline it runs
        pipeline = yaml.safe_load((folder / "config.yaml").read_text())["pipeline_config"]
        found["pipeline"] = ("anessuite pipeline", to_dict(load_config(PipelineConfig, REPO / pipeline)))
    return found


def renamed(config: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    """``config`` with every key a schema has renamed since (``RENAMED_KEYS``) moved to its new name."""
    tree = json.loads(json.dumps(config))
    for old, new in renames.items():
        move_key(tree, old, new)
    return tree


@pytest.mark.parametrize("name", sorted(FIXTURE))
def test_every_run_resolves_to_the_config_that_produced_the_committed_numbers(name: str, tmp_path: Path):
    """The fixture holds, per run, the merged YAML + command-line overrides the make targets ran before the
    experiments got their drivers; resolved through today's schema, both sides must agree field by field."""
    recorded = FIXTURE[name]
    planned = planned_configs(name)
    assert sorted(planned) == sorted(recorded), f"{name}: runs differ from the recorded ones"
    for run, entry in recorded.items():
        recipe, config = planned[run]
        assert recipe == entry["recipe"], f"{name}/{run}: recipe {recipe} != {entry['recipe']}"
        old = tmp_path / f"{run}.yaml"
        old.write_text(yaml.safe_dump(renamed(entry["config"], getattr(SCHEMAS[recipe], "RENAMED_KEYS", {}))))
        expected = to_dict(load_config(SCHEMAS[recipe], old))
        assert config == expected, f"{name}/{run}: keys differ: {changed_keys(config, expected)}"


def _reproduce_targets() -> list[str]:
    text = "\n".join(p.read_text() for p in sorted((REPO / "mk").glob("*.mk")))
    return sorted(set(re.findall(r"^(reproduce-[A-Za-z0-9_-]+):", text, re.M)))


def _configs_named_by(config: Path) -> list[Path]:
    """Configs an experiment config makes its recipe run: a spec's stages and arms, a table's pipeline."""
    data = yaml.safe_load(config.read_text()) or {}
    named = [config]
    for stage in (data.get("stages") or {}).values():
        if "config" in stage:
            named.append(config.parent / stage["config"])
        named += [REPO / arg for arg in stage.get("command", []) if arg.endswith((".yaml", ".py"))]
        values = [o.split("=", 1)[1] for o in stage.get("overrides", []) if "=" in o]
        named += [REPO / v for v in values if v.endswith(".yaml")]
    for group in (data.get("groups") or {}).values():
        named += [config.parent / "arms" / f"{arm}.yaml" for arm in group.get("arms", [])]
    if "pipeline_config" in data:
        named.append(REPO / data["pipeline_config"])
    return named


@pytest.mark.parametrize("target", _reproduce_targets())
def test_reproduce_target_runs_configs_of_its_own_experiment(target: str):
    dry = subprocess.run(
        ["make", "-n", "--no-print-directory", target], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert dry.returncode == 0, dry.stderr
    configs = [REPO / c for c in re.findall(r"(?:--config[ =]|\bCONFIG=)(\S+)", dry.stdout)]
    assert configs, f"`make -n {target}` runs no `--config FILE`:\n{dry.stdout}"
    folders = {
        c.resolve().relative_to(REPO / "experiments").parts[0] for c in configs if "experiments" in c.parts
    }
    assert len(folders) == 1, f"{target}: configs {configs} are not all in one experiments/<name>/ folder"
    folder = (REPO / "experiments" / folders.pop()).resolve()
    assert f"make {target}" in (folder / "README.md").read_text(), (
        f"{folder}/README.md does not name {target}"
    )
    for config in configs:
        for named in _configs_named_by(config):
            assert named.resolve().is_relative_to(folder), f"{target}: {named} is outside {folder}"
            assert named.is_file(), f"{target}: {named} does not exist"


# --- the driver against run folders in the committed layout --------------------------------------------------


def _spread(mean: float, std: float | None, n: int) -> list[float]:
    """n values with this mean and sample std (offsets -1, 0, 1 scaled for n = 3)."""
    offsets = [i - (n - 1) / 2 for i in range(n)]
    scale = statistics.stdev(offsets) if n > 1 else 1.0
    return [mean + (std or 0.0) * o / scale for o in offsets]


def fake_runs_from_summary(arm: dict[str, Any], seeds: list[int]) -> list[dict[str, Any]]:
    """Per-seed ``results.json`` of ``python -m rexrag train`` whose summary is ``arm`` (a committed entry)."""
    n = len(seeds)
    band = arm["heldout_curve"]
    last = int(band["steps"][-1])
    value = {k: arm[k]["values"] for k in arm if isinstance(arm[k], dict) and "values" in arm[k]}
    assert all(len(v) in (0, n) for v in value.values())
    runs = []
    for i in range(n):

        def v(key: str, i: int = i) -> float | None:
            return value[key][i] if value[key] else None

        train, method = [], []
        for step in range(1, last + 1):
            window = "first5" if step <= 5 else "last5"
            record: dict[str, Any] = {"step": step, "accuracy": v(f"train_accuracy_{window}")}
            record["rollout/generated_tokens"] = v("generated_tokens") if step == 1 else 0.0
            record["time/step"] = v("train_seconds") if step == 1 else 0.0
            train.append(record)
            extra = {
                "rexrag/dead_end_rate": v(f"dead_end_rate_{window}"),
                "rexrag/probe_accuracy_kept": v("probe_accuracy_kept"),
                "rexrag/alpha": v("alpha"),
                "rexrag/probes_kept": v("probes_kept_per_step"),
                "rexrag/probe_generated_tokens": (v("probe_generated_tokens") or 0.0) if step == 1 else 0.0,
                # which probe tokens the clip acted on, by class (absent from summaries written before it existed)
                **{
                    f"rexrag/clip_frac_probe_{c}": v(f"clip_frac_probe_{c}")
                    if f"clip_frac_probe_{c}" in value
                    else None
                    for c in ("prefix", "inserted", "continuation")
                },
            }
            method.append({"step": step, **{k: x for k, x in extra.items() if x is not None}})
        curve = []
        for j, step in enumerate(band["steps"]):
            em = _spread(band["mean"][j], band["std"][j], n)[i]
            if j == 0 and v("heldout_em_start") is not None:
                em = v("heldout_em_start")
            if j == len(band["steps"]) - 1:
                em = v("heldout_em_end")
            curve.append({"step": step, "heldout/em": em})
        by_source = {
            s: {"em": _spread(e["mean"], e["std"], n)[i], "searches": v("eval_searches")}
            for s, e in arm["eval_by_source"].items()
        }
        runs.append(
            {
                "last_step": last,
                "train_metrics": train,
                "rexrag_metrics": method,
                "heldout_curve": curve,
                "eval": {"average_em": v("eval_average_em"), "by_source": by_source},
            }
        )
    return runs


def _committed_groups() -> list[tuple[str, str]]:
    """Groups with a committed summary (a pre-registered experiment that has not run yet has none; a group of stages
    only, such as rexrag-cpu-mechanism's `warmup`, summarises nothing)."""
    return [
        (name, group)
        for name in DRIVEN
        for group, entry in _spec(name).groups.items()
        if entry.arms and (REPO / "experiments" / name / entry.out / "results.json").is_file()
    ]


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12)
    return a == b


def _drive_fake(name: str, group: str, tmp_path: Path) -> tuple[Path, Path]:
    """Fake run folders built from the committed summary, summarised by the driver into a copy of the folder."""
    src = REPO / "experiments" / name
    spec = _spec(name, group=group, runs_dir=tmp_path / "runs")
    out_rel = spec.groups[group].out
    committed = json.loads((src / out_rel / "results.json").read_text())
    folder = tmp_path / name
    shutil.copytree(src, folder)
    runs = []
    for arm, entry in committed["arms"].items():
        for seed, data in zip(committed["seeds"], fake_runs_from_summary(entry, committed["seeds"])):
            run_dir = tmp_path / "runs" / f"{arm}-seed{seed}"
            run_dir.mkdir(parents=True)
            (run_dir / "results.json").write_text(json.dumps(data))
            runs.append(
                PlannedRun(run_dir.name, "train", Path(), [], run_dir / "results.json", arm=arm, seed=seed)
            )
    runs.sort(key=lambda r: (r.seed, spec.groups[group].arms.index(r.arm)))
    summarize(spec, folder, runs, plot=False)
    return src / out_rel, folder / out_rel


@pytest.mark.parametrize(("name", "group"), _committed_groups())
def test_driver_regenerates_the_committed_summary(name: str, group: str, tmp_path: Path):
    committed, regenerated = _drive_fake(name, group, tmp_path)
    for table in ("table.md", "table.csv"):
        assert (regenerated / table).read_text() == (committed / table).read_text(), (
            f"{name}/{group}: {table}"
        )
    assert _close(
        json.loads((regenerated / "table.json").read_text()),
        json.loads((committed / "table.json").read_text()),
    )
    new, old = (json.loads((d / "results.json").read_text()) for d in (regenerated, committed))
    assert new["seeds"] == old["seeds"] and list(new["arms"]) == list(old["arms"])
    for arm in old["arms"]:
        for key, expected in old["arms"][arm].items():
            assert _close(new["arms"][arm][key], expected), f"{name}/{group}/{arm}: {key}"
    readme = (regenerated.parent if group != "main" else regenerated) / "README.md"
    tag = "" if group == "main" else f":{group}"
    block = re.search(
        f"<!-- last-run{tag}:start -->\n(.*?)<!-- last-run{tag}:end -->", readme.read_text(), re.S
    )
    assert block and "| Method |" in block.group(1) and "python -m rexrag experiment" in block.group(1)


@pytest.mark.parametrize("name", DRIVEN)
def test_recorded_config_hashes_match_the_arms(name: str):
    """Where a committed results.json records the config hash of its runs, the arms still resolve to it."""
    folder = REPO / "experiments" / name
    spec = _spec(name)
    for group, entry in spec.groups.items():
        # not run yet, or a group of stages only: nothing recorded
        if not entry.arms or not (folder / entry.out / "results.json").is_file():
            continue
        results = json.loads((folder / entry.out / "results.json").read_text())
        recorded = results.get("runs", {})
        spec.group = group
        _, runs = plan(spec, folder, RexRagTrainConfig)
        planned = {run.name: run.config_hash for run in runs}
        for run, info in recorded.items():
            assert planned.get(run) == info["config_hash"], f"{name}/{group}/{run}: the arm's config changed"
