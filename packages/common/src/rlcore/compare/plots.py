"""Overlaid training curves of several runs, one PNG per metric family (matplotlib, Agg backend).

Families are found by name, so any recipe's metrics are picked up: reward, answer quality (EM / F1 /
accuracy), KL, entropy and dead-end rate. Each metric key of a family gets one panel; every run is one
line with the same colour, line style and marker on every panel, so identical curves do not hide each other. A
run that did not log a key is simply absent from that panel.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from rlcore.compare.runs import RunRecord

__all__ = ["METRIC_FAMILIES", "group_metric_keys", "identical_curves", "plot_family", "run_style"]

_SEP = r"(?:^|[/_.\-])"
_END = r"(?:$|[/_.\-])"
# (title, file slug, pattern on the lower-cased key); the first family that matches a key takes it, so
# `reward/kl_penalty` is a KL curve and `val/em_dead_end` a dead-end curve. Reports list them in _DISPLAY_ORDER.
METRIC_FAMILIES: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("Dead-end rate", "dead_end", re.compile(r"dead[_\-]?end")),
    ("KL divergence", "kl", re.compile(rf"{_SEP}kl{_END}|kl_div")),
    ("Entropy", "entropy", re.compile(r"entropy")),
    ("Reward", "reward", re.compile(r"reward")),
    (
        "EM / F1 / accuracy",
        "accuracy",
        re.compile(rf"{_SEP}(?:em|f1|acc|accuracy|exact_match|average_em){_END}"),
    ),
)
_DISPLAY_ORDER = ("reward", "accuracy", "kl", "entropy", "dead_end")
_MAX_PANELS = 12
# Each run gets its own colour, line style and marker, so runs with identical curves stay visible (a dashed
# line over a solid one) instead of the last one hiding the others; the report also names identical curves.
_LINE_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P")


def run_style(run_index: int) -> dict[str, object]:
    """Colour, line style and marker of the run at ``run_index`` (the same on every panel)."""
    return {
        "linestyle": _LINE_STYLES[run_index % len(_LINE_STYLES)],
        "marker": _MARKERS[run_index % len(_MARKERS)],
        "linewidth": 2.2 - 0.3 * (run_index % len(_LINE_STYLES)),
    }


def identical_curves(runs: Sequence[RunRecord], key: str) -> list[list[str]]:
    """Groups (of two or more run labels) whose ``key`` histories are exactly equal, step for step."""
    groups: dict[tuple, list[str]] = {}
    for run in runs:
        history = run.metrics.get(key)
        if history:
            groups.setdefault(tuple((p.step, p.value) for p in history), []).append(run.label)
    return [labels for labels in groups.values() if len(labels) > 1]


def group_metric_keys(runs: Sequence[RunRecord]) -> list[tuple[str, str, list[str]]]:
    """``[(title, slug, keys)]`` for the families that at least one run logged, keys sorted."""
    keys = sorted(set().union(*(run.metrics for run in runs)))
    found = {}
    for title, slug, pattern in METRIC_FAMILIES:
        members = [k for k in keys if pattern.search(k.lower())]
        keys = [k for k in keys if k not in members]
        if members:
            found[slug] = (title, slug, members)
    return [found[slug] for slug in _DISPLAY_ORDER if slug in found]


def plot_family(runs: Sequence[RunRecord], title: str, keys: Sequence[str], path: Path) -> Path:
    """Write one PNG with a panel per key (at most 12) and one line per run; returns ``path``."""
    # matplotlib is heavy (~0.35 s with pyplot) and only figures need it
    import matplotlib

    matplotlib.use("Agg", force=True)
    # pyplot only after the non-interactive backend is chosen above
    import matplotlib.pyplot as plt

    keys = list(keys)[:_MAX_PANELS]
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.6 * nrows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for index, key in enumerate(keys):
        ax = axes[index // ncols][index % ncols]
        for run_index, run in enumerate(runs):
            history = run.metrics.get(key)
            if not history:
                continue
            steps = [p.step for p in history]
            values = [p.value for p in history]
            style = run_style(run_index)
            ax.plot(
                steps,
                values,
                label=run.label,
                color=colours(run_index % 10),
                linestyle=style["linestyle"],
                linewidth=style["linewidth"],
                marker=style["marker"],
                markevery=max(1, len(history) // 12),
                markersize=4.5 - 0.5 * (run_index % 3),
                fillstyle="none" if run_index % 2 else "full",
            )
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for index in range(len(keys), nrows * ncols):
        axes[index // ncols][index % ncols].axis("off")
    handles, labels = [], []
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.suptitle(title)
    if handles:
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncol=min(4, len(labels)),
            fontsize=9,
            bbox_to_anchor=(0.5, 0.0),
        )
    legend_rows = math.ceil(len(labels) / 4) if labels else 0
    fig.tight_layout(rect=(0, 0.04 + 0.04 * legend_rows, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
