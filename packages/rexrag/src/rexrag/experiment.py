"""``python -m rexrag experiment``: the driver of the REX-RAG experiments (GRPO vs REX-RAG arms x seeds).

    python -m rexrag experiment --config experiments/rexrag-cpu/experiment.yaml [group=ablations] [seeds=[0]]

Runs the group's warm-up stages and every (arm, seed) run not finished yet (``rlcore.experiments``), then reads
``<runs_dir>/<arm>-seed<k>/results.json`` (written by ``python -m rexrag train``) and writes into the group's
folder ``results.json`` (seed mean +- std per arm, each run's config hash, provenance), ``table.md`` /
``table.csv`` / ``table.json`` (paper layout, seed-mean EM per data source), ``curves.png`` (train accuracy,
dead-end rate, held-out greedy EM when the runs recorded it), ``mechanism.png`` (kept-probe accuracy, alpha and
the clipped share of probe tokens by class, for the arms that sample probes) and the README's "Last run" block.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rexrag.evaluation import format_markdown, mean_std, write_tables
from rexrag.recipes.train import RexRagTrainConfig
from rlcore.experiments import ExperimentError, ExperimentSpec, PlannedRun, experiment_main, update_last_run
from rlcore.tracking import write_results_json

logger = logging.getLogger(__name__)


@dataclass
class RexRagExperimentSpec(ExperimentSpec):
    """Seeds x arms of ``python -m rexrag train`` (``python -m rexrag experiment --config .../experiment.yaml``)."""

    # each run seeds its weights, sampling and data order (train.seed) and the probe draws (rexrag.seed)
    seed_keys: list[str] = field(default_factory=lambda: ["train.seed", "rexrag.seed"])
    # a run folder without results.json is started over, so every finished run has one uninterrupted history
    arm_overrides: list[str] = field(default_factory=lambda: ["train.resume=never"])


# per-arm statistics of results.json, each a seed mean +- std over the runs' values
SUMMARY_KEYS = (
    "eval_average_em",
    "eval_searches",
    "train_accuracy_first5",
    "train_accuracy_last5",
    "dead_end_rate_first5",
    "dead_end_rate_last5",
    "probe_accuracy_kept",
    "alpha",
    "probes_kept_per_step",
    "generated_tokens",
    "probe_generated_tokens",
    "train_seconds",
    "heldout_em_start",
    "heldout_em_end",
    "clip_frac_probe_prefix",
    "clip_frac_probe_inserted",
    "clip_frac_probe_continuation",
)


# the token classes of a probe the clip statistics are split by: the original's kept prefix, the inserted pool
# sentence, the policy's continuation
CLIP_CLASSES = ("prefix", "inserted", "continuation")


def _mean_over_steps(records: list[dict], key: str, steps: range | None = None) -> float | None:
    values = [r[key] for r in records if key in r and (steps is None or int(r["step"]) in steps)]
    return statistics.fmean(values) if values else None


def summarize_run(path: Path) -> dict[str, Any]:
    """One run folder's numbers: final EM, early/late training statistics, probe statistics, curves."""
    data = json.loads((path / "results.json").read_text(encoding="utf-8"))
    train, method = data["train_metrics"], data["rexrag_metrics"]
    heldout = data.get("heldout_curve") or []
    last = int(data["last_step"])
    early, late = range(1, min(5, last) + 1), range(max(1, last - 4), last + 1)
    return {
        "eval_average_em": data["eval"]["average_em"],
        "eval_by_source": {s: v["em"] for s, v in data["eval"]["by_source"].items()},
        "eval_searches": statistics.fmean(v.get("searches", 0.0) for v in data["eval"]["by_source"].values()),
        "train_accuracy_first5": _mean_over_steps(train, "accuracy", early),
        "train_accuracy_last5": _mean_over_steps(train, "accuracy", late),
        "dead_end_rate_first5": _mean_over_steps(method, "rexrag/dead_end_rate", early),
        "dead_end_rate_last5": _mean_over_steps(method, "rexrag/dead_end_rate", late),
        "probe_accuracy_kept": _mean_over_steps(method, "rexrag/probe_accuracy_kept"),
        "alpha": _mean_over_steps(method, "rexrag/alpha"),
        "probes_kept_per_step": _mean_over_steps(method, "rexrag/probes_kept"),
        "generated_tokens": sum(r.get("rollout/generated_tokens", 0.0) for r in train),
        "probe_generated_tokens": sum(r.get("rexrag/probe_generated_tokens", 0.0) for r in method),
        "train_seconds": sum(r.get("time/step", 0.0) for r in train),
        "steps": last,
        "heldout_em_start": heldout[0]["heldout/em"] if heldout and heldout[0]["step"] == 0 else None,
        "heldout_em_end": heldout[-1]["heldout/em"] if heldout else None,
        "heldout_curve": {int(p["step"]): p["heldout/em"] for p in heldout},
        # which probe tokens the clip acts on (mean over the steps that had probe tokens of the class)
        **{
            f"clip_frac_probe_{c}": _mean_over_steps(method, f"rexrag/clip_frac_probe_{c}")
            for c in CLIP_CLASSES
        },
        "curves": {
            "accuracy": [r.get("accuracy") for r in train],
            "dead_end_rate": [r.get("rexrag/dead_end_rate") for r in method],
            "alpha": [r.get("rexrag/alpha") for r in method],
            "probe_accuracy_kept": [r.get("rexrag/probe_accuracy_kept") for r in method],
            **{
                f"clip_frac_probe_{c}": [r.get(f"rexrag/clip_frac_probe_{c}") for r in method]
                for c in CLIP_CLASSES
            },
        },
    }


def heldout_band(runs: list[dict]) -> dict[str, list[float]]:
    """Seed mean and std of the held-out EM at the steps every run evaluated."""
    steps = sorted(set.intersection(*(set(r["heldout_curve"]) for r in runs))) if runs else []
    band: dict[str, list[float]] = {"steps": [], "mean": [], "std": []}
    for step in steps:
        mean, std = mean_std([r["heldout_curve"][step] for r in runs])
        band["steps"].append(float(step))
        band["mean"].append(mean)
        band["std"].append(std)
    return band


def summarize_arms(per_arm: dict[str, list[dict]], seeds: Sequence[int]) -> dict[str, Any]:
    """``{"seeds", "arms": {arm: {statistic: {mean, std, values}, eval_by_source, heldout_curve}}}``."""
    summary: dict[str, Any] = {"seeds": list(seeds), "arms": {}}
    for arm, runs in per_arm.items():
        entry: dict[str, Any] = {}
        for key in SUMMARY_KEYS:
            values = [r[key] for r in runs if r[key] is not None]
            mean, std = mean_std(values) if values else (None, None)
            entry[key] = {"mean": mean, "std": std, "values": values}
        sources = sorted({s for r in runs for s in r["eval_by_source"]})
        entry["eval_by_source"] = {
            s: dict(zip(("mean", "std"), mean_std([r["eval_by_source"][s] for r in runs]))) for s in sources
        }
        entry["heldout_curve"] = heldout_band(runs)
        summary["arms"][arm] = entry
    return summary


def paper_table(summary: dict[str, Any]) -> dict[str, Any]:
    """Seed-mean EM per arm and data source, in the layout of ``rexrag.evaluation.write_tables``."""
    return {
        arm: {
            "average_em": e["eval_average_em"]["mean"],
            "by_source": {s: {"em": v["mean"]} for s, v in e["eval_by_source"].items()},
        }
        for arm, e in summary["arms"].items()
    }


def arm_lines(summary: dict[str, Any]) -> list[str]:
    """One line per arm: test EM mean +- std, the seeds' values and the dev-EM curve."""
    lines = []
    for arm, entry in summary["arms"].items():
        em = entry["eval_average_em"]
        std = f" +- {100 * em['std']:.1f}" if em["std"] is not None else ""
        curve = entry["heldout_curve"]
        dev = (
            f"; dev EM by step {dict(zip(map(int, curve['steps']), (round(100 * m, 1) for m in curve['mean'])))}"
            if curve["steps"]
            else ""
        )
        seeds = [round(100 * v, 1) for v in em["values"]]
        lines.append(f"{arm}: test EM {100 * em['mean']:.1f}{std} (seeds {seeds}){dev}")
    return lines


def plot_curves(per_arm: dict[str, list[dict]], out: Path) -> Path:
    """``curves.png``: train accuracy and dead-end rate (5-step means), held-out EM (seed mean +- std)."""
    # heavy and only needed for the figure
    import matplotlib

    matplotlib.use("Agg")
    # pyplot only after the non-interactive backend is chosen above
    import matplotlib.pyplot as plt

    bands = {arm: heldout_band(runs) for arm, runs in per_arm.items()}
    with_curve = any(b["steps"] for b in bands.values())
    fig, axes = plt.subplots(1, 3 if with_curve else 2, figsize=(15 if with_curve else 10, 3.5))
    if with_curve:
        ax = axes[-1]
        for arm, band in bands.items():
            if not band["steps"]:
                continue
            mean = [100 * m for m in band["mean"]]
            std = [100 * (v or 0.0) for v in band["std"]]
            ax.plot(band["steps"], mean, marker="o", label=arm)
            ax.fill_between(
                band["steps"],
                [m - d for m, d in zip(mean, std)],
                [m + d for m, d in zip(mean, std)],
                alpha=0.15,
            )
        ax.set_title("held-out greedy EM (dev), seed mean +- std")
        ax.set_xlabel("step")
        ax.set_ylabel("EM %")
        ax.legend(fontsize=7)
    window = 5  # 4 prompts per step: single steps are too noisy to read
    for ax, key, title in (
        (axes[0], "accuracy", f"train accuracy of originals (T=1), {window}-step mean"),
        (axes[1], "dead_end_rate", f"dead-end rate (all originals wrong), {window}-step mean"),
    ):
        for arm, runs in per_arm.items():
            curves = [r["curves"][key] for r in runs]
            length = min(len(c) for c in curves)
            mean = [statistics.fmean(c[i] for c in curves) for i in range(length)]
            smooth = [statistics.fmean(mean[max(0, i - window + 1) : i + 1]) for i in range(length)]
            ax.plot(range(1, length + 1), smooth, label=arm)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def smoothed_mean_curve(curves: list[list[float | None]], window: int) -> tuple[list[int], list[float]]:
    """Steps (1-based) and the seed mean of per-step values, each a trailing ``window``-step mean; steps with no
    value in any run (no probe that step) are skipped, so a probe statistic is averaged over the steps it exists."""
    length = max((len(c) for c in curves), default=0)
    per_step = []
    for i in range(length):
        values = [c[i] for c in curves if i < len(c) and c[i] is not None]
        per_step.append(statistics.fmean(values) if values else None)
    steps, means = [], []
    for i in range(length):
        recent = [v for v in per_step[max(0, i - window + 1) : i + 1] if v is not None]
        if per_step[i] is not None and recent:
            steps.append(i + 1)
            means.append(statistics.fmean(recent))
    return steps, means


def plot_mechanism(per_arm: dict[str, list[dict]], out: Path, window: int = 5) -> Path | None:
    """``mechanism.png`` for the arms that sample probes: kept-probe accuracy, alpha, and, for each arm that logged
    it, the clipped share of probe tokens by class (prefix / inserted / continuation); seed means of
    ``window``-step means. None when no arm kept a probe (GRPO only)."""
    # an arm samples probes when it kept some (alpha > 0): a GRPO run logs alpha 0 and a kept-probe accuracy of 0.0
    probing = {
        arm: runs for arm, runs in per_arm.items() if any(a for r in runs for a in r["curves"]["alpha"])
    }
    if not probing:
        return None
    # one clip panel per arm that logged clip fractions (an arm without the correction clips no probe token)
    clipping = {
        arm: runs
        for arm, runs in probing.items()
        if any(
            v is not None
            for r in runs
            for c in CLIP_CLASSES
            for v in r["curves"].get(f"clip_frac_probe_{c}", [])
        )
    }
    # heavy and only needed for the figure
    import matplotlib

    matplotlib.use("Agg")
    # pyplot only after the non-interactive backend is chosen above
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 + len(clipping), figsize=(5 * (2 + len(clipping)), 3.5))
    for ax, key, title in (
        (axes[0], "probe_accuracy_kept", "kept-probe accuracy"),
        (axes[1], "alpha", "alpha (probe budget)"),
    ):
        for arm, runs in probing.items():
            ax.plot(*smoothed_mean_curve([r["curves"][key] for r in runs], window), label=arm)
        ax.set_title(f"{title}, {window}-step mean")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax, (arm, runs) in zip(axes[2:], clipping.items(), strict=True):
        for cls in CLIP_CLASSES:
            curve = smoothed_mean_curve([r["curves"].get(f"clip_frac_probe_{cls}", []) for r in runs], window)
            ax.plot(*curve, label=cls)
        ax.set_title(f"{arm}: clipped share of probe tokens")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "mechanism.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summarize(
    spec: ExperimentSpec, folder: Path, runs: list[PlannedRun], plot: bool = True
) -> dict[str, Any]:
    """Write the group's results.json, tables, curves and README block from its finished runs."""
    group = spec.groups[spec.group]
    missing = [str(r.done_marker) for r in runs if not r.done]
    if missing:
        raise ExperimentError(f"runs not finished yet (run the group first): {', '.join(missing)}")
    per_arm: dict[str, list[dict]] = {arm: [] for arm in group.arms}
    hashes = {}
    for run in runs:
        per_arm[run.arm].append(summarize_run(run.done_marker.parent))
        hashes[run.name] = run.config_hash
    summary = summarize_arms(per_arm, spec.seeds)
    summary["runs"] = {name: {"config_hash": digest} for name, digest in hashes.items()}
    out = (folder / group.out).resolve() if group.out != "." else folder
    out.mkdir(parents=True, exist_ok=True)
    table = paper_table(summary)
    write_tables(table, out, "table")
    if plot:
        plot_curves(per_arm, out)
        plot_mechanism(per_arm, out)
    path = write_results_json(out / "results.json", summary, seeds=spec.seeds)
    provenance = json.loads(path.read_text(encoding="utf-8"))["provenance"]
    lines = arm_lines(summary)
    for line in lines:
        logger.info("%s", line)
    where = "" if group.out == "." else f"{group.out}/"
    body = (
        f"Written by `python -m rexrag experiment` at {provenance.get('written_at')} (git "
        f"{str(provenance.get('git.sha', '?'))[:10]}, dirty={provenance.get('git.dirty')}, "
        f"{provenance.get('host.cpus')} CPUs) from {len(runs)} runs in `{spec.runs_dir}`; source: "
        f"`{where}results.json`.\n\n"
        + format_markdown(table)
        + "\n"
        + "\n".join(f"- {line}" for line in lines)
    )
    update_last_run(folder / "README.md", body, spec.group)
    return summary


def main(argv: list[str] | None = None) -> int:
    return experiment_main(
        argv, "python -m rexrag experiment", "rexrag", RexRagTrainConfig, summarize, RexRagExperimentSpec
    )
