"""``python -m anessuite experiment``: the driver of AnesSuite experiments made of pipeline runs over seeds.

    python -m anessuite experiment --config experiments/anessuite-cpu-miniature/experiment.yaml [only=summary]

Runs the experiment's stages in order (``rlcore.experiments``: the world, the knowledge probes, the Table 3 / 4 / 5
recipes per seed, the pre-registered analysis), each skipped when finished, then pools the seeds from the
per-item scores every evaluation wrote (``<run>/eval/<stage>-generate/scored.jsonl``):

- ``results.json``: per row, language and level the seed mean of the accuracy with a 95% interval from a two-level
  bootstrap (resample seeds, then items within each seed), the per-seed values, the knowledge-probe summaries, the
  analysis' verdicts and the provenance (git, pre-registration commit, when the first run started, wall-clock);
- ``<table>.md`` / ``.csv`` / ``.json`` for each table of ``tables`` (Table 3 layout) and ``<table>_levels.png``,
  a per-level bar chart with one bar per stage;
- the README's "Last run" block.
"""

from __future__ import annotations

import json
import logging
import random
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anessuite.pipeline.config import PipelineConfig
from anessuite.report import plot_levels, write_table3
from anessuite.stage_timeline import iso as _iso
from anessuite.stage_timeline import plot_stage_timeline, timings, wall_clock
from rlcore.experiments import ExperimentSpec, PlannedRun, experiment_main, update_last_run
from rlcore.tracking import write_results_json

logger = logging.getLogger(__name__)

LANGS = ("en", "zh")


@dataclass
class AnessuiteExperimentSpec(ExperimentSpec):
    """Stages over seeds, pooled (``python -m anessuite experiment --config experiments/<name>/experiment.yaml``)."""

    # row label -> the per-item scores of one seed's evaluation; {seed} is replaced by each seed
    rows: dict[str, str] = field(default_factory=dict)
    # table name -> the row labels it shows, in order
    tables: dict[str, list[str]] = field(default_factory=dict)
    # probe label -> probe.json written by `python -m anessuite probe`; {seed} is replaced by each seed
    probes: dict[str, str] = field(default_factory=dict)
    # the pre-registered analysis' output (hypotheses.json), relative to the repository root
    analysis: str = ""
    # two-level bootstrap: replicates and the seed of its random draws
    bootstrap_iters: int = 2000
    bootstrap_seed: int = 0
    # accuracy of guessing, drawn on the charts (0.25: four options)
    chance: float | None = 0.25
    # the README whose first commit is the pre-registration (relative to the experiment folder)
    preregistration: str = "README.md"
    # a revised design registered later in that README: the text that opens its registration; the commit that first
    # added it is then the pre-registration commit ("" = the README's first commit)
    preregistration_marker: str = ""


def load_scores(path: Path) -> list[tuple[str, str, float]]:
    """(language, level, correct) of every item of one evaluation's scored.jsonl."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (has this stage been evaluated?)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["language"], r["level"], float(r["correct"])) for r in rows]


def _cells(items: Sequence[tuple[str, str, float]]) -> dict[tuple[str, str], list[float]]:
    cells: dict[tuple[str, str], list[float]] = {}
    for lang, level, value in items:
        cells.setdefault((lang, level), []).append(value)
        cells.setdefault((lang, "total"), []).append(value)
    return cells


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def pool_row(per_seed: Sequence[Sequence[tuple[str, str, float]]], iters: int, seed: int) -> dict[str, Any]:
    """Seed mean per language x level (and Total, and Avg. = mean of the language totals) with a 95% interval
    from resampling seeds, then items within each drawn seed."""
    cells = [_cells(items) for items in per_seed]
    keys = sorted({key for c in cells for key in c})
    point = {key: _mean([_mean(c[key]) for c in cells if key in c]) for key in keys}
    rng = random.Random(seed)
    draws: dict[tuple[str, str], list[float]] = {key: [] for key in keys}
    avg_draws: list[float] = []
    for _ in range(iters):
        chosen = [cells[rng.randrange(len(cells))] for _ in cells]
        replicate = {}
        for key in keys:
            means = []
            for c in chosen:
                values = c.get(key)
                if values:
                    means.append(_mean([values[rng.randrange(len(values))] for _ in values]))
            replicate[key] = _mean(means)
            draws[key].append(replicate[key])
        avg_draws.append(
            _mean([replicate[(lang, "total")] for lang in LANGS if (lang, "total") in replicate])
        )

    def interval(values: list[float]) -> list[float]:
        ordered = sorted(values)
        return [ordered[int(0.025 * (len(ordered) - 1))], ordered[int(0.975 * (len(ordered) - 1))]]

    by_language: dict[str, Any] = {}
    for (lang, level), value in point.items():
        entry = by_language.setdefault(lang, {"ci95": {}, "per_seed": {}})
        entry[level] = value
        entry["ci95"][level] = interval(draws[(lang, level)])
        entry["per_seed"][level] = [_mean(c[(lang, level)]) for c in cells if (lang, level) in c]
    totals = [point[(lang, "total")] for lang in LANGS if (lang, "total") in point]
    return {
        "by_language": by_language,
        "avg": _mean(totals),
        "avg_ci95": interval(avg_draws),
        "seeds": len(cells),
        "n_items": [len(items) for items in per_seed],
    }


def _probe_summary(path: Path) -> dict[str, Any]:
    report = json.loads(path.read_text(encoding="utf-8"))
    return {key: value for key, value in report.items() if key != "per_statement"}


def plot_probes(probes: dict[str, list[dict[str, Any]]], path: Path) -> Path | None:
    """Knowledge-probe accuracy per language and wording (bars: mean over the reports of each label, points: each
    report), with the chance level of the probe."""
    # matplotlib is heavy (~0.35 s with pyplot) and only figures need it
    import matplotlib

    matplotlib.use("Agg")
    # pyplot only after the non-interactive backend is chosen above
    import matplotlib.pyplot as plt

    shown = {label: reports for label, reports in probes.items() if reports}
    if not shown:
        return None
    groups = sorted(
        {key for reports in shown.values() for r in reports for key in r["summary"]["by_phrasing"]}
    )
    width = 0.8 / len(shown)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(groups) + 1), 3.6))
    for index, (label, reports) in enumerate(shown.items()):
        offset = (index - (len(shown) - 1) / 2) * width
        values = [[r["summary"]["by_phrasing"][g]["accuracy"] for r in reports] for g in groups]
        ax.bar(
            [i + offset for i in range(len(groups))], [sum(v) / len(v) for v in values], width, label=label
        )
        for i, seed_values in enumerate(values):
            ax.plot([i + offset] * len(seed_values), seed_values, "k.", markersize=4)
    chance = next(iter(shown.values()))[0]["summary"]["all"]["chance"]
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g.replace("/", " ") for g in groups])
    ax.set_ylim(0, 1)
    ax.set_ylabel("true statement ranked first")
    ax.set_title("knowledge probe: the true fact against its swapped versions")
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(shown) + 1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def provenance(spec: AnessuiteExperimentSpec, folder: Path) -> dict[str, Any]:
    """The pre-registration commit and when the runs' first file was written (the order the issue asks for)."""
    readme = folder / spec.preregistration
    if spec.preregistration_marker:
        # the commits that changed how often the marker occurs, newest first: the last one added it
        first = _git(
            "log", "-S", spec.preregistration_marker, "--format=%H %cI", "--", str(readme)
        ).splitlines()
    else:
        first = _git("log", "--diff-filter=A", "--format=%H %cI", "--", str(readme)).splitlines()
    runs = Path(spec.runs_dir)
    written = [
        p.stat().st_mtime
        for p in runs.rglob("*")
        if p.is_file() and p.parts[len(runs.parts)] not in ("world", "base-scratch", "stages", "logs")
    ]
    stages = sorted((runs / "stages").glob("*.done"), key=lambda p: p.stat().st_mtime)
    return {
        "preregistration_commit": first[-1].split()[0] if first else None,
        "preregistration_committed_at": first[-1].split()[1] if first else None,
        "first_run_file_written_at": _iso(min(written)) if written else None,
        "last_stage_finished_at": _iso(stages[-1].stat().st_mtime) if stages else None,
        **wall_clock(runs / "logs" / "timings.jsonl"),
    }


def summarize(spec: AnessuiteExperimentSpec, folder: Path, _runs: list[PlannedRun]) -> Path:
    out = folder / spec.groups[spec.group].out
    out.mkdir(parents=True, exist_ok=True)
    pooled: dict[str, Any] = {}
    # a spec that shows fewer tables than its base (anessuite-table3 over the miniature) pools only their rows
    shown_rows = {label for labels in spec.tables.values() for label in labels}
    for label, pattern in spec.rows.items():
        if spec.tables and label not in shown_rows:
            continue
        paths = [Path(pattern.format(seed=seed)) for seed in spec.seeds]
        if not all(p.is_file() for p in paths):
            logger.warning(
                "row %s: %d of %d seeds evaluated, left out",
                label,
                sum(p.is_file() for p in paths),
                len(paths),
            )
            continue
        pooled[label] = pool_row([load_scores(p) for p in paths], spec.bootstrap_iters, spec.bootstrap_seed)
    tables_md = []
    for name, labels in spec.tables.items():
        shown = {label: pooled[label] for label in labels if label in pooled}
        if not shown:
            continue
        md = write_table3(out, name, shown)
        plot_levels(
            shown,
            out / f"{name}_levels.png",
            title=f"{name}: accuracy by level, mean of {len(spec.seeds)} seeds, 95% CI",
            chance=spec.chance,
        )
        # the block shows the main table; the per-language intervals stay in the table file
        main_table = md.read_text(encoding="utf-8").split("\nPer language")[0].rstrip()
        tables_md.append(
            f"**{name}** (`{md.name}` with 95% intervals per language and level, chart `{name}_levels.png`)\n\n"
            f"{main_table}\n"
        )
    probes = {}
    for label, pattern in spec.probes.items():
        paths = [Path(pattern.format(seed=seed)) for seed in (spec.seeds if "{seed}" in pattern else [None])]
        probes[label] = [_probe_summary(p) for p in paths if p.is_file()]
    timeline_chart = plot_stage_timeline(
        timings(Path(spec.runs_dir) / "logs" / "timings.jsonl"), out / "stages.png"
    )
    probe_chart = plot_probes(probes, out / "probes.png")
    if probe_chart is not None:
        tables_md.append(_probe_table(probes) + f"\nChart: `{probe_chart.name}`.\n")
    analysis_path = Path(spec.analysis) if spec.analysis else None
    analysis = (
        json.loads(analysis_path.read_text(encoding="utf-8"))
        if analysis_path and analysis_path.is_file()
        else None
    )
    body = {
        "experiment": folder.name,
        "seeds": spec.seeds,
        "rows": pooled,
        "probes": probes,
        "hypotheses": analysis,
        "timeline": provenance(spec, folder),
    }
    path = write_results_json(out / "results.json", body)
    written = json.loads(path.read_text(encoding="utf-8"))["provenance"]
    timeline = body["timeline"]
    lines = [
        f"Written {written.get('written_at')} by `python -m anessuite experiment` (git "
        f"{str(written.get('git.sha', '?'))[:10]}, {written.get('host.cpus')} CPUs). Pre-registration commit "
        f"{str(timeline['preregistration_commit'])[:10]} at {timeline['preregistration_committed_at']}; first run file "
        f"written at {timeline['first_run_file_written_at']}. Seeds {spec.seeds}; "
        f"source `{out.relative_to(folder)}/results.json`."
        + (
            f" Stage runs: {timeline['stage_minutes_total']} min in all, {timeline['span_minutes']} min from the "
            f"first start to the last end (`{spec.runs_dir}/logs/timings.jsonl`, chart `{timeline_chart.name}`)."
            if "span_minutes" in timeline and timeline_chart is not None
            else ""
        ),
        "",
        *tables_md,
    ]
    if analysis:
        lines += ["**Pre-registered hypotheses** (`hypotheses.json`):", ""]
        lines += [_verdict_line(name, verdict) for name, verdict in _verdicts(analysis)]
    update_last_run(folder / "README.md", "\n".join(lines))
    return path


def _probe_table(probes: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: probe accuracy and mean margin (nats) per label, language and wording, mean over reports."""
    lines = [
        "**Knowledge probe** (true fact ranked first among its swapped versions; mean margin in nats)",
        "",
        "| model | reports | " + " | ".join(["EN corpus", "EN unseen", "ZH corpus", "ZH unseen"]) + " |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    keys = ["en/corpus", "en/heldout", "zh/corpus", "zh/heldout"]
    for label, reports in probes.items():
        if not reports:
            continue
        cells = []
        for key in keys:
            entries = [r["summary"]["by_phrasing"].get(key) for r in reports]
            entries = [e for e in entries if e]
            if not entries:
                cells.append("–")
                continue
            accuracy = sum(e["accuracy"] for e in entries) / len(entries)
            margin = sum(e["mean_margin"] for e in entries) / len(entries)
            cells.append(f"{accuracy:.2f} ({margin:+.2f})")
        lines.append(f"| {label} | {len(reports)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _verdict_line(name: str, verdict: dict[str, Any]) -> str:
    interval = verdict.get("ci95")
    shown = f", 95% CI [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else ""
    held = "held" if verdict["held"] else "**did not hold**"
    return f"- {name}: {held} (estimate {verdict['estimate']:+.3f}{shown})"


def _verdicts(analysis: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, value) for name, value in analysis.items() if isinstance(value, dict) and "held" in value]


def main(argv: Sequence[str] | None = None) -> int:
    return experiment_main(
        argv,
        prog="python -m anessuite experiment",
        cli="anessuite",
        arm_schema=PipelineConfig,
        summarize=summarize,
        spec_schema=AnessuiteExperimentSpec,
    )


if __name__ == "__main__":
    raise SystemExit(main())
