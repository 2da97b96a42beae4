"""Search-R1 GRPO baseline and REX-RAG on the shared trainer (``rlcore.trainer.train``).

    python -m rexrag train --config packages/rexrag/configs/cpu/rexrag.yaml [rexrag.enabled=false ...]

Top to bottom: load QA records (synthetic world or Search-R1 / FlashRAG files) -> open the retriever (world BM25,
an index folder, or the HTTP service) -> build the REX-RAG state (probe pool + trie from the policy tokenizer,
trigger, keep-ratio EMA) -> ``train`` with ``on_answer`` / ``after_rollout`` / ``behaviour_logprobs`` ->
greedy evaluation of the final model per data source -> results.json, tables and MLflow.

The baseline is the same run with ``rexrag.enabled=false``: no probes and no correction, everything else equal.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from omegaconf import OmegaConf

from rexrag.data.qa import QAExample, load_flashrag_jsonl, load_many, stored_template
from rexrag.data.template import (
    TEMPLATE_FILE,
    TemplateError,
    load_template,
    render_prompt,
    template_mismatch_message,
)
from rexrag.evaluation import write_tables
from rexrag.method import RexRag, RexRagConfig
from rexrag.plots import plot_training_run
from rexrag.recipes.common import (
    SampledEvalConfig,
    WorldDataConfig,
    ensure_world,
    eval_metrics,
    evaluate_examples,
    load_world_retriever,
    sampled_evaluation,
)
from rlcore.config import existing_path, recipe_main
from rlcore.models import load_causal_lm, load_tokenizer
from rlcore.retrieval import RetrievalClient, load_retriever
from rlcore.rollout import RolloutConfig
from rlcore.runs import make_run_dir
from rlcore.tracking import failures_recorded, start_run, write_results_json
from rlcore.trainer.config import RLTrainConfig, TrackingConfig
from rlcore.trainer.grpo import train

logger = logging.getLogger(__name__)

RetrieverKind = Literal["world-bm25", "index", "http"]
RETRIEVER_KINDS = get_args(RetrieverKind)


@dataclass
class QAConfig:
    """Questions to train and evaluate on."""

    # world: the synthetic world (built if missing) | files: the paths below
    source: Literal["world", "files"] = "world"
    # source=world; its template applies to both
    world: WorldDataConfig = field(default_factory=WorldDataConfig)
    # source=files: Search-R1 parquet / FlashRAG JSONL
    train_files: list[str] = existing_path(factory=list)
    # source=files: one file per benchmark (FlashRAG JSONL)
    eval_files: list[str] = existing_path(factory=list)
    # load the prompt template from this file instead of world.template
    template_file: str | None = existing_path(None)
    # the run's prompt template; empty: resolved at start (stored prompts, template_file, world.template)
    template: str = ""
    eval_split: Literal["dev", "test"] = "test"  # source=world: dev | test
    max_train_examples: int = 0  # cap on training questions (0 = all)
    max_eval_examples: int = 0  # cap on evaluated questions per run (0 = all)


@dataclass
class RetrieverConfig:
    """Where searches go."""

    # world-bm25 (index built with the world) | index (folder) | http (service)
    kind: RetrieverKind = "world-bm25"
    # kind=index: folder built by `python -m rlcore.retrieval.build` (or `make index`)
    index_dir: str = existing_path("", hint="build it with `make index CORPUS=... OUT=...`")
    # kind=index: flat | hnsw | ivfpq | bm25 | hybrid
    index_kind: Literal["flat", "hnsw", "ivfpq", "bm25", "hybrid"] = "flat"
    url: str = "${oc.env:RLCORE_RETRIEVER_URL,http://127.0.0.1:8000}"  # kind=http: service address
    cache_size: int = 65536  # LRU cache of (query, topk) results (0 = off)
    # kind=http: keep retrying an unreachable / 502-504 server this long, then fail
    max_outage_s: float = 600.0


@dataclass
class FinalEvalConfig:
    """Evaluation of the final model."""

    enabled: bool = True  # evaluate after training
    greedy: bool = True  # arg-max decoding (the official code sampled at T=1 by accident)
    batch_size: int = 64  # prompts per generate call
    samples: int = 0  # sampled passes reported beside the greedy one (0 = none)
    temperature: float = 1.0  # temperature of the sampled passes (the official evaluation: 1.0)

    def sampled(self, seed: int) -> SampledEvalConfig:
        """The sampled passes as a :class:`SampledEvalConfig` (seeded from the training seed)."""
        return SampledEvalConfig(samples=self.samples, temperature=self.temperature, seed=seed)


@dataclass
class HeldoutCurveConfig:
    """Greedy EM on held-out questions during training (the EM curve; also logged to MLflow per step)."""

    # evaluate every N steps (0 = off); when on, step 0 (the start policy) and the last step too
    every: int = 0
    # qa.source=world: dev | test; qa.source=files: the eval files are used
    split: Literal["dev", "test"] = "dev"
    max_examples: int = 100  # questions per evaluation (the first N of the split)


@dataclass
class RexRagTrainConfig(RLTrainConfig):
    """GRPO / REX-RAG training of a search agent (all trainer keys, plus qa, retriever, rexrag, final_eval)."""

    # Search-R1 turn structure: 5 search turns + a forced final answer turn
    rollout: RolloutConfig = field(
        default_factory=lambda: RolloutConfig(max_turns=5, tools_enabled=True, max_new_tokens_per_turn=500)
    )
    # MLflow
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(experiment="rexrag-train"))
    qa: QAConfig = field(default_factory=QAConfig)  # questions
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)  # search backend
    rexrag: RexRagConfig = field(default_factory=RexRagConfig)  # mixed sampling + policy correction
    final_eval: FinalEvalConfig = field(default_factory=FinalEvalConfig)  # evaluation after training
    heldout_curve: HeldoutCurveConfig = field(default_factory=HeldoutCurveConfig)  # EM curve during training
    num_threads: int = 0  # torch CPU threads (0 = torch default); 1 avoids oversubscription on busy CPUs

    def validate(self) -> None:
        super().validate()
        self.rexrag.validate()
        self.final_eval.sampled(self.train.seed).validate("final_eval")
        if self.qa.source not in ("world", "files"):
            raise ValueError(f"qa.source must be 'world' or 'files', got {self.qa.source!r}")
        if self.retriever.kind not in RETRIEVER_KINDS:
            raise ValueError(f"retriever.kind must be one of {RETRIEVER_KINDS}, got {self.retriever.kind!r}")
        if self.qa.source == "files" and not self.qa.train_files:
            raise ValueError("qa.source=files needs qa.train_files")
        if self.retriever.kind == "world-bm25" and self.qa.source != "world":
            raise ValueError("retriever.kind=world-bm25 only works with qa.source=world")
        if self.heldout_curve.every < 0 or self.heldout_curve.max_examples < 1:
            raise ValueError("heldout_curve.every must be >= 0 and heldout_curve.max_examples >= 1")
        if self.heldout_curve.split not in ("dev", "test"):
            raise ValueError(f"heldout_curve.split must be 'dev' or 'test', got {self.heldout_curve.split!r}")


def load_questions(qa: QAConfig) -> tuple[list[QAExample], list[QAExample], dict[str, Path] | None]:
    """Training and evaluation questions (and the world's paths when the world is used)."""
    paths = None
    if qa.source == "world":
        paths = ensure_world(qa.world)
        train = load_flashrag_jsonl(paths["train"])
        evaluation = load_flashrag_jsonl(paths[qa.eval_split])
    else:
        train = load_many(qa.train_files)
        evaluation = load_many(qa.eval_files)
    if qa.max_train_examples:
        train = train[: qa.max_train_examples]
    if qa.max_eval_examples:
        evaluation = evaluation[: qa.max_eval_examples]
    return train, evaluation, paths


def resolve_template(qa: QAConfig, train: list[QAExample], evaluation: list[QAExample]) -> str:
    """The run's one prompt template.

    Training data that carries prompts (Search-R1 parquet) decides it; an explicit ``qa.template`` /
    ``qa.template_file`` that differs from it is an error naming both. Otherwise the explicit template, else
    ``qa.world.template``. Evaluation files that carry prompts must carry the same template.
    """
    explicit = load_template(qa.template, qa.template_file) if (qa.template or qa.template_file) else None
    data = stored_template(train, "qa.train_files")
    if data is not None and explicit is not None and explicit != data:
        raise TemplateError(
            template_mismatch_message(
                data, "the training data (qa.train_files)", explicit, "qa.template(_file)"
            )
        )
    template = data or explicit or load_template(qa.world.template)
    evaluated = stored_template(evaluation, "qa.eval_files")
    if evaluated is not None and evaluated != template:
        raise TemplateError(
            template_mismatch_message(template, "training", evaluated, "the evaluation data (qa.eval_files)")
        )
    return template


class PromptTemplateState:
    """The run's template inside every checkpoint; resuming under another template is an error naming both."""

    def __init__(self, template: str):
        self.template = template

    def state_dict(self) -> dict[str, str]:
        return {"template": self.template}

    def load_state_dict(self, state: dict[str, str]) -> None:
        if state["template"] != self.template:
            raise TemplateError(
                template_mismatch_message(state["template"], "the checkpoint", self.template, "this run")
            )


def write_template(template: str, folder: Path) -> None:
    """``prompt_template.txt`` beside a model: ``python -m rexrag evaluate`` reads it from there."""
    if int(os.environ.get("RANK", "0")) != 0:  # one writer under a multi-process launch
        return
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TEMPLATE_FILE).write_text(template, encoding="utf-8")


def open_retriever(cfg: RetrieverConfig, paths: dict[str, Path] | None):
    """The search backend: ``search(queries, topk) -> list[list[Passage]]``."""
    if cfg.kind == "world-bm25":
        return load_world_retriever(paths, cfg.cache_size)
    if cfg.kind == "index":
        return load_retriever(cfg.index_dir, kind=cfg.index_kind, cache_size=cfg.cache_size)

    url = cfg.url
    if "${" in url:  # a config built in Python (not through load_config) still holds the interpolation
        url = OmegaConf.create({"url": url}).url
    return RetrievalClient(url, max_outage_s=cfg.max_outage_s)


def to_records(examples: list[QAExample], template: str) -> list[dict[str, Any]]:
    """Trainer records: ``id`` (unique source:index), ``prompt`` (stored messages or our template), golds."""
    return [
        {
            "id": ex.group_key,
            "prompt": ex.prompt_messages
            if ex.prompt_messages is not None
            else render_prompt(ex.question, template),
            "golden_answers": list(ex.golden_answers),
            "data_source": ex.data_source,
        }
        for ex in examples
    ]


def curve_examples(cfg: RexRagTrainConfig, paths: dict[str, Path] | None) -> list[QAExample]:
    """The held-out questions of the EM curve (empty when the curve is off)."""
    curve = cfg.heldout_curve
    if not curve.every:
        return []
    if cfg.qa.source == "world":
        examples = load_flashrag_jsonl(paths[curve.split])
    else:
        examples = load_many(cfg.qa.eval_files)
    if not examples:
        raise ValueError("heldout_curve.every > 0 but there are no held-out questions to evaluate")
    return examples[: curve.max_examples]


class StepHook:
    """``after_step`` for the trainer: REX-RAG's per-step statistics, and the held-out EM curve every N steps.

    The curve is also appended to ``heldout_curve.jsonl`` in the run folder (step 0 = the start policy), which
    a resumed run continues.
    """

    def __init__(
        self, cfg: RexRagTrainConfig, method: RexRag, tokenizer, retriever, examples, template, path
    ):
        self.cfg, self.method, self.tokenizer, self.retriever = cfg, method, tokenizer, retriever
        self.examples, self.template, self.path = examples, template, Path(path)
        self.points: list[dict[str, float]] = []
        if self.path.exists():
            self.points = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def evaluate(self, model, step: int) -> dict[str, float]:
        # torch is heavy (~1 s to import) and only this path needs it
        import torch

        was_training = model.training
        model.eval()
        with torch.random.fork_rng(), torch.no_grad():  # greedy; the training RNG stream is left untouched
            scores = evaluate_examples(
                model,
                self.tokenizer,
                self.retriever,
                self.examples,
                self.cfg.rollout,
                self.template,
                self.cfg.data.use_chat_template,
                greedy=True,
                batch_size=self.cfg.final_eval.batch_size,
            )
        model.train(was_training)
        point = {
            "step": float(step),
            "heldout/em": scores["average_em"],
            "heldout/f1": scores["average_f1"],
            **{f"heldout/em/{s}": v["em"] for s, v in scores["by_source"].items()},
        }
        self.points = [p for p in self.points if p["step"] < step] + [point]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(json.dumps(p, sort_keys=True) + "\n" for p in self.points))
        logger.info(
            "held-out EM at step %d: %.3f (%d questions)", step, point["heldout/em"], len(self.examples)
        )
        return {k: v for k, v in point.items() if k != "step"}

    def __call__(self, model, step: int) -> dict[str, float]:
        history = self.method.history  # the method flushes one record per step, before this hook runs
        fresh = history and history[-1]["step"] == step
        metrics = {}
        if fresh:
            # every method has a dead-end rate (questions whose originals all failed); rexrag/* only REX-RAG runs
            metrics["rollout/dead_end_rate"] = history[-1]["rexrag/dead_end_rate"]
            if self.cfg.rexrag.enabled:
                metrics.update({k: v for k, v in history[-1].items() if k != "step"})
        every = self.cfg.heldout_curve.every
        if self.examples and (step % every == 0 or step == self.cfg.train.total_steps):
            metrics.update(self.evaluate(model, step))
        return metrics


@failures_recorded  # a failure before training starts (e.g. retrieval server down) is a FAILED MLflow run
def run(cfg: RexRagTrainConfig) -> dict[str, Any]:
    cfg.validate()
    if "method" not in cfg.tracking.tags:  # groups the arms in the MLflow UI and `make compare`
        method_name = (
            "grpo" if not cfg.rexrag.enabled else f"rexrag-{cfg.rexrag.correction}-{cfg.rexrag.trigger}"
        )
        cfg = replace(cfg, tracking=replace(cfg.tracking, tags={**cfg.tracking.tags, "method": method_name}))
    if cfg.num_threads:
        # torch is heavy (~1 s to import) and only this path needs it
        import torch

        torch.set_num_threads(cfg.num_threads)
    train_examples, eval_examples, paths = load_questions(cfg.qa)
    template = resolve_template(cfg.qa, train_examples, eval_examples)
    cfg = replace(cfg, qa=replace(cfg.qa, template=template))  # the resolved config names the exact template
    retriever = open_retriever(cfg.retriever, paths)
    if cfg.retriever.kind == "http":  # a server not up at the start is a setup mistake: say so now
        retriever.health()
    records = to_records(train_examples, template)
    tokenizer = load_tokenizer(cfg.model.path)
    output_dir = Path(cfg.train.output_dir) if cfg.train.output_dir else None
    if output_dir is None:
        output_dir = make_run_dir("rexrag-train", cfg)
        cfg = replace(cfg, train=replace(cfg.train, output_dir=str(output_dir)))
    write_template(template, output_dir)
    start_template = Path(cfg.model.path) / TEMPLATE_FILE
    if start_template.is_file() and start_template.read_text(encoding="utf-8") != template:
        logger.warning(
            "the start model was trained with another prompt template (%s) than this run's: %s",
            start_template,
            template_mismatch_message(start_template.read_text(encoding="utf-8"), "it", template, "this run"),
        )
    method = RexRag(
        cfg.rexrag,
        tokenizer,
        cfg.rollout,
        records,
        cfg.reward.success_threshold,
        cfg.objective.eps_low,
        cfg.objective.eps_high,
        metrics_path=output_dir / "rexrag_metrics.jsonl" if cfg.rexrag.enabled else None,
    )
    logger.info(
        "%s: %d training questions, %d eval questions",
        "REX-RAG" if cfg.rexrag.enabled else "GRPO",
        len(records),
        len(eval_examples),
    )
    hook = StepHook(
        cfg,
        method,
        tokenizer,
        retriever,
        curve_examples(cfg, paths),
        template,
        output_dir / "heldout_curve.jsonl",
    )
    if hook.examples and not any(p["step"] == 0 for p in hook.points):
        start = load_causal_lm(cfg.model.path)
        hook.evaluate(start, 0)  # the start policy (step 0 of the curve)
        del start
    result = train(
        cfg,
        records=records,
        retriever=retriever,
        after_rollout=method.after_rollout,
        behaviour_logprobs=method.behaviour_logprobs,
        on_answer=method.on_answer,
        stateful={"rexrag": method, "prompt_template": PromptTemplateState(template)},
        after_step=hook,
    )
    summary: dict[str, Any] = {
        "last_step": result.last_step,
        "run_id": result.run_id,
        "stopped_early": result.stopped_early,
        "train_metrics": result.metrics,
        "rexrag_metrics": method.history,
        "heldout_curve": hook.points,
        "prompt_template": template,
    }
    if int(os.environ.get("RANK", "0")) != 0:
        # Under a multi-process launch only the main rank evaluates the saved model and writes the run's files.
        return summary
    if cfg.train.save_final_model and (result.output_dir / "final").is_dir():
        write_template(template, result.output_dir / "final")
    if cfg.final_eval.enabled and eval_examples and not result.stopped_early and cfg.train.save_final_model:
        model = load_causal_lm(result.output_dir / "final").eval()
        final_tokenizer = load_tokenizer(result.output_dir / "final")
        scores = evaluate_examples(
            model,
            final_tokenizer,
            retriever,
            eval_examples,
            cfg.rollout,
            template,
            cfg.data.use_chat_template,
            cfg.final_eval.greedy,
            cfg.final_eval.batch_size,
            result.output_dir / "eval_predictions.jsonl",
        )
        if cfg.final_eval.samples:
            scores["sampled"] = sampled_evaluation(
                model,
                final_tokenizer,
                retriever,
                eval_examples,
                cfg.rollout,
                template,
                cfg.final_eval.sampled(cfg.train.seed),
                cfg.data.use_chat_template,
                cfg.final_eval.batch_size,
                result.output_dir,
            )
        summary["eval"] = scores
        (result.output_dir / "eval.json").write_text(json.dumps(scores, indent=2, sort_keys=True) + "\n")
        name = "REX-RAG" if cfg.rexrag.enabled else "Search-R1 (GRPO)"
        write_tables({name: scores}, result.output_dir, "eval_table")
        logger.info(
            "final eval: average EM %.3f %s",
            scores["average_em"],
            {s: round(v["em"], 3) for s, v in scores["by_source"].items()},
        )
        if cfg.tracking.enabled and result.run_id is not None:
            with start_run(
                cfg.tracking.experiment, config=cfg, seeds=[cfg.train.seed], resume_run_id=result.run_id
            ) as mlrun:
                mlrun.log_metrics(eval_metrics(scores), step=result.last_step)
                mlrun.log_artifact(result.output_dir / "eval.json")
    start_point = [p for p in hook.points if p["step"] == 0]
    if start_point and cfg.tracking.enabled and result.run_id is not None:
        # step 0 of the curve was measured before the run existed
        with start_run(
            cfg.tracking.experiment, config=cfg, seeds=[cfg.train.seed], resume_run_id=result.run_id
        ) as mlrun:
            mlrun.log_metrics({k: v for k, v in start_point[0].items() if k != "step"}, step=0)
    write_results_json(result.output_dir / "results.json", summary, config=cfg, seeds=[cfg.train.seed])
    plot_training_run(result.output_dir, f"{cfg.tracking.tags.get('method', '')} seed {cfg.train.seed}")
    return summary


def main(argv: list[str] | None = None) -> int:
    def run_cli(cfg: RexRagTrainConfig) -> int:
        summary = run(cfg)
        if "eval" in summary:
            print(f"final average EM: {summary['eval']['average_em']:.4f}")
        return 0

    return recipe_main(
        RexRagTrainConfig, run_cli, argv, description=__doc__.splitlines()[0], prog="python -m rexrag train"
    )


if __name__ == "__main__":
    raise SystemExit(main())
