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
from rlcore.experiments import update_last_run

__all__ = [
    "TABLE3_COLUMNS",
    "paper_rows",
    "paper_row_for",
    "table3_report",
    "write_table3",
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


def plot_levels(
    results_by_model: Mapping[str, Mapping[str, Any]],
    path: str | Path,
    title: str = "",
    chance: float | None = None,
) -> Path:
    """Grouped bars: x = language x level (+ Total), one bar per model, 95% CI as error bars; ``chance`` draws a
    dashed line at the accuracy of guessing."""
    # matplotlib is heavy (~0.35 s with pyplot) and only figures need it
    import matplotlib

    matplotlib.use("Agg")
    # pyplot only after the non-interactive backend is chosen above
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
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:g})")
    if title:
        ax.set_title(title)
    if len(models) > 1 or chance is not None:
        ax.legend(fontsize="small", loc="upper right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _model_key(name: str) -> str:
    """ "/models/Qwen2.5-7B-Instruct/", "Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b-instruct" -> one key."""
    base = name.rstrip("/").split("#")[-1].rsplit("/", 1)[-1]
    return re.sub(r"[^a-z0-9.]+", "", base.lower())


def paper_rows() -> dict[str, dict[str, Any]]:
    """The paper's reported accuracies (``paper_table3.json``, transcribed, unverified), by model key."""
    data = json.loads((Path(__file__).parent / "paper_table3.json").read_text(encoding="utf-8"))
    return {_model_key(row["model"]): row for row in data["rows"]}


def paper_row_for(label: str, results: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The paper row of the model behind a table row: matched on the row label or the evaluated model's name."""
    rows = paper_rows()
    names = [label, str(((results or {}).get("eval") or {}).get("model") or "")]
    return next((rows[_model_key(name)] for name in names if name and _model_key(name) in rows), None)


def _with_ci(value: Any, ci: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{value:.2f}"


def table3_report(per_model: Mapping[str, Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]], list[str]]:
    """Markdown (a Table 3 row per model, then per-language details) and the flat rows/columns for CSV/JSON.

    Main table: accuracy by language x level with our abstaining extraction, Avg., Avg. with the official-style
    extraction, the paper's Avg. when the model is one the paper reports, n, abstentions and truncations.
    Details: per language, every cell with its 95% CI, the official-style total, the paper's values, n by level.
    """
    papers = {name: paper_row_for(name, results) for name, results in per_model.items()}
    with_paper = any(papers.values())
    main_columns = ["Model", *TABLE3_COLUMNS, "Avg. (official extraction)"]
    main_columns += ["paper Avg."] if with_paper else []
    main_columns += ["n", "abstained", "truncated"]
    detail_columns = ["Model", "Lang", "Sys1", "Sys1.x", "Sys2", "Total", "Total (official extraction)"]
    detail_columns += ["paper Sys1 / Sys1.x / Sys2 / Total"] if with_paper else []
    detail_columns += ["n (Sys1 / Sys1.x / Sys2)", "abstained", "truncated"]
    main_rows, detail_rows, flat_rows = [], [], []
    for name, results in per_model.items():
        paper = papers[name] or {}
        overall = results.get("overall", {})
        row = {
            "Model": name,
            **table3_row(results),
            "Avg. (official extraction)": results.get("avg_official"),
        }
        row.update(
            {"paper Avg.": paper.get("avg"), "n": overall.get("n"), "abstained": overall.get("abstained")}
        )
        row["truncated"] = overall.get("truncated")
        main_rows.append(row)
        flat = dict(row)
        for lang, entry in results.get("by_language", {}).items():
            label = _LANG_LABEL[lang]
            ci = entry.get("ci95") or {}
            official = entry.get("official") or {}
            paper_cells = [paper.get(f"{lang}_{level}") for level in (*LEVELS, "total")]
            detail_rows.append(
                {
                    "Model": name,
                    "Lang": label,
                    **{_LEVEL_LABEL[level]: _with_ci(entry.get(level), ci.get(level)) for level in LEVELS},
                    "Total": _with_ci(entry.get("total"), ci.get("total")),
                    "Total (official extraction)": official.get("total"),
                    "paper Sys1 / Sys1.x / Sys2 / Total": " / ".join(_cell(v, 2) for v in paper_cells),
                    "n (Sys1 / Sys1.x / Sys2)": " / ".join(
                        str(n) for n in entry.get("n_by_level", {}).values()
                    ),
                    "abstained": entry.get("abstained"),
                    "truncated": entry.get("truncated"),
                }
            )
            for level in (*LEVELS, "total"):
                column = f"{label} {_LEVEL_LABEL.get(level, 'Total')}"
                low_high = ci.get(level) or [None, None]
                flat.update({f"{column} ci95 low": low_high[0], f"{column} ci95 high": low_high[1]})
                flat[f"{column} (official extraction)"] = official.get(level)
                flat[f"{column} paper"] = paper.get(f"{lang}_{level}")
            flat.update({f"{label} n": entry.get("n"), f"{label} abstained": entry.get("abstained")})
            flat[f"{label} truncated"] = entry.get("truncated")
        flat_rows.append(flat)
    markdown = render_markdown(main_rows, main_columns)
    if detail_rows:
        markdown += (
            "\nPer language (95% bootstrap CIs in brackets; our extraction abstains, the official-style one "
        )
        markdown += "never does):\n\n" + render_markdown(detail_rows, detail_columns)
    if with_paper:
        markdown += "\npaper: the AnesSuite paper's reported values (transcribed, unverified; see paper_table3.json).\n"
    flat_columns = list(dict.fromkeys(key for row in flat_rows for key in row))
    return markdown, flat_rows, flat_columns


def write_table3(out_dir: str | Path, stem: str, per_model: Mapping[str, Mapping[str, Any]]) -> Path:
    """``<stem>.md`` (the rendered report), ``<stem>.csv`` and ``<stem>.json`` (one flat row per model)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, rows, columns = table3_report(per_model)
    (out_dir / f"{stem}.md").write_text(markdown, encoding="utf-8")
    (out_dir / f"{stem}.csv").write_text(render_csv(rows, columns), encoding="utf-8")
    (out_dir / f"{stem}.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    return out_dir / f"{stem}.md"


def update_readme(readme: str | Path, body: str) -> bool:
    """Replace the text between ``<!-- last-run:start -->`` and ``<!-- last-run:end -->`` in ``readme`` with
    ``body`` (so README numbers are written by the run, never typed in). Returns False when there are no markers."""
    return update_last_run(Path(readme), body)
