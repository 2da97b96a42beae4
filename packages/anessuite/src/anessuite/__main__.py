"""``python -m anessuite <subcommand>``: AnesBench scoring/evaluation, data tools and the Morpheus pipeline.

Subcommands that run a recipe (eval, pipeline, ...) take the shared recipe CLI: ``--config FILE``,
``--dry-run`` and ``a.b=c`` overrides.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from anessuite.backends.openai_compat import ServerError
from anessuite.cache import CacheLockedError
from anessuite.mcq import SchemaError
from anessuite.score import print_summary, run_score
from anessuite.synthetic.generate import WorldDataConfig, generate_world_data
from anessuite.synthetic.miniature import MiniatureConfig, generate_miniature_data
from anessuite.synthetic.miniature2 import SCRATCH_VOCAB_SIZE, Miniature2Config, generate_miniature2_data
from anessuite.synthetic.miniature3 import SCRATCH_VOCAB_SIZE as VOCAB_SIZE_3
from anessuite.synthetic.miniature3 import SPACE_BEFORE_CAPITAL, Miniature3Config, generate_miniature3_data
from anessuite.synthetic.published import write_published_size_benchmark
from anessuite.synthetic.scratch import ScratchModelConfig, write_scratch_model
from anessuite.tasks import TASKS
from rlcore.cli import run_cli
from rlcore.logging_utils import setup_logging

__all__ = ["main"]

# AnesSuite's own error types that are the user's to fix (printed as one line by rlcore.cli.run_cli).
USER_ERRORS = (SchemaError, ServerError, CacheLockedError)


def _score(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="anessuite score", description="Re-score saved responses.")
    parser.add_argument("--benchmark", required=True, help="benchmark JSON/JSONL file or folder of files")
    parser.add_argument("--responses", required=True, help='JSONL of {"id", "response"} records')
    parser.add_argument("--out", required=True, help="output folder (results.json, tables, chart)")
    parser.add_argument("--task", default="anesbench", help="task format (see `anessuite tasks`)")
    parser.add_argument("--task-spec", default=None, help="YAML TaskSpec for a format not in the registry")
    parser.add_argument(
        "--languages", default=None, help="comma list, e.g. en,zh (bilingual layout default: en)"
    )
    parser.add_argument(
        "--allow-partial", action="store_true", help="score only the items that have responses"
    )
    parser.add_argument(
        "--bootstrap-iters", type=int, default=1000, help="bootstrap replicates for the 95%% CIs"
    )
    parser.add_argument(
        "--model-name", default=None, help="row label in the tables (default: responses file stem)"
    )
    args = parser.parse_args(list(argv))
    languages = args.languages.split(",") if args.languages else None
    results = run_score(
        args.benchmark,
        args.responses,
        args.out,
        task=args.task,
        languages=languages,
        task_spec=args.task_spec,
        allow_partial=args.allow_partial,
        bootstrap_iters=args.bootstrap_iters,
        model_name=args.model_name,
    )
    print(print_summary(results))
    return 0


def _tasks(argv: Sequence[str]) -> int:
    argparse.ArgumentParser(
        prog="anessuite tasks", description="List registered MCQ task formats."
    ).parse_args(argv)
    print("anesbench: AnesBench, layout detected per file (original bilingual or 2026 per-language files)")
    for name, spec in sorted(TASKS.items()):
        print(f"{name}: {spec.description}")
    return 0


def _synth(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="anessuite synth", description="Write the synthetic world's datasets."
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="world seed")
    parser.add_argument(
        "--published-sizes",
        action="store_true",
        help="instead: a filler benchmark with AnesBench's published sizes (4,343 EN + 3,529 ZH) and responses",
    )
    parser.add_argument(
        "--design",
        choices=("default", "miniature", "miniature2", "miniature3"),
        default="default",
        help="miniature: benchmark facts only in the CPT corpus, SFT/GRPO on other drugs (+ probe/facts.jsonl); "
        "miniature2: the same split with hundreds of SFT/GRPO drugs whose facts are also in the CPT corpus; "
        "miniature3: miniature2's world with every training fact as an MCQ, option-lookup items, more training "
        "wordings and a tokenizer that gives a name the same pieces everywhere",
    )
    parser.add_argument(
        "--scratch-model",
        default=None,
        help="also write a from-scratch base model (BPE tokenizer fitted on the world's training text) here",
    )
    args = parser.parse_args(list(argv))
    if args.design == "miniature":
        paths = generate_miniature_data(args.out, MiniatureConfig(seed=args.seed))
    elif args.design == "miniature2":
        paths = generate_miniature2_data(args.out, Miniature2Config(seed=args.seed))
    elif args.design == "miniature3":
        paths = generate_miniature3_data(args.out, Miniature3Config(seed=args.seed))
    elif args.published_sizes:
        paths = write_published_size_benchmark(args.out, args.seed)
    else:
        paths = generate_world_data(args.out, WorldDataConfig(seed=args.seed))
    if args.scratch_model:
        shape = ScratchModelConfig(seed=args.seed)
        if args.design == "miniature2":
            shape.vocab_size = SCRATCH_VOCAB_SIZE
        elif args.design == "miniature3":
            shape.vocab_size = VOCAB_SIZE_3
            shape.space_before_capital = SPACE_BEFORE_CAPITAL
        paths["scratch_model"] = write_scratch_model(args.out, args.scratch_model, shape)
    for role, path in paths.items():
        print(f"{role:<10} {path}")
    return 0


def _recipe(module: str, function: str = "main") -> Callable[[Sequence[str]], int]:
    def run(argv: Sequence[str]) -> int:
        return int(getattr(importlib.import_module(module), function)(list(argv)) or 0)

    return run


COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "score": (_score, "re-score saved responses -> results.json, tables, chart"),
    "eval": (_recipe("anessuite.evaluate"), "evaluate a model (hf | vllm | openai backend), resumable"),
    "table3": (
        _recipe("anessuite.tables", "table3_main"),
        "evaluate models and render the paper's Table 3 layout",
    ),
    "morpheus": (_recipe("anessuite.tables", "morpheus_main"), "Table 4: base vs SFT vs SFT + GRPO (no CPT)"),
    "strategies": (_recipe("anessuite.tables", "strategies_main"), "Table 5: with/without CPT x SFT data"),
    "pipeline": (
        _recipe("anessuite.pipeline.run"),
        "CPT -> SFT -> GRPO with evaluations after each stage (resumable)",
    ),
    "experiment": (
        _recipe("anessuite.experiment"),
        "run an experiment folder's stages over seeds (skipping finished ones) and pool them",
    ),
    "convert": (_recipe("anessuite.convert"), "AnesCorpus/AnesQA/AnesR1-style files -> CPT/SFT/RLVR JSONL"),
    "synth": (_synth, "write the synthetic bilingual pharmacology world (corpus, QA, MCQs, benchmark)"),
    "tasks": (_tasks, "list the registered MCQ task formats"),
    "probe": (
        _recipe("anessuite.knowledge_probe"),
        "knowledge probe: log-likelihood of true fact statements vs distractors, per language",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--debug"]:  # `anessuite --debug <subcommand> ...`: run_cli reads it after the subcommand
        argv = [*argv[1:2], "--debug", *argv[2:]]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = ["usage: python -m anessuite <subcommand> [args]", "", "subcommands:"]
        lines += [f"  {name:<22} {help_text}" for name, (_, help_text) in COMMANDS.items()]
        print("\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown subcommand '{argv[0]}'", file=sys.stderr)
            return 2
        return 0
    setup_logging()
    handler, _ = COMMANDS[argv[0]]
    return run_cli(handler, argv[1:], f"anessuite {argv[0]}", user_errors=USER_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
