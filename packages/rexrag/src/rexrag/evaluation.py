"""Scoring QA predictions per data source and rendering the paper's results table.

The paper's metric is exact match per benchmark and ``Avg.`` = the unweighted mean over benchmarks. Predictions
are either a model's full response (the last complete ``<answer>`` block is scored; a response with answer tags
but no complete block scores 0) or the bare answer string.

Output layout of :func:`score_records` (read by other tools; see docs/rexrag.md)::

    {"average_em": float, "average_f1": float, "n": int,
     "by_source": {"<data_source>": {"em": 0..1, "f1": 0..1, "n": int, "searches": float, "turns": float}}}

``searches`` / ``turns`` are means over the records that carry ``num_searches`` / ``num_turns`` (absent keys are
omitted).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rexrag.data.qa import BENCHMARKS
from rlcore.io import iter_jsonl_records
from rlcore.rewards.qa import exact_match, extract_answer_block, token_f1

PAPER_COLUMNS = {
    "nq": "NQ",
    "triviaqa": "TriviaQA",
    "popqa": "PopQA",
    "hotpotqa": "HotpotQA",
    "2wikimultihopqa": "2wiki",
    "musique": "Musique",
    "bamboogle": "Bamboogle",
}


class PredictionFormatError(ValueError):
    """A predictions file record lacks a field; names file and line."""


def answer_from_prediction(prediction: str | None, tag: str = "answer") -> str | None:
    """The answer a prediction stands for: the last complete ``<tag>`` block if the text has tags, else the text."""
    if prediction is None:
        return None
    if f"<{tag}>" in prediction or f"</{tag}>" in prediction:
        return extract_answer_block(prediction, tag=tag)
    return prediction.strip()


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """JSONL records with ``data_source``, ``golden_answers`` and ``prediction`` (others kept)."""
    path = Path(path)
    if not path.is_file():
        raise PredictionFormatError(f"predictions file not found: {path}")
    records = []
    for line_number, record in iter_jsonl_records(path, PredictionFormatError):
        for key in ("data_source", "golden_answers", "prediction"):
            if key not in record:
                raise PredictionFormatError(
                    f"{path}:{line_number}: missing field '{key}' (keys: {sorted(record)})"
                )
        if isinstance(record["golden_answers"], str):
            record["golden_answers"] = [record["golden_answers"]]
        if not record["golden_answers"]:
            raise PredictionFormatError(f"{path}:{line_number}: 'golden_answers' is empty")
        records.append(record)
    return records


def score_records(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """EM and F1 per data source, their unweighted averages, and mean searches/turns (see module docstring)."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    total = 0
    for record in records:
        answer = answer_from_prediction(record["prediction"])
        golds = list(record["golden_answers"])
        bucket = sums[str(record["data_source"])]
        bucket["n"] += 1
        bucket["em"] += exact_match(answer, golds)
        bucket["f1"] += token_f1(answer, golds)
        for key, name in (("num_searches", "searches"), ("num_turns", "turns")):
            if record.get(key) is not None:
                bucket[name] += float(record[key])
                bucket[f"{name}_n"] += 1
        total += 1
    by_source: dict[str, dict[str, float]] = {}
    for source in sorted(sums, key=source_order):
        bucket = sums[source]
        entry: dict[str, float] = {
            "em": bucket["em"] / bucket["n"],
            "f1": bucket["f1"] / bucket["n"],
            "n": int(bucket["n"]),
        }
        for name in ("searches", "turns"):
            if bucket[f"{name}_n"]:
                entry[name] = bucket[name] / bucket[f"{name}_n"]
        by_source[source] = entry
    average = {
        metric: (sum(e[metric] for e in by_source.values()) / len(by_source)) if by_source else math.nan
        for metric in ("em", "f1")
    }
    return {"average_em": average["em"], "average_f1": average["f1"], "n": total, "by_source": by_source}


def summarize_samples(passes: Sequence[Mapping[str, Any]], temperature: float) -> dict[str, Any]:
    """Mean and spread of several sampled passes over the same questions (each a :func:`score_records` result).

    Layout: ``{"temperature", "samples", "average_em": {"mean", "std", "min", "max", "values"}, "average_f1":
    {...}, "by_source": {src: {"em": {...}, "f1": {...}, "n"}}}``; ``std`` is the sample standard deviation
    over passes (0 for one pass).
    """
    if not passes:
        raise ValueError("summarize_samples needs at least one sampled pass")

    def spread(values: list[float]) -> dict[str, Any]:
        mean, std = mean_std(values)
        return {"mean": mean, "std": std, "min": min(values), "max": max(values), "values": values}

    sources = list(passes[0]["by_source"])
    for number, scores in enumerate(passes[1:], start=1):
        if list(scores["by_source"]) != sources:
            raise ValueError(
                f"sampled pass {number} scored sources {list(scores['by_source'])}, pass 0 {sources}"
            )
    return {
        "temperature": float(temperature),
        "samples": len(passes),
        "average_em": spread([p["average_em"] for p in passes]),
        "average_f1": spread([p["average_f1"] for p in passes]),
        "by_source": {
            source: {
                "em": spread([p["by_source"][source]["em"] for p in passes]),
                "f1": spread([p["by_source"][source]["f1"] for p in passes]),
                "n": passes[0]["by_source"][source]["n"],
            }
            for source in sources
        },
    }


def source_order(source: str) -> tuple[int, str]:
    """Paper column order first (NQ ... Bamboogle), then any other source alphabetically."""
    return (BENCHMARKS.index(source), "") if source in BENCHMARKS else (len(BENCHMARKS), source)


def table_rows(
    results: Mapping[str, Mapping[str, Any]], metric: str = "em"
) -> tuple[list[str], list[list[str]]]:
    """Header and rows (one per method) of the paper layout: EM x 100 with one decimal, then ``Avg.``.

    A result with a ``sampled`` block (see :func:`summarize_samples`) gets a second row right below, named
    ``<method> (sampled T=<t>, n=<samples>)``, whose cells are ``mean ± std`` over the sampled passes.
    """
    sources = sorted({s for r in results.values() for s in r["by_source"]}, key=source_order)
    header = ["Method", *[PAPER_COLUMNS.get(s, s) for s in sources], "Avg."]
    rows = []
    for method, result in results.items():
        cells = [
            f"{100 * result['by_source'][s][metric]:.1f}" if s in result["by_source"] else "-"
            for s in sources
        ]
        rows.append([method, *cells, f"{100 * result[f'average_{metric}']:.1f}"])
        sampled = result.get("sampled")
        if sampled:

            def cell(stats: Mapping[str, float]) -> str:
                return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"

            cells = [
                cell(sampled["by_source"][s][metric]) if s in sampled["by_source"] else "-" for s in sources
            ]
            name = f"{method} (sampled T={sampled['temperature']:g}, n={sampled['samples']})"
            rows.append([name, *cells, cell(sampled[f"average_{metric}"])])
    return header, rows


def format_markdown(results: Mapping[str, Mapping[str, Any]], metric: str = "em") -> str:
    header, rows = table_rows(results, metric)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_csv(results: Mapping[str, Mapping[str, Any]], metric: str = "em") -> str:
    header, rows = table_rows(results, metric)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_tables(
    results: Mapping[str, Mapping[str, Any]], out_dir: str | Path, stem: str = "table"
) -> list[Path]:
    """Write ``<stem>.md``, ``<stem>.csv`` (EM, paper layout) and ``<stem>.json`` (full results) to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.md", out / f"{stem}.csv", out / f"{stem}.json"]
    paths[0].write_text(format_markdown(results), encoding="utf-8")
    paths[1].write_text(format_csv(results), encoding="utf-8")
    paths[2].write_text(json.dumps(results, indent=2, sort_keys=True), encoding="utf-8")
    return paths


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
