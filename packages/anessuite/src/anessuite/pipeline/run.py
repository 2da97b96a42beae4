"""``python -m anessuite pipeline``: CPT -> SFT -> GRPO with a held-out evaluation before and after each stage.

Top to bottom: prepare data -> open (or re-open) the MLflow parent run -> evaluate the base model -> for each
enabled stage: train it in a nested run unless its ``DONE.json`` exists, evaluate it -> write the stage table.
The run folder is a pure function of the config (``<runs>/anessuite-pipeline/<name>-<hash>``), so re-running
the same command resumes: finished stages are skipped, an interrupted stage continues from its newest
checkpoint, and evaluations come from the response cache.

A stage with a ``launcher`` (e.g. ``accelerate launch --config_file infra/accelerate/zero3.yaml``) runs as a
subprocess ``<launcher> -m anessuite.pipeline.run --config <resolved yaml> only_stage=<stage>``; its MLflow run is
still nested under the parent (via ``ANESSUITE_PARENT_RUN_ID``).

    python -m anessuite pipeline --config packages/anessuite/configs/pipeline_cpu.yaml
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anessuite.pipeline.config import PipelineConfig
from anessuite.pipeline.data import prepare_data

__all__ = ["run_pipeline", "stage_plan", "main"]

logger = logging.getLogger(__name__)

STAGES = ("cpt", "sft", "grpo")
_PARENT_ENV = "ANESSUITE_PARENT_RUN_ID"


def training_fingerprint(cfg: PipelineConfig) -> str:
    """Hash of everything that changes the trained models (not evaluation settings or the benchmark path), so
    changing how stages are evaluated never forces retraining."""
    import hashlib

    from rlcore.config import to_dict

    data = {k: v for k, v in to_dict(cfg.data).items() if k != "benchmark"}
    relevant = {
        "name": cfg.name,
        "base_model": cfg.base_model,
        "seed": cfg.seed,
        "prompt": to_dict(cfg.prompt),
        "data": data,
        **{stage: to_dict(getattr(cfg, stage)) for stage in STAGES},
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:8]


def stage_key(cfg: PipelineConfig, stage: str, model_in: str) -> str:
    """Identity of one stage's training: its input model, its own settings, the data, seed and prompt (not the
    pipeline's name or the other stages), so two pipelines that would train the same model share it."""
    import hashlib

    from rlcore.config import to_dict

    settings = {k: v for k, v in to_dict(getattr(cfg, stage)).items() if k != "launcher"}
    if Path(model_in).exists():  # the same folder reached through another path is the same input
        model_in = str(Path(model_in).resolve())
    relevant = {
        "stage": stage,
        "input": model_in,
        "seed": cfg.seed,
        "prompt": to_dict(cfg.prompt),
        "data": {k: v for k, v in to_dict(cfg.data).items() if k != "benchmark"},
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _pipelines_root() -> Path:
    from rlcore.runs import runs_root

    return runs_root() / "anessuite-pipeline"


def _sibling_roots(out: Path) -> list[Path]:
    """Folders whose pipeline subfolders are searched for reusable stages and responses."""
    roots = [_pipelines_root(), out.parent]
    return [
        r for i, r in enumerate(roots) if r.is_dir() and r.resolve() not in {x.resolve() for x in roots[:i]}
    ]


def find_finished_stage(stage: str, key: str, exclude: Path) -> Path | None:
    """The final model folder of a finished stage with this key in another pipeline folder, if any."""
    markers = [m for root in _sibling_roots(exclude) for m in sorted(root.glob(f"*/{stage}/DONE.json"))]
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


def _mark_keys(cfg: PipelineConfig, out: Path) -> None:
    """Record the stage key in this pipeline's finished stages that lack one (stages finished before keys)."""
    for stage, _ in stage_plan(cfg):
        marker = out / stage / "DONE.json"
        if not marker.exists():
            return
        done = json.loads(marker.read_text())
        if "key" not in done and "input" in done:
            done["key"] = stage_key(cfg, stage, done["input"])
            marker.write_text(json.dumps(done, indent=1))


def _reuse_stage(cfg: PipelineConfig, out: Path, stage: str) -> bool:
    """Adopt an identical finished stage from another pipeline (DONE.json points at its final model)."""
    model_in = _stage_input(cfg, out, stage)
    key = stage_key(cfg, stage, model_in)
    final = find_finished_stage(stage, key, out)
    if final is None:
        return False
    (out / stage).mkdir(parents=True, exist_ok=True)
    (out / stage / "DONE.json").write_text(
        json.dumps({"final": str(final), "input": model_in, "key": key, "reused": True}, indent=1)
    )
    logger.info("stage %s: reusing %s (identical input, settings, data and seed; key %s)", stage, final, key)
    return True


def pipeline_dir(cfg: PipelineConfig) -> Path:
    from rlcore.runs import runs_root

    if cfg.out_dir:
        return Path(cfg.out_dir)
    return runs_root() / "anessuite-pipeline" / f"{cfg.name}-{training_fingerprint(cfg)}"


def stage_final(out: Path, stage: str) -> str:
    """The final model folder recorded by a finished stage (stored relative to the run folder)."""
    final = json.loads((out / stage / "DONE.json").read_text())["final"]
    return str(out / final) if not Path(final).is_absolute() else final


def stage_plan(cfg: PipelineConfig) -> list[tuple[str, str]]:
    """[(stage, label)] for the enabled stages; labels read like the paper's rows ("base+CPT+SFT")."""
    plan, label = [], "base"
    for stage in STAGES:
        if getattr(cfg, stage).enabled:
            label = f"{label}+{stage.upper()}"
            plan.append((stage, label))
    return plan


def _stage_input(cfg: PipelineConfig, out: Path, stage: str) -> str:
    """The final model of the nearest enabled stage before ``stage``, else the base model."""
    previous = [s for s, _ in stage_plan(cfg) if STAGES.index(s) < STAGES.index(stage)]
    if not previous:
        return cfg.base_model
    marker = out / previous[-1] / "DONE.json"
    if not marker.exists():
        raise FileNotFoundError(f"stage '{stage}' needs '{previous[-1]}' first ({marker} missing)")
    return stage_final(out, previous[-1])


def _is_main_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _train_stage(cfg: PipelineConfig, out: Path, stage: str, data: dict[str, Path], run: Any) -> Path:
    model_in = _stage_input(cfg, out, stage)
    stage_dir = out / stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    if stage == "grpo":
        from anessuite.pipeline.grpo_stage import run_grpo_stage

        final = run_grpo_stage(cfg.grpo, model_in, data["rl"], stage_dir, cfg.seed, run)
    else:
        from anessuite.pipeline.hf_stages import run_hf_stage

        final = run_hf_stage(stage, getattr(cfg, stage), model_in, data[stage], stage_dir, cfg.seed, run)
    if _is_main_rank():
        relative = (
            Path(final).resolve().relative_to(out.resolve())
            if Path(final).resolve().is_relative_to(out.resolve())
            else final
        )
        (stage_dir / "DONE.json").write_text(
            json.dumps(
                {"final": str(relative), "input": model_in, "key": stage_key(cfg, stage, model_in)}, indent=1
            )
        )
    return final


def _launch_stage(cfg: PipelineConfig, out: Path, stage: str, parent_id: str | None) -> None:
    from rlcore.config import to_yaml

    resolved = out / "pipeline_config.yaml"
    resolved.write_text(to_yaml(cfg), encoding="utf-8")
    launcher = getattr(cfg, stage).launcher
    prefix = [sys.executable] if launcher.strip() == "python" else shlex.split(launcher)
    command = [
        *prefix,
        "-m",
        "anessuite.pipeline.run",
        "--config",
        str(resolved),
        f"only_stage={stage}",
        f"out_dir={out}",
    ]
    env = {**os.environ, **({_PARENT_ENV: parent_id} if parent_id else {})}
    logger.info("launching stage %s: %s", stage, shlex.join(command))
    subprocess.run(command, check=True, env=env)


def _evaluate(cfg: PipelineConfig, out: Path, label: str, model: str, benchmark: Path, parent: Any) -> dict:
    from anessuite.evaluate import EvalConfig, GenerationConfig, run_eval

    results = {}
    seed_dirs = (
        [str(p) for r in _sibling_roots(out) for p in sorted(r.glob("*/eval-cache"))] if cfg.reuse else []
    )
    for mode in cfg.eval.modes:
        eval_cfg = EvalConfig(
            model=model,
            model_name=label,
            benchmark=str(benchmark),
            languages=list(cfg.eval.languages),
            limit_per_language=cfg.eval.limit_per_language,
            out_dir=str(out / "eval" / f"{label}-{mode}"),
            cache_dir=str(out / "eval-cache"),
            cache_seed_dirs=seed_dirs,
            bootstrap_iters=cfg.eval.bootstrap_iters,
            seed=cfg.seed,
            track=False,
            generation=GenerationConfig(mode=mode, max_new_tokens=cfg.eval.max_new_tokens),
            prompt=cfg.prompt,
        )
        eval_cfg.backend.kind = cfg.eval.backend
        eval_cfg.backend.batch_size = cfg.eval.batch_size
        result = run_eval(eval_cfg)
        results[mode] = result
        if parent is not None:
            metrics = {f"{mode}/avg": result["avg"], f"{mode}/overall": result["overall"]["accuracy"]}
            for lang, entry in result["by_language"].items():
                metrics.update(
                    {
                        f"{mode}/{lang}/{k}": entry[k]
                        for k in ("total", "system1", "system1.x", "system2")
                        if entry.get(k) is not None
                    }
                )
            with parent.child(
                f"eval {label} ({mode})", tags={"stage_label": label, "eval_mode": mode}
            ) as child:
                child.log_metrics(metrics, step=0)
                child.log_artifact(Path(result["out_dir"]) / "results.json")
    return results


def _write_tables(out: Path, rows: list[tuple[str, dict]], modes: Sequence[str]) -> None:
    from anessuite.report import TABLE3_COLUMNS, table3_row, write_tables

    summary = {
        label: {mode: {k: res[mode][k] for k in ("overall", "by_language", "avg")} for mode in res}
        for label, res in rows
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    for mode in modes:
        table = [{"Model": label, **table3_row(res[mode])} for label, res in rows if mode in res]
        write_tables(out, f"table_{mode}", table, ["Model", *TABLE3_COLUMNS])


def _parent_run(cfg: PipelineConfig, out: Path, state: dict):
    if not cfg.tracking or not _is_main_rank():
        return contextlib.nullcontext(None)
    from rlcore.tracking import start_run

    parent_env = os.environ.get(_PARENT_ENV)
    if cfg.only_stage and parent_env:
        return start_run(
            cfg.experiment,
            run_name=f"{cfg.name}/{cfg.only_stage}",
            config=cfg,
            seeds=[cfg.seed],
            tags={"mlflow.parentRunId": parent_env, "stage": cfg.only_stage},
        )
    return start_run(
        cfg.experiment,
        run_name=cfg.name,
        config=cfg,
        seeds=[cfg.seed],
        tags={"out_dir": str(out)},
        resume_run_id=state.get("parent_run_id"),
    )


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Run (or resume) the pipeline; returns ``{label: {mode: results}}`` of every evaluation."""
    from rlcore.seeding import seed_everything

    seed_everything(cfg.seed)
    out = pipeline_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "pipeline_state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    data = prepare_data(cfg.data, out / "data", cfg.seed, cfg.prompt)
    plan = stage_plan(cfg)
    if cfg.only_stage and cfg.only_stage not in STAGES:
        raise ValueError(f"only_stage must be one of {STAGES}, got {cfg.only_stage!r}")
    rows: list[tuple[str, dict]] = []
    with _parent_run(cfg, out, state) as parent:
        if cfg.only_stage:
            _train_stage(cfg, out, cfg.only_stage, data, parent)
            return {}
        if parent is not None:
            state["parent_run_id"] = parent.run_id
            state_path.write_text(json.dumps(state, indent=1))
        if cfg.reuse:
            _mark_keys(cfg, out)
        if cfg.evaluate_base and cfg.eval.enabled:
            rows.append(("base", _evaluate(cfg, out, "base", cfg.base_model, data["benchmark"], parent)))
        for stage, label in plan:
            marker = out / stage / "DONE.json"
            if marker.exists():
                logger.info("stage %s already done (%s)", stage, marker)
            elif cfg.reuse and _reuse_stage(cfg, out, stage):
                pass
            elif getattr(cfg, stage).launcher:
                _launch_stage(cfg, out, stage, parent.run_id if parent is not None else None)
            else:
                child = (
                    parent.child(stage, tags={"stage": stage})
                    if parent is not None
                    else contextlib.nullcontext()
                )
                with child as run:
                    _train_stage(cfg, out, stage, data, run)
            final = stage_final(out, stage)
            if cfg.eval.enabled:
                rows.append((label, _evaluate(cfg, out, label, final, data["benchmark"], parent)))
                _write_tables(out, rows, cfg.eval.modes)
        if rows:
            _write_tables(out, rows, cfg.eval.modes)
            if parent is not None:
                for name in ["summary.json", *(f"table_{m}.md" for m in cfg.eval.modes)]:
                    parent.log_artifact(out / name)
    logger.info("pipeline finished: %s", out)
    return {label: res for label, res in rows}


def main(argv: Sequence[str] | None = None) -> int:
    from rlcore.config import recipe_main

    def _run(cfg: PipelineConfig) -> int:
        results = run_pipeline(cfg)
        for label, by_mode in results.items():
            for mode, res in by_mode.items():
                print(
                    f"{label:<22} {mode:<9} avg {res['avg']}  "
                    + "  ".join(f"{lang} {entry['total']}" for lang, entry in res["by_language"].items())
                )
        print(f"outputs: {pipeline_dir(cfg)}")
        return 0

    return recipe_main(
        PipelineConfig, _run, argv=argv, prog="anessuite pipeline", description=PipelineConfig.__doc__
    )


if __name__ == "__main__":
    from rlcore.logging_utils import setup_logging

    setup_logging()
    raise SystemExit(main())
