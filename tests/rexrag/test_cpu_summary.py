"""rexrag.experiment (the driver of the CPU experiments): mean +- std over seeds from run folders."""

import json
from pathlib import Path

import pytest

from rexrag.experiment import (
    CLIP_CLASSES,
    RexRagExperimentSpec,
    arm_lines,
    plot_mechanism,
    smoothed_mean_curve,
    summarize,
    summarize_run,
)
from rlcore.config import load_config
from rlcore.experiments import PlannedRun


def _summarize(tmp_path: Path, arm: str, seeds: list[int], plot: bool = True) -> Path:
    """Run the driver's summary over <tmp>/runs/<arm>-seed<k> into <tmp>/exp (a folder with a README block)."""
    folder = tmp_path / "exp"
    folder.mkdir(exist_ok=True)
    (folder / "README.md").write_text("# x\n\n<!-- last-run:start -->\nold\n<!-- last-run:end -->\n")
    spec = load_config(
        RexRagExperimentSpec,
        None,
        [f"runs_dir={tmp_path / 'runs'}", f"seeds={seeds}", f"groups.main.arms=[{arm}]"],
    )
    runs = [
        PlannedRun(
            f"{arm}-seed{s}",
            "train",
            Path(),
            [],
            tmp_path / "runs" / f"{arm}-seed{s}" / "results.json",
            arm=arm,
            seed=s,
        )
        for s in seeds
    ]
    summarize(spec, folder, runs, plot=plot)
    return folder


def _fake_run(folder: Path, em: float, accuracy: list[float]) -> None:
    folder.mkdir(parents=True)
    train = [
        {"step": i + 1, "accuracy": a, "rollout/generated_tokens": 100.0, "time/step": 2.0}
        for i, a in enumerate(accuracy)
    ]
    method = [{"step": i + 1, "rexrag/dead_end_rate": 0.5, "rexrag/alpha": 0.1} for i in range(len(accuracy))]
    results = {
        "last_step": len(accuracy),
        "train_metrics": train,
        "rexrag_metrics": method,
        "eval": {"average_em": em, "by_source": {"world_1hop": {"em": em, "f1": em, "n": 10}}},
    }
    (folder / "results.json").write_text(json.dumps(results))


def test_summary_mean_and_std(tmp_path):
    for seed, em in enumerate([0.1, 0.2, 0.3]):
        _fake_run(tmp_path / "runs" / f"grpo-seed{seed}", em, [0.0] * 5 + [1.0] * 5)
    out = _summarize(tmp_path, "grpo", [0, 1, 2])
    summary = json.loads((out / "results.json").read_text())
    em = summary["arms"]["grpo"]["eval_average_em"]
    # mean of 0.1, 0.2, 0.3 = 0.2 ; sample std = sqrt((0.01 + 0 + 0.01) / 2) = 0.1
    assert em["mean"] == pytest.approx(0.2) and em["std"] == pytest.approx(0.1)
    # first five steps all 0, last five all 1
    acc = summary["arms"]["grpo"]
    assert acc["train_accuracy_first5"]["mean"] == 0.0 and acc["train_accuracy_last5"]["mean"] == 1.0
    assert acc["train_seconds"]["mean"] == pytest.approx(20.0)
    assert (out / "table.md").read_text().startswith("| Method |")
    assert (out / "curves.png").stat().st_size > 0
    assert arm_lines(summary)[0].startswith("grpo: test EM 20.0 +- 10.0 (seeds [10.0, 20.0, 30.0])")
    readme = (out / "README.md").read_text()
    assert "old" not in readme and "| grpo |" in readme and "- grpo: test EM 20.0 +- 10.0" in readme
    assert list(summary["runs"]) == ["grpo-seed0", "grpo-seed1", "grpo-seed2"]


def test_heldout_curve_band_over_seeds(tmp_path):
    for seed, (start, end) in enumerate([(0.1, 0.2), (0.1, 0.4), (0.1, 0.3)]):
        folder = tmp_path / "runs" / f"rexrag-seed{seed}"
        _fake_run(folder, end, [0.5] * 10)
        results = json.loads((folder / "results.json").read_text())
        results["heldout_curve"] = [
            {"step": 0.0, "heldout/em": start},
            {"step": 5.0, "heldout/em": (start + end) / 2},
            {"step": 10.0, "heldout/em": end},
        ]
        if seed == 2:  # a run that also evaluated an extra step: only steps every run has are banded
            results["heldout_curve"].insert(1, {"step": 3.0, "heldout/em": 0.9})
        (folder / "results.json").write_text(json.dumps(results))
    out = _summarize(tmp_path, "rexrag", [0, 1, 2])
    arm = json.loads((out / "results.json").read_text())["arms"]["rexrag"]
    band = arm["heldout_curve"]
    assert band["steps"] == [0.0, 5.0, 10.0]
    assert band["mean"] == pytest.approx([0.1, 0.2, 0.3]) and band["std"] == pytest.approx([0.0, 0.05, 0.1])
    assert arm["heldout_em_start"]["mean"] == pytest.approx(0.1)
    assert arm["heldout_em_end"]["values"] == pytest.approx([0.2, 0.4, 0.3])
    assert (out / "curves.png").stat().st_size > 0


def test_probe_curves_skip_steps_without_probes_and_mean_over_seeds():
    curves = [[None, 0.2, 0.4, None], [None, 0.4, None, None]]
    # step 2: seeds 0.2, 0.4 -> 0.3; step 3: only 0.4; step 4: no value anywhere -> skipped
    steps, means = smoothed_mean_curve(curves, window=2)
    assert steps == [2, 3] and means == pytest.approx([0.3, (0.3 + 0.4) / 2])
    assert smoothed_mean_curve([], window=5) == ([], [])


def test_mechanism_figure_only_for_arms_that_sample_probes(tmp_path):
    """GRPO logs alpha 0 and a kept-probe accuracy of 0.0 (no probe kept): not a probing arm. An arm without the
    correction logs no clip fractions: no clip panel of its own."""
    from PIL import Image

    arms = {"grpo": (False, False), "rexrag": (True, True), "rexrag_no_correction": (True, False)}
    for arm, (probes, clips) in arms.items():
        for seed in (0, 1):
            folder = tmp_path / "runs" / f"{arm}-seed{seed}"
            _fake_run(folder, 0.1, [0.5] * 6)
            results = json.loads((folder / "results.json").read_text())
            for i, record in enumerate(results["rexrag_metrics"]):
                record["rexrag/alpha"] = 0.1 if probes else 0.0
                record["rexrag/probe_accuracy_kept"] = 0.1 * i if probes else 0.0
                if clips:
                    record.update({f"rexrag/clip_frac_probe_{c}": 0.01 * i for c in CLIP_CLASSES})
            (folder / "results.json").write_text(json.dumps(results))
    runs = {arm: [summarize_run(tmp_path / "runs" / f"{arm}-seed{s}") for s in (0, 1)] for arm in arms}
    assert runs["rexrag"][0]["curves"]["clip_frac_probe_inserted"] == pytest.approx(
        [0.01 * i for i in range(6)]
    )
    assert plot_mechanism({"grpo": runs["grpo"]}, tmp_path) is None
    path = plot_mechanism(runs, tmp_path)
    assert path == tmp_path / "mechanism.png" and path.stat().st_size > 0
    # kept-probe accuracy, alpha, and one clip panel (rexrag's): 3 panels of 5 inches at 100 dpi
    assert Image.open(path).size[0] == 3 * 500
