"""One picture per run: what ``python -m rexrag train`` and ``evaluate`` leave next to their numbers.

``plot_training_run(run_dir)`` reads the run folder the trainer writes (``metrics.jsonl``, one line per step;
``heldout_curve.jsonl``, the greedy held-out EM curve; ``eval.json``, the final evaluation) and draws four panels
into ``run_dir/run.png``: reward (mean, with a band of +- one standard deviation over the step's rollouts),
training accuracy, the held-out EM curve (with the final evaluation's EM as a point), and the probe statistics of
REX-RAG (probes spawned and kept per step, keep ratio, kept-probe accuracy, dead-end rate). A GRPO run has no
probes; its fourth panel shows the share of groups whose rollouts all scored the same (no learning signal).

``plot_evaluation(scores, path)`` draws EM and F1 per data source and the unweighted average of an ``eval.json``.

Comparing several runs is ``make compare`` (``rlcore.compare``); these plots are for looking at one run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["plot_evaluation", "plot_training_run", "read_jsonl_points"]

PROBE_COUNTS = ("rexrag/probes_spawned", "rexrag/probes_kept")
PROBE_RATES = ("rexrag/keep_ratio", "rexrag/probe_accuracy_kept", "rexrag/dead_end_rate")


def read_jsonl_points(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a metrics file, in order; a line cut off by a crash (the last one) is skipped."""
    if not path.is_file():
        return []
    points = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "step" in value:
            points.append(value)
    return points


def _series(points: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pairs = [(float(p["step"]), float(p[key])) for p in points if isinstance(p.get(key), int | float)]
    return [s for s, _ in pairs], [v for _, v in pairs]


def _pyplot():
    # heavy and only needed when a plot is written
    import matplotlib

    matplotlib.use("Agg")
    # pyplot only after the non-interactive backend is chosen above
    import matplotlib.pyplot as plt

    return plt


def plot_training_run(run_dir: str | Path, title: str | None = None) -> Path | None:
    """Write ``run_dir/run.png``; returns its path, or None when the run logged no step yet."""
    run_dir = Path(run_dir)
    steps = read_jsonl_points(run_dir / "metrics.jsonl")
    if not steps:
        logger.warning("no metrics.jsonl records in %s: no run plot", run_dir)
        return None
    curve = read_jsonl_points(run_dir / "heldout_curve.jsonl")
    final = json.loads((run_dir / "eval.json").read_text()) if (run_dir / "eval.json").is_file() else None
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    reward_ax, acc_ax, em_ax, probe_ax = axes.flat

    x, mean = _series(steps, "reward/mean")
    _, std = _series(steps, "reward/std")
    reward_ax.plot(x, mean, color="tab:blue", label="mean")
    if len(std) == len(mean):
        lower = [m - s for m, s in zip(mean, std, strict=True)]
        upper = [m + s for m, s in zip(mean, std, strict=True)]
        reward_ax.fill_between(x, lower, upper, color="tab:blue", alpha=0.2, label="+- std over rollouts")
    reward_ax.set_title("Reward")
    reward_ax.legend(loc="best", fontsize=8)

    for key, label, style in (
        ("accuracy", "all rollouts", "-"),
        ("rexrag/orig_accuracy", "original rollouts", "--"),
    ):
        x, values = _series(steps, key)
        if values:  # dashed: the two coincide when no probe was kept
            acc_ax.plot(x, values, linestyle=style, label=label)
    acc_ax.set_title("Training accuracy (EM of sampled answers)")
    acc_ax.set_ylim(-0.02, 1.02)
    if acc_ax.get_legend_handles_labels()[0]:
        acc_ax.legend(loc="best", fontsize=8)

    x, em = _series(curve, "heldout/em")
    if em:
        em_ax.plot(x, em, marker="o", label="held-out EM (greedy)")
    if final is not None:
        em_ax.scatter(
            [steps[-1]["step"]], [final["average_em"]], color="tab:red", zorder=3, label="final eval EM"
        )
    em_ax.set_title("EM curve")
    em_ax.set_ylim(-0.02, 1.02)
    if em_ax.get_legend_handles_labels()[0]:
        em_ax.legend(loc="best", fontsize=8)
    else:
        em_ax.text(
            0.5, 0.5, "no held-out curve (heldout_curve.every=0)", ha="center", transform=em_ax.transAxes
        )

    if any(key in point for point in steps for key in PROBE_COUNTS):
        for key in PROBE_COUNTS:
            x, values = _series(steps, key)
            probe_ax.plot(x, values, drawstyle="steps-mid", label=key.split("/")[1])
        probe_ax.set_ylabel("probes per step")
        rates_ax = probe_ax.twinx()
        for key, style in zip(PROBE_RATES, (":", "--", "-."), strict=True):
            x, values = _series(steps, key)
            rates_ax.plot(
                x, values, linestyle=style, color="gray" if "keep" in key else None, label=key.split("/")[1]
            )
        rates_ax.set_ylim(-0.02, 1.02)
        rates_ax.set_ylabel("rate")
        handles = probe_ax.get_legend_handles_labels()[0] + rates_ax.get_legend_handles_labels()[0]
        probe_ax.legend(handles=handles, loc="best", fontsize=8)
        probe_ax.set_title("Probe statistics (REX-RAG)")
    else:
        x, values = _series(steps, "groups/zero_variance_frac")
        probe_ax.plot(x, values, color="tab:gray")
        probe_ax.set_ylim(-0.02, 1.02)
        probe_ax.set_title("Groups with zero reward variance (no probes: GRPO)")
    for ax in axes.flat:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title or run_dir.name)
    path = run_dir / "run.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    logger.info("run plot: %s", path)
    return path


def plot_evaluation(scores: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Bar chart of EM and F1 per data source plus the average (the layout of ``eval.json``)."""
    path = Path(path)
    sources = sorted(scores.get("by_source", {}))
    names = [*sources, "average"]
    em = [scores["by_source"][s]["em"] for s in sources] + [scores["average_em"]]
    f1 = [scores["by_source"][s].get("f1", float("nan")) for s in sources] + [
        scores.get("average_f1", float("nan"))
    ]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(names) + 2), 4), constrained_layout=True)
    positions = range(len(names))
    ax.bar([p - 0.2 for p in positions], em, width=0.4, label="EM")
    ax.bar([p + 0.2 for p in positions], f1, width=0.4, label="F1")
    for position, value in zip(positions, em, strict=True):
        ax.text(position - 0.2, value + 0.01, f"{value:.2f}", ha="center", fontsize=8)
    ax.set_xticks(
        list(positions), [f"{n}\n(n={scores['by_source'][n]['n']})" if n in sources else n for n in names]
    )
    ax.set_ylim(0, 1.05)
    ax.set_title(title or "evaluation")
    ax.legend(loc="best", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    logger.info("evaluation plot: %s", path)
    return path
