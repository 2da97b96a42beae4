"""Compare MLflow runs side by side: a markdown table (final and best metrics, config differences,
provenance) and overlaid curves as PNG.

    python -m rlcore.compare --experiment rexrag-train [--runs id,id] --out runs/compare/rexrag-train
    make compare EXPERIMENT=rexrag-train [RUNS=id,id]

    from rlcore.compare import compare_experiment
    result = compare_experiment("rexrag-train", "out/")    # result.markdown, result.plots
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlcore.compare.plots import group_metric_keys, plot_family
from rlcore.compare.report import (
    config_differences,
    metric_direction,
    provenance_rows,
    render_markdown,
    summarize_metric,
)
from rlcore.compare.runs import CompareError, RunRecord, default_tracking_uri, load_runs

__all__ = ["CompareError", "CompareResult", "compare_experiment", "compare_runs", "load_runs"]


@dataclass(frozen=True)
class CompareResult:
    markdown: Path  # comparison.md
    summary: Path  # comparison.json, the same numbers for scripts
    plots: list[Path]  # curves-<family>.png
    runs: list[RunRecord]


def _finite_or_text(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _summary_json(experiment: str, uri: str, runs: list[RunRecord], plots: list[Path]) -> dict[str, Any]:
    differing, identical = config_differences(runs)
    entries = []
    for run in runs:
        metrics = {}
        for key, history in run.metrics.items():
            direction = metric_direction(key)
            summary = summarize_metric(history, direction)
            metrics[key] = {
                "final": _finite_or_text(summary.final),
                "final_step": summary.final_step,
                "best": _finite_or_text(summary.best),
                "best_step": summary.best_step,
                "direction": direction,
                "num_points": summary.num_points,
            }
        entries.append(
            {
                "run_id": run.run_id,
                "name": run.name,
                "status": run.status,
                "params": run.params,
                "metrics": metrics,
            }
        )
    return {
        "experiment": experiment,
        "tracking_uri": uri,
        "runs": entries,
        "provenance": {label: values for label, values in provenance_rows(runs)},
        "config_differences": differing,
        "identical_params": identical,
        "plots": [p.name for p in plots],
    }


def compare_runs(
    experiment: str, runs: list[RunRecord], out_dir: str | Path, tracking_uri: str
) -> CompareResult:
    """Write comparison.md, comparison.json and one curves-<family>.png per metric family into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots: list[Path] = []
    plot_entries = []
    for title, slug, keys in group_metric_keys(runs):
        path = plot_family(runs, title, keys, out / f"curves-{slug}.png")
        plots.append(path)
        plot_entries.append((title, path.name, keys))
    text = render_markdown(
        experiment, runs, tracking_uri, plot_entries, generated_at=time.strftime("%Y-%m-%d %H:%M:%S")
    )
    markdown = out / "comparison.md"
    markdown.write_text(text, encoding="utf-8")
    summary = out / "comparison.json"
    summary.write_text(
        json.dumps(
            _summary_json(experiment, tracking_uri, runs, plots),
            indent=2,
            ensure_ascii=False,
            allow_nan=False,
        )
        + "\n",
        encoding="utf-8",
    )
    return CompareResult(markdown=markdown, summary=summary, plots=plots, runs=runs)


def compare_experiment(
    experiment: str,
    out_dir: str | Path,
    run_ids: list[str] | None = None,
    tracking_uri: str | None = None,
    max_runs: int = 50,
) -> CompareResult:
    """Load the runs of ``experiment`` from MLflow and write the comparison into ``out_dir``."""
    uri = tracking_uri or default_tracking_uri()
    runs = load_runs(experiment, run_ids=run_ids, tracking_uri=uri, max_runs=max_runs)
    return compare_runs(experiment, runs, out_dir, uri)
