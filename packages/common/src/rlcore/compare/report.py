"""Side-by-side summary of MLflow runs: provenance, config differences, final and best metric values.

Everything here is pure (RunRecord in, dicts and markdown out), so it is tested without a store.

Best value of a metric: its maximum when higher is better (reward, EM, F1, accuracy, score), its minimum
when lower is better (loss, KL, dead-end rate, error, perplexity, time); metrics whose direction is not
known (entropy, learning rate, lengths, counts) have no "best", only a final value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rlcore.compare.plots import identical_curves
from rlcore.compare.runs import MetricPoint, RunRecord

__all__ = [
    "PROVENANCE_TAGS",
    "MetricSummary",
    "best_runs",
    "metric_direction",
    "summarize_metric",
    "config_differences",
    "provenance_rows",
    "render_markdown",
    "format_value",
]

# (row label, tag names in order of preference); the first tag present on a run is shown.
PROVENANCE_TAGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("git sha", ("git.sha", "mlflow.source.git.commit")),
    ("dirty", ("git.dirty",)),
    ("config hash", ("config.hash",)),
    ("seeds", ("seeds",)),
    ("method", ("method",)),
    ("parent run", ("mlflow.parentRunId",)),
)
# Config params that hold a run's seed, for runs whose `seeds` tag is missing.
SEED_PARAMS = ("train.seed", "seed", "grpo.seed", "world.seed")
# More tags shown only when they differ between runs (software and hardware drift).
_DRIFT_TAG_PREFIXES = ("version.", "torch.cuda", "host.gpus", "python.version")

_SEP = r"(?:^|[/_.\-])"
_END = r"(?:$|[/_.\-])"
_LOWER_IS_BETTER = re.compile(
    rf"loss|{_SEP}kl{_END}|kl_div|dead[_\-]?end|error|{_SEP}err{_END}|perplexity|{_SEP}ppl{_END}"
    rf"|latency|{_SEP}(?:time|seconds|duration|wall){_END}|(?<!per)_m?s$"
)
_HIGHER_IS_BETTER = re.compile(
    rf"reward|{_SEP}(?:em|f1|acc|accuracy|exact_match|average_em|score|success|pass|recall|precision"
    rf"|throughput|qps){_END}|_per_s(?:ec)?$"
)
_SPREAD = re.compile(rf"{_SEP}(?:std|stddev|var|variance){_END}")
_MISSING = "—"
# "Best" is marked only when the best value beats the next run by more than this relative margin (or, near zero,
# by more than _BEST_ATOL): two runs whose KL differs by 1e-14 are tied, not one better than the other.
BEST_RTOL = 1e-3
_BEST_ATOL = 1e-9
ARROWS = {"max": "↑", "min": "↓", None: "·"}


def metric_direction(key: str) -> str | None:
    """``"max"`` if higher is better, ``"min"`` if lower is better, None when neither (neutral).

    A spread (``*/std``, ``*_std``, ``*/var``) is neutral whatever it spreads: a larger reward spread is not a better
    run. Lower-is-better patterns are checked next, so ``reward_loss`` counts as a loss and any KL as lower.
    """
    lowered = key.lower()
    if _SPREAD.search(lowered):
        return None
    if _LOWER_IS_BETTER.search(lowered):
        return "min"
    if _HIGHER_IS_BETTER.search(lowered):
        return "max"
    return None


@dataclass(frozen=True)
class MetricSummary:
    final: float  # value at the last logged step (latest timestamp on ties)
    final_step: int
    best: float | None  # None when the direction is unknown
    best_step: int | None
    num_points: int


def summarize_metric(history: Sequence[MetricPoint], direction: str | None) -> MetricSummary:
    """Final and best value of one metric history (sorted by step, then timestamp). NaNs never win "best"."""
    if not history:
        raise ValueError("empty metric history")
    last = history[-1]
    best_point = None
    if direction is not None:
        finite = [p for p in history if not math.isnan(p.value)]
        if finite:
            sign = 1.0 if direction == "max" else -1.0
            # highest signed value; among equal values the earliest step (the first time the run got there)
            best_point = max(finite, key=lambda p: (sign * p.value, -p.step))
    return MetricSummary(
        final=last.value,
        final_step=last.step,
        best=best_point.value if best_point else None,
        best_step=best_point.step if best_point else None,
        num_points=len(history),
    )


def format_value(value: float | None) -> str:
    if value is None:
        return _MISSING
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    if float(value).is_integer() and abs(value) < 1e5:
        return str(int(value))
    return f"{value:.4f}"


def config_differences(runs: Sequence[RunRecord]) -> tuple[dict[str, list[str | None]], int]:
    """Params whose value differs across runs (None where a run lacks the param), and how many are equal."""
    keys = sorted(set().union(*(run.params for run in runs)))
    differing: dict[str, list[str | None]] = {}
    identical = 0
    for key in keys:
        values = [run.params.get(key) for run in runs]
        if len(set(values)) > 1:
            differing[key] = values
        else:
            identical += 1
    return differing, identical


def provenance_rows(runs: Sequence[RunRecord]) -> list[tuple[str, list[str]]]:
    """Rows of the run table: identity, status, timing, provenance tags, and drifting environment tags."""
    rows: list[tuple[str, list[str]]] = [
        ("run id", [run.run_id for run in runs]),
        ("status", [run.status for run in runs]),
        ("duration", [_duration(run) for run in runs]),
    ]
    for label, names in PROVENANCE_TAGS:
        values = [
            next((run.tags[n] for n in names if run.tags.get(n) not in (None, "none")), None) for run in runs
        ]
        if label == "seeds":  # runs logged without the tag still carry their seed in the config
            values = [v if v is not None else _param_seed(run) for v, run in zip(values, runs, strict=True)]
        if label in ("method", "parent run") and all(v is None for v in values):
            continue  # optional rows, shown only when some run has them
        if label == "git sha":
            values = [v[:12] if v else v for v in values]
        if label == "parent run":
            values = [v[:8] if v else v for v in values]
        rows.append((label, [v if v is not None else _MISSING for v in values]))
    drift_keys = sorted({k for run in runs for k in run.tags if k.startswith(_DRIFT_TAG_PREFIXES)})
    for key in drift_keys:
        values = [run.tags.get(key) for run in runs]
        if len(set(values)) > 1:
            rows.append((key, [v if v is not None else _MISSING for v in values]))
    return rows


def _param_seed(run: RunRecord) -> str | None:
    for key in SEED_PARAMS:
        if key in run.params:
            return run.params[key]
    return None


def _duration(run: RunRecord) -> str:
    if run.start_time is None or run.end_time is None:
        return _MISSING
    seconds = max(0, (run.end_time - run.start_time) // 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _cell(text: str, limit: int = 60) -> str:
    text = text.replace("|", r"\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _tied(a: float, b: float) -> bool:
    return abs(a - b) <= BEST_RTOL * max(abs(a), abs(b)) + _BEST_ATOL


def best_runs(values: Sequence[float | None], direction: str | None) -> set[int]:
    """Indices of the runs to mark best: those tied (within tolerance) with the best value, and only when some
    other run is beyond the tolerance. Empty for a neutral metric, fewer than two values, or all runs tied."""
    finite = {i: v for i, v in enumerate(values) if v is not None and not math.isnan(v)}
    if direction is None or len(finite) < 2:
        return set()
    best = max(finite.values()) if direction == "max" else min(finite.values())
    leaders = {i for i, v in finite.items() if _tied(v, best)}
    return leaders if len(leaders) < len(finite) else set()


def _metric_rows(runs: Sequence[RunRecord], which: str) -> list[list[str]]:
    """One row per metric key; the best run of the row in bold (by direction; none when unknown)."""
    rows = []
    for key in sorted(set().union(*(run.metrics for run in runs))):
        direction = metric_direction(key)
        if which == "best" and direction is None:
            continue
        summaries = [
            summarize_metric(run.metrics[key], direction) if key in run.metrics else None for run in runs
        ]
        values = [None if s is None else (s.final if which == "final" else s.best) for s in summaries]
        leaders = best_runs(values, direction)
        cells = []
        for index, (summary, value) in enumerate(zip(summaries, values, strict=True)):
            if summary is None:
                cells.append(_MISSING)
                continue
            step = summary.final_step if which == "final" else summary.best_step
            text = f"{format_value(value)} @{step}"
            cells.append(f"**{text}**" if index in leaders else text)
        rows.append([f"{key} {ARROWS[direction]}", *cells])
    return rows


def render_markdown(
    experiment: str,
    runs: Sequence[RunRecord],
    tracking_uri: str,
    plots: Sequence[tuple[str, str, Sequence[str]]] = (),
    generated_at: str = "",
) -> str:
    """The whole report. ``plots``: (title, png file name relative to the report, metric keys in it)."""
    header = ["", *[run.label for run in runs]]
    lines = [f"# Run comparison: {experiment}", ""]
    lines.append(
        f"{len(runs)} runs from `{tracking_uri}`"
        + (f", generated {generated_at}" if generated_at else "")
        + ". Values are `value @step`; each metric states its direction (↑ higher is better, ↓ lower is better, "
        f"· neither: spreads, entropy, lengths, counts); **bold** marks the best run of a row, only when it beats "
        f"another run by more than {BEST_RTOL:.1%} (relative); — means the run did not log it."
    )
    lines += ["", "## Runs and provenance", ""]
    lines += _table(header, [[label, *values] for label, values in provenance_rows(runs)])

    differing, identical = config_differences(runs)
    lines += ["", "## Config differences", ""]
    if differing:
        lines += _table(
            ["parameter", *header[1:]],
            [[key, *[v if v is not None else _MISSING for v in values]] for key, values in differing.items()],
        )
        lines.append("")
    lines.append(
        f"{identical} parameters are identical across the runs (not shown)."
        if differing
        else f"All {identical} parameters are identical across the runs."
    )

    for which, title, explanation in (
        ("final", "Final metrics", "value at each run's last logged step"),
        (
            "best",
            "Best metrics",
            "best value over the run and the step it was reached; metrics without a "
            "known direction are left out",
        ),
    ):
        rows = _metric_rows(runs, which)
        lines += ["", f"## {title}", "", f"{explanation.capitalize()}.", ""]
        lines += _table(["metric", *header[1:]], rows) if rows else ["(no metrics)"]

    if plots:
        lines += ["", "## Curves", ""]
        for title, filename, keys in plots:
            lines += [
                f"### {title}",
                "",
                f"![{title}]({filename})",
                "",
                "Metrics: " + ", ".join(f"`{k}`" for k in keys),
                "",
            ]
            for key in keys:
                absent = [run.label for run in runs if key not in run.metrics]
                if absent:
                    lines.append(f"- `{key}` not logged by: {', '.join(absent)}")
                for group in identical_curves(runs, key):
                    lines.append(
                        f"- `{key}` is identical for {' = '.join(group)} (the lines lie on top of each other)"
                    )
            if lines[-1] != "":
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"
