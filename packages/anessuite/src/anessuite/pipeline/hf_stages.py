"""CPT and SFT stages on the project's one SFT engine (:mod:`rlcore.trainer.sft`, TRL's SFTTrainer).

* CPT: plain-text documents, packed into ``max_length`` blocks ("wrapped" packing: documents are concatenated
  with the end token between them and cut into equal blocks), loss on every token.
* SFT: chats converted to prompt/completion pairs, so the loss covers only the assistant's answer
  (TRL's completion-only loss); the prompt is the same chat template the evaluation uses. With
  ``sft.group_by_length`` the batches are drawn by transformers' length-grouped sampler (records of similar token
  length together, so a batch of short chats is not padded to a long one): every record is still drawn once per
  epoch with the same tokens and labels, only which records share a batch changes. ``trainable`` (either stage)
  trains only the parameters whose names contain one of its strings.

Each stage writes ``<stage>/trainer/checkpoint-*`` (resume points: a re-run continues from the newest complete
one; a torn one, cut by a kill, is skipped with a warning), ``<stage>/metrics.jsonl`` (one line per logged step)
and ``<stage>/final`` (a plain Hugging Face folder, the next stage's input). Metrics go to the stage's MLflow run.

The CPT text is never held in memory: AnesCorpus is about 3B tokens. The JSONL is streamed into an Arrow file
under ``<stage>/dataset-cache`` (memory-mapped, written once by the main process while the other ranks wait),
and TRL tokenises and packs it in ``num_proc`` worker processes into cached Arrow files the other ranks reuse.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from anessuite.pipeline.config import HFStageConfig
from rlcore.io import iter_jsonl_records, read_jsonl
from rlcore.models import load_causal_lm, load_tokenizer

__all__ = [
    "run_hf_stage",
    "chat_to_prompt_completion",
    "cpt_text_dataset",
    "freeze_except",
    "stage_training_args",
]

logger = logging.getLogger(__name__)


def chat_to_prompt_completion(record: dict[str, Any]) -> dict[str, Any]:
    """``{"messages": [..., assistant]}`` -> ``{"prompt": [...], "completion": [assistant]}``."""
    messages = record["messages"]
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError(
            f"SFT record must end with an assistant message, got roles {[m['role'] for m in messages]}"
        )
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def _load_jsonl(path: Path, limit: int | None) -> list[dict[str, Any]]:
    rows = read_jsonl(path, limit=limit)
    if not rows:
        raise ValueError(f"{path}: no training records")
    return rows


def _cpt_texts(path: str, limit: int | None, stamp: str):
    """``{"text"}`` rows of a CPT JSONL, one line at a time (the first ``limit`` when given). ``stamp`` (size and
    modification time) is unused here: it is part of the dataset cache's key, so a rewritten file is re-read."""
    for count, (_, record) in enumerate(iter_jsonl_records(path, what="CPT data")):
        if limit is not None and count >= limit:
            return
        yield {"text": record["text"]}


def cpt_text_dataset(data_file: Path, limit: int | None, cache_dir: Path):
    """A memory-mapped ``datasets.Dataset`` with one ``text`` column, streamed from ``data_file``.

    Built by the main process first (the others then open the same cache), so no rank ever holds the corpus
    in memory. The rows and their order are those of the file.
    """
    # heavy: only the training stages need it
    import datasets
    from accelerate import PartialState

    if limit == 0 or next(_cpt_texts(str(data_file), None, ""), None) is None:
        raise ValueError(f"{data_file}: no training records")
    stat = Path(data_file).stat()
    with PartialState().main_process_first():
        dataset = datasets.Dataset.from_generator(
            _cpt_texts,
            gen_kwargs={
                "path": str(data_file),
                "limit": limit,
                "stamp": f"{stat.st_size}-{stat.st_mtime_ns}",
            },
            features=datasets.Features({"text": datasets.Value("string")}),
            cache_dir=str(cache_dir),
        )
    return dataset


def freeze_except(model: Any, trainable: list[str], key: str = "sft.trainable") -> tuple[int, int]:
    """Train only the parameters whose name contains one of ``trainable``; the others keep their values. Returns
    (trained, all) parameter counts; a list that matches nothing, or everything, fails naming ``key``."""
    trained = total = 0
    for name, param in model.named_parameters():
        param.requires_grad_(any(part in name for part in trainable))
        trained += param.numel() if param.requires_grad else 0
        total += param.numel()
    if trained == 0:
        names = sorted({n.split(".")[-2] for n, _ in model.named_parameters() if "." in n})
        raise ValueError(f"{key}={trainable}: matches no parameter (parts of the names: {names})")
    logger.info("%s=%s: training %d of %d parameters", key, trainable, trained, total)
    return trained, total


def stage_training_args(kind: str, cfg: HFStageConfig, output_dir: Path, seed: int):
    """TRL's ``SFTConfig`` of one stage: CPT packs wrapped blocks with loss on every token, SFT trains on the
    completion only (batches grouped by length when ``cfg.group_by_length``)."""
    # heavy and optional here: only a stage that trains needs torch and TRL
    import torch
    from trl import SFTConfig

    if kind not in ("cpt", "sft"):
        raise ValueError(f"kind must be cpt or sft, got {kind!r}")
    if kind == "cpt" and cfg.group_by_length:
        raise ValueError(
            "cpt.group_by_length: CPT packs its text into blocks of one length; only sft groups by length"
        )
    return SFTConfig(
        output_dir=str(output_dir),
        max_length=cfg.max_length,
        packing=kind == "cpt",
        packing_strategy="wrapped",
        completion_only_loss=None if kind == "cpt" else True,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.total_steps,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a share of all steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        bf16=cfg.bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        deepspeed=cfg.deepspeed,
        save_steps=cfg.save_every,
        logging_steps=cfg.log_every,
        seed=seed,
        data_seed=seed,
        eos_token=cfg.eos_token,
        dataset_num_proc=cfg.num_proc,
        use_cpu=not torch.cuda.is_available(),
    )


def run_hf_stage(
    kind: str, cfg: HFStageConfig, model_in: str, data_file: Path, stage_dir: Path, seed: int, run: Any = None
) -> Path:
    """Train ``model_in`` on ``data_file`` (CPT text or SFT chats); returns the ``final`` model folder."""
    # datasets is heavy (~0.7 s to import) and only this path needs it
    import datasets
    import torch

    # rlcore.trainer loads torch and accelerate (the GRPO trainer); only a training stage needs its SFT engine
    from rlcore.trainer.sft import find_sft_checkpoint, train_sft

    args = stage_training_args(kind, cfg, stage_dir / "trainer", seed)  # checks kind first
    final = stage_dir / "final"
    trainer_dir = stage_dir / "trainer"
    if kind == "cpt":
        dataset = cpt_text_dataset(data_file, cfg.max_samples, stage_dir / "dataset-cache")
    else:
        dataset = datasets.Dataset.from_list(
            [chat_to_prompt_completion(row) for row in _load_jsonl(data_file, cfg.max_samples)]
        )
    tokenizer = load_tokenizer(model_in, padding_side="right")
    extra = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
    model = load_causal_lm(model_in, dtype=torch.bfloat16 if cfg.bf16 else torch.float32, **extra)
    if cfg.trainable:
        freeze_except(model, cfg.trainable, f"{kind}.trainable")
    resume = find_sft_checkpoint(trainer_dir, "auto")
    result, trainer = train_sft(
        model,
        tokenizer,
        dataset,
        args,
        resume_from=resume,
        metrics_path=stage_dir / "metrics.jsonl",
        run=run,
        metric_prefix="train/",
        keep_last=cfg.keep_checkpoints,  # pruned once the newer checkpoint is complete
        desc=kind,
        model_loss=cfg.loss == "model",
    )
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    summary = {
        "train_loss": result.training_loss,
        "global_step": result.global_step,
        "records": len(dataset),
        "resumed_from": str(resume) if resume else None,
    }
    if run is not None:
        run.log_metrics({"final/train_loss": result.training_loss}, step=result.global_step)
    (stage_dir / "train_summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    logger.info("%s done: %s -> %s", kind, summary, final)
    return final
