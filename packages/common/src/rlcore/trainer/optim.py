"""Optimizer, LR schedule, and the backward/step logic that differs between plain/DDP and DeepSpeed.

Gradient accumulation is explicit: the trainer normalises every micro-batch loss by the mini-batch-wide
denominator, so gradients simply add up across micro-batches (no 1/k scaling by accelerate or DeepSpeed;
both are configured with one accumulation step and we mark the boundary ourselves).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch

__all__ = ["build_optimizer", "build_scheduler", "Stepper", "is_deepspeed", "generation_context"]

logger = logging.getLogger(__name__)

SCHEDULES = ("constant", "linear", "cosine")


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
) -> torch.optim.Optimizer:
    """AdamW over ``params``; biases and norm weights (1-D tensors) get no weight decay."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (is LoRA misconfigured?)")
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, eps=eps)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """LR multiplier per training step: linear warmup from 0 over ``warmup_steps``, then constant, linear decay
    or cosine decay to ``min_lr_ratio`` at ``total_steps``. Stepped once per training step (rollout batch),
    like verl, so the schedule does not depend on how many mini-batches a step has."""
    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {schedule!r}")

    def multiplier(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        if schedule == "linear":
            return 1.0 - (1.0 - min_lr_ratio) * progress
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def is_deepspeed(accelerator: Any) -> bool:
    # accelerate is heavy (~0.9 s to import) and only training needs it
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def zero_stage(accelerator: Any) -> int:
    if not is_deepspeed(accelerator):
        return 0
    return int(
        accelerator.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0)
    )


def fill_deepspeed_config(accelerator: Any, max_grad_norm: float, micro_batch_size: int) -> None:
    """Pin the DeepSpeed values our loop depends on before ``accelerator.prepare``.

    One accumulation step (we mark boundaries ourselves), our clip value (accelerate would put 1.0 for
    "auto"), and an explicit micro-batch size (needed because no DataLoader is prepared).
    """
    if not is_deepspeed(accelerator):
        return
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["gradient_accumulation_steps"] = 1
    config["gradient_clipping"] = float(max_grad_norm) if max_grad_norm > 0 else 0.0
    config["train_micro_batch_size_per_gpu"] = int(micro_batch_size)
    config["train_batch_size"] = "auto"  # accelerate derives micro x accumulation x world size
    if "bf16" in config and config["bf16"].get("enabled") in (True, "auto"):
        # without this DeepSpeed does not check bf16 grads for inf/NaN and would apply a NaN step
        config["bf16"].setdefault("check_grad_overflow", True)


class Stepper:
    """Backward with explicit accumulation boundaries, then clip + step, skipping non-finite grad norms.

    Plain/DDP: micro-batches before the boundary run under ``no_sync``; at the step we clip, check the norm,
    and either step or drop the gradients. DeepSpeed: ``engine.backward`` with the boundary flag, then
    ``engine.step()``, which clips and itself skips a step whose grad norm is inf/NaN.
    """

    def __init__(self, accelerator: Any, model: torch.nn.Module, optimizer: Any, max_grad_norm: float):
        self.accelerator = accelerator
        self.model = model
        self.optimizer = optimizer
        self.max_grad_norm = max_grad_norm
        self.deepspeed = is_deepspeed(accelerator)
        self.params = [p for p in model.parameters() if p.requires_grad]

    def backward(self, loss: torch.Tensor, boundary: bool) -> None:
        if self.deepspeed:
            engine = self.accelerator.deepspeed_engine_wrapped.engine
            engine.set_gradient_accumulation_boundary(is_boundary=boundary)
            engine.backward(loss)
            return
        context = contextlib.nullcontext() if boundary else self.accelerator.no_sync(self.model)
        with context:
            self.accelerator.backward(loss)

    def step(self) -> tuple[float, bool]:
        """Apply the accumulated gradients. Returns ``(grad_norm before clipping, applied)``."""
        if self.deepspeed:
            engine = self.accelerator.deepspeed_engine_wrapped.engine
            engine.step()
            norm = engine.get_global_grad_norm()
            norm = float(
                norm.item() if hasattr(norm, "item") else (norm if norm is not None else float("nan"))
            )
            return norm, bool(engine.was_step_applied()) and math.isfinite(norm)
        limit = self.max_grad_norm if self.max_grad_norm > 0 else float("inf")
        norm = self.accelerator.clip_grad_norm_(self.params, limit)
        norm = float(norm.item() if hasattr(norm, "item") else norm)
        applied = math.isfinite(norm)
        if applied:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm, applied


@contextlib.contextmanager
def generation_context(accelerator: Any, model: torch.nn.Module, gather: bool = True) -> Iterator[None]:
    """Under ZeRO-3, gather the full parameters once for the whole rollout (or weight sync).

    Ranks generate different numbers of tokens, so per-forward parameter gathering (ZeRO-3's hooks) would
    leave ranks waiting on collectives the others never join. TRL's ``unwrap_model_for_generation`` gathers
    the weights and detaches DeepSpeed's hooks for the duration, and puts them back afterwards.
    ``gather=False`` skips it: a rollout sampled by vLLM never runs the ZeRO-3 module, and holding every
    full parameter on every GPU for the whole rollout would only take memory from vLLM's KV cache.
    """
    if gather and zero_stage(accelerator) == 3:
        # trl loads torch and transformers and only this path needs it
        from trl.models.utils import unwrap_model_for_generation

        with unwrap_model_for_generation(model, accelerator, gather_deepspeed3_params=True):
            yield
    else:
        yield
