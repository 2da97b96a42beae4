"""Which stages are done, and which can be taken from another pipeline: the stage-reuse cache.

A finished stage leaves ``<pipeline folder>/<stage>/DONE.json``::

    {"final": "<model folder, relative to the pipeline folder when inside it>",
     "input": "<the model it started from>",
     "key": "<stage key>",
     "reused": true}            (only when adopted from another pipeline)

The *stage key* hashes everything that determines the trained model: the stage's input model, its own
settings (not its launcher), the data settings (not the benchmark), the seed and the prompt. Two pipelines
whose stage keys agree would train the same model, so the second adopts the first one's final folder instead
of training. Pipelines are searched in ``<runs root>/anessuite-pipeline/`` and beside the current folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from anessuite.pipeline.config import PipelineConfig
from rlcore.config import identity_dict
from rlcore.models import EMBEDDED_VERSIONS
from rlcore.runs import runs_root

__all__ = [
    "STAGES",
    "stage_plan",
    "stage_final",
    "stage_input",
    "stage_key",
    "training_fingerprint",
    "pipeline_dir",
    "sibling_roots",
    "find_finished_stage",
    "check_finished_stage",
    "mark_keys",
    "reuse_stage",
    "write_done",
    "eval_cache_seed_dirs",
]

logger = logging.getLogger(__name__)

STAGES = ("cpt", "sft", "grpo")
DONE_FILE = "DONE.json"


# Settings added after pipelines were stored, with the value that reproduces the earlier behaviour: left out of
# run-folder hashes and stage keys while they hold that value, so the stages earlier runs finished keep their
# keys (and are neither retrained nor re-evaluated). A new setting of a stage, the prompt or the data goes here.
ADDED_SETTINGS: dict[str, Any] = {
    "cpt.num_proc": None,
    "sft.num_proc": None,
    "cpt.group_by_length": False,
    "sft.group_by_length": False,
    "cpt.trainable": [],
    "sft.trainable": [],
    "cpt.loss": "trl",
    "sft.loss": "trl",
    "grpo.rollout.drop_eos_before_feedback": False,
    "grpo.rollout.max_start_tokens": 0,
    "prompt.preset": "ours",
    "prompt.option_line_en": "{letter}. {text}",
    "prompt.option_line_zh": "{letter}. {text}",
}


# The build of each embedded model that keys stored before builds were versioned in them were trained from. A
# model rebuilt since (a newer EMBEDDED_VERSIONS entry) is named with its build, so a stage trained from the
# earlier build is neither adopted nor resumed for the new one; keys of unchanged builds stay as they were.
BUILDS_IN_EARLIER_KEYS = {"smollm2-135m-instruct": "1", "qwen2.5-tokenizer": "2", "tiny-qwen2": "2"}


def _model_identity(model: str) -> str:
    """``model``, or ``<name>@build<version>`` for an embedded model rebuilt since the earlier keys."""
    version = EMBEDDED_VERSIONS.get(model)
    if version is None or version == BUILDS_IN_EARLIER_KEYS.get(model):
        return model
    return f"{model}@build{version}"


def _section(cfg: PipelineConfig, name: str) -> dict[str, Any]:
    """One config section as run identities see it (``identity_dict``: keys renamed since spelled the old way),
    without the :data:`ADDED_SETTINGS` that hold their earlier value."""
    data = identity_dict(cfg)[name]
    for dotted, earlier in ADDED_SETTINGS.items():
        section, *parents, leaf = dotted.split(".")
        if section != name:
            continue
        node = data
        for parent in parents:
            node = node.get(parent, {})
        if leaf in node and node[leaf] == earlier:
            del node[leaf]
    return data


def _data_identity(cfg: PipelineConfig) -> dict[str, Any]:
    """The data settings that change trained models (the benchmark only changes evaluations)."""
    return {k: v for k, v in _section(cfg, "data").items() if k != "benchmark"}


def _digest(payload: dict[str, Any], length: int) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:length]


def training_fingerprint(cfg: PipelineConfig) -> str:
    """Hash of everything that changes the trained models (not evaluation settings or the benchmark path), so
    changing how stages are evaluated never forces retraining."""
    relevant = {
        "name": cfg.name,
        "base_model": _model_identity(cfg.base_model),
        "seed": cfg.seed,
        "prompt": _section(cfg, "prompt"),
        "data": _data_identity(cfg),
        **{stage: _section(cfg, stage) for stage in STAGES},
    }
    return _digest(relevant, 8)


def stage_key(cfg: PipelineConfig, stage: str, model_in: str) -> str:
    """Identity of one stage's training: its input model, its own settings, the data, seed and prompt (not the
    pipeline's name or the other stages), so two pipelines that would train the same model share it."""
    settings = {k: v for k, v in _section(cfg, stage).items() if k != "launcher"}
    model_in = _model_identity(_canonical_input(model_in))
    relevant = {
        "stage": stage,
        "input": model_in,
        "seed": cfg.seed,
        "prompt": _section(cfg, "prompt"),
        "data": _data_identity(cfg),
        "settings": settings,
    }
    return _digest(relevant, 16)


# DONE.json files written with a key_version of KEY_VERSION hold keys that do not depend on where the checkout
# lies (an input folder inside the working directory counts by its path from there); older keys held the input's
# absolute path, so a copied or moved runs folder could not be checked against them.
KEY_VERSION = 2


def _canonical_input(model_in: str) -> str:
    """An existing input folder by its resolved path, relative to the working directory when inside it (the same
    folder reached through another path is the same input, wherever the checkout is); other inputs as given."""
    path = Path(model_in)
    if not path.exists():
        return model_in
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    return str(resolved.relative_to(cwd)) if resolved.is_relative_to(cwd) else str(resolved)


def pipelines_root() -> Path:
    return runs_root() / "anessuite-pipeline"


def pipeline_dir(cfg: PipelineConfig) -> Path:
    """``output_dir``, or ``<runs root>/anessuite-pipeline/<name>-<training fingerprint>`` (a re-run resumes)."""
    if cfg.output_dir:
        return Path(cfg.output_dir)
    return pipelines_root() / f"{cfg.name}-{training_fingerprint(cfg)}"


def stage_plan(cfg: PipelineConfig) -> list[tuple[str, str]]:
    """[(stage, label)] for the enabled stages; labels read like the paper's rows ("base+CPT+SFT")."""
    plan, label = [], "base"
    for stage in STAGES:
        if getattr(cfg, stage).enabled:
            label = f"{label}+{stage.upper()}"
            plan.append((stage, label))
    return plan


def stage_final(out: Path, stage: str) -> str:
    """The final model folder recorded by a finished stage (stored relative to the run folder)."""
    final = json.loads((out / stage / DONE_FILE).read_text())["final"]
    return str(out / final) if not Path(final).is_absolute() else final


def stage_input(cfg: PipelineConfig, out: Path, stage: str) -> str:
    """The final model of the nearest enabled stage before ``stage``, else the base model."""
    previous = [s for s, _ in stage_plan(cfg) if STAGES.index(s) < STAGES.index(stage)]
    if not previous:
        return cfg.base_model
    marker = out / previous[-1] / DONE_FILE
    if not marker.exists():
        raise FileNotFoundError(f"stage '{stage}' needs '{previous[-1]}' first ({marker} missing)")
    return stage_final(out, previous[-1])


def write_done(cfg: PipelineConfig, out: Path, stage: str, model_in: str, final: str | Path) -> None:
    """Mark ``stage`` finished: its final folder (relative when inside ``out``), input and stage key."""
    final_path = Path(final).resolve()
    relative = final_path.relative_to(out.resolve()) if final_path.is_relative_to(out.resolve()) else final
    marker = {
        "final": str(relative),
        "input": model_in,
        "key": stage_key(cfg, stage, model_in),
        "key_version": KEY_VERSION,
    }
    (out / stage / DONE_FILE).write_text(json.dumps(marker, indent=1))


def sibling_roots(out: Path) -> list[Path]:
    """Folders whose pipeline subfolders are searched for reusable stages and responses."""
    roots = [pipelines_root(), out.parent]
    return [
        r for i, r in enumerate(roots) if r.is_dir() and r.resolve() not in {x.resolve() for x in roots[:i]}
    ]


def eval_cache_seed_dirs(out: Path) -> list[str]:
    """Response caches of every known pipeline (an identical evaluation reuses their responses)."""
    return [str(p) for r in sibling_roots(out) for p in sorted(r.glob("*/eval-cache"))]


def find_finished_stage(stage: str, key: str, exclude: Path) -> Path | None:
    """The final model folder of a finished stage with this key in another pipeline folder, if any."""
    markers = [m for root in sibling_roots(exclude) for m in sorted(root.glob(f"*/{stage}/{DONE_FILE}"))]
    for marker in markers:
        folder = marker.parent.parent
        if folder.resolve() == exclude.resolve():
            continue
        try:
            done = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if done.get("key") == key:
            final = Path(stage_final(folder, stage))
            if (final / "config.json").is_file():
                return final.resolve()
    return None


def mark_keys(cfg: PipelineConfig, out: Path) -> None:
    """Record the stage key in this pipeline's finished stages that lack one (stages finished before keys)."""
    for stage, _ in stage_plan(cfg):
        marker = out / stage / DONE_FILE
        if not marker.exists():
            return
        done = json.loads(marker.read_text())
        if "key" not in done and "input" in done:
            done["key"] = stage_key(cfg, stage, done["input"])
            marker.write_text(json.dumps(done, indent=1))


def check_finished_stage(cfg: PipelineConfig, out: Path, stage: str) -> None:
    """Refuse a finished stage in ``out`` that another configuration trained (its recorded stage key differs), so a
    changed config never silently gets the old model; stages finished before keys (or location-free keys) were
    recorded are trusted."""
    done = json.loads((out / stage / DONE_FILE).read_text())
    recorded = done.get("key")
    if recorded is None or done.get("key_version") != KEY_VERSION:  # no key, or one tied to another location
        return
    expected = stage_key(cfg, stage, stage_input(cfg, out, stage))
    if recorded != expected:
        raise ValueError(
            f"{out / stage}: finished with other settings (stage key {recorded}; this config gives {expected}). "
            "Give this configuration its own output_dir, or move that folder away to retrain it."
        )


def reuse_stage(cfg: PipelineConfig, out: Path, stage: str) -> bool:
    """Adopt an identical finished stage from another pipeline (DONE.json points at its final model)."""
    model_in = stage_input(cfg, out, stage)
    key = stage_key(cfg, stage, model_in)
    final = find_finished_stage(stage, key, out)
    if final is None:
        return False
    (out / stage).mkdir(parents=True, exist_ok=True)
    (out / stage / DONE_FILE).write_text(
        json.dumps(
            {"final": str(final), "input": model_in, "key": key, "key_version": KEY_VERSION, "reused": True},
            indent=1,
        )
    )
    logger.info("stage %s: reusing %s (identical input, settings, data and seed; key %s)", stage, final, key)
    return True
