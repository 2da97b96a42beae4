"""Experiment driver core: seeds x arms of one recipe, finished runs skipped, README "Last run" blocks.

An experiment folder owns what it runs::

    experiments/<name>/
      experiment.yaml     ExperimentSpec: seeds, run folder, warm-up stages, groups of arms
      config.yaml         the base config every arm starts from (``base:`` may name a package config)
      arms/<arm>.yaml     one small override per arm: ``base: ../config.yaml`` plus the keys that differ
      <stage>.yaml        configs of the stages that run once before the arms (a warm-up SFT, ...)

A package's driver (``python -m rexrag experiment``) plans the runs with :func:`plan`, runs what is not finished
with :func:`execute` (each run is ``python -m <cli> <recipe> --config <file> <overrides>`` in its own process)
and summarises the finished runs into results.json, tables, curves and the README's "Last run" block.

With ``jobs: N`` (N > 1) up to N runs go side by side: a stage starts once the stages it names in ``after`` have
finished (left out: every stage listed before it in the group), the arm runs once every stage has; each run's
output goes to ``<runs_dir>/logs/<run>.log`` and each process gets ``OMP_NUM_THREADS`` = cores / N unless the
environment sets it. Every run's start, end and wall-clock are appended to ``<runs_dir>/logs/timings.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from rlcore.config import (
    ConfigError,
    config_hash,
    explain_lines,
    load_config,
    load_config_explained,
    to_dict,
    to_yaml,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ExperimentError",
    "ExperimentSpec",
    "GroupSpec",
    "PlannedRun",
    "StageSpec",
    "changed_keys",
    "execute",
    "experiment_main",
    "plan",
    "update_last_run",
]


class ExperimentError(RuntimeError):
    """An experiment cannot go on: names the run and what to do."""


@dataclass
class StageSpec:
    """A run that happens once before the arms (a warm-up SFT, an evaluation of the warm-up)."""

    # subcommand of the package CLI that runs it, e.g. sft | evaluate
    recipe: str = ""
    # its config, relative to the experiment folder
    config: str = ""
    # the stage counts as finished when this path exists (relative to the repository root); left empty, the
    # driver writes <runs_dir>/stages/<name>.done itself once the stage exits 0
    creates: str = ""
    # dotted overrides added on its command line
    overrides: list[str] = field(default_factory=list)
    # instead of recipe + config: the interpreter's arguments, e.g. [-m, anessuite, synth, --out, DIR] or
    # [experiments/<name>/analyze.py, --runs, DIR]
    command: list[str] = field(default_factory=list)
    # one run per seed of the spec, named <stage>-seed<k>; "{seed}" in overrides, command, creates and after
    # stands for k (a group listing <stage> gets every seed's run, in seed order)
    per_seed: bool = False
    # with jobs > 1: the stages that must finish before this one starts (a per-seed stage's bare name means all its
    # seeds); left out, every stage listed before it in the group
    after: list[str] | None = None


@dataclass
class GroupSpec:
    """Arms summarised together into one table."""

    # arm names: arms/<name>.yaml in the experiment folder
    arms: list[str] = field(default_factory=list)
    # folder of results.json / tables / curves, relative to the experiment folder
    out: str = "."
    # stages run before this group's arms
    stages: list[str] = field(default_factory=list)


@dataclass
class ExperimentSpec:
    """Seeds x arms of one recipe (``python -m <package> experiment --config experiments/<name>/experiment.yaml``)."""

    # run folders are <runs_dir>/<arm>-seed<seed>
    runs_dir: str = ""
    # one run per seed and arm
    seeds: list[int] = field(default_factory=lambda: [0])
    # subcommand of the package CLI that runs an arm
    arm_recipe: str = "train"
    # config keys set to the seed of each run
    seed_keys: list[str] = field(default_factory=lambda: ["train.seed"])
    # config key set to the run folder
    output_key: str = "train.output_dir"
    # added to every arm's command line (after the seed and folder)
    arm_overrides: list[str] = field(default_factory=list)
    # runs that happen once, by name
    stages: dict[str, StageSpec] = field(default_factory=dict)
    # arm groups, by name; `group` picks the one this invocation runs
    groups: dict[str, GroupSpec] = field(default_factory=dict)
    # which group to run and summarise
    group: str = "main"
    # all: the group's stages, arms, summary | stages: the group's stages only | summary: summarise finished runs
    only: Literal["all", "stages", "summary"] = "all"
    # how many runs go side by side (stages as their `after` allows, then the arm runs); 1: one after another
    jobs: int = 1

    def validate(self) -> None:
        if not self.runs_dir:
            raise ValueError("runs_dir must name the folder of the runs")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if self.group not in self.groups:
            raise ValueError(
                f"group '{self.group}' is not one of the groups: {', '.join(self.groups) or 'none'}"
            )
        if self.jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {self.jobs}")
        for name, stage in self.stages.items():
            if bool(stage.command) == bool(stage.recipe or stage.config):
                raise ValueError(f"stages.{name}: give either recipe + config or command, not both")
            if stage.per_seed and not any("{seed}" in part for part in [*stage.overrides, *stage.command]):
                raise ValueError(
                    f"stages.{name}: per_seed needs {{seed}} in its overrides or command, or every seed runs "
                    "the same thing"
                )
        runs = stage_runs(self)
        for name, group in self.groups.items():
            missing = [stage for stage in group.stages if stage not in self.stages and stage not in runs]
            if missing:
                raise ValueError(
                    f"groups.{name}.stages names unknown stages {missing}; known: {list(self.stages)}"
                )
        for name, (_, stage) in runs.items():
            unknown = [dep for dep in stage.after or [] if dep not in self.stages and dep not in runs]
            if unknown:
                raise ValueError(f"stages.{name}.after names unknown stages {unknown}; known: {list(runs)}")


def _fill_seed(values: list[str], seed: int) -> list[str]:
    return [value.replace("{seed}", str(seed)) for value in values]


def stage_runs(spec: ExperimentSpec) -> dict[str, tuple[str, StageSpec]]:
    """Every stage run by name, with the stage it comes from: a per-seed stage once per seed (``<stage>-seed<k>``,
    ``{seed}`` filled in), any other stage once under its own name."""
    found: dict[str, tuple[str, StageSpec]] = {}
    for name, stage in spec.stages.items():
        if not stage.per_seed:
            found[name] = (name, stage)
            continue
        for seed in spec.seeds:
            found[f"{name}-seed{seed}"] = (
                name,
                dataclasses.replace(
                    stage,
                    overrides=_fill_seed(stage.overrides, seed),
                    command=_fill_seed(stage.command, seed),
                    creates=stage.creates.replace("{seed}", str(seed)),
                    after=None if stage.after is None else _fill_seed(stage.after, seed),
                ),
            )
    return found


def _expand_names(spec: ExperimentSpec, names: Sequence[str]) -> list[str]:
    """Stage names with each per-seed stage's bare name replaced by its runs, in seed order."""
    expanded: list[str] = []
    for name in names:
        stage = spec.stages.get(name)
        expanded += [f"{name}-seed{seed}" for seed in spec.seeds] if stage and stage.per_seed else [name]
    return expanded


@dataclass
class PlannedRun:
    """One process the experiment runs: a stage or an (arm, seed) run."""

    name: str
    recipe: str
    config: Path
    overrides: list[str]
    # a stage: the path it creates; an arm run: its results.json
    done_marker: Path
    # the resolved config this run gets (for arm runs; None for stages)
    resolved: dict[str, Any] | None = None
    arm: str = ""
    seed: int | None = None
    # a stage given as interpreter arguments (StageSpec.command)
    command: list[str] = field(default_factory=list)
    # the driver writes done_marker itself after the run exits 0 (a stage without `creates`)
    writes_marker: bool = False
    # rlcore.config.config_hash of the built config (keys renamed since spelled the old way); None for stages
    config_hash: str | None = None
    # names of the runs that must finish before this one starts when runs go side by side
    after: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.done_marker.exists()


def _arm_path(folder: Path, arm: str) -> Path:
    path = folder / "arms" / f"{arm}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (folder / "arms").glob("*.yaml"))
        raise ConfigError(f"{folder / 'experiment.yaml'}: arm '{arm}' has no file {path} (arms: {known})")
    return path


def plan(spec: ExperimentSpec, folder: Path, arm_schema: type) -> tuple[list[PlannedRun], list[PlannedRun]]:
    """The stages and the (arm, seed) runs of ``spec.group``, with each arm run's resolved config."""
    group = spec.groups[spec.group]
    runs_by_name = stage_runs(spec)
    names = _expand_names(spec, group.stages)
    stages = []
    for index, name in enumerate(names):
        stage = runs_by_name[name][1]
        after = names[:index] if stage.after is None else _expand_names(spec, stage.after)
        stages.append(
            PlannedRun(
                name=name,
                recipe=stage.recipe,
                config=folder / stage.config,
                overrides=list(stage.overrides),
                done_marker=Path(stage.creates or Path(spec.runs_dir) / "stages" / f"{name}.done"),
                command=list(stage.command),
                writes_marker=not stage.creates,
                # a stage this group does not run is not waited for
                after=[dep for dep in after if dep in names],
            )
        )
    runs = []
    for seed in spec.seeds:
        for arm in group.arms:
            run_dir = Path(spec.runs_dir) / f"{arm}-seed{seed}"
            overrides = [*(f"{key}={seed}" for key in spec.seed_keys), f"{spec.output_key}={run_dir}"]
            overrides += spec.arm_overrides
            path = _arm_path(folder, arm)
            cfg = load_config(arm_schema, path, overrides)
            runs.append(
                PlannedRun(
                    run_dir.name,
                    spec.arm_recipe,
                    path,
                    overrides,
                    run_dir / "results.json",
                    to_dict(cfg),
                    arm,
                    seed,
                    config_hash=config_hash(cfg),
                )
            )
    return stages, runs


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix.rstrip("."): tree}
    found: dict[str, Any] = {}
    for key, value in tree.items():
        found.update(_leaves(value, f"{prefix}{key}."))
    return found


def changed_keys(planned: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    """Dotted keys both configs have whose values differ.

    Not counted as changes: keys only one side knows (a run made before a field existed) and planned values left
    empty (``None``, ``""``, ``{}``, ``[]``) that the recipe filled in at run time (a default output folder, the
    prompt template it resolved, a method tag).
    """
    mine, theirs = _leaves(planned), _leaves(recorded)
    empty = (None, "", {}, [])
    return [key for key in mine if key in theirs and mine[key] != theirs[key] and mine[key] not in empty]


def _check_finished(run: PlannedRun) -> None:
    recorded = json.loads(run.done_marker.read_text(encoding="utf-8")).get("config")
    if run.resolved is None or not isinstance(recorded, dict):
        return
    changed = changed_keys(run.resolved, recorded)
    if changed:
        shown = ", ".join(
            f"{key}: ran {_leaves(recorded)[key]!r}, now {_leaves(run.resolved)[key]!r}"
            for key in changed[:3]
        )
        raise ExperimentError(
            f"{run.done_marker.parent} finished with another config ({shown}); move the folder away to rerun it"
        )


def _command(run: PlannedRun, cli: str) -> list[str]:
    if run.command:
        return [sys.executable, *run.command]
    return [sys.executable, "-m", cli, *run.recipe.split(), "--config", str(run.config), *run.overrides]


def _finish(run: PlannedRun, command: list[str]) -> None:
    if run.writes_marker:
        run.done_marker.parent.mkdir(parents=True, exist_ok=True)
        run.done_marker.write_text(" ".join(command[1:]) + "\n", encoding="utf-8")
    if not run.done:
        raise ExperimentError(f"{run.name} exited 0 but did not write {run.done_marker}")


def _record_time(log_dir: Path | None, run: PlannedRun, started: float, code: int) -> float:
    seconds = time.time() - started
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        stamp = {
            "run": run.name,
            "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
            "seconds": round(seconds, 1),
            "exit": code,
        }
        with open(log_dir / "timings.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(stamp) + "\n")
    return seconds


def _tail(path: Path, lines: int = 20) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def execute(
    runs: Sequence[PlannedRun],
    cli: str,
    runner: Callable[[list[str]], int] | None = None,
    jobs: int = 1,
    log_dir: Path | None = None,
) -> int:
    """Run every unfinished run (``python -m <cli> <recipe> --config FILE overrides``); returns how many ran.
    Finished arm runs are checked against the config they would get now. ``jobs`` > 1 runs up to that many side by
    side, each once the runs in its ``after`` have finished, its output in ``log_dir/<run>.log``; ``log_dir``
    also gets each run's wall-clock in ``timings.jsonl``."""
    if not runs:
        return 0
    for index, run in enumerate(runs, start=1):
        if run.done:
            if run.resolved is not None:
                _check_finished(run)
            logger.info("[%d/%d] %s: finished (%s), skipped", index, len(runs), run.name, run.done_marker)
    if jobs > 1:
        return _execute_side_by_side(runs, cli, runner, jobs, log_dir or Path("logs"))
    ran = 0
    for index, run in enumerate(runs, start=1):
        if run.done:
            continue
        command = _command(run, cli)
        logger.info("[%d/%d] %s: %s", index, len(runs), run.name, " ".join(command[1:]))
        started = time.time()
        code = (runner or (lambda argv: subprocess.run(argv, check=False).returncode))(command)
        seconds = _record_time(log_dir, run, started, code)
        if code != 0:
            raise ExperimentError(f"{run.name} failed (exit {code}): {' '.join(command[1:])}")
        _finish(run, command)
        logger.info("[%d/%d] %s: finished in %.1f min", index, len(runs), run.name, seconds / 60)
        ran += 1
    return ran


def _child_env(jobs: int) -> dict[str, str]:
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(key, threads)
    return env


def _execute_side_by_side(
    runs: Sequence[PlannedRun],
    cli: str,
    runner: Callable[[list[str]], int] | None,
    jobs: int,
    log_dir: Path,
) -> int:
    planned = {run.name for run in runs}
    finished = {run.name for run in runs if run.done}
    waiting = [run for run in runs if not run.done]
    env = _child_env(jobs)
    logger.info(
        "%d of %d runs to go, up to %d side by side (OMP_NUM_THREADS=%s each); logs in %s",
        len(waiting),
        len(runs),
        jobs,
        env["OMP_NUM_THREADS"],
        log_dir,
    )
    log_dir.mkdir(parents=True, exist_ok=True)

    def launch(run: PlannedRun, command: list[str]) -> int:
        if runner is not None:
            return runner(command)
        with open(log_dir / f"{run.name}.log", "a", encoding="utf-8") as log:
            return subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False
            ).returncode

    running: dict[Future[int], tuple[PlannedRun, list[str], float]] = {}
    failures: list[str] = []
    ran = 0
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while True:
            while not failures and len(running) < jobs:
                ready = next(
                    (r for r in waiting if all(dep in finished or dep not in planned for dep in r.after)),
                    None,
                )
                if ready is None:
                    break
                waiting.remove(ready)
                command = _command(ready, cli)
                logger.info(
                    "%s: started, %s (log %s)",
                    ready.name,
                    " ".join(command[1:]),
                    log_dir / f"{ready.name}.log",
                )
                running[pool.submit(launch, ready, command)] = (ready, command, time.time())
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                run, command, started = running.pop(future)
                code = future.result()
                seconds = _record_time(log_dir, run, started, code)
                if code != 0:
                    failures.append(f"{run.name} failed (exit {code}): {' '.join(command[1:])}")
                    logger.error(
                        "%s failed after %.1f min; its log ends:\n%s",
                        run.name,
                        seconds / 60,
                        _tail(log_dir / f"{run.name}.log"),
                    )
                    continue
                _finish(run, command)
                finished.add(run.name)
                ran += 1
                logger.info(
                    "%s: finished in %.1f min (%d done, %d running, %d waiting)",
                    run.name,
                    seconds / 60,
                    len(finished),
                    len(running),
                    len(waiting),
                )
    if failures:
        left = f"; not started: {', '.join(r.name for r in waiting)}" if waiting else ""
        raise ExperimentError("; ".join(failures) + left)
    if waiting:
        cycle = ", ".join(f"{r.name} after {[d for d in r.after if d not in finished]}" for r in waiting)
        raise ExperimentError(f"these runs wait on each other and cannot start: {cycle}")
    return ran


_MARKERS = "<!-- last-run{tag}:start -->", "<!-- last-run{tag}:end -->"


def update_last_run(readme: Path, body: str, group: str = "main") -> bool:
    """Replace the text between ``<!-- last-run:start -->`` and ``<!-- last-run:end -->`` (``last-run:<group>``
    for a group other than main) with ``body``. Returns False when the README has no such markers."""
    tag = "" if group == "main" else f":{group}"
    start, end = (marker.format(tag=tag) for marker in _MARKERS)
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(f"({re.escape(start)}\n).*?({re.escape(end)})", re.S)
    if not pattern.search(text):
        return False
    readme.write_text(
        pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text), encoding="utf-8"
    )
    return True


def experiment_main(
    argv: Sequence[str] | None,
    prog: str,
    cli: str,
    arm_schema: type,
    summarize: Callable[[ExperimentSpec, Path, list[PlannedRun]], Any],
    spec_schema: type[ExperimentSpec] = ExperimentSpec,
) -> int:
    """``<prog> --config experiments/<name>/experiment.yaml [--dry-run | --explain] [key=value ...]``."""
    parser = argparse.ArgumentParser(prog=prog, description=spec_schema.__doc__)
    parser.add_argument("--config", type=Path, required=True, help="experiments/<name>/experiment.yaml")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the spec and every planned run, and exit"
    )
    parser.add_argument(
        "--explain", action="store_true", help="print where each spec value came from, and exit"
    )
    parser.add_argument(
        "overrides", nargs="*", help="dotted overrides of the spec, e.g. seeds=[0] group=ablations"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    folder = args.config.parent
    try:
        loaded = load_config_explained(spec_schema, args.config, args.overrides)
        spec = loaded.config
        spec.validate()
        stages, runs = plan(spec, folder, arm_schema)
    except (ConfigError, ValueError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    if args.explain:
        sys.stdout.write("\n".join(explain_lines(loaded)) + "\n")
        return 0
    if args.dry_run:
        sys.stdout.write(to_yaml(spec))
        planned = [
            (
                {"name": r.name, "command": r.command, "done": r.done}
                if r.command
                else {"name": r.name, "config": str(r.config), "overrides": r.overrides, "done": r.done}
            )
            | ({"config_hash": r.config_hash} if r.config_hash else {})
            | ({"after": r.after} if spec.jobs > 1 and r.resolved is None else {})
            for r in [*stages, *([] if spec.only == "stages" else runs)]
        ]
        sys.stdout.write(yaml.safe_dump({"planned_runs": planned}, sort_keys=False))
        return 0
    try:
        log_dir = Path(spec.runs_dir) / "logs"
        started = time.time()
        if spec.only != "summary":
            execute(stages, cli, jobs=spec.jobs, log_dir=log_dir)
        if spec.only == "all":
            execute(runs, cli, jobs=spec.jobs, log_dir=log_dir)
        if spec.only != "summary":
            logger.info("stages and runs: %.1f min wall-clock", (time.time() - started) / 60)
        if spec.only != "stages":
            for run in runs:
                if run.done:
                    _check_finished(run)
            summarize(spec, folder, runs)
    except ExperimentError as err:
        print(f"experiment error: {err}", file=sys.stderr)
        return 1
    return 0
