"""SFT warm-up on synthetic search demonstrations (the start point of the CPU-scale GRPO / REX-RAG runs).

    python -m rexrag sft --config packages/rexrag/configs/cpu/sft.yaml [train.total_steps=300 ...]

Steps: write the synthetic world and its BM25 index -> build a tokenizer and a tiny Qwen2 from scratch (or load a
model) -> build demonstrations with the real retriever (search chains, confident wrong answers, one-search
shortcuts, self-doubt recoveries) -> next-token cross-entropy on model-written tokens only -> save an HF folder
(model + tokenizer) -> greedy multi-turn EM on dev questions.

Training runs on the project's one SFT engine, :func:`rlcore.trainer.sft.train_sft` (TRL's ``SFTTrainer``, also
behind AnesSuite's CPT and SFT stages; why TRL suffices is in that module). The recipe keeps what is the warm-up's
own: the demonstrations (rows with -100 on prompts and retrieved passages), their order (:func:`demo_order`), AdamW
with warm-up + cosine decay to 10% (``rlcore.trainer.optim``), float32 and the model's own cross-entropy, which
together reproduce the earlier hand-written loop exactly (``tests/rexrag/test_sft_equivalence.py``).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import datasets
import torch
from tqdm.auto import tqdm
from trl import SFTConfig as TRLSFTConfig

from rexrag.data.demos import DISTRACTOR_KEYS, KINDS, Demo, DemoConfig, build_demos, fixed_texts
from rexrag.data.fresh_names import FreshNames, world_name_shapes
from rexrag.data.own_demos import (
    SFTQAConfig,
    answer_coverage,
    answer_swap_demos,
    load_own_data,
    own_tokenizer_texts,
    validate_source,
)
from rexrag.data.qa import load_flashrag_jsonl
from rexrag.data.template import TEMPLATE_FILE
from rexrag.pool import load_pool
from rexrag.recipes.common import (
    TinyModelConfig,
    WorldDataConfig,
    build_scratch_model,
    ensure_world,
    evaluate_examples,
    load_world_retriever,
    world_tokenizer_texts,
)
from rexrag.recipes.train import RetrieverConfig
from rlcore.config import config_hash, recipe_main
from rlcore.models import load_causal_lm, load_tokenizer, train_bpe_tokenizer
from rlcore.rollout import RolloutConfig
from rlcore.runs import make_run_dir
from rlcore.seeding import seed_everything
from rlcore.tracking import start_run, write_results_json
from rlcore.tracking_store import MLflowConfig
from rlcore.trainer.optim import build_optimizer, build_scheduler
from rlcore.trainer.sft import find_sft_checkpoint, read_engine_state, train_sft

logger = logging.getLogger(__name__)

# run folder subfolder of the engine's checkpoints (removed once the final model is saved)
CHECKPOINTS = "checkpoints"
# torch's AdamW defaults, which every warm-up so far trained with
ADAMW_BETAS, ADAMW_EPS = (0.9, 0.999), 1e-8


@dataclass
class SFTOptimConfig:
    """AdamW and the learning-rate schedule of the warm-up (the names of the GRPO trainer's ``optim``)."""

    # peak AdamW learning rate
    lr: float = 2e-3
    # linear warm-up steps, then cosine decay to 10%
    warmup_steps: int = 20
    # AdamW weight decay (not on biases / norms)
    weight_decay: float = 0.01
    # gradient clipping
    max_grad_norm: float = 1.0


@dataclass
class SFTLoopConfig:
    """Length, batches, outputs and checkpoints of the warm-up (the names of the GRPO trainer's ``train``)."""

    # optimizer steps
    total_steps: int = 400
    # demonstrations per step
    batch_size: int = 16
    num_demos: int = 0  # demonstrations built from train questions; 0 = one per train question
    # more worlds (seeds world.seed+1 .. +N) whose questions (all splits) are demonstrations too
    extra_worlds: int = 0
    extra_worlds_dir: str = ""  # where those worlds are written; empty = "<data.dir>-extra"
    seed: int = 0  # seeds model init, demo order and sampling
    # run folder; empty = runs/rexrag-sft/<time>-<hash>
    output_dir: str = ""
    # write a checkpoint (output_dir/checkpoints/checkpoint-<step>) every N steps; 0 = never
    save_every: int = 500
    # auto: continue from the newest complete checkpoint | never: start over | a checkpoint folder
    resume: str = "auto"


@dataclass
class SFTEvalConfig:
    """Greedy evaluation after the warm-up."""

    num_questions: int = 200  # dev questions evaluated (0 = skip)
    batch_size: int = 64  # prompts per generate call


@dataclass
class SFTConfig:
    """Supervised warm-up of a search agent on the synthetic world."""

    data: WorldDataConfig = field(default_factory=WorldDataConfig)  # world, index, template
    model: TinyModelConfig = field(default_factory=TinyModelConfig)  # scratch tiny Qwen2 or a model spec
    demos: DemoConfig = field(default_factory=DemoConfig)  # mix of demonstration kinds
    qa: SFTQAConfig = field(default_factory=SFTQAConfig)  # world questions, or your own question files
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)  # qa.source=files: index or server
    pool: str = "self_doubt_30"  # prompt pool used by recovery demonstrations
    use_chat_template: bool = True  # wrap prompts in the tokenizer's chat template (official behaviour)
    # observation format (demos) and turn structure (evaluation)
    rollout: RolloutConfig = field(
        default_factory=lambda: RolloutConfig(
            max_turns=4, max_new_tokens_per_turn=48, max_response_tokens=640
        )
    )
    # AdamW + learning-rate schedule
    optim: SFTOptimConfig = field(default_factory=SFTOptimConfig)
    # length, batches, outputs, checkpoints
    train: SFTLoopConfig = field(default_factory=SFTLoopConfig)
    eval: SFTEvalConfig = field(default_factory=SFTEvalConfig)  # evaluation after training
    # MLflow: whether to log and under which experiment
    tracking: MLflowConfig = field(default_factory=lambda: MLflowConfig(experiment="rexrag-sft"))
    # torch CPU threads
    num_threads: int = 2

    # the recipes share one vocabulary: a config written with an old name fails naming the new one
    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "train.steps": "train.total_steps",
        "train.lr": "optim.lr",
        "train.warmup_steps": "optim.warmup_steps",
        "train.weight_decay": "optim.weight_decay",
        "train.max_grad_norm": "optim.max_grad_norm",
        "train.threads": "num_threads",
        "output_dir": "train.output_dir",
        "experiment": "tracking.experiment",
    }

    def validate(self) -> None:
        validate_source(self.qa, self.retriever.kind)
        if "{answer}" not in self.demos.final_thought:
            raise ValueError(
                f"demos.final_thought must contain {{answer}} where the answer goes, got {self.demos.final_thought!r}"
            )
        if self.demos.distractor_key not in DISTRACTOR_KEYS:
            raise ValueError(
                f"demos.distractor_key must be one of {DISTRACTOR_KEYS}, got {self.demos.distractor_key!r}"
            )
        if self.demos.extra_copies < 0 or any(n < 1 for n in self.demos.quote.values()):
            raise ValueError(
                f"demos.extra_copies must be >= 0 and every demos.quote count >= 1, got {self.demos.extra_copies} "
                f"and {dict(self.demos.quote)}"
            )
        if self.demos.fresh_names and self.qa.source == "files" and not self.train.extra_worlds:
            raise ValueError(
                "demos.fresh_names renames the synthetic worlds' entities: with qa.source=files it applies to the "
                "train.extra_worlds demonstrations only, so set train.extra_worlds > 0 (for your own questions "
                "demos.answer_swaps plays that role)"
            )


def fresh_names_for(
    cfg: SFTConfig, paths: dict[str, Path], offset: int, pool: list[str]
) -> FreshNames | None:
    """The renamer of one world's demonstrations (``demos.fresh_names``), seeded by ``demos.seed + offset``."""
    if not cfg.demos.fresh_names:
        return None
    world = json.loads(paths["world"].read_text(encoding="utf-8"))
    return FreshNames(
        world_name_shapes(world),
        seed=(cfg.demos.seed + offset) * 7919 + 1,
        # the cue is never renamed
        reserved=[*fixed_texts(cfg.data.template, pool, cfg.demos.final_thought), cfg.data.world.cue],
    )


def extra_world_configs(cfg: SFTConfig) -> list[WorldDataConfig]:
    """The demonstration-only worlds: same sizes and question mix as ``cfg.data.world``, other seeds.

    Their names are new draws from the same syllables, so a policy warmed up on many worlds cannot answer by
    remembering entities: it has to copy the answer out of the passage it retrieved (the skill held-out test
    questions need). The evaluated world (``cfg.data``) is never among them.
    """
    base = cfg.train.extra_worlds_dir or f"{cfg.data.dir.rstrip('/')}-extra"
    return [
        WorldDataConfig(
            world=replace(cfg.data.world, seed=cfg.data.world.seed + k),
            dir=str(Path(base) / f"seed{cfg.data.world.seed + k}"),
            template=cfg.data.template,
        )
        for k in range(1, cfg.train.extra_worlds + 1)
    ]


def _load_model_and_tokenizer(cfg: SFTConfig, texts: list[str]):
    """A tiny Qwen2 with a BPE tokenizer trained on ``texts`` (``model.init=scratch``), else the named model."""
    if cfg.model.init == "scratch":
        tokenizer = train_bpe_tokenizer(texts, cfg.model.vocab_size)
        return build_scratch_model(tokenizer, cfg.model, cfg.train.seed), tokenizer
    return load_causal_lm(cfg.model.init, dtype=torch.float32), load_tokenizer(cfg.model.init)


def demo_rows(demos: list[Demo]) -> list[dict[str, list[int]]]:
    """One training row per demonstration: ``input_ids`` (prompt + response) and ``labels`` (-100 on the prompt
    and on the response tokens the model did not write: retrieved passages)."""
    rows = []
    for demo in demos:
        trained = [tok if keep else -100 for tok, keep in zip(demo.response_ids, demo.loss_mask, strict=True)]
        rows.append(
            {
                "input_ids": demo.prompt_ids + demo.response_ids,
                "labels": [-100] * len(demo.prompt_ids) + trained,
            }
        )
    return rows


def demo_order(num_demos: int, batch_size: int, total_steps: int, seed: int) -> list[int]:
    """The demonstrations drawn, step after step: permutations of all of them from ``random.Random(seed)``, one
    after another, cut into batches (a batch may straddle two permutations)."""
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < batch_size * total_steps:
        order += rng.sample(range(num_demos), num_demos)
    return order[: batch_size * total_steps]


def _engine_args(cfg: SFTConfig, out: Path) -> TRLSFTConfig:
    """TRL's arguments for the warm-up: one process on the CPU, every step logged, no truncation or packing."""
    return TRLSFTConfig(
        output_dir=str(out / CHECKPOINTS),
        max_steps=cfg.train.total_steps,
        per_device_train_batch_size=cfg.train.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        max_grad_norm=cfg.optim.max_grad_norm,
        logging_steps=1,
        save_strategy="steps" if cfg.train.save_every else "no",
        save_steps=cfg.train.save_every or cfg.train.total_steps,
        seed=cfg.train.seed,
        max_length=None,
        packing=False,
        use_cpu=True,
        bf16=False,  # float32 throughout (TRL would autocast to bfloat16 where the device supports it)
        dataloader_pin_memory=False,
    )


def _refuse_loop_checkpoint(out: Path) -> None:
    legacy = out / "checkpoint" / "state.pt"
    if legacy.is_file():
        raise ValueError(
            f"{legacy}: a checkpoint of the earlier warm-up loop, which this version cannot resume; finish that "
            f"warm-up with the version that started it, or start over with train.resume=never"
        )


def run(cfg: SFTConfig) -> dict:
    torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.train.seed)
    out = Path(cfg.train.output_dir) if cfg.train.output_dir else make_run_dir("rexrag-sft", cfg)
    out.mkdir(parents=True, exist_ok=True)
    own = load_own_data(cfg.qa, cfg.retriever) if cfg.qa.source == "files" else None
    paths = None if own else ensure_world(cfg.data)
    retriever = own.retriever if own else load_world_retriever(paths)
    extra = [ensure_world(world_cfg) for world_cfg in extra_world_configs(cfg)]
    pool = load_pool(cfg.pool)
    # settings that do not change the training trajectory may differ between the interrupted and resumed run
    digest = config_hash(
        replace(
            cfg,
            tracking=MLflowConfig(experiment=""),
            eval=SFTEvalConfig(),
            train=replace(cfg.train, output_dir="", resume="auto", save_every=0),
        )
    )
    if cfg.train.resume != "never":
        _refuse_loop_checkpoint(out)
    checkpoint = find_sft_checkpoint(out / CHECKPOINTS, cfg.train.resume)
    saved = read_engine_state(checkpoint)
    if checkpoint is not None and saved.get("config_hash") != digest:
        raise ValueError(
            f"{checkpoint}: this checkpoint was written by another SFT configuration (hash "
            f"{saved.get('config_hash')}, now {digest}); use another output_dir or train.resume=never to start over"
        )
    if checkpoint is not None:
        model = load_causal_lm(str(checkpoint), dtype=torch.float32)
        tokenizer = load_tokenizer(str(checkpoint))  # the tokenizer is reused, never retrained
    else:
        # the evaluated world's (or your own data's) texts first, then the extra worlds': the order every
        # earlier warm-up's tokenizer was trained on
        if own:
            texts = own_tokenizer_texts(
                own.train + own.evaluation, retriever, cfg.rollout, cfg.data.template, pool
            )
        else:
            texts = world_tokenizer_texts(paths, cfg.data.template, pool)
        texts += [t for world in extra for t in world_tokenizer_texts(world, cfg.data.template, pool)]
        model, tokenizer = _load_model_and_tokenizer(cfg, texts)
    train_examples = own.train if own else load_flashrag_jsonl(paths["train"])
    if own:
        logger.info(
            "a search with the question finds a golden answer in the top %d passages for %.0f%% of the "
            "demonstration questions",
            cfg.rollout.retrieval_topk,
            100 * answer_coverage(train_examples, retriever, cfg.rollout.retrieval_topk),
        )
    if cfg.train.num_demos:
        train_examples = train_examples[: cfg.train.num_demos]
    demos = build_demos(
        train_examples,
        tokenizer,
        retriever,
        cfg.rollout,
        cfg.data.template,
        pool,
        # your own questions are never renamed (their names are not known); the extra worlds' demonstrations are
        replace(cfg.demos, fresh_names=False) if own else cfg.demos,
        cfg.use_chat_template,
        names=None if own else fresh_names_for(cfg, paths, 0, pool),
    )
    if own:  # swapped-answer copies of the user's questions: reading, not remembering (rexrag.data.own_demos)
        demos += answer_swap_demos(
            train_examples,
            tokenizer,
            retriever,
            cfg.rollout,
            cfg.data.template,
            cfg.demos,
            cfg.use_chat_template,
        )
    for k, world_paths in enumerate(tqdm(extra, desc="extra-world demos", disable=not extra), start=1):
        examples = [
            ex for split in ("train", "dev", "test") for ex in load_flashrag_jsonl(world_paths[split])
        ]
        demos += build_demos(
            examples,
            tokenizer,
            load_world_retriever(world_paths),
            cfg.rollout,
            cfg.data.template,
            pool,
            replace(cfg.demos, seed=cfg.demos.seed + k),
            cfg.use_chat_template,
            names=fresh_names_for(cfg, world_paths, k, pool),
        )
    kinds = {k: sum(d.kind == k for d in demos) for k in KINDS}
    logger.info(
        "built %d demonstrations %s; %d parameters",
        len(demos),
        kinds,
        sum(p.numel() for p in model.parameters()),
    )
    optimizer = build_optimizer(
        model.parameters(), cfg.optim.lr, cfg.optim.weight_decay, betas=ADAMW_BETAS, eps=ADAMW_EPS
    )
    # linear warm-up, then cosine decay to 10% of the peak
    scheduler = build_scheduler(
        optimizer, "cosine", cfg.optim.warmup_steps, cfg.train.total_steps, min_lr_ratio=0.1
    )
    elapsed_before = float(saved.get("elapsed_seconds", 0.0))
    started = time.perf_counter()
    tracked = (
        start_run(
            cfg.tracking.experiment,
            run_name=out.name,
            config=cfg,
            seeds=[cfg.train.seed],
            resume_run_id=saved.get("run_id"),
        )
        if cfg.tracking.enabled
        else nullcontext(None)
    )
    with tracked as run_:
        outcome, _trainer = train_sft(
            model,
            tokenizer,
            datasets.Dataset.from_list(demo_rows(demos)),
            _engine_args(cfg, out),
            resume_from=checkpoint,
            order=demo_order(len(demos), cfg.train.batch_size, cfg.train.total_steps, cfg.train.seed),
            optimizers=(optimizer, scheduler),
            engine_state=lambda: {
                "config_hash": digest,
                "run_id": run_.run_id if run_ else saved.get("run_id"),
                "elapsed_seconds": elapsed_before + time.perf_counter() - started,
            },
            metrics_path=out / "metrics.jsonl",
            run=run_,
            metric_prefix="sft/",
            mlflow_every=10,
            keep_last=1,
            model_loss=True,
        )
        record = outcome.last_record or _last_record(out / "metrics.jsonl")  # resumed at the last step
        model.eval()
        model_dir = out / "model"
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        (model_dir / TEMPLATE_FILE).write_text(cfg.data.template, encoding="utf-8")  # evaluate reads it
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # the final model supersedes them
        train_seconds = elapsed_before + time.perf_counter() - started
        results: dict = {
            "train_seconds": train_seconds,
            "resumed_from_step": outcome.resumed_step,
            "final_loss": record["loss"],
            "demos": kinds,
            "extra_worlds": [str(p["corpus"].parent) for p in extra],
            "model_dir": str(model_dir),
            "world_dir": str(paths["corpus"].parent) if paths else None,
        }
        dev = own.evaluation if own else load_flashrag_jsonl(paths["dev"])
        dev = dev[: cfg.eval.num_questions]
        if dev:
            scores = evaluate_examples(
                model,
                tokenizer,
                retriever,
                dev,
                cfg.rollout,
                cfg.data.template,
                cfg.use_chat_template,
                batch_size=cfg.eval.batch_size,
                predictions_path=out / "dev_predictions.jsonl",
            )
            results["dev"] = scores
            if run_:
                run_.log_metrics({"eval/average_em": scores["average_em"]}, step=cfg.train.total_steps)
            logger.info(
                "dev EM after SFT: %.3f %s",
                scores["average_em"],
                {s: round(v["em"], 3) for s, v in scores["by_source"].items()},
            )
        write_results_json(out / "results.json", results, config=cfg, seeds=[cfg.train.seed])
        if run_:
            run_.log_artifact(out / "results.json")
    logger.info("SFT done in %.0fs -> %s", train_seconds, model_dir)
    return results


def _last_record(path: Path) -> dict:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    return recipe_main(SFTConfig, run, argv, description=__doc__, prog="python -m rexrag sft")


if __name__ == "__main__":
    raise SystemExit(main())
