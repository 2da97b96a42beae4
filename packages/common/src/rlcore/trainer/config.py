"""Typed config of the GRPO trainer recipe (``RLTrainConfig``), loaded with ``rlcore.config.load_config``.

python -m rlcore.trainer.grpo --config my.yaml objective.kl_coef=0.001 train.total_steps=200
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rlcore.objectives import AGGREGATIONS, KL_KINDS
from rlcore.rollout import RolloutConfig
from rlcore.tracking_store import MLflowConfig

__all__ = [
    "ModelConfig",
    "LoRAConfig",
    "DataConfig",
    "GenerationConfig",
    "RewardConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "TrainLoopConfig",
    "TrackingConfig",
    "RLTrainConfig",
]


@dataclass
class LoRAConfig:
    """Low-rank adapters through PEFT (only the adapters train; the reference model is the base with adapters off)."""

    enabled: bool = False  # train LoRA adapters instead of all weights
    rank: int = 16  # adapter rank r
    alpha: int = 32  # scaling numerator; the update is (alpha / r) * B A
    dropout: float = 0.0  # dropout on the adapter input
    # module names that get adapters
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class ModelConfig:
    """Which policy to train and how to hold it in memory."""

    path: str = "tiny-qwen2"  # local folder, embedded name (tiny-qwen2, smollm2-135m-instruct) or hub id
    gradient_checkpointing: bool = False  # recompute activations in backward (less memory, ~30% slower)
    attn_implementation: str | None = None  # e.g. sdpa, flash_attention_2; None = transformers' default
    disable_dropout: bool = True  # zero every dropout: ratios then compare the same function, not two masks
    lora: LoRAConfig = field(default_factory=LoRAConfig)  # optional PEFT LoRA


@dataclass
class DataConfig:
    """Prompt records: a JSONL file, or records passed to ``train(records=...)`` by a wrapping recipe."""

    path: str = ""  # JSONL with one record per line; empty when the caller passes records
    id_field: str = "id"  # unique record id (group ids derive from it); line number if the field is absent
    # str (user turn), list of chat messages, or pre-tokenized ids under prompt_ids
    prompt_field: str = "prompt"
    use_chat_template: bool = True  # wrap a string prompt as one user message and apply the chat template
    system_prompt: str | None = None  # optional system message placed before the user turn
    shuffle: bool = True  # reshuffle the records every epoch (seeded by train.seed)


@dataclass
class RewardConfig:
    """The outcome reward: a batched function from ``rlcore.rewards``' registry (columns = record fields)."""

    name: str = "qa_em"  # registry name: qa_em | qa_f1 | mcq | format | anything added with @register_reward
    kwargs: dict[str, Any] = field(default_factory=dict)  # fixed keyword arguments, e.g. {tag: answer}
    success_threshold: float = 1.0  # reward >= this counts as correct in the accuracy metric


@dataclass
class ObjectiveConfig:
    """Advantages, PPO loss and the update schedule of one training step."""

    num_generations: int = 4  # G: rollouts per prompt (the GRPO group size)
    prompts_per_step: int = 4  # distinct prompts per training step, over all ranks
    scale_by_std: bool = True  # divide advantages by the reward std (GRPO) or not (Dr. GRPO)
    # group | batch: which rewards the std is taken over
    std_scope: Literal["group", "batch"] = "group"
    advantage_eps: float = 1e-6  # added to the std before dividing
    eps_low: float = 0.2  # lower PPO clip range: ratio >= 1 - eps_low
    eps_high: float = 0.2  # upper PPO clip range: ratio <= 1 + eps_high (0.28 = DAPO clip-higher)
    dual_clip: float | None = None  # c > 1 bounds the loss of negative-advantage tokens at -A c; None = off
    # token-mean | seq-mean-token-mean | seq-mean-token-sum
    aggregation: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"] = "token-mean"
    kl_coef: float = 0.0  # weight of the KL-to-reference loss; 0 skips the reference model entirely
    # k1 | k2 | k3 per-token estimator
    kl_kind: Literal["k1", "k2", "k3"] = "k3"
    kl_clamp: float = 10.0  # bound on the k3 value per token
    kl_importance_weighted: bool = False  # multiply the per-token KL by the PPO ratio (unbiased KL gradient)
    entropy_coef: float = 0.0  # weight of the entropy bonus (loss -= coef * entropy)
    tis_cap: float | None = None  # truncated importance weight cap for sampler/trainer mismatch; None = off
    ppo_epochs: int = 1  # passes over the step's trajectories
    minibatch_size: int = 0  # trajectories per optimizer step over all ranks; 0 = all of them (one step)
    micro_batch_size: int = 8  # trajectories per forward/backward on one rank (gradient accumulation)
    logprob_batch_size: int = 16  # trajectories per no-grad forward for old/reference log-probs

    def validate(self) -> None:
        if self.num_generations < 1 or self.prompts_per_step < 1:
            raise ValueError("objective.num_generations and objective.prompts_per_step must be >= 1")
        if self.std_scope not in ("group", "batch"):
            raise ValueError(f"objective.std_scope must be 'group' or 'batch', got {self.std_scope!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"objective.aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.kl_kind not in KL_KINDS:
            raise ValueError(f"objective.kl_kind must be one of {KL_KINDS}, got {self.kl_kind!r}")
        if self.ppo_epochs < 1 or self.micro_batch_size < 1 or self.logprob_batch_size < 1:
            raise ValueError("objective.ppo_epochs, micro_batch_size and logprob_batch_size must be >= 1")
        if self.minibatch_size < 0:
            raise ValueError(
                "objective.minibatch_size must be >= 0 (0 = one optimizer step per training step)"
            )
        if self.dual_clip is not None and self.dual_clip <= 1.0:
            raise ValueError(f"objective.dual_clip must be > 1 or null, got {self.dual_clip}")
        if self.tis_cap is not None and self.tis_cap <= 0:
            raise ValueError(f"objective.tis_cap must be > 0 or null, got {self.tis_cap}")


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule (stepped once per training step)."""

    lr: float = 1e-6  # peak learning rate
    weight_decay: float = 0.01  # AdamW decoupled weight decay (not on biases / norms)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW (beta1, beta2)
    eps: float = 1e-8  # AdamW epsilon
    max_grad_norm: float = 1.0  # clip the global grad norm; 0 disables clipping (non-finite steps still skip)
    # constant | linear | cosine (after warmup)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0  # linear warmup from 0 over this many training steps
    min_lr_ratio: float = 0.0  # final LR / peak LR for linear and cosine


@dataclass
class GenerationConfig:
    """Which engine samples the rollouts (the trainer always scores them with the training model)."""

    # hf: our KV-cache loop on the policy itself | vllm: colocated vLLM engine (GPU extra)
    backend: Literal["hf", "vllm"] = "hf"
    batch_size: int = 64  # hf: prompts per batched generate call
    vllm_gpu_memory_utilization: float = 0.4  # vllm: share of GPU memory for weights + KV cache
    vllm_sleep: bool = True  # vllm: release its GPU memory during the update phase (sleep mode)
    vllm_max_model_len: int | None = None  # vllm: context length cap; None = the model's


@dataclass
class TrainLoopConfig:
    """Length, precision, outputs and checkpoints of the run."""

    total_steps: int = 10  # training steps (one rollout batch each)
    seed: int = 0  # seeds weights of new modules, sampling, data order
    # auto (bf16 on GPU, fp32 on CPU) | no | bf16
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"
    output_dir: str = ""  # run folder; empty = runs/grpo/<time>-<config hash>
    save_every: int = 0  # checkpoint every N steps; 0 = only at the end and on SIGTERM/SIGINT
    keep_checkpoints: int = 2  # newest checkpoints kept; 0 keeps all
    save_final_model: bool = True  # also write a plain Hugging Face folder <output_dir>/final at the end
    resume: str = "auto"  # auto (newest checkpoint in output_dir, if any) | never | path to a checkpoint
    # save and exit after this step as if preempted (tests, time-boxed jobs); 0 = off
    stop_after_step: int = 0
    log_every: int = 1  # log metrics every N steps (to MLflow, metrics.jsonl and the console)


@dataclass
class TrackingConfig(MLflowConfig):
    """MLflow switch, experiment and run naming (store: $MLFLOW_TRACKING_URI or runs/mlflow.db); metrics.jsonl in
    the run folder is always written."""

    experiment: str = "rlcore-grpo"  # MLflow experiment name
    run_name: str | None = None  # MLflow run name; None = the run folder name
    tags: dict[str, str] = field(default_factory=dict)  # extra MLflow tags, e.g. {method: grpo} (UI grouping)


@dataclass
class RLTrainConfig:
    """GRPO/PPO training of a causal LM with (optionally multi-turn, tool-using) rollouts."""

    model: ModelConfig = field(default_factory=ModelConfig)  # the policy
    data: DataConfig = field(default_factory=DataConfig)  # prompt records
    reward: RewardConfig = field(default_factory=RewardConfig)  # outcome reward
    # turn structure and sampling (rlcore.rollout.RolloutConfig); single-turn by default
    rollout: RolloutConfig = field(
        default_factory=lambda: RolloutConfig(max_turns=1, tools_enabled=False, max_new_tokens_per_turn=64)
    )
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # rollout sampling engine
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)  # advantages, loss, PPO schedule
    optim: OptimConfig = field(default_factory=OptimConfig)  # AdamW + LR schedule
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)  # length, precision, checkpoints
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # MLflow

    def validate(self) -> None:
        """Raise ValueError naming the field on an impossible combination."""
        self.objective.validate()
        self.rollout.validate()
        if self.train.total_steps < 1:
            raise ValueError(f"train.total_steps must be >= 1, got {self.train.total_steps}")
        if self.train.mixed_precision not in ("auto", "no", "bf16"):
            raise ValueError(
                f"train.mixed_precision must be auto, no or bf16, got {self.train.mixed_precision!r}"
            )
        if len(self.optim.betas) != 2:
            raise ValueError(f"optim.betas must have two values, got {self.optim.betas}")
        if self.generation.backend not in ("hf", "vllm"):
            raise ValueError(f"generation.backend must be hf or vllm, got {self.generation.backend!r}")
        if self.generation.backend == "vllm" and self.model.lora.enabled:
            raise ValueError(
                "generation.backend=vllm with model.lora.enabled is not supported (weight sync "
                "would need merged adapters); use generation.backend=hf"
            )
        if self.rollout.greedy or self.rollout.temperature == 0:
            raise ValueError(
                "rollout.greedy / temperature 0 gives identical rollouts per group: no GRPO signal"
            )
