"""The single-run plots: a REX-RAG run folder and a GRPO run folder each give a four-panel PNG; an eval.json a bar chart."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np

from rexrag.plots import plot_evaluation, plot_training_run, read_jsonl_points


def _write_run(folder: Path, with_probes: bool) -> None:
    folder.mkdir(parents=True)
    lines = []
    for step in range(1, 6):
        record = {"step": step, "reward/mean": 0.1 * step, "reward/std": 0.05, "accuracy": 0.1 * step}
        record["groups/zero_variance_frac"] = 1.0 - 0.2 * step
        if with_probes:
            record |= {
                "rexrag/probes_spawned": step,
                "rexrag/probes_kept": 1,
                "rexrag/keep_ratio": 0.2,
                "rexrag/probe_accuracy_kept": 0.5,
                "rexrag/dead_end_rate": 0.3,
                "rexrag/orig_accuracy": 0.1 * step,
            }
        lines.append(json.dumps(record))
    # A crash can leave the last line cut off: it is skipped, not an error.
    (folder / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 6, "reward/me')
    curve = [{"step": 0.0, "heldout/em": 0.1}, {"step": 5.0, "heldout/em": 0.3}]
    (folder / "heldout_curve.jsonl").write_text("".join(json.dumps(p) + "\n" for p in curve))
    (folder / "eval.json").write_text(json.dumps({"average_em": 0.35, "by_source": {}}))


def _drawn(path: Path) -> float:
    """Share of pixels that are not white: an empty figure is ~0."""
    image = matplotlib.image.imread(path)[..., :3]
    return float((image.min(axis=-1) < 0.95).mean())


def test_training_run_plots(tmp_path):
    for name, probes in (("rexrag", True), ("grpo", False)):
        folder = tmp_path / name
        _write_run(folder, probes)
        assert len(read_jsonl_points(folder / "metrics.jsonl")) == 5
        path = plot_training_run(folder, name)
        assert path == folder / "run.png"
        assert _drawn(path) > 0.02, name


def test_training_run_without_steps_writes_nothing(tmp_path):
    assert plot_training_run(tmp_path) is None
    assert not (tmp_path / "run.png").exists()


def test_evaluation_plot(tmp_path):
    scores = {
        "average_em": 0.4,
        "average_f1": 0.5,
        "by_source": {"nq": {"em": 0.5, "f1": 0.6, "n": 10}, "hotpotqa": {"em": 0.3, "f1": 0.4, "n": 8}},
    }
    path = plot_evaluation(scores, tmp_path / "eval.png", "model")
    image = matplotlib.image.imread(path)
    assert image.shape[1] > 400 and np.isfinite(image).all()
    assert _drawn(path) > 0.02
