"""Any list of models -> rows of one Table 3 (``make anesbench``, ``python -m anessuite table3 models=[...]``).

A model is a local folder, an embedded name, or a name served by an OpenAI-compatible server (``base_url``, or a
``http://host:port/v1[#name]`` entry). Each model is evaluated into ``<out>/models/<label>/`` with the resumable
cache, so re-running only asks for what is missing. Row labels never collide: a label is the model's folder name
("final") widened with its parent folders ("run-a/final", "run-b/final") until it is unique among this call's
models and the rows already in the table folder; with ``accumulate`` those earlier rows stay in the table, so
evaluating models one command at a time builds one table.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anessuite.evaluate import EvalConfig, GenerationConfig, run_eval
from rlcore.runs import runs_root

__all__ = ["unique_labels", "existing_rows", "evaluate_models", "default_out_dir"]

logger = logging.getLogger(__name__)


def _parts(spec: str) -> list[str]:
    return [part for part in spec.rstrip("/").split("#")[-1].split("/") if part and part not in (".", "..")]


def unique_labels(models: Sequence[tuple[str, str | None]], taken: dict[str, str] | None = None) -> list[str]:
    """One row label per ``(model spec, server URL or None)``: the last path component, widened with parent
    components until no other model (of this call, or in ``taken``: label -> identity) has it."""
    taken = dict(taken or {})
    identities = [f"{url or ''}|{spec}" for spec, url in models]
    labels: list[str] = []
    for index, (spec, _) in enumerate(models):
        parts = _parts(spec) or [spec]
        others = [_parts(s) or [s] for i, (s, _) in enumerate(models) if identities[i] != identities[index]]
        for width in range(1, len(parts) + 1):
            label = "/".join(parts[-width:])
            clash = any("/".join(p[-width:]) == label for p in others) or (
                taken.get(label, identities[index]) != identities[index]
            )
            if not clash:
                break
        else:
            suffix = 2
            while f"{label}-{suffix}" in taken or f"{label}-{suffix}" in labels:
                suffix += 1
            label = f"{label}-{suffix}"
        labels.append(label)
        taken.setdefault(label, identities[index])
    return labels


def _folder(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "__", label)


def existing_rows(out: Path) -> dict[str, dict[str, Any]]:
    """label -> results of the models already evaluated into ``out/models/`` (oldest first)."""
    rows = []
    for path in (out / "models").glob("*/results.json"):
        results = json.loads(path.read_text(encoding="utf-8"))
        rows.append((path.stat().st_mtime, results.get("model") or path.parent.name, results))
    return {label: results for _, label, results in sorted(rows, key=lambda row: row[0])}


def _identity(results: dict[str, Any]) -> str:
    evaluated = results.get("eval") or {}
    url = evaluated.get("base_url") if evaluated.get("backend") == "openai" else None
    return f"{url or ''}|{evaluated.get('model', '')}"


def default_out_dir(benchmark: str) -> Path:
    """``<runs>/anesbench/<benchmark folder name>``: one accumulating table per benchmark."""

    name = Path(benchmark.rstrip("/")).name or "benchmark"
    return runs_root() / "anesbench" / _folder(Path(name).stem if Path(name).suffix else name)


def evaluate_models(cfg: Any, out: Path, max_new_tokens: int) -> dict[str, dict[str, Any]]:
    """Evaluate ``cfg.models`` (a Table3Config) and return label -> results, earlier rows first when
    ``cfg.accumulate``."""
    # import cycle: anessuite.tables imports this module at its top
    from anessuite.tables import expand_models

    expanded = expand_models(cfg.models)
    if cfg.backend == "openai":
        if not cfg.base_url:
            raise ValueError(
                "backend=openai needs base_url=http://host:port/v1 (or models given as server URLs)"
            )
        expanded = [(spec, url or cfg.base_url) for spec, url in expanded]
    expanded = list(dict.fromkeys(expanded))
    earlier = existing_rows(out) if cfg.accumulate else {}
    settings = {"max_new_tokens": max_new_tokens, "prompt_preset": cfg.prompt.preset, "mode": cfg.mode}
    for label, results in earlier.items():
        recorded = {key: (results.get("eval") or {}).get(key) for key in settings}
        if recorded != settings:
            raise ValueError(
                f"{out}: row '{label}' was generated with {recorded}, this run uses {settings}; one table holds "
                "one setting. Use another output_dir (OUT=...) or the same settings."
            )
    if cfg.model_names:
        if len(cfg.model_names) != len(expanded):
            raise ValueError(f"model_names has {len(cfg.model_names)} entries for {len(expanded)} models")
        labels = list(cfg.model_names)
        for label, (spec, url) in zip(labels, expanded):
            if label in earlier and _identity(earlier[label]) != f"{url or ''}|{spec}":
                raise ValueError(
                    f"{out}: row '{label}' already holds another model; pick another model_names entry"
                )
    else:
        labels = unique_labels(expanded, {label: _identity(r) for label, r in earlier.items()})
    per_model: dict[str, dict[str, Any]] = {}
    for (spec, url), label in zip(expanded, labels):
        eval_cfg = EvalConfig(
            model=spec,
            model_name=label,
            benchmark=cfg.benchmark,
            languages=list(cfg.languages),
            limit_per_language=cfg.limit_per_language,
            output_dir=str(out / "models" / _folder(label)),
            bootstrap_iters=cfg.bootstrap_iters,
            seed=cfg.seed,
            generation=GenerationConfig(mode=cfg.mode, max_new_tokens=max_new_tokens),
            prompt=cfg.prompt,
        )
        for name, value in vars(cfg.backend_options).items():
            setattr(eval_cfg.backend, name, value)
        eval_cfg.tracking.enabled = cfg.tracking.enabled
        eval_cfg.backend.kind = "openai" if url else cfg.backend
        eval_cfg.backend.base_url = url or eval_cfg.backend.base_url
        eval_cfg.backend.batch_size = cfg.batch_size
        eval_cfg.backend.concurrency = cfg.concurrency
        per_model[label] = run_eval(eval_cfg)
    merged = {label: results for label, results in earlier.items() if label not in per_model}
    merged.update(per_model)
    return merged
