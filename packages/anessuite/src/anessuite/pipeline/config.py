"""Typed config of the CPT -> SFT -> GRPO (Morpheus) pipeline. Defaults are the CPU scale on the embedded
SmolLM2-135M and the synthetic world; ``packages/anessuite/configs/`` holds the paper-scale YAMLs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from anessuite.prompts import PromptConfig
from rlcore.rollout import RolloutConfig
from rlcore.tracking_store import MLflowConfig
from rlcore.trainer import ObjectiveConfig, OptimConfig
from rlcore.trainer.config import GenerationConfig as RolloutEngineConfig

__all__ = ["DataPrepConfig", "HFStageConfig", "GRPOStageConfig", "StageEvalConfig", "PipelineConfig"]


@dataclass
class DataPrepConfig:
    """Where training data comes from; empty paths mean the synthetic world."""

    # added later, left out of config hashes and run identities while at their default
    IDENTITY_OMIT_AT_DEFAULT: ClassVar[tuple[str, ...]] = ("sft_replay", "sft_extra", "sft_answer")

    world_seed: int = 0  # seed of the synthetic world used when a path below is empty
    corpus: str = ""  # AnesCorpus parquet folder/file (text column)
    anesqa: str = ""  # AnesQA parquet/JSONL (question, answer)
    anesr1: str = ""  # AnesR1-style MCQs with reasoning (JSONL/JSON/parquet)
    benchmark: str = ""  # benchmark file/folder used by the stage evaluations
    corpus_lang: Literal["en", "zh", "all"] = "all"  # CPT language
    # SFT data: anesqa and/or anesr1
    sft_sources: list[str] = field(default_factory=lambda: ["anesqa", "anesr1"])
    sft_lang: Literal["en", "zh", "all"] = "all"  # SFT language
    rl_lang: Literal["en", "zh", "all"] = "all"  # GRPO prompt language
    qa_system_prompt: str = ""  # optional system message for AnesQA chats
    # CPT documents replayed inside the SFT data (assistant turns after an empty user turn), this many per SFT
    # record, drawn from data.corpus with the pipeline seed, so SFT does not overwrite what CPT stored; only for a
    # model that has read that corpus (an arm without CPT must keep 0). 0 = none
    sft_replay: float = 0.0
    # a JSONL of SFT chats ({"messages": [...]}) mixed into the SFT data as they are, e.g. world-agnostic lookup
    # drills every arm trains on; empty = none
    sft_extra: str = ""
    # how the AnesR1 SFT chats state their choice on the last line: "letter" ("Answer: D") or "text" ("Answer:
    # bradycardia", the gold option's text, which the evaluation's extractor reads as that option)
    sft_answer: Literal["letter", "text"] = "letter"


@dataclass
class HFStageConfig:
    """One TRL SFTTrainer stage (CPT with packing, or SFT with completion-only loss)."""

    # added later, left out of config hashes and run identities while at their default
    IDENTITY_OMIT_AT_DEFAULT: ClassVar[tuple[str, ...]] = ("group_by_length", "trainable", "loss")

    enabled: bool = True  # run this stage (disabled stages pass their input model through)
    max_length: int = 2048  # tokens per packed block (CPT) or per example (SFT, longer ones are truncated)
    micro_batch_size: int = 1  # sequences per forward/backward on one device (gradient accumulation)
    gradient_accumulation_steps: int = 8  # micro-batches per optimizer step
    lr: float = 1.0e-4  # peak learning rate
    num_epochs: float = 3.0  # passes over the data (ignored when total_steps > 0)
    total_steps: int = -1  # optimizer steps; > 0 overrides num_epochs
    lr_scheduler: str = "cosine"  # transformers scheduler name
    warmup_ratio: float = 0.05  # share of steps with linear warmup
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping
    bf16: bool = False  # bf16 mixed precision (GPU)
    gradient_checkpointing: bool = False  # recompute activations (memory for speed)
    deepspeed: str | None = None  # DeepSpeed JSON (infra/deepspeed/zero1.json for CPT, zero3.json for SFT)
    save_every: int = 100  # checkpoint every N optimizer steps (resume point)
    keep_checkpoints: int = 2  # newest checkpoints kept; 0 keeps all
    log_every: int = 10  # log loss every N optimizer steps
    max_samples: int | None = None  # cap on training records (CPU smoke runs); None = all
    # SFT only: batches of records of similar length (shuffled groups of 50 batches, each sorted by length), so a
    # batch is padded to a near length instead of the longest record; the same records and trained tokens per epoch
    group_by_length: bool = False
    # parameters trained: those whose name contains one of these strings (e.g. [self_attn] keeps the MLPs, norms
    # and embeddings, where a small model holds what CPT stored, frozen); empty trains every parameter
    trainable: list[str] = field(default_factory=list)
    # the cross-entropy that trains: "trl", TRL's fused log-prob head (never builds the full logits; also logs
    # entropy and token accuracy), or "model", the model's own cross-entropy over the full logits: the same mean
    # over labelled tokens, summed in another order, and on CPU about 15% less time per step for a small model
    loss: Literal["trl", "model"] = "trl"
    # worker processes that tokenise and pack the data (datasets map); None = the training process itself
    num_proc: int | None = None
    eos_token: str | None = None  # document separator / end token override (None = the tokenizer's)
    attn_implementation: str | None = None  # e.g. flash_attention_2 on GPU; None = transformers' default
    # empty: run in this process; else a command prefix, e.g. "accelerate launch --config_file X"
    launcher: str = ""


@dataclass
class GRPOStageConfig:
    """GRPO on verifiable MCQs through rlcore's trainer (single turn, MCQ correctness + optional format term)."""

    enabled: bool = True  # run this stage
    total_steps: int = 200  # training steps (one rollout batch each)
    format_weight: float = 0.0  # reward += weight * (response ends with the "Answer: X" line)
    max_prompts: int | None = None  # cap on RL prompts; None = all
    save_every: int = 50  # checkpoint every N steps
    mixed_precision: str = "auto"  # auto | no | bf16
    # single-turn sampling settings
    rollout: RolloutConfig = field(
        default_factory=lambda: RolloutConfig(
            max_turns=1, tools_enabled=False, max_new_tokens_per_turn=1024, stop_at_answer=False
        )
    )
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)  # group size, clipping, KL
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-6))  # AdamW + schedule
    generation: RolloutEngineConfig = field(default_factory=RolloutEngineConfig)  # rollout engine: hf | vllm
    launcher: str = ""  # empty: run in this process; else a command prefix (accelerate/deepspeed launcher)


@dataclass
class StageEvalConfig:
    """Held-out benchmark evaluation of the base model and after every stage."""

    enabled: bool = True  # evaluate after each stage
    modes: list[str] = field(default_factory=lambda: ["generate", "loglik"])  # generate (CoT) and/or loglik
    max_new_tokens: int = 2048  # generate mode response cap
    batch_size: int = 16  # hf backend batch size
    backend: str = "hf"  # hf | vllm
    languages: list[str] = field(default_factory=lambda: ["en", "zh"])  # benchmark languages
    limit_per_language: int | None = None  # first N items per language (smoke runs)
    bootstrap_iters: int = 1000  # bootstrap replicates for the CIs


@dataclass
class PipelineConfig:
    """CPT -> SFT -> GRPO with an evaluation after each stage, one MLflow parent run, resumable stage by stage."""

    name: str = "cpu-smollm2"  # pipeline name (run folder and MLflow run name)
    base_model: str = "smollm2-135m-instruct"  # starting checkpoint: folder, embedded name or hub id
    # run folder; empty = <runs root>/anessuite-pipeline/<name>-<training fingerprint>; a re-run resumes
    output_dir: str = ""
    seed: int = 0  # training seed of every stage
    evaluate_base: bool = True  # evaluate the base model before training
    only_stage: str = ""  # run just this stage (cpt | sft | grpo), e.g. under a multi-GPU launcher
    # MLflow: one parent run with nested stage runs, in experiment tracking.experiment
    tracking: MLflowConfig = field(default_factory=lambda: MLflowConfig(experiment="anessuite-pipeline"))
    # reuse finished stages and evaluation responses of other pipelines with identical inputs
    reuse: bool = True
    # MCQ prompt used by SFT/GRPO data and evaluation
    prompt: PromptConfig = field(default_factory=PromptConfig)
    # training data sources (empty paths: the synthetic world)
    data: DataPrepConfig = field(default_factory=DataPrepConfig)
    # continued pre-training on the corpus
    cpt: HFStageConfig = field(default_factory=HFStageConfig)
    # supervised fine-tuning on QA chats
    sft: HFStageConfig = field(
        default_factory=lambda: HFStageConfig(
            max_length=4096,
            gradient_accumulation_steps=4,
            lr=1e-5,
            num_epochs=5.0,
            warmup_ratio=0.1,
            max_grad_norm=5.0,
            save_every=500,
        )
    )
    # GRPO on verifiable MCQs
    grpo: GRPOStageConfig = field(default_factory=GRPOStageConfig)
    # evaluation of the base model and after every stage
    eval: StageEvalConfig = field(default_factory=StageEvalConfig)

    # the recipes share one vocabulary (CONTRIBUTING.md); a config written with an old name fails naming the new
    # one. Run identities (config hash, stage keys) still spell these keys the old way: stages finished before
    # the rename keep their keys and are reused.
    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "out_dir": "output_dir",
        "tracking": "tracking.enabled",
        "experiment": "tracking.experiment",
        **{
            f"{stage}.{old}": f"{stage}.{new}"
            for stage in ("cpt", "sft")
            for old, new in (
                ("learning_rate", "lr"),
                ("save_steps", "save_every"),
                ("save_total_limit", "keep_checkpoints"),
                ("logging_steps", "log_every"),
                ("max_steps", "total_steps"),
                ("per_device_batch_size", "micro_batch_size"),
            )
        },
    }
    IDENTITY_KEEPS_OLD_NAMES: ClassVar[bool] = True
