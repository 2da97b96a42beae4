"""CLI: ``python -m rlcore.compare --experiment NAME [--runs id,id] --out DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlcore.compare import CompareError, compare_experiment
from rlcore.logging_utils import setup_logging
from rlcore.runs import runs_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rlcore.compare",
        description="Compare MLflow runs of one experiment: markdown table + overlaid curves (PNG).",
    )
    parser.add_argument("--experiment", required=True, help="MLflow experiment name, e.g. rexrag-train")
    parser.add_argument("--runs", default="", help="comma-separated run ids or unique prefixes [all runs]")
    parser.add_argument("--out", type=Path, default=None, help="output folder [runs/compare/<experiment>]")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI [$MLFLOW_TRACKING_URI, else sqlite runs/mlflow.db]",
    )
    parser.add_argument("--max-runs", type=int, default=50, help="without --runs, compare the latest N runs")
    args = parser.parse_args(argv)
    setup_logging()

    run_ids = [item.strip() for item in args.runs.split(",") if item.strip()] or None
    out = args.out
    if out is None:
        out = runs_root() / "compare" / args.experiment
    try:
        result = compare_experiment(
            args.experiment, out, run_ids=run_ids, tracking_uri=args.tracking_uri, max_runs=args.max_runs
        )
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"compared {len(result.runs)} runs of '{args.experiment}'")
    print(f"table:  {result.markdown}")
    print(f"json:   {result.summary}")
    for plot in result.plots:
        print(f"curves: {plot}")
    if not result.plots:
        print("curves: none (no reward / EM / accuracy / KL / entropy / dead-end metric logged)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
