"""Results of `make demo`: the stages' MLflow runs nested under the parent run, REX-RAG and AnesBench numbers
collected from the recipes' output files, the training plot, and the printed summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def stage_runs(uri: str, experiment: str, parent_id: str) -> list[dict]:
    """The stages' MLflow runs nested under the demo's parent run.

    The demo starts every stage with ``RLCORE_PARENT_RUN_ID`` (and ``RLCORE_RUN_TAGS`` holding its id) in the
    environment, so the recipes' own runs are created as children of the parent run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs(
        [found.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", max_results=1000
    )
    return sorted(
        ({"name": r.info.run_name, "run_id": r.info.run_id, "status": r.info.status} for r in runs),
        key=lambda r: r["name"] or "",
    )


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def window_means(rows: list[dict], key: str, width: int = 10) -> tuple[float | None, float | None]:
    """Mean of ``key`` over the first and over the last ``width`` steps (at most half of the steps each, so the two
    windows never share a step); (None, None) without at least two steps that report it."""
    values = [r[key] for r in rows if r.get(key) is not None]
    width = min(width, len(values) // 2)
    if width < 1:
        return None, None
    return sum(values[:width]) / width, sum(values[-width:]) / width


def heldout_change(rows: list[dict]) -> dict[str, Any] | None:
    """Greedy held-out EM at the first and the last evaluation of heldout_curve.jsonl, and the curve itself."""
    curve = [(int(r["step"]), r["heldout/em"]) for r in rows if r.get("heldout/em") is not None]
    if not curve:
        return None
    (first_step, first), (last_step, last) = curve[0], curve[-1]
    return {"first_step": first_step, "first_em": first, "last_step": last_step, "last_em": last,
            "change": last - first, "curve": curve}  # fmt: skip


def row_slug(label: str) -> str:
    """A table row's label as a folder and stage name: "+CPT+SFT" -> "cpt-sft"."""
    return "-".join("".join(c if c.isalnum() else " " for c in label.lower()).split()) or "model"


def collect_results(out: Path, anes_rows: list[str] = ()) -> dict[str, Any]:
    """REX-RAG EM per source + probe/alpha statistics, and per AnesBench row (a model's label, its results in
    ``anessuite/eval-<slug>/``) the EN/ZH accuracies by level (Table 3 layout)."""
    results: dict[str, Any] = {}
    run_dir = out / "rexrag"
    if (run_dir / "eval.json").is_file():
        scores = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
        train = read_jsonl(run_dir / "metrics.jsonl")
        probes = read_jsonl(run_dir / "rexrag_metrics.jsonl")

        def mean(rows: list[dict], key: str) -> float | None:
            values = [r[key] for r in rows if r.get(key) is not None]
            return sum(values) / len(values) if values else None

        results["rexrag"] = {
            "average_em": scores["average_em"],
            "em_by_source": {src: v["em"] for src, v in sorted(scores["by_source"].items())},
            "n_eval": scores["n"],
            "searches_per_question": mean(list(scores["by_source"].values()), "searches"),
            "train_steps": len(train),
            "train_reward_mean": mean(train, "reward/mean"),
            "train_reward_last": train[-1]["reward/mean"] if train else None,
            "probes_spawned": sum(r.get("rexrag/probes_spawned", 0) for r in probes),
            "probes_kept": sum(r.get("rexrag/probes_kept", 0) for r in probes),
            "alpha_mean": mean(probes, "rexrag/alpha"),
            "alpha_max": max(
                (r["rexrag/alpha"] for r in probes if r.get("rexrag/alpha") is not None), default=None
            ),
            "keep_ratio_last": probes[-1].get("rexrag/keep_ratio") if probes else None,
            "probe_accuracy_kept_mean": mean(probes, "rexrag/probe_accuracy_kept"),
            "is_weight_mean": mean(probes, "rexrag/is_weight_mean"),
            "is_ess_mean": mean(probes, "rexrag/is_ess"),
            "dead_end_rate_mean": mean(probes, "rexrag/dead_end_rate"),
            "heldout": heldout_change(read_jsonl(run_dir / "heldout_curve.jsonl")),
            # first / last 10 steps: what RL changed in the probes' work
            "moves": {
                name: window_means(probes, key)
                for name, key in (
                    ("dead_end_rate", "rexrag/dead_end_rate"),
                    ("originals_accuracy", "rexrag/orig_accuracy"),
                    ("kept_probe_accuracy", "rexrag/probe_accuracy_kept"),
                    ("alpha", "rexrag/alpha"),
                )
            },
        }
    rows = []
    for label in anes_rows:
        path = out / "anessuite" / f"eval-{row_slug(label)}" / "results.json"
        if not path.is_file():
            continue
        anes = json.loads(path.read_text(encoding="utf-8"))
        levels = ("system1", "system1.x", "system2", "total", "n")
        rows.append(
            {
                "label": label,
                "model": anes.get("model"),
                **{lang: {k: e.get(k) for k in levels} for lang, e in sorted(anes["by_language"].items())},
                "avg": anes["avg"],
                "overall_accuracy": anes["overall"]["accuracy"],
                "abstained": anes["overall"].get("abstained"),
            }
        )
    if rows:
        results["anesbench"] = {"rows": rows}
    return results


def plot_training(out: Path) -> Path | None:
    """Reward/accuracy and the REX-RAG mixture statistics per training step -> plots/rexrag_training.png."""
    train = read_jsonl(out / "rexrag" / "metrics.jsonl")
    probes = read_jsonl(out / "rexrag" / "rexrag_metrics.jsonl")
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    curve = [r for r in read_jsonl(out / "rexrag" / "heldout_curve.jsonl") if r.get("heldout/em") is not None]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 3.6))
    steps = [r["step"] for r in train]
    left.plot(steps, [r.get("reward/mean") for r in train], marker="o", label="reward (originals + probes)")
    left.plot(steps, [r.get("accuracy") for r in train], marker="s", label="accuracy")
    left.set(xlabel="step", title="REX-RAG training", ylim=(-0.05, 1.05))
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.legend(fontsize=8)
    if curve:
        middle.plot(
            [r["step"] for r in curve], [r["heldout/em"] for r in curve], marker="o", label="EM (greedy)"
        )
        middle.set(xlabel="step", title="held-out dev questions", ylim=(-0.05, 1.05))
        middle.xaxis.set_major_locator(MaxNLocator(integer=True))
        middle.legend(fontsize=8)
    if probes:
        pstep = [r["step"] for r in probes]
        right.plot(pstep, [r.get("rexrag/alpha") for r in probes], marker="o", label="alpha = K / (N + K)")
        right.plot(pstep, [r.get("rexrag/keep_ratio") for r in probes], marker="s", label="keep ratio")
        right.plot(pstep, [r.get("rexrag/is_ess") for r in probes], marker="^", label="normalised ESS")
        right.plot(pstep, [r.get("rexrag/dead_end_rate") for r in probes], marker=".", label="dead-end rate")
        right.set(xlabel="step", title="probes and policy correction", ylim=(-0.05, 1.05))
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
        right.legend(fontsize=8)
    fig.tight_layout()
    path = out / "plots" / "rexrag_training.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable results block printed at the end (also written to summary.md)."""
    lines = [f"# Demo {summary['demo_id']} ({summary['status']}, {summary['wall_seconds'] / 60:.1f} min)", ""]
    rex = summary["results"].get("rexrag")
    if rex:
        sources = "  ".join(f"{s} {v:.3f}" for s, v in rex["em_by_source"].items())
        lines += [
            f"REX-RAG ({rex['train_steps']} steps, greedy EM on {rex['n_eval']} test questions over HTTP "
            f"{summary['retrieval']['kind']} retrieval)",
            f"  average EM {rex['average_em']:.3f} | {sources}",
            *_movement_lines(rex),
            f"  probes spawned {rex['probes_spawned']}, kept {rex['probes_kept']}; alpha mean "
            f"{_fmt(rex['alpha_mean'])} max {_fmt(rex['alpha_max'])}; keep ratio {_fmt(rex['keep_ratio_last'])}; "
            f"IS weight mean {_fmt(rex['is_weight_mean'])}, ESS {_fmt(rex['is_ess_mean'])}; "
            f"train reward mean {_fmt(rex['train_reward_mean'])}",
            f"  retrieval server: {_fmt(summary['retrieval'].get('training_queries'), 0)} search queries from "
            "training and evaluation over HTTP",
            "",
        ]
    anes = summary["results"].get("anesbench")
    if anes:
        lines += [
            f"AnesBench layout (CPU miniature benchmark, {summary['anes_mode']}; accuracy by level)",
            f"  {'':<10} {'EN Sys1':>7} {'1.x':>6} {'2':>6} {'Total':>6} | {'ZH Sys1':>7} {'1.x':>6} {'2':>6} "
            f"{'Total':>6} | {'Avg.':>6}",
        ]
        for row in anes["rows"]:
            cells = [
                f"{_fmt(row[lang]['system1']):>7} {_fmt(row[lang]['system1.x']):>6} {_fmt(row[lang]['system2']):>6} "
                f"{_fmt(row[lang]['total']):>6}"
                for lang in ("en", "zh")
                if lang in row
            ]
            lines.append(f"  {row['label']:<10} {' | '.join(cells)} | {_fmt(row['avg']):>6}")
        sizes = anes["rows"][0]
        lines += [
            f"  ({sizes.get('en', {}).get('n')} EN + {sizes.get('zh', {}).get('n')} ZH questions, four options each: a "
            "guess scores 0.25, an answer that names no option scores 0)",
            "",
        ]
    cpu = summary.get("stage_cpu_seconds", {})
    lines.append("Per stage (s):        wall-clock   CPU (user+sys)")
    lines += [
        f"  {name:<17} {seconds:9.1f} {_fmt(cpu.get(name), 1):>9}"
        for name, seconds in summary["stage_seconds"].items()
    ]
    lines += ["", "Outputs:"]
    lines += [f"  {name:<28} {path}" for name, path in summary["paths"].items()]
    mlflow = summary["mlflow"]
    lines += [
        "",
        f"MLflow: experiment '{mlflow['experiment']}', parent run {mlflow['parent_run_id']} with "
        f"{len(mlflow['nested_runs'])} nested runs ({mlflow['tracking_uri']})",
        f"Open the MLflow UI: {mlflow['ui_command']}",
    ]
    return "\n".join(lines) + "\n"


def _movement_lines(rex: dict[str, Any]) -> list[str]:
    """What the run changed, against its start: held-out EM first -> last evaluation, probe statistics over the
    first and the last ten steps."""
    lines = []
    held = rex.get("heldout")
    if held:
        lines.append(
            f"  held-out EM (greedy, dev) {held['first_em']:.3f} at step {held['first_step']} -> "
            f"{held['last_em']:.3f} at step {held['last_step']} ({held['change']:+.3f})"
        )
    moves = [(name, pair) for name, pair in (rex.get("moves") or {}).items() if pair[0] is not None]
    if moves:
        text = "; ".join(f"{name.replace('_', ' ')} {a:.2f} -> {b:.2f}" for name, (a, b) in moves)
        lines.append(f"  first -> last steps: {text}")
    return lines


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The parent run's metrics: stage times, REX-RAG EM and mixture statistics, AnesBench totals."""
    metrics: dict[str, float] = {f"time/{k}_s": v for k, v in summary["stage_seconds"].items()}
    rex = summary["results"].get("rexrag") or {}
    for key in (
        "average_em",
        "alpha_mean",
        "probes_spawned",
        "probes_kept",
        "is_ess_mean",
        "train_reward_mean",
    ):
        if rex.get(key) is not None:
            metrics[f"rexrag/{key}"] = rex[key]
    held = rex.get("heldout") or {}
    if held:
        metrics["rexrag/heldout_em_first"] = held["first_em"]
        metrics["rexrag/heldout_em_last"] = held["last_em"]
    for source, em in (rex.get("em_by_source") or {}).items():
        metrics[f"rexrag/em/{source}"] = em
    for row in (summary["results"].get("anesbench") or {}).get("rows", []):
        slug = row_slug(row["label"])
        for lang in ("en", "zh"):
            if lang in row:
                metrics[f"anesbench/{slug}/{lang}_total"] = row[lang]["total"]
        if row.get("avg") is not None:
            metrics[f"anesbench/{slug}/avg"] = row["avg"]
    return metrics
