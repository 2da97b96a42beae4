"""The experiment driver's record of its stage runs (``<runs_dir>/logs/timings.jsonl``, written by
``rlcore.experiments``): minutes per run, the span, and a chart of what ran side by side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def timings(path: Path) -> list[dict[str, Any]]:
    """The driver's records of the runs that finished (``rlcore.experiments``: ``<runs_dir>/logs/timings.jsonl``),
    each with ``start`` and ``end`` in epoch seconds."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    found = []
    for record in records:
        if record.get("exit") == 0:
            start = datetime.fromisoformat(record["started_at"]).timestamp()
            found.append({**record, "start": start, "end": start + record["seconds"]})
    return found


def job_lanes(runs: Sequence[dict[str, Any]]) -> list[int]:
    """A lane per run (in start order, the lowest lane free at its start), so runs side by side get lanes 0, 1, ...;
    the started_at stamps are whole seconds, so a run may start up to a second before the one it follows ended."""
    ends: list[float] = []
    lanes = []
    for run in runs:
        lane = next((i for i, end in enumerate(ends) if end <= run["start"] + 1.0), None)
        if lane is None:
            lane = len(ends)
            ends.append(run["end"])
        else:
            ends[lane] = run["end"]
        lanes.append(lane)
    return lanes


def plot_stage_timeline(runs: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """One bar per stage run on its job's lane, minutes from the first start: what ran side by side, and for how
    long."""
    if not runs:
        return None
    # matplotlib is heavy (~0.35 s with pyplot) and only figures need it
    import matplotlib

    matplotlib.use("Agg")
    # pyplot only after the non-interactive backend is chosen above
    import matplotlib.pyplot as plt

    runs = sorted(runs, key=lambda run: run["start"])
    t0 = runs[0]["start"]
    lanes = job_lanes(runs)
    fig, ax = plt.subplots(figsize=(10.0, 1.2 + 0.7 * (max(lanes) + 1)))
    for run, lane in zip(runs, lanes, strict=True):
        left, width = (run["start"] - t0) / 60, run["seconds"] / 60
        ax.barh(lane, width, left=left, height=0.6, edgecolor="black", linewidth=0.5)
        if width >= 3:
            ax.text(
                left + width / 2, lane, f"{run['run']}\n{width:.0f} min", ha="center", va="center", fontsize=7
            )
    span = (max(run["end"] for run in runs) - t0) / 60
    ax.set_yticks(range(max(lanes) + 1))
    ax.set_yticklabels([f"job {lane + 1}" for lane in range(max(lanes) + 1)])
    ax.invert_yaxis()
    ax.set_xlabel("minutes from the first stage's start")
    ax.set_title(
        f"stage runs: {span:.0f} min from the first start to the last end (runs under 3 min unlabelled)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def wall_clock(path: Path) -> dict[str, Any]:
    """The driver's record of each stage run (rlcore.experiments): minutes per run, their sum, and the span from
    the first start to the last end (all invocations together, so a paused and resumed run counts its pause)."""
    runs = timings(path)
    if not runs:
        return {}
    starts = [run["start"] for run in runs]
    ends = [run["end"] for run in runs]
    return {
        "stage_minutes": {run["run"]: round(run["seconds"] / 60, 1) for run in runs},
        "stage_minutes_total": round(sum(run["seconds"] for run in runs) / 60, 1),
        "first_stage_started_at": iso(min(starts)),
        "span_minutes": round((max(ends) - min(starts)) / 60, 1),
    }


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")
