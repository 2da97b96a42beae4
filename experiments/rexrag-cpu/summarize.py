"""Summarise GRPO vs REX-RAG runs of the CPU-scale experiment: mean +- std over seeds, curves, tables.

    python experiments/rexrag-cpu/summarize.py --runs runs/rexrag-cpu --arms grpo rexrag --seeds 0 1 2 \
        --out experiments/rexrag-cpu

Reads ``<runs>/<arm>-seed<k>/results.json`` (written by ``python -m rexrag train``) and writes ``results.json``
(with provenance), ``table.md`` / ``table.csv`` (paper layout, seed-mean EM per data source) and ``curves.png``
(held-out greedy EM during training when the runs recorded it, train accuracy, dead-end rate; seed mean +- std).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from rexrag.evaluation import mean_std, write_tables
from rlcore.tracking import write_results_json


def _mean_over_steps(records: list[dict], key: str, steps: range | None = None) -> float | None:
    values = [r[key] for r in records if key in r and (steps is None or int(r["step"]) in steps)]
    return statistics.fmean(values) if values else None


def summarize_run(path: Path) -> dict:
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
        "curves": {
            "accuracy": [r.get("accuracy") for r in train],
            "dead_end_rate": [r.get("rexrag/dead_end_rate") for r in method],
            "alpha": [r.get("rexrag/alpha") for r in method],
        },
        "eval": data["eval"],
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


def _plot(per_arm: dict[str, list[dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
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
    fig.savefig(out / "curves.png", dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, type=Path)
    parser.add_argument("--arms", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    per_arm: dict[str, list[dict]] = {}
    for arm in args.arms:
        per_arm[arm] = [summarize_run(args.runs / f"{arm}-seed{seed}") for seed in args.seeds]
    summary: dict = {"seeds": args.seeds, "arms": {}}
    for arm, runs in per_arm.items():
        entry = {}
        for key in (
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
        ):
            values = [r[key] for r in runs if r[key] is not None]
            mean, std = mean_std(values) if values else (None, None)
            entry[key] = {"mean": mean, "std": std, "values": values}
        sources = sorted({s for r in runs for s in r["eval_by_source"]})
        entry["eval_by_source"] = {
            s: dict(zip(("mean", "std"), mean_std([r["eval_by_source"][s] for r in runs]))) for s in sources
        }
        entry["heldout_curve"] = heldout_band(runs)
        summary["arms"][arm] = entry
    args.out.mkdir(parents=True, exist_ok=True)
    table = {
        arm: {
            "average_em": e["eval_average_em"]["mean"],
            "by_source": {s: {"em": v["mean"]} for s, v in e["eval_by_source"].items()},
        }
        for arm, e in summary["arms"].items()
    }
    write_tables(table, args.out, "table")
    _plot(per_arm, args.out)
    write_results_json(args.out / "results.json", summary, seeds=args.seeds)
    for arm, entry in summary["arms"].items():
        em = entry["eval_average_em"]
        std = f" +- {100 * em['std']:.1f}" if em["std"] is not None else ""
        curve = entry["heldout_curve"]
        dev = (
            f"; dev EM by step {dict(zip(map(int, curve['steps']), (round(100 * m, 1) for m in curve['mean'])))}"
            if curve["steps"]
            else ""
        )
        print(
            f"{arm:>24}: test EM {100 * em['mean']:.1f}{std}  (seeds {[round(100 * v, 1) for v in em['values']]}){dev}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
