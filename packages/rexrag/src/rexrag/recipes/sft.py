"""SFT warm-up on synthetic search demonstrations (the start point of the CPU-scale GRPO / REX-RAG runs).

    python -m rexrag sft --config packages/rexrag/configs/cpu/sft.yaml [train.total_steps=300 ...]

Steps: write the synthetic world and its BM25 index -> build a tokenizer and a tiny Qwen2 from scratch (or load a
model) -> build demonstrations with the real retriever (search chains, confident wrong answers, one-search
shortcuts, self-doubt recoveries) -> next-token cross-entropy on model-written tokens only -> save an HF folder
(model + tokenizer) -> greedy multi-turn EM on dev questions.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from rexrag.data.demos import KINDS, Demo, DemoConfig, build_demos
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
from rexrag.recipes.sft_checkpoint import (
    SFTState,
    find_sft_checkpoint,
    load_sft_state,
    restore_rng,
    save_sft_checkpoint,
)
from rexrag.recipes.train import RetrieverConfig
from rlcore.config import config_hash, recipe_main
from rlcore.faults import fault_point
from rlcore.rollout import RolloutConfig
from rlcore.runs import make_run_dir
from rlcore.seeding import seed_everything
from rlcore.tracking import start_run, write_results_json

logger = logging.getLogger(__name__)


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
    extra_worlds: int = (
        0  # more worlds (seeds world.seed+1 .. +N) whose questions (all splits) are demonstrations too
    )
    extra_worlds_dir: str = ""  # where those worlds are written; empty = "<data.dir>-extra"
    seed: int = 0  # seeds model init, demo order and sampling
    # run folder; empty = runs/rexrag-sft/<time>-<hash>
    output_dir: str = ""
    save_every: int = 500  # write output_dir/checkpoint every N steps (0 = never)
    resume: str = "auto"  # auto: continue from output_dir/checkpoint if there is one | never: start over


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
    rollout: RolloutConfig = field(
        default_factory=lambda: RolloutConfig(
            max_turns=4, max_new_tokens_per_turn=48, max_response_tokens=640
        )
    )  # observation format (demos) and turn structure (evaluation)
    # AdamW + learning-rate schedule
    optim: SFTOptimConfig = field(default_factory=SFTOptimConfig)
    # length, batches, outputs, checkpoints
    train: SFTLoopConfig = field(default_factory=SFTLoopConfig)
    eval: SFTEvalConfig = field(default_factory=SFTEvalConfig)  # evaluation after training
    experiment: str = "rexrag-sft"  # MLflow experiment
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
    }

    def validate(self) -> None:
        validate_source(self.qa, self.retriever.kind)


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
        from rlcore.models import train_bpe_tokenizer

        tokenizer = train_bpe_tokenizer(texts, cfg.model.vocab_size)
        return build_scratch_model(tokenizer, cfg.model, cfg.train.seed), tokenizer
    from rlcore.models import load_causal_lm, load_tokenizer

    return load_causal_lm(cfg.model.init, dtype=torch.float32), load_tokenizer(cfg.model.init)


def _collate(demos: list[Demo], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (B, L) input ids, attention mask and labels (-100 outside model-written tokens)."""
    width = max(len(d.prompt_ids) + len(d.response_ids) for d in demos)
    ids = torch.full((len(demos), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(demos), width), dtype=torch.long)
    labels = torch.full((len(demos), width), -100, dtype=torch.long)
    for row, demo in enumerate(demos):
        full = demo.prompt_ids + demo.response_ids
        ids[row, : len(full)] = torch.tensor(full)
        attention[row, : len(full)] = 1
        start = len(demo.prompt_ids)
        trained = torch.tensor(demo.response_ids)[torch.tensor(demo.loss_mask, dtype=torch.bool)]
        positions = torch.arange(start, start + len(demo.response_ids))[
            torch.tensor(demo.loss_mask, dtype=torch.bool)
        ]
        labels[row, positions] = trained
    return ids, attention, labels


def _metrics_up_to(path: Path, step: int) -> list[dict]:
    """The step records of ``path`` up to ``step`` (a resumed run rewrites the rest). Lines after the checkpoint
    may be cut mid-write by the interruption and are ignored; a bad line before it is an error naming file:line."""
    records: list[dict] = []
    if not path.exists():
        return records
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or (records and records[-1]["step"] >= step):
            continue
        try:
            record = json.loads(line)
            record["step"] = int(record["step"])
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(
                f"{path}:{number}: unreadable metrics record before the checkpoint step ({exc})"
            ) from exc
        if record["step"] <= step:
            records.append(record)
    return records


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
    if cfg.train.resume not in ("auto", "never"):
        raise ValueError(f"train.resume must be auto or never, got {cfg.train.resume!r}")
    # settings that do not change the training trajectory may differ between the interrupted and resumed run
    digest = config_hash(
        replace(
            cfg,
            experiment="",
            eval=SFTEvalConfig(),
            train=replace(cfg.train, output_dir="", resume="auto", save_every=0),
        )
    )
    checkpoint = find_sft_checkpoint(out) if cfg.train.resume == "auto" else None
    state = load_sft_state(checkpoint, digest) if checkpoint else None
    if state is not None:
        from rlcore.models import load_causal_lm, load_tokenizer

        logger.info(
            "resuming the warm-up from %s (step %d of %d)", checkpoint, state.step, cfg.train.total_steps
        )
        model = load_causal_lm(str(checkpoint / "model"), dtype=torch.float32)
        tokenizer = load_tokenizer(str(checkpoint / "model"))
    else:
        texts = [t for world in extra for t in world_tokenizer_texts(world, cfg.data.template, pool)]
        if own:
            texts += own_tokenizer_texts(
                own.train + own.evaluation, retriever, cfg.rollout, cfg.data.template, pool
            )
        else:
            texts += world_tokenizer_texts(paths, cfg.data.template, pool)
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
        cfg.demos,
        cfg.use_chat_template,
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
        )
    kinds = {k: sum(d.kind == k for d in demos) for k in KINDS}
    logger.info(
        "built %d demonstrations %s; %d parameters",
        len(demos),
        kinds,
        sum(p.numel() for p in model.parameters()),
    )
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.optim.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.optim.lr,
    )

    def lr_factor(step: int) -> float:
        if step < cfg.optim.warmup_steps:
            return (step + 1) / cfg.optim.warmup_steps
        progress = (step - cfg.optim.warmup_steps) / max(1, cfg.train.total_steps - cfg.optim.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    rng = random.Random(cfg.train.seed)
    order: list[int] = []
    metrics_path = out / "metrics.jsonl"
    start_step, elapsed_before = 0, 0.0
    if state is not None:
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        rng, order, start_step, elapsed_before = (
            restore_rng(state),
            list(state.order),
            state.step,
            state.elapsed_seconds,
        )
        kept = _metrics_up_to(metrics_path, start_step)
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    elif metrics_path.exists():
        metrics_path.unlink()
    started = time.perf_counter()
    record: dict = {}
    with start_run(
        cfg.experiment,
        run_name=out.name,
        config=cfg,
        seeds=[cfg.train.seed],
        resume_run_id=state.run_id if state is not None else None,
    ) as run_:
        model.train()
        progress = tqdm(
            range(start_step, cfg.train.total_steps),
            desc="sft",
            mininterval=5,
            initial=start_step,
            total=cfg.train.total_steps,
        )
        with metrics_path.open("a", encoding="utf-8") as metrics_file:
            for step in progress:
                if len(order) < cfg.train.batch_size:
                    order += rng.sample(range(len(demos)), len(demos))
                batch = [demos[i] for i in order[: cfg.train.batch_size]]
                del order[: cfg.train.batch_size]
                ids, attention, labels = _collate(batch, tokenizer.pad_token_id)
                loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                optimizer.step()
                fault_point("sft.update", step + 1)
                scheduler.step()
                record = {
                    "step": step + 1,
                    "loss": loss.item(),
                    "grad_norm": float(grad_norm),
                    "lr": scheduler.get_last_lr()[0],
                }
                metrics_file.write(json.dumps(record) + "\n")
                if (step + 1) % 10 == 0 or step + 1 == cfg.train.total_steps:
                    run_.log_metrics(
                        {"sft/loss": record["loss"], "sft/grad_norm": record["grad_norm"]}, step=step + 1
                    )
                    progress.set_postfix(loss=f"{record['loss']:.3f}")
                if (
                    cfg.train.save_every
                    and (step + 1) % cfg.train.save_every == 0
                    and step + 1 < cfg.train.total_steps
                ):
                    metrics_file.flush()
                    save_sft_checkpoint(
                        out,
                        model,
                        tokenizer,
                        SFTState(
                            step=step + 1,
                            order=list(order),
                            rng_state=rng.getstate(),
                            torch_rng_state=torch.get_rng_state(),
                            optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(),
                            elapsed_seconds=elapsed_before + time.perf_counter() - started,
                            run_id=run_.run_id,
                            config_hash=digest,
                        ),
                    )
        if not record:  # resumed at the last step: nothing left to train
            record = _metrics_up_to(metrics_path, start_step)[-1]
        model.eval()
        model_dir = out / "model"
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        (model_dir / TEMPLATE_FILE).write_text(cfg.data.template, encoding="utf-8")  # evaluate reads it
        shutil.rmtree(out / "checkpoint", ignore_errors=True)  # the final model supersedes it
        train_seconds = elapsed_before + time.perf_counter() - started
        results: dict = {
            "train_seconds": train_seconds,
            "resumed_from_step": start_step,
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
            run_.log_metrics({"eval/average_em": scores["average_em"]}, step=cfg.train.total_steps)
            logger.info(
                "dev EM after SFT: %.3f %s",
                scores["average_em"],
                {s: round(v["em"], 3) for s, v in scores["by_source"].items()},
            )
        write_results_json(out / "results.json", results, config=cfg, seeds=[cfg.train.seed])
        run_.log_artifact(out / "results.json")
    logger.info("SFT done in %.0fs -> %s", train_seconds, model_dir)
    return results


def main(argv: list[str] | None = None) -> int:
    return recipe_main(SFTConfig, run, argv, description=__doc__, prog="python -m rexrag sft")


if __name__ == "__main__":
    raise SystemExit(main())
