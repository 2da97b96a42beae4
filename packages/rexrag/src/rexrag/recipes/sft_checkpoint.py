"""Checkpoints of the SFT warm-up, so a long warm-up resumes where it stopped.

Layout inside the run folder::

    checkpoint/model/       weights + tokenizer (an HF folder; the tokenizer is reused, never retrained)
    checkpoint/state.pt     step, optimizer, scheduler, data order, RNG states, elapsed seconds, MLflow run id,
                            config hash

A save writes ``.checkpoint-tmp`` first and swaps it in with renames, so an interrupted save leaves the previous
checkpoint intact. Resuming continues the same data order and RNG streams: an interrupted and resumed warm-up
ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlcore.faults import fault_point

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
_TMP = ".checkpoint-tmp"
_OLD = ".checkpoint-old"


@dataclass
class SFTState:
    """What a resumed warm-up needs besides the weights."""

    step: int  # optimizer steps done
    order: list[int]  # demonstration indices not yet drawn in the current epoch
    rng_state: Any  # random.Random state of the order sampler
    torch_rng_state: torch.Tensor  # torch CPU generator
    optimizer: dict  # AdamW state
    scheduler: dict  # LambdaLR state
    elapsed_seconds: float  # training seconds before the interruption
    run_id: str | None  # MLflow run to continue
    config_hash: str  # hash of the config minus output_dir / experiment / resume settings


def save_sft_checkpoint(out: Path, model, tokenizer, state: SFTState) -> Path:
    """Atomically replace ``out/checkpoint`` with the current model, tokenizer and ``state``."""
    tmp, final, old = out / _TMP, out / CHECKPOINT, out / _OLD
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    fault_point("sft.checkpoint", state.step)  # weights written, state not yet
    torch.save(state.__dict__, tmp / "state.pt")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    fault_point("sft.swap", state.step)  # the previous checkpoint moved aside, the new one not yet in place
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    return final


def find_sft_checkpoint(out: Path) -> Path | None:
    """The complete checkpoint in ``out`` (also one left as ``.checkpoint-old`` by a crash mid-swap), or None."""
    for name in (CHECKPOINT, _OLD):
        folder = out / name
        if (folder / "state.pt").is_file() and (folder / "model" / "config.json").is_file():
            if (out / _TMP).exists():
                logger.warning(
                    "SFT checkpoint %s is torn (its write was interrupted); resuming from %s instead",
                    out / _TMP,
                    folder,
                )
            return folder
    return None


def load_sft_state(folder: Path, config_hash: str) -> SFTState:
    """The saved state; a clear error if the checkpoint belongs to another configuration."""
    try:
        raw = torch.load(folder / "state.pt", weights_only=True)  # plain containers and tensors only
        state = SFTState(**raw)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"{folder / 'state.pt'}: unreadable SFT checkpoint state ({exc})") from exc
    if state.config_hash != config_hash:
        raise ValueError(
            f"{folder}: this checkpoint was written by another SFT configuration (hash {state.config_hash}, "
            f"now {config_hash}); use another output_dir or train.resume=never to start over"
        )
    return state


def restore_rng(state: SFTState) -> random.Random:
    rng = random.Random()
    rng.setstate(state.rng_state)
    torch.set_rng_state(state.torch_rng_state)
    return rng
