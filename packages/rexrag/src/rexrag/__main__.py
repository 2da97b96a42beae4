"""``python -m rexrag <subcommand>``: the REX-RAG command line.

Subcommands:
    eval        re-score a predictions JSONL -> {"average_em", "by_source": {src: {"em", "f1", "n"}}}
    table       merge several eval JSONs into the paper-layout table (markdown / CSV / JSON)
    make-world  write the synthetic knowledge world (corpus + questions in FlashRAG and Search-R1 layouts)
    example-data  write a small invented corpus and question file (the layouts of "your own data")
    prepare-data  the paper's data from FlashRAG files: Search-R1 train parquet (NQ + HotpotQA) + 7 test sets
    sft         supervised warm-up on synthetic search demonstrations (--config FILE, a.b=c overrides)
    train       GRPO (Search-R1 baseline) or REX-RAG training (--config FILE, a.b=c overrides)
    evaluate    greedy multi-turn evaluation of a model on QA files (--config FILE, a.b=c overrides)
    experiment  an experiment folder's seeds x arms, then its summary (--config experiments/<name>/experiment.yaml)
    precheck    dead-end rate and direct probe check of a start policy before RL (--config FILE, a.b=c overrides)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rexrag.data.prepare import prepare_data
from rexrag.data.qa import DataFormatError
from rexrag.data.template import TemplateError, load_template
from rexrag.data.veltria import write
from rexrag.data.world import WorldConfig, write_world
from rexrag.evaluation import (
    PredictionFormatError,
    format_markdown,
    read_predictions,
    score_records,
    write_tables,
)
from rexrag.pool import PoolError
from rlcore.cli import run_cli
from rlcore.config import load_config
from rlcore.logging_utils import setup_logging

# REX-RAG's own error types that are the user's to fix (printed as one line by rlcore.cli.run_cli).
USER_ERRORS = (DataFormatError, TemplateError, PredictionFormatError, PoolError)
# Default model folders the make targets build: a missing one names the target that builds it.
MODEL_TARGETS = {
    "runs/rexrag-cpu/sft/model": "make rexrag-sft-cpu",
    "runs/rexrag-cpu-multiworld/sft/model": "make rexrag-sft-cpu-multiworld",
    "runs/rexrag-cpu-mechanism/sft/model": "make rexrag-cpu-mechanism-prechecks",
}


def _cmd_eval(args: argparse.Namespace) -> int:
    result = score_records(read_predictions(args.predictions))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(format_markdown({args.name: result}), end="")
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    results = {}
    for item in args.results:
        name, _, path = item.rpartition("=")
        results[name or Path(path).stem] = json.loads(Path(path).read_text(encoding="utf-8"))
    write_tables(results, args.out_dir, args.stem)
    print(format_markdown(results), end="")
    return 0


def _cmd_make_world(args: argparse.Namespace) -> int:
    cfg = load_config(WorldConfig, args.config, args.overrides)
    paths = write_world(cfg, args.out)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _cmd_prepare_data(args: argparse.Namespace) -> int:
    template = load_template(None, args.template_file)
    result = prepare_data(
        args.flashrag,
        args.out,
        template,
        [s for s in args.train_sources.split(",") if s],
        [s for s in args.test_sources.split(",") if s],
    )
    for name, count in result["counts"].items():
        print(f"{name}: {count} questions")
    for name, path in result["files"].items():
        print(f"{name}: {path}")
    return 0


def _cmd_example_data(args: argparse.Namespace) -> int:
    for name, path in write(args.out).items():
        print(f"{name}: {path}")
    return 0


def _recipe(name: str, argv: list[str]) -> int:
    if name == "train":
        # heavy and optional here: loads torch
        from rexrag.recipes.train import main as recipe_main
    elif name == "sft":
        # heavy and optional here: loads datasets, torch, transformers, trl
        from rexrag.recipes.sft import main as recipe_main
    elif name == "evaluate":
        # heavy and optional here: loads torch
        from rexrag.recipes.evaluate import main as recipe_main
    elif name == "precheck":
        # heavy and optional here: loads torch
        from rexrag.precheck import main as recipe_main
    else:
        # heavy and optional here: loads torch
        from rexrag.experiment import main as recipe_main
    return recipe_main(argv)


def _hint(err: BaseException) -> str | None:
    """What to do about a missing default model: the make target that builds it."""
    if isinstance(err, FileNotFoundError):
        for path, target in MODEL_TARGETS.items():
            if path in str(err):
                return f"build it with `{target}`"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging()
    prog = "rexrag" if not argv or argv[0].startswith("-") else f"rexrag {argv[0]}"
    return run_cli(_main, argv, prog, user_errors=USER_ERRORS, hint=_hint)


def _main(argv: list[str]) -> int:
    if argv and argv[0] in ("train", "sft", "evaluate", "experiment", "precheck"):
        return _recipe(argv[0], argv[1:])
    parser = argparse.ArgumentParser(
        prog="rexrag", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_eval = sub.add_parser("eval", help="re-score a predictions JSONL")
    p_eval.add_argument(
        "--predictions", required=True, help="JSONL of {data_source, golden_answers, prediction}"
    )
    p_eval.add_argument("--out", required=True, help="output JSON path")
    p_eval.add_argument("--name", default="predictions", help="row name in the printed table")
    p_eval.set_defaults(func=_cmd_eval)
    p_table = sub.add_parser("table", help="paper-layout table from eval JSONs")
    p_table.add_argument(
        "results", nargs="+", help="NAME=path/to/eval.json (or a path; the stem names the row)"
    )
    p_table.add_argument("--out-dir", required=True)
    p_table.add_argument("--stem", default="table")
    p_table.set_defaults(func=_cmd_table)
    p_world = sub.add_parser("make-world", help="write the synthetic knowledge world")
    p_world.add_argument("--out", required=True, help="output folder")
    p_world.add_argument("--config", default=None, help="YAML with WorldConfig fields")
    p_world.add_argument("overrides", nargs="*", help="WorldConfig overrides, e.g. seed=3 num_people=500")
    p_world.set_defaults(func=_cmd_make_world)
    p_prep = sub.add_parser("prepare-data", help="Search-R1 parquet files from FlashRAG dataset files")
    p_prep.add_argument("--flashrag", required=True, help="folder in the FlashRAG_datasets layout")
    p_prep.add_argument("--out", required=True, help="output folder")
    p_prep.add_argument(
        "--template-file", default=None, help="prompt template with a {question} placeholder (default: ours)"
    )
    p_prep.add_argument(
        "--train-sources", default="nq,hotpotqa", help="comma-separated (empty: no train file)"
    )
    p_prep.add_argument(
        "--test-sources",
        default="nq,triviaqa,popqa,hotpotqa,2wikimultihopqa,musique,bamboogle",
        help="comma-separated (empty: no test files)",
    )
    p_prep.set_defaults(func=_cmd_prepare_data)
    p_example = sub.add_parser(
        "example-data", help="write a small invented corpus + questions (your-own-data layout)"
    )
    p_example.add_argument("--out", required=True, help="output folder (corpus.jsonl, questions.jsonl)")
    p_example.set_defaults(func=_cmd_example_data)
    for name in ("sft", "train", "evaluate"):
        sub.add_parser(name, help=f"{name} recipe (--config FILE [--dry-run] a.b=c ...)")
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
