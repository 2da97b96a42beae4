"""``python -m anessuite score``: re-score saved responses against a benchmark file.

Inputs: a benchmark (file or folder, any supported layout) and a JSONL of ``{"id", "response"}`` records
(optionally ``language``, ``key``, ``prediction``, ``num_tokens``, ``finish_reason``). Outputs in ``--out``:
``results.json`` (layout in docs/anessuite.md), ``scored.jsonl`` (one line per item with the extracted
letter), ``table.md`` / ``table.csv`` (Table 3 layout) and ``levels.png``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from anessuite.answers import extract_prediction
from anessuite.benchmark import benchmark_files, load_items
from anessuite.mcq import MCQItem
from anessuite.records import file_sha256, read_records, write_jsonl
from anessuite.report import plot_levels, write_table3
from anessuite.scoring import aggregate, match_responses, score_items
from rlcore.tracking import write_results_json

__all__ = ["score_to_dir", "run_score"]

logger = logging.getLogger(__name__)


def score_to_dir(
    items: Sequence[MCQItem],
    responses: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    model_name: str = "model",
    extra: Mapping[str, Any] | None = None,
    allow_partial: bool = False,
    bootstrap_iters: int = 1000,
    seed: int = 0,
    extract: Callable[[str, MCQItem], str | None] = extract_prediction,
) -> dict[str, Any]:
    """Score, aggregate and write every output file; returns the results dict."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    matched = match_responses(items, responses, allow_partial=allow_partial)
    scored = score_items(items, matched, extract)
    results = aggregate(scored, bootstrap_iters=bootstrap_iters, seed=seed)
    results["model"] = model_name
    results["coverage"] = {"answered": len(scored), "benchmark_items": len(items)}
    if extra:
        results.update(extra)
    write_results_json(out_dir / "results.json", results)
    write_jsonl(out_dir / "scored.jsonl", [row.to_dict() for row in scored])
    write_table3(out_dir, "table", {model_name: results})
    plot_levels({model_name: results}, out_dir / "levels.png", title=model_name)
    logger.info(
        "scored %d items: overall %.4f, avg %s, abstained %d -> %s",
        len(scored),
        results["overall"]["accuracy"] or 0.0,
        results["avg"],
        results["overall"]["abstained"],
        out_dir / "results.json",
    )
    return results


def run_score(
    benchmark: str | Path,
    responses: str | Path,
    out_dir: str | Path,
    task: str = "anesbench",
    languages: Sequence[str] | None = None,
    task_spec: str | Path | None = None,
    allow_partial: bool = False,
    bootstrap_iters: int = 1000,
    model_name: str | None = None,
) -> dict[str, Any]:
    items = load_items(benchmark, task=task, languages=languages, task_spec=task_spec)
    records = read_records(responses)
    hashes = {p.name: file_sha256(p, 16) for p in benchmark_files(benchmark)}
    extra = {
        "benchmark": {"path": str(benchmark), "sha256": hashes, "task": task},
        "responses": {"path": str(responses), "sha256": file_sha256(responses, 16)},
    }
    return score_to_dir(
        items,
        records,
        out_dir,
        model_name=model_name or Path(responses).stem,
        extra=extra,
        allow_partial=allow_partial,
        bootstrap_iters=bootstrap_iters,
    )


def print_summary(results: Mapping[str, Any]) -> str:
    """A short human summary for the CLI."""
    lines = [
        f"overall accuracy {results['overall']['accuracy']} over {results['overall']['n']} items "
        f"({results['overall']['abstained']} abstained)"
    ]
    for lang, entry in results["by_language"].items():
        lines.append(
            f"  {lang}: total {entry['total']}  sys1 {entry['system1']}  sys1.x {entry['system1.x']}  "
            f"sys2 {entry['system2']}  (n={entry['n']})"
        )
    lines.append(f"  avg (mean of language totals): {results['avg']}")
    return "\n".join(lines)
