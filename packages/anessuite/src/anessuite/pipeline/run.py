"""``python -m anessuite pipeline``: CPT -> SFT -> GRPO with a held-out evaluation before and after each stage.

Top to bottom: prepare data -> open (or re-open) the MLflow parent run -> evaluate the base model -> for each
enabled stage: train it in a nested run unless its ``DONE.json`` exists, evaluate it -> write the stage table.
The run folder is a pure function of the config (``<runs>/anessuite-pipeline/<name>-<hash>``), so re-running
the same command resumes: finished stages are skipped, an interrupted stage continues from its newest
checkpoint, and evaluations come from the response cache.

Finished stages, and identical stages of other pipelines, are found through :mod:`anessuite.pipeline.stage_cache`.

A stage with a ``launcher`` (e.g. ``accelerate launch --config_file infra/accelerate/zero3.yaml``) runs as a
subprocess ``<launcher> -m anessuite.pipeline.run --config <resolved yaml> only_stage=<stage>``; its MLflow run is
still nested under the parent (``rlcore.tracking``'s ``RLCORE_PARENT_RUN_ID``).

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
from dataclasses import replace
from pathlib import Path
from typing import Any

from anessuite.evaluate import EvalConfig, GenerationConfig, run_eval
from anessuite.pipeline.config import PipelineConfig
from anessuite.pipeline.data import plan_data, prepare_data
from anessuite.pipeline.grpo_stage import run_grpo_stage
from anessuite.pipeline.hf_stages import run_hf_stage
from anessuite.pipeline.stage_cache import (
    STAGES,
    check_finished_stage,
    eval_cache_seed_dirs,
    mark_keys,
    pipeline_dir,
    reuse_stage,
    stage_final,
    stage_input,
    stage_plan,
    write_done,
)
from anessuite.report import TABLE3_COLUMNS, table3_row, write_tables
from rlcore.config import recipe_main, to_yaml
from rlcore.logging_utils import setup_logging
from rlcore.seeding import seed_everything
from rlcore.tracking import PARENT_ENV, record_failures, start_run
from rlcore.tracking_store import MLflowConfig

__all__ = ["run_pipeline", "stage_plan", "stage_final", "pipeline_dir", "main"]

logger = logging.getLogger(__name__)


def _is_main_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _train_stage(cfg: PipelineConfig, out: Path, stage: str, data: dict[str, Path], run: Any) -> Path:
    model_in = stage_input(cfg, out, stage)
    stage_dir = out / stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    if stage == "grpo":
        final = run_grpo_stage(cfg.grpo, model_in, data["rl"], stage_dir, cfg.seed, run, cfg.data.sft_answer)
    else:
        final = run_hf_stage(stage, getattr(cfg, stage), model_in, data[stage], stage_dir, cfg.seed, run)
    if _is_main_rank():
        write_done(cfg, out, stage, model_in, final)
    return final


def _launch_stage(cfg: PipelineConfig, out: Path, stage: str, parent_id: str | None) -> None:
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
        f"output_dir={out}",
    ]
    env = {**os.environ, **({PARENT_ENV: parent_id} if parent_id else {})}
    logger.info("launching stage %s: %s", stage, shlex.join(command))
    subprocess.run(command, check=True, env=env)


def _evaluate(cfg: PipelineConfig, out: Path, label: str, model: str, benchmark: Path, parent: Any) -> dict:
    results = {}
    seed_dirs = eval_cache_seed_dirs(out) if cfg.reuse else []
    for mode in cfg.eval.modes:
        eval_cfg = EvalConfig(
            model=model,
            model_name=label,
            benchmark=str(benchmark),
            languages=list(cfg.eval.languages),
            limit_per_language=cfg.eval.limit_per_language,
            output_dir=str(out / "eval" / f"{label}-{mode}"),
            cache_dir=str(out / "eval-cache"),
            cache_seed_dirs=seed_dirs,
            bootstrap_iters=cfg.eval.bootstrap_iters,
            seed=cfg.seed,
            tracking=MLflowConfig(enabled=False),
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
                child.log_artifact(Path(result["output_dir"]) / "results.json")
    return results


def _write_tables(out: Path, rows: list[tuple[str, dict]], modes: Sequence[str]) -> None:
    summary = {
        label: {mode: {k: res[mode][k] for k in ("overall", "by_language", "avg")} for mode in res}
        for label, res in rows
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    for mode in modes:
        table = [{"Model": label, **table3_row(res[mode])} for label, res in rows if mode in res]
        write_tables(out, f"table_{mode}", table, ["Model", *TABLE3_COLUMNS])


def _parent_run(cfg: PipelineConfig, out: Path, state: dict):
    """The pipeline's MLflow run; in a launched stage process (``only_stage`` with ``RLCORE_PARENT_RUN_ID`` set
    by :func:`_launch_stage`), the stage's own run, which ``rlcore.tracking`` nests under that parent."""
    if not cfg.tracking.enabled or not _is_main_rank():
        return contextlib.nullcontext(None)
    if cfg.only_stage and os.environ.get(PARENT_ENV):
        return start_run(
            cfg.tracking.experiment,
            run_name=f"{cfg.name}/{cfg.only_stage}",
            config=cfg,
            seeds=[cfg.seed],
            tags={"stage": cfg.only_stage},
        )
    return start_run(
        cfg.tracking.experiment,
        run_name=cfg.name,
        config=cfg,
        seeds=[cfg.seed],
        tags={"out_dir": str(out)},
        resume_run_id=state.get("parent_run_id"),
    )


def _without(cfg: PipelineConfig, skipped: dict[str, str]) -> PipelineConfig:
    """``cfg`` with the stages that cannot run disabled (logged once, with the reason)."""
    for stage, why in skipped.items():
        logger.warning("stage %s skipped: %s", stage, why)
        cfg = replace(cfg, **{stage: replace(getattr(cfg, stage), enabled=False)})
    return cfg


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Run (or resume) the pipeline; returns ``{label: {mode: results}}`` of every evaluation.

    A failure is recorded in MLflow even before the pipeline's run opened (bad data path, missing model)."""
    with record_failures(
        cfg.tracking.experiment,
        run_name=f"{cfg.name}/{cfg.only_stage}" if cfg.only_stage else cfg.name,
        config=cfg,
        seeds=[cfg.seed],
        tags={"stage": cfg.only_stage} if cfg.only_stage else None,
        enabled=cfg.tracking.enabled and _is_main_rank(),
    ):
        return _run_pipeline(cfg)


def _run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    if cfg.only_stage and cfg.only_stage not in STAGES:
        raise ValueError(f"only_stage must be one of {STAGES}, got {cfg.only_stage!r}")
    seed_everything(cfg.seed)
    out = pipeline_dir(cfg)  # from the config as given: the folder does not depend on which data exists
    data_plan = plan_data(cfg)
    if data_plan.skipped_stages.get(cfg.only_stage):
        raise ValueError(f"only_stage={cfg.only_stage}: {data_plan.skipped_stages[cfg.only_stage]}")
    cfg = _without(cfg, data_plan.skipped_stages)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "pipeline_state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    data = prepare_data(cfg.data, out / "data", cfg.seed, cfg.prompt, data_plan)
    plan = stage_plan(cfg)
    rows: list[tuple[str, dict]] = []
    with _parent_run(cfg, out, state) as parent:
        if cfg.only_stage:
            _train_stage(cfg, out, cfg.only_stage, data, parent)
            return {}
        if parent is not None:
            state["parent_run_id"] = parent.run_id
            parent.set_tags({f"skipped.{stage}": why for stage, why in data_plan.skipped_stages.items()})
        state["skipped_stages"] = data_plan.skipped_stages
        state_path.write_text(json.dumps(state, indent=1))
        if cfg.reuse:
            mark_keys(cfg, out)
        if cfg.evaluate_base and cfg.eval.enabled:
            rows.append(("base", _evaluate(cfg, out, "base", cfg.base_model, data["benchmark"], parent)))
        for stage, label in plan:
            marker = out / stage / "DONE.json"
            if marker.exists():
                check_finished_stage(cfg, out, stage)
                logger.info("stage %s already done (%s)", stage, marker)
            elif cfg.reuse and reuse_stage(cfg, out, stage):
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
    for stage, why in data_plan.skipped_stages.items():
        logger.warning("the pipeline ran without its %s stage: %s", stage.upper(), why)
    return {label: res for label, res in rows}


def main(argv: Sequence[str] | None = None) -> int:
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
    setup_logging()
    raise SystemExit(main())
