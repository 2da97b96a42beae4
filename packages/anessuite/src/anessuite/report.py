"""Tables and charts from results.json: the paper's Table 3 / 4 / 5 layouts as markdown and CSV, and a
per-level bar chart (matplotlib, Agg backend, so it works headless)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from anessuite.mcq import LEVELS

__all__ = [
    "TABLE3_COLUMNS",
    "table3_row",
    "render_markdown",
    "render_csv",
    "write_tables",
    "plot_levels",
    "load_results",
    "update_readme",
]

_LEVEL_LABEL = {"system1": "Sys1", "system1.x": "Sys1.x", "system2": "Sys2"}
_LANG_LABEL = {"en": "EN", "zh": "ZH"}
TABLE3_COLUMNS = [
    f"{_LANG_LABEL[lang]} {label}" for lang in ("en", "zh") for label in (*_LEVEL_LABEL.values(), "Total")
]
TABLE3_COLUMNS.append("Avg.")


def load_results(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def table3_row(results: Mapping[str, Any]) -> dict[str, float | None]:
    """EN Sys1 / Sys1.x / Sys2 / Total, ZH Sys1 / Sys1.x / Sys2 / Total, Avg. (None where absent)."""
    row: dict[str, float | None] = {}
    for lang in ("en", "zh"):
        entry = results.get("by_language", {}).get(lang, {})
        for level in LEVELS:
            row[f"{_LANG_LABEL[lang]} {_LEVEL_LABEL[level]}"] = entry.get(level)
        row[f"{_LANG_LABEL[lang]} Total"] = entry.get("total")
    row["Avg."] = results.get("avg")
    return row


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], digits: int = 2) -> str:
    """A GitHub markdown table; ``rows`` are mappings holding every column (first column = row label)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(col), digits) for col in columns) + " |")
    return "\n".join(lines) + "\n"


def render_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(col) is None else row.get(col) for col in columns])
    return buffer.getvalue()


def write_tables(
    out_dir: str | Path, stem: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], digits: int = 2
) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out_dir / f"{stem}.md", out_dir / f"{stem}.csv"
    md_path.write_text(render_markdown(rows, columns, digits), encoding="utf-8")
    csv_path.write_text(render_csv(rows, columns), encoding="utf-8")
    return md_path, csv_path


def plot_levels(results_by_model: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Grouped bars: x = language x level (+ Total), one bar per model, 95% CI as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: list[tuple[str, str, str]] = []
    for lang in ("en", "zh"):
        if any(lang in r.get("by_language", {}) for r in results_by_model.values()):
            for level in (*LEVELS, "total"):
                label = _LEVEL_LABEL.get(level, "Total")
                groups.append((lang, level, f"{_LANG_LABEL[lang]}\n{label}"))
    models = list(results_by_model)
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) + 1), 4.0))
    for index, model in enumerate(models):
        heights, errors_low, errors_high = [], [], []
        for lang, level, _ in groups:
            entry = results_by_model[model].get("by_language", {}).get(lang, {})
            value = entry.get(level)
            ci = (entry.get("ci95") or {}).get(level)
            heights.append(value if value is not None else 0.0)
            errors_low.append(value - ci[0] if value is not None and ci else 0.0)
            errors_high.append(ci[1] - value if value is not None and ci else 0.0)
        positions = [g + (index - (len(models) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(positions, heights, width, label=model, yerr=[errors_low, errors_high], capsize=2)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([label for _, _, label in groups])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    if title:
        ax.set_title(title)
    if len(models) > 1:
        ax.legend(fontsize="small", loc="upper right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


_LAST_RUN = re.compile(r"(<!-- last-run:start -->\n).*?(<!-- last-run:end -->)", re.S)


def update_readme(readme: str | Path, body: str) -> bool:
    """Replace the text between ``<!-- last-run:start -->`` and ``<!-- last-run:end -->`` in ``readme`` with
    ``body`` (so README numbers are written by the run, never typed in). Returns False when there are no markers."""
    path = Path(readme)
    if not path.exists():
        return False
    text = path.read_text(encoding="utf-8")
    if not _LAST_RUN.search(text):
        return False
    path.write_text(
        _LAST_RUN.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text), encoding="utf-8"
    )
    return True
