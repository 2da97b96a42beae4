"""GRPO / PPO training recipe: the whole loop in :func:`train`, read top to bottom.

One training step::

    sample prompts -> rollouts (RolloutEngine; single- or multi-turn) -> rewards -> [after_rollout seam]
    -> group advantages -> old / reference log-probs -> [behaviour_logprobs seam]
    -> PPO epochs over mini-batches (gradient accumulation over micro-batches) -> metrics -> checkpoint

Choices worth knowing:

* Advantages are GRPO's group-normalised outcome rewards (``rlcore.objectives.grpo_advantages``), broadcast
  to every trained token. Group ids are unique per prompt *instance* (``<step>:<slot>:<record id>``).
* The loss is the PPO clipped surrogate with clip-higher / dual clip, optional k1/k2/k3 KL to a frozen
  reference (skipped entirely when ``kl_coef == 0``) and an optional entropy bonus, aggregated with one
  mini-batch-wide denominator so that gradient accumulation and data parallelism give the exact full-batch
  gradient.
* With one PPO epoch, one mini-batch and no seam that needs them, pi_old equals the current policy, so old
  log-probs are not recomputed (ratio = 1 with the gradient of log pi), as in TRL.
* Optimizer steps with a non-finite gradient norm are skipped (and counted). The LR schedule advances once
  per training step.
* Runs under ``accelerate``: one process, DDP, or DeepSpeed ZeRO-1/2/3 (``infra/accelerate/*.yaml``,
  ``infra/deepspeed/*.json``); bf16 autocast on GPU; optional LoRA and gradient checkpointing.

Seams for method code (plain callables, no subclassing):

* ``after_rollout(trajectories, step) -> trajectories``: add, drop or reorder trajectories after rewards are
  known. Each trajectory then carries ``metadata["reward"]`` and ``metadata["old_logprobs"]`` (list of
  log pi_old per response token).
* ``behaviour_logprobs(trajectories, old_logprobs, step) -> (B, T) tensor | None``: per-token log-prob of the
  policy that actually generated each token; it replaces pi_old in the PPO ratio. ``old_logprobs[i, t]`` is
  log pi_old of ``trajectories[i].response_ids[t]`` (right-padded).
* ``on_answer`` is passed to ``RolloutEngine.run`` (REX-RAG spawns probes there).
* ``after_step(policy, step) -> {name: value} | None``: called on every rank after the update and the weight
  sync, before the step's metrics are logged; what it returns (main rank's values) joins that step's metrics
  (MLflow, metrics.jsonl, TrainResult.metrics). Use it for held-out evaluation curves and for the method's own
  per-step statistics. The policy is unwrapped; the next step's update puts it back in train mode.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from rlcore.config import recipe_main, to_dict
from rlcore.generation import GenerationBackend
from rlcore.objectives import (
    MAX_LOG_RATIO,
    aggregate,
    aggregation_denominator,
    group_reward_stats,
    grpo_advantages,
    kl_penalty,
    masked_mean,
    policy_loss,
    truncated_importance_weights,
)
from rlcore.rollout import RolloutEngine, Trajectory
from rlcore.seeding import derive_seed, seed_everything
from rlcore.trainer.batching import PromptSampler, TrainBatch, collate, minibatch_counts, update_plan
from rlcore.trainer.checkpoint import StopSignal, load_checkpoint, resolve_resume, save_checkpoint
from rlcore.trainer.config import RLTrainConfig
from rlcore.trainer.data import encode_record_prompt, load_records, record_id
from rlcore.trainer.forward import batched_response_logprobs, response_logprobs
from rlcore.trainer.metrics import MetricSums, PhaseTimer, add_rollout_metrics, finalize_reward_std
from rlcore.trainer.optim import (
    Stepper,
    build_optimizer,
    build_scheduler,
    fill_deepspeed_config,
    generation_context,
    zero_stage,
)
from rlcore.trainer.setup import (
    build_backend,
    build_policy,
    build_reward_fn,
    make_accelerator,
    resolve_output_dir,
)

__all__ = ["train", "TrainResult", "RewardFn", "AfterRollout", "AfterStep", "BehaviourLogprobs", "main"]

logger = logging.getLogger(__name__)

RewardFn = Callable[..., list[float | None]]  # (decoded responses, **record columns) -> one reward each
AfterRollout = Callable[[list[Trajectory], int], list[Trajectory]]
BehaviourLogprobs = Callable[[list[Trajectory], torch.Tensor, int], torch.Tensor | None]
AfterStep = Callable[[torch.nn.Module, int], Mapping[str, float] | None]


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    output_dir: Path  # run folder (checkpoints/, metrics.jsonl, final/)
    last_step: int  # last completed training step
    metrics: list[dict[str, float]]  # per-step metrics logged by this process (main rank), in order
    stopped_early: bool  # a signal or train.stop_after_step ended the run before total_steps
    run_id: str | None  # MLflow run id (None when tracking is off)
    model: torch.nn.Module | None = None  # the trained policy, unwrapped (for in-process evaluation)


def train(
    cfg: RLTrainConfig,
    records: list[dict[str, Any]] | None = None,
    reward_fn: RewardFn | None = None,
    retriever: Any = None,
    after_rollout: AfterRollout | None = None,
    behaviour_logprobs: BehaviourLogprobs | None = None,
    on_answer: Callable[[Trajectory, int], list[Trajectory]] | None = None,
    stateful: Mapping[str, Any] | None = None,
    backend: GenerationBackend | None = None,
    after_step: AfterStep | None = None,
) -> TrainResult:
    """Train ``cfg.model.path`` with GRPO on ``records`` (or ``cfg.data.path``).

    Args:
        cfg: the full config (see :class:`RLTrainConfig`).
        records: prompt records; default: read ``cfg.data.path``.
        reward_fn: batched ``(completions, **columns) -> list[float]`` (the ``rlcore.rewards`` registry
            signature; columns are the records' fields); default: ``get_reward(cfg.reward.name)``.
        retriever: ``search(queries, topk)`` object, required when ``cfg.rollout.tools_enabled``.
        after_rollout, behaviour_logprobs, on_answer, after_step: the seams in the module docstring.
        stateful: extra objects with ``state_dict``/``load_state_dict`` saved in every checkpoint.
        backend: a ready generation backend (e.g. a scripted one in tests); default from ``cfg.generation``.
    """
    cfg.validate()
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
    obj = cfg.objective

    # --- model, reference, optimizer, schedule ----------------------------------------------------------
    tokenizer, model, reference = build_policy(cfg, accelerator.device)
    optimizer = build_optimizer(
        model.parameters(), cfg.optim.lr, cfg.optim.weight_decay, tuple(cfg.optim.betas), cfg.optim.eps
    )
    scheduler = build_scheduler(
        optimizer, cfg.optim.schedule, cfg.optim.warmup_steps, cfg.train.total_steps, cfg.optim.min_lr_ratio
    )
    fill_deepspeed_config(accelerator, cfg.optim.max_grad_norm, obj.micro_batch_size)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    for name in sorted(stateful or {}):
        accelerator.register_for_checkpointing(stateful[name])
    if isinstance(reference, torch.nn.Module) and zero_stage(accelerator) == 3:
        # under ZeRO-3 transformers loaded the reference partitioned; shard it in an inference engine too
        from trl.models.utils import prepare_deepspeed

        reference = prepare_deepspeed(reference, accelerator)
    stepper = Stepper(accelerator, model, optimizer, cfg.optim.max_grad_norm)
    if rank > 0:  # weights are synchronised; sampling must not repeat rank 0's random stream
        seed_everything(derive_seed(cfg.train.seed, "rank", rank))
    policy = accelerator.unwrap_model(model)
    backend = backend if backend is not None else build_backend(cfg, policy, tokenizer)
    engine = RolloutEngine(backend, tokenizer, cfg.rollout, retriever)
    sampler = PromptSampler(len(records), cfg.train.seed, cfg.data.shuffle)
    temperature = cfg.rollout.temperature

    # --- resume -----------------------------------------------------------------------------------------
    start_step, run_id, skipped_total = 0, None, 0
    resume_from = resolve_resume(cfg.train.resume, output_dir)
    if resume_from is not None:
        state = load_checkpoint(accelerator, resume_from)
        start_step, run_id = int(state["step"]), state.get("mlflow_run_id")
        skipped_total = int(state.get("skipped_steps_total", 0))
        sampler.load_state_dict(state["sampler"])
        engine.run_index = int(state.get("rollout_run_index", 0))  # rollout.seed's per-call seeds continue
        logger.info("resumed from %s at step %d", resume_from, start_step)
    metrics_path = output_dir / "metrics.jsonl"
    if accelerator.is_main_process:
        _truncate_metrics(metrics_path, start_step)

    history: list[dict[str, float]] = []
    step, stopped_early = start_step, False
    tracking = _tracking(cfg, accelerator, run_id, output_dir)
    progress = tqdm(
        total=cfg.train.total_steps,
        initial=start_step,
        desc="grpo",
        unit="step",
        disable=not accelerator.is_main_process,
    )
    with StopSignal() as stop, tracking as run, progress:
        run_id = run.run_id if run is not None else run_id
        for step in range(start_step + 1, cfg.train.total_steps + 1):
            timer, sums = PhaseTimer(), MetricSums()
            step_started, cpu_started = time.perf_counter(), time.process_time()

            # 1. sample prompts: the same global list on every rank, each rank rolls out its slice
            indices = sampler.next_indices(obj.prompts_per_step)
            prompt_ids, group_ids, metadata = [], [], []
            for slot in range(rank, len(indices), world):
                record = records[indices[slot]]
                ids = encode_record_prompt(
                    tokenizer,
                    record,
                    cfg.data.prompt_field,
                    cfg.data.use_chat_template,
                    cfg.data.system_prompt,
                )
                group = f"{step}:{slot}:{record_id(record, indices[slot], cfg.data.id_field)}"
                for _ in range(obj.num_generations):
                    prompt_ids.append(ids)
                    group_ids.append(group)
                    metadata.append({"record_index": indices[slot]})

            # 2. rollouts
            with timer.phase("rollout"), accelerator.autocast(), generation_context(accelerator, model):
                trajectories = engine.run(prompt_ids, group_ids, metadata, on_answer=on_answer)
            if cfg.generation.backend == "vllm" and cfg.generation.vllm_sleep:
                backend.sleep(level=1)
            timer.add("generate", engine.last_stats.get("generate_seconds", 0.0))
            timer.add("retrieve", engine.last_stats.get("retrieve_seconds", 0.0))

            # 3. rewards
            with timer.phase("score"):
                _score(trajectories, records, tokenizer, reward_fn)
            if after_rollout is not None:
                with timer.phase("logprobs"):
                    _attach_old_logprobs(
                        model, trajectories, tokenizer.pad_token_id, obj, temperature, accelerator
                    )
                trajectories = after_rollout(trajectories, step)
            rewards = torch.tensor([t.metadata["reward"] for t in trajectories], dtype=torch.float32)
            add_rollout_metrics(trajectories, rewards, cfg.reward.success_threshold, sums)

            # 4. advantages (groups never span ranks: all G rollouts of a prompt are generated together)
            advantages = grpo_advantages(
                rewards,
                [t.group_id for t in trajectories],
                obj.scale_by_std,
                obj.advantage_eps,
                obj.std_scope,
            )
            group_stats = group_reward_stats(rewards, [t.group_id for t in trajectories])
            sums.add(
                "groups/zero_variance_frac",
                group_stats["zero_variance_group_frac"],
                group_stats["num_groups"],
            )
            batch = collate(trajectories, advantages, tokenizer.pad_token_id).to(accelerator.device)

            # 5. old / reference / behaviour log-probs
            max_rows = _max_over_ranks(accelerator, batch.num_rows)
            logprob_calls = -(-max_rows // obj.logprob_batch_size)  # equal on all ranks (ZeRO-3 collectives)
            minibatch_rows = -(-obj.minibatch_size // world) if obj.minibatch_size else max_rows
            num_minibatches, micro_per_minibatch = minibatch_counts(
                max_rows, minibatch_rows, obj.micro_batch_size
            )
            need_old = (
                obj.ppo_epochs > 1
                or num_minibatches > 1
                or behaviour_logprobs is not None
                or obj.tis_cap is not None
                or after_rollout is not None
            )
            with timer.phase("logprobs"), torch.no_grad(), accelerator.autocast():
                if need_old:
                    batch.old_logprobs = _old_logprobs(
                        model, batch, trajectories, obj, temperature, logprob_calls
                    )
                if reference is not None:
                    batch.ref_logprobs = _reference_logprobs(
                        reference, policy, batch, obj, temperature, logprob_calls
                    )
            if behaviour_logprobs is not None:
                behaviour = behaviour_logprobs(trajectories, batch.old_logprobs, step)
                if behaviour is not None:
                    batch.behaviour_logprobs = behaviour.to(batch.old_logprobs.device, torch.float32)
            if obj.tis_cap is not None:
                batch.importance_weights = truncated_importance_weights(
                    batch.old_logprobs, batch.sample_logprobs, batch.sampled_mask, obj.tis_cap
                )

            # 6. PPO epochs over mini-batches, gradient accumulation over micro-batches
            model.train()
            update_tokens, num_updates = 0, obj.ppo_epochs * num_minibatches
            with timer.phase("update"):
                for epoch in range(obj.ppo_epochs):
                    order = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + step * 131 + epoch)
                    plan = update_plan(
                        batch.num_rows,
                        num_minibatches,
                        obj.micro_batch_size,
                        micro_per_minibatch,
                        order if obj.ppo_epochs > 1 or num_minibatches > 1 else None,
                    )
                    for micro_batches in plan:
                        local = sum(
                            float(aggregation_denominator(batch.loss_mask[rows], obj.aggregation))
                            for rows in micro_batches
                        )
                        denominator = _sum_over_ranks(accelerator, local) / world
                        for index, rows in enumerate(micro_batches):
                            micro = batch.select(rows)
                            with accelerator.autocast():
                                loss = micro_batch_loss(model, micro, cfg, denominator, sums, num_updates)
                            stepper.backward(loss, boundary=index == len(micro_batches) - 1)
                            update_tokens += int(micro.attention_mask.sum())
                        grad_norm, applied = stepper.step()
                        sums.add("optim/grad_norm", grad_norm if applied else 0.0, 1.0 if applied else 0.0)
                        sums.add_total("optim/skipped_steps", 0.0 if applied else 1.0 / world)
            with warnings.catch_warnings():
                # the schedule follows training steps, also when this step's optimizer updates were all skipped
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                scheduler.step()
            with timer.phase("weight_sync"), generation_context(accelerator, model):
                if hasattr(backend, "update_weights"):
                    backend.update_weights(policy)
            extra: dict[str, float] = {}
            if after_step is not None:
                with timer.phase("after_step"):
                    extra = {k: float(v) for k, v in (after_step(policy, step) or {}).items()}

            # 7. metrics: one reduction over ranks, one batched tracking call
            seconds = timer.reset()
            seconds["step"] = time.perf_counter() - step_started
            seconds["step_cpu"] = (
                time.process_time() - cpu_started
            )  # CPU seconds of this process (all threads)
            for name, value in seconds.items():
                sums.add(f"time/{name}", value)
            generated = engine.last_stats.get("generated_tokens", 0.0)
            sums.add("throughput/rollout_tokens_per_s", generated / max(seconds.get("generate", 0.0), 1e-9))
            sums.add("throughput/update_tokens_per_s", update_tokens / max(seconds.get("update", 0.0), 1e-9))
            metrics = sums.reduce(accelerator)
            finalize_reward_std(metrics)
            skipped_total += round(metrics.get("optim/skipped_steps", 0.0))
            metrics["optim/skipped_steps_total"] = float(skipped_total)
            metrics["optim/lr"] = float(scheduler.get_last_lr()[0])
            metrics.update(extra)
            if accelerator.is_main_process and step % cfg.train.log_every == 0:
                if run is not None:
                    run.log_metrics(metrics, step=step)
                with metrics_path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"step": step, **metrics}, sort_keys=True) + "\n")
                logger.info(
                    "step %d/%d reward %.3f acc %.3f loss %.4f kl %.4f grad %.3f (%.1fs)",
                    step,
                    cfg.train.total_steps,
                    metrics.get("reward/mean", 0.0),
                    metrics.get("accuracy", 0.0),
                    metrics.get("loss/total", 0.0),
                    metrics.get("kl", 0.0),
                    metrics.get("optim/grad_norm", 0.0),
                    seconds["step"],
                )
            history.append({"step": float(step), **metrics})
            progress.set_postfix(
                reward=f"{metrics.get('reward/mean', 0.0):.3f}", loss=f"{metrics['loss/total']:.4f}"
            )
            progress.update(1)

            # 8. checkpoint (periodic, on a signal, at a planned stop, at the end)
            stop_now = _any_rank(accelerator, stop.requested is not None) or step == cfg.train.stop_after_step
            periodic = cfg.train.save_every > 0 and step % cfg.train.save_every == 0
            if periodic or stop_now or step == cfg.train.total_steps:
                trainer_state = {
                    "sampler": sampler.state_dict(),
                    "rollout_run_index": engine.run_index,
                    "mlflow_run_id": run_id,
                    "skipped_steps_total": skipped_total,
                    "config": to_dict(cfg),
                }
                save_checkpoint(accelerator, output_dir, step, trainer_state, cfg.train.keep_checkpoints)
            if stop_now and step < cfg.train.total_steps:
                stopped_early = True
                logger.warning("stopping after step %d (%s)", step, stop.requested or "train.stop_after_step")
                break

    if not stopped_early and cfg.train.save_final_model:
        _save_final_model(accelerator, model, tokenizer, output_dir / "final")
    accelerator.wait_for_everyone()
    return TrainResult(
        output_dir=output_dir,
        last_step=step,
        metrics=history,
        stopped_early=stopped_early,
        run_id=run_id,
        model=policy,
    )


def micro_batch_loss(
    model: torch.nn.Module,
    micro: TrainBatch,
    cfg: RLTrainConfig,
    denominator: float,
    sums: MetricSums,
    num_updates: int,
) -> torch.Tensor:
    """Loss of one micro-batch, normalised by the mini-batch-wide ``denominator``; adds its metrics to ``sums``.

    loss = PPO-clip(ratio, A) + kl_coef * KL(pi_theta || pi_ref) - entropy_coef * H, each aggregated with the
    same mask, aggregation and denominator, so micro-batch losses add up to the mini-batch loss.
    """
    obj = cfg.objective
    logprobs, entropy = response_logprobs(
        model, micro, cfg.rollout.temperature, compute_entropy=True, entropy_grad=obj.entropy_coef != 0
    )
    old = micro.old_logprobs if micro.old_logprobs is not None else logprobs.detach()
    loss, pg_metrics = policy_loss(
        logprobs,
        old,
        micro.advantages,
        micro.loss_mask,
        behaviour_logprobs=micro.behaviour_logprobs,
        eps_low=obj.eps_low,
        eps_high=obj.eps_high,
        dual_clip=obj.dual_clip,
        aggregation=obj.aggregation,
        importance_weights=micro.importance_weights,
        denominator=denominator,
    )
    tokens = float(pg_metrics.pop("num_tokens"))
    sums.add("loss/policy", float(loss.detach()) / num_updates)
    if micro.ref_logprobs is not None:
        kl = kl_penalty(logprobs, micro.ref_logprobs, obj.kl_kind, micro.loss_mask, obj.kl_clamp)
        sums.add("kl", float(masked_mean(kl.detach(), micro.loss_mask)), tokens)
        if obj.kl_importance_weighted:
            # tokens came from the behaviour policy, not pi_theta: weight by the (differentiable) ratio so the KL
            # gradient is the unbiased reverse-KL gradient (DeepSeek-V3.2; TRL's use_bias_correction_kl)
            behaviour = micro.behaviour_logprobs if micro.behaviour_logprobs is not None else old
            log_ratio = torch.where(micro.loss_mask, logprobs - behaviour, torch.zeros_like(logprobs))
            kl = kl * torch.exp(log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO))
        loss = loss + obj.kl_coef * aggregate(kl, micro.loss_mask, obj.aggregation, denominator)
    if obj.entropy_coef != 0:
        loss = loss - obj.entropy_coef * aggregate(entropy, micro.loss_mask, obj.aggregation, denominator)
    sums.add("entropy", float(masked_mean(entropy.detach(), micro.loss_mask)), tokens)
    total = float(loss.detach())
    sums.add("loss/total", total / num_updates)
    if not math.isfinite(total):
        # A NaN loss can still give finite (zero) gradients, e.g. through a clamp, and the step would pass the
        # grad-norm check as a silent no-op. Make every gradient NaN instead, so the optimizer step is skipped
        # and counted the same way under plain, DDP and DeepSpeed training.
        loss = loss + (logprobs * float("nan")).sum()
    for name, value in pg_metrics.items():
        if name == "ratio_max":
            sums.maximum("policy/ratio_max", value)
        else:
            sums.add(f"policy/{name}", float(value), tokens)
    return loss


def _score(
    trajectories: list[Trajectory], records: list[dict[str, Any]], tokenizer, reward_fn: RewardFn
) -> None:
    """One batched reward call over decoded responses; stores ``metadata["reward"]`` on every trajectory.

    The whole response is decoded (observations included, special tokens dropped); rewards read the last
    answer block. Every record field is passed as a column aligned with the completions.
    """
    texts = [tokenizer.decode(t.response_ids, skip_special_tokens=True) for t in trajectories]
    rows = [records[t.metadata["record_index"]] for t in trajectories]
    names = sorted({key for row in rows for key in row if not key.startswith("_")})
    values = reward_fn(texts, **{name: [row.get(name) for row in rows] for name in names})
    if len(values) != len(trajectories):
        raise RuntimeError(
            f"reward function returned {len(values)} values for {len(trajectories)} completions"
        )
    for traj, row, value in zip(trajectories, rows, values):
        if value is None:
            raise ValueError(
                f"reward is None for record {row.get('id', row.get('_line', '?'))}: the reward needs "
                f"a field this record lacks (fields: {sorted(row)})"
            )
        traj.metadata["reward"] = float(value)


def _old_logprobs(
    model, batch: TrainBatch, trajectories: list[Trajectory], obj, temperature: float, min_calls: int
) -> torch.Tensor:
    """log pi_old per response token: reused from ``metadata["old_logprobs"]`` when the seam path computed them."""
    if all("old_logprobs" in t.metadata for t in trajectories):
        out = torch.zeros_like(batch.sample_logprobs)
        for row, traj in enumerate(trajectories):
            values = traj.metadata["old_logprobs"]
            out[row, : len(values)] = torch.tensor(values, dtype=torch.float32)
        return out.to(batch.input_ids.device)
    return batched_response_logprobs(model, batch, obj.logprob_batch_size, temperature, min_calls)


def _attach_old_logprobs(
    model, trajectories: list[Trajectory], pad_id: int, obj, temperature: float, accelerator
) -> None:
    """Before ``after_rollout``: store log pi_old of every response token in ``metadata["old_logprobs"]``."""
    placeholder = torch.zeros(len(trajectories))
    batch = collate(trajectories, placeholder, pad_id).to(accelerator.device)
    min_calls = -(-_max_over_ranks(accelerator, batch.num_rows) // obj.logprob_batch_size)
    with torch.no_grad(), accelerator.autocast():
        values = batched_response_logprobs(model, batch, obj.logprob_batch_size, temperature, min_calls).cpu()
    for row, traj in enumerate(trajectories):
        traj.metadata["old_logprobs"] = values[row, : len(traj.response_ids)].tolist()


def _reference_logprobs(
    reference, policy, batch: TrainBatch, obj, temperature: float, min_calls: int
) -> torch.Tensor:
    """log pi_ref per response token: the frozen copy, or (LoRA) the policy with its adapters disabled."""
    if reference == "adapters-off":
        with policy.disable_adapter():
            return batched_response_logprobs(policy, batch, obj.logprob_batch_size, temperature, min_calls)
    return batched_response_logprobs(reference, batch, obj.logprob_batch_size, temperature, min_calls)


def _max_over_ranks(accelerator, value: int) -> int:
    if accelerator.num_processes == 1:
        return value
    tensor = torch.tensor([value], device=accelerator.device)
    return int(accelerator.gather(tensor).max())


def _sum_over_ranks(accelerator, value: float) -> float:
    if accelerator.num_processes == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(tensor, reduction="sum"))


def _any_rank(accelerator, flag: bool) -> bool:
    return _max_over_ranks(accelerator, int(flag)) > 0


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metrics.jsonl lines of steps after the checkpoint we resume from (a kill between log and save)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


def _tracking(cfg: RLTrainConfig, accelerator, run_id: str | None, output_dir: Path):
    """The MLflow run on the main rank (resumed if the checkpoint names one); a null context elsewhere."""
    if not (cfg.tracking.enabled and accelerator.is_main_process):
        return nullcontext(None)
    from rlcore.tracking import start_run

    return start_run(
        cfg.tracking.experiment,
        run_name=cfg.tracking.run_name or output_dir.name,
        config=cfg,
        seeds=[cfg.train.seed],
        tags={**cfg.tracking.tags, "output_dir": str(output_dir)},
        resume_run_id=run_id,
    )


def _save_final_model(accelerator, model, tokenizer, path: Path) -> None:
    """A plain Hugging Face folder (adapters only with LoRA) next to the checkpoints."""
    state_dict = accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        unwrapped.save_pretrained(path, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(path)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m rlcore.trainer.grpo --config FILE [--dry-run] [key=value ...]``."""
    from rlcore.logging_utils import setup_logging

    setup_logging()

    def run(cfg: RLTrainConfig) -> int:
        if cfg.rollout.tools_enabled:
            raise SystemExit(
                "rollout.tools_enabled needs a retriever: run a recipe that builds one (e.g. "
                "`python -m rexrag.train`) or call rlcore.trainer.train(cfg, retriever=...)"
            )
        result = train(cfg)
        print(f"finished at step {result.last_step}; outputs in {result.output_dir}")
        return 0

    return recipe_main(
        RLTrainConfig, run, argv, description=__doc__.splitlines()[0], prog="rlcore.trainer.grpo"
    )


if __name__ == "__main__":
    raise SystemExit(main())
