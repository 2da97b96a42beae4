"""The paper's tables as commands: Table 3 (main AnesBench results), Table 4 (Morpheus: base vs SFT vs
SFT + GRPO) and Table 5 (training strategies: with/without CPT x SFT data).

    python -m anessuite table3 --config experiments/anessuite-table3/config.yaml
    python -m anessuite table3 benchmark=/data/AnesBench models='[/models/Qwen2.5-7B-Instruct]'
    python -m anessuite table3 benchmark=/data/AnesBench models='[http://127.0.0.1:8000/v1]'
    python -m anessuite morpheus --config experiments/anessuite-morpheus/config.yaml
    python -m anessuite strategies --config experiments/anessuite-training-strategies/config.yaml

Every number in the rendered tables comes from a results.json written in the same call (or read from the
pipeline run it resumes); nothing is typed in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from anessuite.anesbench import default_out_dir, evaluate_models
from anessuite.evaluate import BackendConfig
from anessuite.prompts import PromptConfig
from anessuite.report import (
    TABLE3_COLUMNS,
    plot_levels,
    table3_row,
    update_readme,
    write_table3,
    write_tables,
)
from rlcore.config import load_config, recipe_main
from rlcore.tracking import write_results_json
from rlcore.tracking_store import MLflowSwitch

__all__ = [
    "Table3Config",
    "MorpheusConfig",
    "StrategiesConfig",
    "run_table3",
    "run_morpheus",
    "run_strategies",
    "expand_models",
]

logger = logging.getLogger(__name__)


@dataclass
class Table3Config:
    """Evaluate a list of models on AnesBench and render the Table 3 layout."""

    # folders / embedded names / hub ids / server URLs ("http://host:port/v1" evaluates every served model,
    # "http://host:port/v1#name" one of them); empty: the embedded models = base and every stage of `pipeline_config`
    models: list[str] = field(default_factory=list)
    # row labels, same order as models (default: derived)
    model_names: list[str] = field(default_factory=list)
    benchmark: str = ""  # file or folder with anesbench_*.json; empty: the synthetic benchmark
    pipeline_config: str = "packages/anessuite/configs/pipeline_cpu.yaml"  # used when models is empty
    languages: list[str] = field(default_factory=lambda: ["en", "zh"])  # benchmark languages
    mode: str = "generate"  # generate (zero-shot CoT) | loglik
    # response cap for every model; null: the pipeline's eval.max_new_tokens, or 2048 (the paper's) for `models`.
    # When set it is passed to the pipeline too, so config and run cannot disagree
    max_new_tokens: int | None = None
    backend: str = "hf"  # hf | vllm (local models) | openai (models are names served at base_url)
    base_url: str = ""  # backend=openai: the server, http://host:port/v1
    # other backend settings (extra_body, chat_template_kwargs, max_outage_s, revision, ...)
    backend_options: BackendConfig = field(default_factory=BackendConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)  # prompt for every model (preset: official)
    accumulate: bool = False  # keep rows of models evaluated earlier in output_dir (one table, many commands)
    # one MLflow run per evaluated model (in the evaluations' experiment, anessuite-eval)
    tracking: MLflowSwitch = field(default_factory=MLflowSwitch)
    batch_size: int = 16  # hf batch size
    concurrency: int = 16  # requests in flight for server URLs
    limit_per_language: int | None = None  # smoke runs: first N items per language
    bootstrap_iters: int = 1000  # bootstrap replicates for the CIs
    seed: int = 0  # bootstrap seed (decoding is greedy; the pipeline's training seed is in its own config)
    # table3.md/.csv/.json/.png, results.json, models/<label>/; empty: <runs>/anesbench/<benchmark folder name>
    output_dir: str = "experiments/anessuite-table3/results"

    # one vocabulary (CONTRIBUTING.md): the old name fails naming the new one; config hashes keep the old spelling
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"out_dir": "output_dir", "track": "tracking.enabled"}
    IDENTITY_KEEPS_OLD_NAMES: ClassVar[bool] = True


@dataclass
class MorpheusConfig:
    """Table 4 layout from a pipeline without CPT: base, +SFT, +SFT+GRPO."""

    pipeline_config: str = "experiments/anessuite-morpheus/pipeline.yaml"  # the pipeline to run or resume
    mode: str = "generate"  # which evaluation mode fills the table
    seed: int = 0  # recorded for provenance; the training seed is the pipeline config's
    output_dir: str = "experiments/anessuite-morpheus/results"  # table4.md/.csv and results.json

    # one vocabulary (CONTRIBUTING.md): the old name fails naming the new one; config hashes keep the old spelling
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"out_dir": "output_dir"}
    IDENTITY_KEEPS_OLD_NAMES: ClassVar[bool] = True


@dataclass
class StrategiesConfig:
    """Table 5 layout: base vs base+CPT, each fine-tuned on every SFT data choice (GRPO off)."""

    # base model, CPT/SFT settings
    pipeline_config: str = "experiments/anessuite-training-strategies/pipeline.yaml"
    # SFT data rows
    sft_data: list[str] = field(default_factory=lambda: ["anesqa", "anesr1", "anesqa+anesr1"])
    mode: str = "generate"  # which evaluation mode fills the table
    seed: int = 0  # recorded for provenance; the training seed is the pipeline config's
    output_dir: str = "experiments/anessuite-training-strategies/results"  # table5.md/.csv and results.json

    # one vocabulary (CONTRIBUTING.md): the old name fails naming the new one; config hashes keep the old spelling
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"out_dir": "output_dir"}
    IDENTITY_KEEPS_OLD_NAMES: ClassVar[bool] = True


def _served_models(base_url: str) -> list[str]:
    # httpx costs ~0.12 s to import and only this HTTP path needs it
    import httpx

    response = httpx.get(base_url.rstrip("/") + "/models", timeout=30)
    response.raise_for_status()
    return [entry["id"] for entry in response.json()["data"]]


def expand_models(models: Sequence[str]) -> list[tuple[str, str | None]]:
    """[(model spec, server base URL or None)]; a bare server URL expands to every model it serves."""
    expanded: list[tuple[str, str | None]] = []
    for entry in models:
        if entry.startswith(("http://", "https://")):
            url, _, name = entry.partition("#")
            names = [name] if name else _served_models(url)
            expanded += [(served, url) for served in names]
        else:
            expanded.append((entry, None))
    return expanded


def _write_outputs(
    out: Path,
    stem: str,
    rows: list[dict],
    columns: list[str],
    results: dict[str, Any],
    settings: dict[str, Any] | None = None,
) -> None:
    """Tables + results.json in ``out``; the experiment README's "Last run" block gets the table and provenance."""

    md = write_table3(out, stem, results) if stem == "table3" else write_tables(out, stem, rows, columns)[0]
    body = {"table": stem, "rows": rows, "results": results, **({"settings": settings} if settings else {})}
    path = write_results_json(out / "results.json", body)
    provenance = json.loads(path.read_text())["provenance"]
    stamp = (
        f"Written by the run at {provenance.get('written_at')} (git {str(provenance.get('git.sha', '?'))[:10]}, "
        f"dirty={provenance.get('git.dirty')}, {provenance.get('host.cpus')} CPUs, GPUs: "
        f"{provenance.get('host.gpus')}); source: `{out.name}/results.json`."
    )
    if settings:
        stamp += " Settings: " + ", ".join(f"{key}={value}" for key, value in settings.items()) + "."
    update_readme(out.parent / "README.md", f"{stamp}\n\n{md.read_text()}")
    logger.info("%s:\n%s", md, md.read_text())


def _pipeline(config_path: str, overrides: Sequence[str] = ()) -> tuple[Any, dict[str, dict]]:
    # heavy and optional here: loads torch
    from anessuite.pipeline.config import PipelineConfig
    from anessuite.pipeline.run import run_pipeline

    cfg = load_config(PipelineConfig, config_path, overrides)
    return cfg, run_pipeline(cfg)


def run_table3(cfg: Table3Config) -> Path:
    """Evaluate every model (or run/resume the default pipeline) and write table3.{md,csv,png}, results.json."""

    out = Path(cfg.output_dir) if cfg.output_dir else default_out_dir(cfg.benchmark or "synthetic")
    per_model: dict[str, dict[str, Any]] = {}
    if not cfg.models:
        overrides = [f"eval.modes=[{cfg.mode}]"] + (
            [f"data.benchmark={cfg.benchmark}"] if cfg.benchmark else []
        )
        if cfg.max_new_tokens is not None:
            overrides.append(f"eval.max_new_tokens={cfg.max_new_tokens}")
        pipeline_cfg, stage_results = _pipeline(cfg.pipeline_config, overrides)
        max_new_tokens = pipeline_cfg.eval.max_new_tokens
        per_model = {label: by_mode[cfg.mode] for label, by_mode in stage_results.items()}
    else:
        max_new_tokens = cfg.max_new_tokens if cfg.max_new_tokens is not None else 2048
        per_model = evaluate_models(cfg, out, max_new_tokens)
    rows = [{"Model": name, **table3_row(results)} for name, results in per_model.items()]
    logger.info("table3: every row generated with max_new_tokens=%d", max_new_tokens)
    _write_outputs(
        out,
        "table3",
        rows,
        ["Model", *TABLE3_COLUMNS],
        per_model,
        settings={"max_new_tokens": max_new_tokens},
    )
    plot_levels(per_model, out / "table3.png", title=f"AnesBench accuracy by level ({cfg.mode})")
    return out / "table3.md"


def _lang_total(results: dict[str, Any], lang: str) -> float | None:
    return results.get("by_language", {}).get(lang, {}).get("total")


def run_morpheus(cfg: MorpheusConfig) -> Path:
    pipeline_cfg, stage_results = _pipeline(cfg.pipeline_config)
    if pipeline_cfg.cpt.enabled:
        raise ValueError(f"{cfg.pipeline_config}: Morpheus is trained without CPT; set cpt.enabled: false")
    rows, per_model = [], {}
    for label, by_mode in stage_results.items():
        results = by_mode[cfg.mode]
        name = pipeline_cfg.base_model if label == "base" else f"{pipeline_cfg.name} ({label})"
        rows.append(
            {
                "Model": name,
                "SFT": "✓" if "SFT" in label else "–",
                "GRPO": "✓" if "GRPO" in label else "–",
                "EN Total": _lang_total(results, "en"),
                "ZH Total": _lang_total(results, "zh"),
                "Avg.": results["avg"],
            }
        )
        per_model[label] = results
    out = Path(cfg.output_dir)
    _write_outputs(out, "table4", rows, ["Model", "SFT", "GRPO", "EN Total", "ZH Total", "Avg."], per_model)
    return out / "table4.md"


def run_strategies(cfg: StrategiesConfig) -> Path:
    """One CPT run, then SFT on each data choice from the base and from the CPT model (GRPO off)."""
    # heavy and optional here: loads torch
    from anessuite.pipeline.config import PipelineConfig
    from anessuite.pipeline.run import pipeline_dir, stage_final

    base_cfg = load_config(PipelineConfig, cfg.pipeline_config)

    def own_folder(suffix: str) -> list[str]:
        # a pipeline config with a fixed output_dir gives every variant a folder beside it (stages with identical
        # inputs are still reused from there); without one each variant's folder follows from its name
        if not base_cfg.output_dir:
            return []
        out = Path(base_cfg.output_dir)
        return [f"output_dir={out.parent / f'{out.name}-{suffix}'}"]

    cpt_only = [
        "sft.enabled=false",
        "grpo.enabled=false",
        f"name={base_cfg.name}-cpt-only",
        *own_folder("cpt-only"),
    ]
    cpt_cfg, cpt_results = _pipeline(cfg.pipeline_config, cpt_only)
    cpt_model = stage_final(pipeline_dir(cpt_cfg), "cpt")
    rows, per_model = [], {}
    for label, results in (("base", cpt_results["base"]), ("base-CPT", cpt_results["base+CPT"])):
        rows.append(
            {
                "Model": label,
                "SFT data": "–",
                "EN": _lang_total(results[cfg.mode], "en"),
                "ZH": _lang_total(results[cfg.mode], "zh"),
                "Avg.": results[cfg.mode]["avg"],
            }
        )
        per_model[f"{label}/none"] = results[cfg.mode]
    if base_cfg.data.sft_replay > 0:
        logger.info(
            "table5: data.sft_replay=%s replays CPT documents in the SFT of the rows that start from base-CPT only; "
            "the rows without CPT are fine-tuned with data.sft_replay=0",
            base_cfg.data.sft_replay,
        )
    for start_label, start_model in (("base", base_cfg.base_model), ("base-CPT", cpt_model)):
        # a row without CPT must see no CPT document, so the pipeline's replay of the CPT corpus inside SFT is off
        no_replay = ["data.sft_replay=0"] if start_label == "base" and base_cfg.data.sft_replay > 0 else []
        for data_choice in cfg.sft_data:
            sources = data_choice.split("+")
            overrides = [
                f"base_model={start_model}",
                "cpt.enabled=false",
                "grpo.enabled=false",
                "evaluate_base=false",
                f"data.sft_sources=[{','.join(sources)}]",
                *no_replay,
                f"name={base_cfg.name}-{start_label}-{data_choice}",
                *own_folder(f"{start_label}-{data_choice}"),
            ]
            _, results = _pipeline(cfg.pipeline_config, overrides)
            final = results["base+SFT"][cfg.mode]
            rows.append(
                {
                    "Model": start_label,
                    "SFT data": data_choice,
                    "EN": _lang_total(final, "en"),
                    "ZH": _lang_total(final, "zh"),
                    "Avg.": final["avg"],
                }
            )
            per_model[f"{start_label}/{data_choice}"] = final
    out = Path(cfg.output_dir)
    _write_outputs(out, "table5", rows, ["Model", "SFT data", "EN", "ZH", "Avg."], per_model)
    return out / "table5.md"


def _main(schema, fn, prog: str, argv: Sequence[str] | None) -> int:
    def _run(cfg) -> int:
        path = fn(cfg)
        print(Path(path).read_text())
        print(f"written: {path}")
        return 0

    return recipe_main(schema, _run, argv=argv, prog=prog, description=schema.__doc__)


def table3_main(argv: Sequence[str] | None = None) -> int:
    return _main(Table3Config, run_table3, "anessuite table3", argv)


def morpheus_main(argv: Sequence[str] | None = None) -> int:
    return _main(MorpheusConfig, run_morpheus, "anessuite morpheus", argv)


def strategies_main(argv: Sequence[str] | None = None) -> int:
    return _main(StrategiesConfig, run_strategies, "anessuite strategies", argv)
