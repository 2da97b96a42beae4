"""The one SFT engine: TRL's ``SFTTrainer`` with the GRPO trainer's checkpoint semantics.

The REX-RAG warm-up (``python -m rexrag sft``) and AnesSuite's CPT and SFT stages all train through
:func:`train_sft`. It is TRL's ``SFTTrainer`` (the project's stack: packing, completion-only loss, DeepSpeed and
accelerate launchers come with it), not a loop of our own, because TRL does everything the warm-up needs:

* loss on model-written tokens only: the warm-up hands over pre-tokenised rows (``input_ids`` + ``labels`` with
  -100 on the prompt and on retrieved passages); TRL uses such labels as they are, and normalises the loss by
  the number of trained tokens of the batch, which is the warm-up's per-token mean;
* demonstrations built in memory from a retriever: an in-memory ``datasets.Dataset``, and ``order`` fixes which
  rows each step draws (:class:`FixedOrderSampler`), so the warm-up keeps its own demonstration order;
* MLflow through ``rlcore.tracking`` (the run is passed in; Trainer's own reporters stay off) and the per-step
  ``metrics.jsonl`` every recipe writes;
* the evaluation after training is the recipe's (greedy multi-turn EM needs the retriever), not the engine's.

What the engine adds to TRL is the checkpoint contract the GRPO trainer has. Checkpoints are Trainer's
``<output_dir>/checkpoint-<step>/`` folders (model, ``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``,
``trainer_state.json``, all loaded by Trainer with ``weights_only=True``) plus ``engine_state.json`` (the
caller's own JSON state: config hash, MLflow run id, elapsed seconds) and, written last, the ``COMPLETE``
manifest of every file and its size. ``resume="auto"`` takes the newest checkpoint whose manifest holds; a newer
one without it (a write cut by a kill) or with a file of the wrong size is torn: skipped with a warning naming it
and the checkpoint used instead. Old checkpoints are pruned only after the new one's manifest is written.

Fault points (``RLCORE_FAULT_POINT``, see :mod:`rlcore.faults`): ``sft.update`` (the step's optimizer update
applied, nothing logged or saved), ``sft.checkpoint`` (a checkpoint's weights written, its optimizer, RNG and
trainer state not yet), ``sft.marker`` (every file written, the manifest not yet).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback
from trl import SFTConfig, SFTTrainer

from rlcore.faults import fault_point
from rlcore.trainer.checkpoint import checkpoint_problem, write_manifest
from rlcore.trainer.reporting import truncate_metrics

__all__ = [
    "ENGINE_STATE",
    "FixedOrderSampler",
    "SFTOutcome",
    "find_sft_checkpoint",
    "read_engine_state",
    "train_sft",
]

logger = logging.getLogger(__name__)

ENGINE_STATE = "engine_state.json"
_PREFIX = "checkpoint-"
LOSS_SUM_KEY = "engine_loss_sum"  # engine_state.json key: the step losses summed up to the checkpoint


class FixedOrderSampler(torch.utils.data.Sampler[int]):
    """Yields the dataset rows in ``order`` (one entry per sample drawn, over every step of the run)."""

    def __init__(self, order: Sequence[int]) -> None:
        self.order = list(order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def _checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for child in output_dir.glob(f"{_PREFIX}*") if output_dir.is_dir() else []:
        suffix = child.name[len(_PREFIX) :]
        if child.is_dir() and suffix.isdigit():
            found.append((int(suffix), child))
    return sorted(found)


def find_sft_checkpoint(output_dir: str | Path, resume: str = "auto") -> Path | None:
    """The checkpoint to resume from: ``never`` -> None, ``auto`` -> the newest complete one under ``output_dir``
    (newer torn ones are skipped with a warning naming them and the one used), else that folder, which must be a
    complete checkpoint."""
    if resume == "never":
        return None
    if resume != "auto":
        problem = checkpoint_problem(resume)
        if problem is not None:
            raise FileNotFoundError(
                f"train.resume={resume!r}: not a complete checkpoint ({problem}); use auto, never or a folder "
                f"like <output>/checkpoint-200"
            )
        return Path(resume)
    complete, torn = [], []
    for step, path in _checkpoints(Path(output_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            complete.append((step, path))
        else:
            torn.append((step, path, problem))
    chosen = complete[-1] if complete else None
    for step, path, problem in torn:
        if chosen is None or step > chosen[0]:
            instead = chosen[1] if chosen else "nothing (training starts from step 0)"
            logger.warning("checkpoint %s is torn (%s); resuming from %s instead", path, problem, instead)
    return chosen[1] if chosen else None


def read_engine_state(checkpoint: Path | None) -> dict[str, Any]:
    """The caller's JSON state saved with ``checkpoint`` (empty for None or a checkpoint without one)."""
    if checkpoint is None or not (checkpoint / ENGINE_STATE).is_file():
        return {}
    return json.loads((checkpoint / ENGINE_STATE).read_text(encoding="utf-8"))


class _EngineTrainer(SFTTrainer):
    """``SFTTrainer`` with a fixed sample order and checkpoints that end with a manifest (see the module doc)."""

    def __init__(self, *args, order=None, engine_state=None, keep_last=0, model_loss=False, **kwargs):
        self._order = order
        self._model_loss = model_loss
        self._engine_state = engine_state
        self._keep_last = keep_last
        self._prior_loss_sum = 0.0  # summed step losses of the steps before the checkpoint resumed from
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        if self._order is None:
            return super()._get_train_sampler(train_dataset)
        return FixedOrderSampler(self._order)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self._model_loss:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.args.gradient_accumulation_steps == 1 and self.args.world_size == 1:
            # the model's own cross-entropy, mean over the batch's labelled tokens: what the warm-up always trained on
            outputs = model(**inputs, use_cache=False)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        # several micro-batches or ranks: Trainer's sum over tokens / tokens of the whole accumulated batch
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if self.args.should_save:
            fault_point("sft.checkpoint", self.state.global_step)  # weights written, the rest not yet
        super()._save_optimizer_and_scheduler(output_dir)

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        self.accelerator.wait_for_everyone()  # every rank's files (RNG states, DeepSpeed shards) are in
        if not self.args.should_save:
            return
        folder = Path(self.args.output_dir) / f"{_PREFIX}{self.state.global_step}"
        state = self._engine_state() if self._engine_state is not None else {}
        # the summed step losses so far: Trainer's mean loss after a resume covers only the resumed process
        state[LOSS_SUM_KEY] = self._prior_loss_sum + self._total_loss_scalar + float(self._tr_loss.item())
        (folder / ENGINE_STATE).write_text(
            json.dumps(state, indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )
        fault_point("sft.marker", self.state.global_step)  # every file written, the manifest not yet
        write_manifest(folder)
        if self._keep_last > 0:
            complete = [
                p for _, p in _checkpoints(Path(self.args.output_dir)) if checkpoint_problem(p) is None
            ]
            for old in complete[: -self._keep_last]:
                shutil.rmtree(old, ignore_errors=True)


class _StepLog(TrainerCallback):
    """Per optimizer step: the ``sft.update`` fault point, a ``metrics.jsonl`` line (step, loss, grad_norm and the
    learning rate of the next step), the MLflow run every ``mlflow_every`` steps, and a progress bar."""

    def __init__(
        self, metrics_path: Path | None, run: Any, prefix: str, mlflow_every: int, desc: str
    ) -> None:
        self.metrics_path, self.run, self.prefix = metrics_path, run, prefix
        self.mlflow_every, self.desc = max(1, mlflow_every), desc
        self.bar: tqdm | None = None
        self.last: dict[str, float] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = tqdm(
                total=state.max_steps,
                initial=state.global_step,
                desc=self.desc,
                mininterval=5,
                dynamic_ncols=True,
            )

    def on_step_end(self, args, state, control, **kwargs):
        fault_point("sft.update", state.global_step)
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        scheduler = kwargs.get("lr_scheduler")
        record = {
            "step": state.global_step,
            "loss": float(logs["loss"]),
            "grad_norm": float(logs.get("grad_norm", float("nan"))),
            "lr": float(scheduler.get_last_lr()[0]) if scheduler is not None else logs.get("learning_rate"),
        }
        record.update({k: float(v) for k, v in logs.items() if k not in record and k != "learning_rate"})
        self.last = record
        if self.metrics_path is not None:
            with self.metrics_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        if self.run is not None and (
            state.global_step % self.mlflow_every == 0 or state.global_step == state.max_steps
        ):
            names = {k: v for k, v in record.items() if k != "step"}
            self.run.log_metrics({f"{self.prefix}{k}": v for k, v in names.items()}, step=state.global_step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.3f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


@dataclass
class SFTOutcome:
    """What :func:`train_sft` leaves behind."""

    # optimizer steps done (``max_steps`` when training ran to the end)
    global_step: int
    # mean training loss over every step of the run, the steps before a resume included
    training_loss: float
    # the checkpoint training resumed from, or None
    resumed_from: Path | None
    # step of that checkpoint (0 when none)
    resumed_step: int
    # the last step's metrics.jsonl record (empty when no step was logged in this process)
    last_record: dict[str, float]


def train_sft(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    args: SFTConfig,
    *,
    resume_from: Path | None = None,
    order: Sequence[int] | None = None,
    optimizers: tuple[Any, Any] = (None, None),
    engine_state: Callable[[], Mapping[str, Any]] | None = None,
    metrics_path: Path | None = None,
    run: Any = None,
    metric_prefix: str = "train/",
    mlflow_every: int = 1,
    keep_last: int = 0,
    model_loss: bool = False,
    desc: str = "sft",
) -> tuple[SFTOutcome, SFTTrainer]:
    """Train ``model`` on ``dataset`` with TRL's ``SFTTrainer`` (``args`` as TRL takes them).

    ``resume_from``: a checkpoint from :func:`find_sft_checkpoint` (metrics.jsonl lines after its step are
    dropped). ``order``: the rows drawn, step after step (``len(order)`` = steps x batch size); None keeps
    Trainer's shuffling. ``optimizers``: ``(optimizer, scheduler)`` built by the caller (e.g.
    :func:`rlcore.trainer.optim.build_optimizer`), or TRL's from ``args``. ``engine_state``: returns the caller's
    JSON state, saved in every checkpoint (read it back with :func:`read_engine_state`). ``keep_last``: complete
    checkpoints kept (0 = all; ``args.save_total_limit`` must then be None: the engine prunes, after the manifest).
    Returns the outcome and the trainer (its model is the trained one).
    """
    if keep_last and args.save_total_limit:
        raise ValueError(
            "prune checkpoints with keep_last, not args.save_total_limit (it prunes before the manifest)"
        )
    args.report_to = "none"  # MLflow goes through rlcore.tracking (the run passed in)
    args.disable_tqdm = True  # the step log draws the progress bar
    resumed_step = (
        int(json.loads((resume_from / "trainer_state.json").read_text())["global_step"]) if resume_from else 0
    )
    if metrics_path is not None:
        if resume_from is not None:
            truncate_metrics(metrics_path, resumed_step)
        elif metrics_path.exists():
            metrics_path.unlink()
    step_log = _StepLog(metrics_path, run, metric_prefix, mlflow_every, desc)
    trainer = _EngineTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        optimizers=optimizers,
        callbacks=[step_log],
        order=order,
        engine_state=engine_state,
        keep_last=keep_last,
        model_loss=model_loss,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if resume_from is not None:
        logger.info("%s: resuming from %s (step %d)", desc, resume_from, resumed_step)
    trainer._prior_loss_sum = float(read_engine_state(resume_from).get(LOSS_SUM_KEY, 0.0))
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    outcome = SFTOutcome(
        global_step=result.global_step,
        # Trainer divides the losses summed in this process by every step, the resumed-over ones included
        training_loss=result.training_loss + trainer._prior_loss_sum / max(result.global_step, 1),
        resumed_from=resume_from,
        resumed_step=resumed_step,
        last_record=step_log.last,
    )
    return outcome, trainer
