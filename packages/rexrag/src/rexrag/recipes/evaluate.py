"""Greedy multi-turn evaluation of a search agent on QA benchmarks: EM/F1 per data source and the paper's Avg.

    python -m rexrag evaluate --config packages/rexrag/configs/paper/eval_qwen2.5-3b.yaml model=path/to/ckpt

Writes ``predictions.jsonl`` (re-scorable with ``python -m rexrag eval``), ``eval.json`` (the layout in
docs/rexrag.md), ``table.md/.csv/.json`` (paper layout) and one MLflow run. Decoding is greedy by default; the
official code meant to be greedy but sampled at temperature 1 (bug 1 in docs/rexrag.md): ``greedy=false``
reproduces that.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rexrag.data.qa import QAExample, stored_template
from rexrag.data.template import TEMPLATE_FILE, TemplateError, load_template, template_mismatch_message
from rexrag.evaluation import format_markdown, write_tables
from rexrag.plots import plot_evaluation
from rexrag.recipes.common import SampledEvalConfig, eval_metrics, evaluate_examples, sampled_evaluation
from rexrag.recipes.train import QAConfig, RetrieverConfig, load_questions, open_retriever
from rlcore.config import ConfigError, recipe_main
from rlcore.models import load_causal_lm, load_tokenizer
from rlcore.rollout import RolloutConfig
from rlcore.runs import make_run_dir
from rlcore.seeding import seed_everything
from rlcore.tracking import start_run, write_results_json
from rlcore.tracking_store import MLflowConfig

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Evaluate one model on the configured QA files (or the synthetic world's test split)."""

    model: str = "tiny-qwen2"  # local folder or embedded / hub model spec
    name: str = ""  # row name in the table (default: the model folder name)
    qa: QAConfig = field(default_factory=QAConfig)  # questions (eval part only)
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)  # search backend
    # turn structure (Search-R1: 5 search turns + forced final turn, top-3 passages)
    rollout: RolloutConfig = field(
        default_factory=lambda: RolloutConfig(max_turns=5, tools_enabled=True, max_new_tokens_per_turn=500)
    )
    use_chat_template: bool = True  # wrap prompts in the chat template (official behaviour)
    # evaluate with qa.template(_file) although the checkpoint was trained with another template
    allow_template_mismatch: bool = False
    greedy: bool = True  # arg-max decoding; false samples at rollout.temperature (the official behaviour)
    # sampled passes reported beside greedy
    eval: SampledEvalConfig = field(default_factory=SampledEvalConfig)
    batch_size: int = 64  # prompts per generate call
    output_dir: str = ""  # empty = runs/rexrag-eval/<time>-<hash>
    # MLflow: whether to log and under which experiment
    tracking: MLflowConfig = field(default_factory=lambda: MLflowConfig(experiment="rexrag-eval"))
    seed: int = 0  # sampling seed when greedy=false
    num_threads: int = 0  # torch CPU threads (0 = torch default)

    # the recipes share one vocabulary: a config written with an old name fails naming the new one
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"experiment": "tracking.experiment"}

    def validate(self) -> None:
        """Raise ValueError naming the field on an impossible setting."""
        self.eval.validate("eval")


def trained_template(model: str) -> tuple[str, Path] | None:
    """The template a model was trained with: ``prompt_template.txt`` in its folder or the run folder above."""
    for folder in (Path(model), Path(model).parent):
        path = folder / TEMPLATE_FILE
        if path.is_file():
            return path.read_text(encoding="utf-8"), path
    return None


def evaluation_template(cfg: EvalConfig, examples: list[QAExample]) -> str:
    """The checkpoint's training template, unless overridden; any other template in play is an error naming both.

    Candidates besides the checkpoint's: ``qa.template`` / ``qa.template_file`` (the override, which needs
    ``allow_template_mismatch=true`` when it differs) and the prompts stored in the evaluation files. Without a
    stored training template (a hub model, an older run) the explicit template, the files' or
    ``qa.world.template`` is used, with a warning.
    """
    explicit = (
        load_template(cfg.qa.template, cfg.qa.template_file)
        if (cfg.qa.template or cfg.qa.template_file)
        else None
    )
    data = stored_template(examples, "qa.eval_files")
    found = trained_template(cfg.model)
    if found is None:
        template = explicit or data or load_template(cfg.qa.world.template)
        if explicit and data and explicit != data:
            raise TemplateError(
                template_mismatch_message(explicit, "qa.template(_file)", data, "the evaluation data")
            )
        logger.warning(
            "no %s beside %s: evaluating with %s",
            TEMPLATE_FILE,
            cfg.model,
            "qa.template(_file)"
            if explicit
            else "the evaluation data's template"
            if data
            else "qa.world.template",
        )
        return template
    trained, path = found
    for other, name in ((explicit, "qa.template(_file)"), (data, "the evaluation data (qa.eval_files)")):
        if other is None or other == trained:
            continue
        if not (cfg.allow_template_mismatch and explicit is not None):
            raise TemplateError(
                template_mismatch_message(trained, f"training ({path})", other, name)
                + "; to evaluate with another template on purpose set qa.template or qa.template_file "
                "and allow_template_mismatch=true"
            )
        logger.warning("evaluating with %s although the model was trained with %s", name, path)
    return explicit if (cfg.allow_template_mismatch and explicit is not None) else trained


def run(cfg: EvalConfig) -> dict[str, Any]:
    cfg.validate()
    seed_everything(cfg.seed)
    if cfg.num_threads:
        # torch is heavy (~1 s to import) and only this path needs it
        import torch

        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.output_dir) if cfg.output_dir else make_run_dir("rexrag-eval", cfg)
    out.mkdir(parents=True, exist_ok=True)
    _, examples, paths = load_questions(cfg.qa)
    template = evaluation_template(cfg, examples)
    if not examples:
        raise ConfigError(
            "no evaluation questions: set qa.eval_files (qa.source=files) or use qa.source=world"
        )
    retriever = open_retriever(cfg.retriever, paths)
    if cfg.retriever.kind == "http":  # a server not up at the start is a setup mistake: say so now
        retriever.health()
    model = load_causal_lm(cfg.model).eval()
    tokenizer = load_tokenizer(cfg.model)
    name = cfg.name or Path(cfg.model).name
    started = time.perf_counter()
    tracked = (
        start_run(cfg.tracking.experiment, run_name=name, config=cfg, seeds=[cfg.seed])
        if cfg.tracking.enabled
        else nullcontext(None)
    )
    with tracked as run_:
        scores = evaluate_examples(
            model,
            tokenizer,
            retriever,
            examples,
            cfg.rollout,
            template,
            cfg.use_chat_template,
            cfg.greedy,
            cfg.batch_size,
            out / "predictions.jsonl",
        )
        if cfg.eval.samples:
            scores["sampled"] = sampled_evaluation(
                model,
                tokenizer,
                retriever,
                examples,
                cfg.rollout,
                template,
                cfg.eval,
                cfg.use_chat_template,
                cfg.batch_size,
                out,
            )
        scores["seconds"] = time.perf_counter() - started
        (out / "eval.json").write_text(json.dumps(scores, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        write_tables({name: scores}, out, "table")
        plot_evaluation(scores, out / "eval.png", f"{name}: greedy evaluation")
        if run_:
            run_.log_metrics(eval_metrics(scores), step=0)
            for path in ("eval.json", "table.md", "predictions.jsonl", "eval.png"):
                run_.log_artifact(out / path)
    (out / TEMPLATE_FILE).write_text(template, encoding="utf-8")
    write_results_json(
        out / "results.json", {"eval": scores, "prompt_template": template}, config=cfg, seeds=[cfg.seed]
    )
    print(format_markdown({name: scores}), end="")
    return scores


def main(argv: list[str] | None = None) -> int:
    return recipe_main(
        EvalConfig,
        lambda cfg: (run(cfg), 0)[1],
        argv,
        description=__doc__.splitlines()[0],
        prog="python -m rexrag evaluate",
    )


if __name__ == "__main__":
    raise SystemExit(main())
