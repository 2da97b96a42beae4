"""Building the pieces the trainer loop uses: accelerator, run folder, policy (+ LoRA), reference, reward,
optimizer and schedule, rollout engine and prompt sampler (:func:`build_trainer`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlcore.generation import HFBackend, VLLMBackend
from rlcore.models import load_causal_lm, load_tokenizer, resolve_model_path
from rlcore.rewards import get_reward
from rlcore.rollout import RolloutEngine
from rlcore.runs import make_run_dir
from rlcore.seeding import derive_seed, seed_everything
from rlcore.trainer.batching import PromptSampler
from rlcore.trainer.config import RewardConfig, RLTrainConfig
from rlcore.trainer.data import load_records
from rlcore.trainer.optim import Stepper, build_optimizer, build_scheduler, fill_deepspeed_config, zero_stage
from rlcore.trainer.seams import RewardFn

__all__ = [
    "TrainerParts",
    "build_trainer",
    "make_accelerator",
    "resolve_output_dir",
    "build_policy",
    "build_reward_fn",
    "build_backend",
]

logger = logging.getLogger(__name__)


def make_accelerator(cfg: RLTrainConfig):
    """An ``accelerate.Accelerator``; DDP/DeepSpeed come from the launcher (``accelerate launch --config_file``
    or the ``ACCELERATE_USE_DEEPSPEED``/``ACCELERATE_DEEPSPEED_CONFIG_FILE`` variables ``infra/launch_train.sh``
    sets). ``mixed_precision=auto`` means bf16 autocast on GPU and fp32 on CPU."""
    # accelerate is heavy (~0.9 s to import) and only training needs it
    from accelerate import Accelerator, PartialState

    launched = int(os.environ.get("LOCAL_RANK", -1)) != -1
    if launched and not torch.cuda.is_available():
        # Several CPU processes (torchrun / accelerate launch): without these hints accelerate records world
        # size 1 while every rank runs, so each would act as the main one. DeepSpeed needs the gloo backend
        # named; plain DDP needs cpu=True (MULTI_CPU over gloo).
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "") == "true":
            PartialState(backend="gloo")
        else:
            PartialState(cpu=True)
    precision = cfg.train.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "no"
    return Accelerator(mixed_precision=precision)


def resolve_output_dir(cfg: RLTrainConfig, accelerator) -> Path:
    """``train.output_dir``, or a fresh ``runs/grpo/<time>-<hash>`` made by rank 0 and shared with all ranks."""
    # accelerate is heavy (~0.9 s to import) and only training needs it
    from accelerate.utils import broadcast_object_list

    if cfg.train.output_dir:
        path = Path(cfg.train.output_dir).expanduser().resolve()
        if accelerator.is_main_process:
            path.mkdir(parents=True, exist_ok=True)
    else:
        holder = [str(make_run_dir("grpo", cfg)) if accelerator.is_main_process else ""]
        if accelerator.num_processes > 1:
            broadcast_object_list(holder, from_process=0)
        path = Path(holder[0])
    accelerator.wait_for_everyone()
    return path


def build_policy(cfg: RLTrainConfig, device: torch.device) -> tuple[Any, torch.nn.Module, Any]:
    """``(tokenizer, policy, reference)``.

    The policy is loaded in fp32 (master weights; bf16 comes from autocast or DeepSpeed), with gradient
    checkpointing and LoRA if configured. ``reference`` is None when ``kl_coef == 0`` (never loaded), the
    string ``"adapters-off"`` with LoRA (the base model is the policy with adapters disabled), or a frozen
    fp32 copy on ``device``.
    """

    tokenizer = load_tokenizer(cfg.model.path, padding_side="left")
    extra = {"attn_implementation": cfg.model.attn_implementation} if cfg.model.attn_implementation else {}
    model = load_causal_lm(cfg.model.path, dtype=torch.float32, **extra)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if cfg.model.disable_dropout:
        _disable_dropout(model)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    lora = cfg.model.lora
    if lora.enabled:
        # peft is heavy (~3.7 s to import) and only LoRA runs need it
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules),
                task_type="CAUSAL_LM",
            ),
        )
        if cfg.model.gradient_checkpointing:
            model.enable_input_require_grads()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("policy %s: %d trainable / %d parameters", cfg.model.path, trainable, total)

    reference: Any = None
    if cfg.objective.kl_coef != 0:
        if lora.enabled:
            reference = "adapters-off"
        else:
            reference = load_causal_lm(cfg.model.path, dtype=torch.float32, **extra).to(device)
            reference.eval().requires_grad_(False)
    return tokenizer, model, reference


def _disable_dropout(model: torch.nn.Module) -> None:
    """Set every ``nn.Dropout`` and every float ``attention_dropout`` attribute (HF attention modules) to 0."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def build_reward_fn(reward: RewardConfig):
    """The batched reward ``get_reward(reward.name, **reward.kwargs)`` from ``rlcore.rewards``."""

    return get_reward(reward.name, **dict(reward.kwargs))


def build_backend(cfg: RLTrainConfig, policy: torch.nn.Module, tokenizer: Any):
    """The rollout sampler: ``HFBackend`` over the policy module itself (weights always current), or a colocated
    ``VLLMBackend`` that receives the policy's weights after every update (``update_weights``)."""

    if cfg.generation.backend == "hf":
        return HFBackend(policy, tokenizer, batch_size=cfg.generation.batch_size)

    return VLLMBackend(
        resolve_model_path(cfg.model.path),
        tokenizer,
        gpu_memory_utilization=cfg.generation.vllm_gpu_memory_utilization,
        enable_sleep_mode=cfg.generation.vllm_sleep,
        max_model_len=cfg.generation.vllm_max_model_len,
        seed=cfg.train.seed,
    )


@dataclass
class TrainerParts:
    """Everything one training run holds on to between steps (built once by :func:`build_trainer`)."""

    accelerator: Any  # accelerate.Accelerator (one process, DDP or DeepSpeed)
    output_dir: Path  # run folder, the same on every rank
    records: list[dict[str, Any]]  # prompt records
    reward_fn: RewardFn  # batched reward
    tokenizer: Any  # left-padding tokenizer of the policy
    model: torch.nn.Module  # the policy as prepared by accelerate (DDP / DeepSpeed wrapper)
    policy: torch.nn.Module  # the same policy, unwrapped (sampling, weight sync, seams)
    reference: Any  # None | "adapters-off" | frozen reference module (see build_policy)
    optimizer: Any  # prepared AdamW
    scheduler: Any  # LR schedule, stepped once per training step
    stepper: Stepper  # backward with accumulation boundaries, clip, skip non-finite steps
    backend: Any  # generation backend that samples the rollouts
    engine: RolloutEngine  # single- or multi-turn rollouts over ``backend``
    sampler: PromptSampler  # epoch-wise shuffled record order (state: two integers)
    checkpointed: dict[str, Any]  # objects whose state_dict() goes into every checkpoint (LR schedule first)

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def rank(self) -> int:
        return self.accelerator.process_index


def build_trainer(
    cfg: RLTrainConfig,
    records: list[dict[str, Any]] | None,
    reward_fn: RewardFn | None,
    retriever: Any,
    stateful: Mapping[str, Any] | None,
    backend: Any,
) -> TrainerParts:
    """Accelerator, seeds, run folder, data, policy/reference, optimizer and schedule, engine and sampler.

    The order is part of the run's reproducibility (model initialisation and sampling draw from the seeded
    generators in this order); keep it when adding pieces.
    """
    accelerator = make_accelerator(cfg)
    seed_everything(cfg.train.seed)
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.objective.prompts_per_step % world:
        raise ValueError(
            f"objective.prompts_per_step={cfg.objective.prompts_per_step} must be divisible by the "
            f"number of processes ({world})"
        )
    output_dir = resolve_output_dir(cfg, accelerator)
    records = records if records is not None else load_records(cfg.data.path)
    reward_fn = reward_fn or build_reward_fn(cfg.reward)

    tokenizer, model, reference = build_policy(cfg, accelerator.device)
    optim = cfg.optim
    optimizer = build_optimizer(
        model.parameters(), optim.lr, optim.weight_decay, tuple(optim.betas), optim.eps
    )
    scheduler = build_scheduler(
        optimizer, optim.schedule, optim.warmup_steps, cfg.train.total_steps, optim.min_lr_ratio
    )
    fill_deepspeed_config(accelerator, optim.max_grad_norm, cfg.objective.micro_batch_size)
    model, optimizer = accelerator.prepare(model, optimizer)
    # saved as JSON by save_checkpoint (never pickled); this order is the one older checkpoints used
    checkpointed = {"lr_scheduler": scheduler, **{name: stateful[name] for name in sorted(stateful or {})}}
    if isinstance(reference, torch.nn.Module) and zero_stage(accelerator) == 3:
        # under ZeRO-3 transformers loaded the reference partitioned; shard it in an inference engine too
        from trl.models.utils import prepare_deepspeed  # heavy, and only under DeepSpeed

        reference = prepare_deepspeed(reference, accelerator)
    stepper = Stepper(accelerator, model, optimizer, optim.max_grad_norm)
    if rank > 0:  # weights are synchronised; sampling must not repeat rank 0's random stream
        seed_everything(derive_seed(cfg.train.seed, "rank", rank))
    policy = accelerator.unwrap_model(model)
    backend = backend if backend is not None else build_backend(cfg, policy, tokenizer)
    return TrainerParts(
        accelerator=accelerator,
        output_dir=output_dir,
        records=records,
        reward_fn=reward_fn,
        tokenizer=tokenizer,
        model=model,
        policy=policy,
        reference=reference,
        optimizer=optimizer,
        scheduler=scheduler,
        stepper=stepper,
        backend=backend,
        engine=RolloutEngine(backend, tokenizer, cfg.rollout, retriever),
        sampler=PromptSampler(len(records), cfg.train.seed, cfg.data.shuffle),
        checkpointed=checkpointed,
    )
