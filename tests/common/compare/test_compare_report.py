"""rlcore.compare.report: metric directions, final/best values, config differences and provenance rows,
on hand-built RunRecords (no MLflow store)."""

from __future__ import annotations

import math

import pytest

from rlcore.compare.plots import identical_curves, plot_family, run_style
from rlcore.compare.report import (
    best_runs,
    config_differences,
    format_value,
    metric_direction,
    provenance_rows,
    render_markdown,
    summarize_metric,
)
from rlcore.compare.runs import CompareError, MetricPoint, RunRecord, _resolve_run_ids


def history(*pairs: tuple[int, float]) -> list[MetricPoint]:
    return [MetricPoint(step, value, timestamp=1000 + i) for i, (step, value) in enumerate(pairs)]


@pytest.mark.parametrize(
    ("key", "direction"),
    [
        ("reward/mean", "max"),  # outcome reward: higher is better
        ("val/em", "max"),  # exact match
        ("eval/average_em", "max"),  # REX-RAG eval summary key
        ("accuracy", "max"),
        ("overall/accuracy", "max"),  # AnesBench score
        ("f1", "max"),
        ("loss", "min"),
        ("policy/loss", "min"),
        ("reward_loss", "min"),  # a loss even though it mentions reward: lower-is-better wins
        ("kl", "min"),
        ("actor/kl_div", "min"),
        ("rollout/dead_end_rate", "min"),  # REX-RAG dead ends: fewer is better
        ("step_time_s", "min"),  # wall time per step
        ("tokens_per_s", "max"),  # throughput, not a duration
        ("entropy", None),  # neither direction is "better"
        ("reward/std", None),  # a spread: a wider reward spread is not a better run
        ("heldout/em_std", None),  # a spread of a higher-is-better metric is still neutral
        ("reward/kl_penalty", "min"),  # KL is lower-is-better even under reward/
        ("lr", None),
        ("response_length/mean", None),
        ("member", None),  # 'em' inside a word is not exact match
    ],
)
def test_metric_direction(key: str, direction: str | None):
    assert metric_direction(key) == direction


def test_summarize_final_and_best():
    points = history((0, 0.1), (1, 0.5), (2, 0.3), (3, 0.5), (4, 0.45))
    up = summarize_metric(points, "max")
    # final = value at the last step (4): 0.45; best = max 0.5, first reached at step 1 (tie with step 3)
    assert (up.final, up.final_step, up.best, up.best_step, up.num_points) == (0.45, 4, 0.5, 1, 5)
    down = summarize_metric(points, "min")
    assert (down.best, down.best_step) == (0.1, 0)
    unknown = summarize_metric(points, None)
    assert unknown.best is None and unknown.best_step is None and unknown.final == 0.45


def test_summarize_ignores_nan_for_best_but_reports_a_nan_final():
    points = history((0, 0.2), (1, float("nan")), (2, float("nan")))
    summary = summarize_metric(points, "max")
    assert math.isnan(summary.final) and summary.final_step == 2
    assert (summary.best, summary.best_step) == (0.2, 0)


def test_same_step_logged_twice_takes_the_later_value():
    points = sorted(
        [MetricPoint(5, 0.3, 2000), MetricPoint(5, 0.7, 3000)], key=lambda p: (p.step, p.timestamp)
    )
    assert summarize_metric(points, None).final == 0.7


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "—"),
        (0.41234, "0.4123"),
        (3.0, "3"),
        (0.0, "0"),
        (1.5e-5, "1.500e-05"),
        (123456.0, "1.235e+05"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


def run(name: str, params: dict[str, str], tags: dict[str, str] | None = None, **metrics) -> RunRecord:
    return RunRecord(
        run_id=f"{name:0<32}"[:32],
        name=name,
        status="FINISHED",
        start_time=0,
        end_time=125_000,
        params=params,
        tags=tags or {},
        metrics=metrics,
    )


def test_config_differences_include_params_missing_in_some_runs():
    runs = [
        run("a", {"lr": "1e-6", "seed": "1", "model": "tiny"}),
        run("b", {"lr": "1e-6", "seed": "2", "model": "tiny", "probe.keep_ratio": "0.08"}),
    ]
    differing, identical = config_differences(runs)
    assert differing == {"probe.keep_ratio": [None, "0.08"], "seed": ["1", "2"]}
    assert identical == 2  # lr and model


def test_provenance_rows_prefer_project_tags_and_show_drift_only():
    runs = [
        run(
            "a",
            {},
            {
                "git.sha": "0123456789abcdef0123",
                "git.dirty": "false",
                "config.hash": "h1",
                "seeds": "1",
                "version.torch": "2.13.0",
                "version.trl": "1.16.0",
            },
        ),
        run(
            "b",
            {},
            {
                "mlflow.source.git.commit": "fedcba9876543210",
                "seeds": "2",
                "version.torch": "2.13.1",
                "version.trl": "1.16.0",
            },
        ),
    ]
    rows = dict(provenance_rows(runs))
    assert rows["git sha"] == ["0123456789ab", "fedcba987654"]  # 12 characters; MLflow's own tag as fallback
    assert rows["dirty"] == ["false", "—"] and rows["config hash"] == ["h1", "—"]
    assert rows["seeds"] == ["1", "2"]
    assert rows["duration"] == ["2m05s", "2m05s"]  # 125 s
    assert rows["version.torch"] == ["2.13.0", "2.13.1"]
    assert "version.trl" not in rows, "identical environment tags are not repeated"
    assert "method" not in rows and "parent run" not in rows


def test_markdown_marks_the_best_run_and_missing_metrics():
    runs = [
        run(
            "base",
            {"seed": "1"},
            {"method": "grpo"},
            **{"reward/mean": history((0, 0.1), (1, 0.4)), "entropy": history((0, 2.0), (1, 1.5))},
        ),
        run("rex", {"seed": "2"}, {"method": "rexrag"}, **{"reward/mean": history((0, 0.2), (1, 0.6))}),
    ]
    text = render_markdown("exp", runs, "sqlite:///x.db", [("Reward", "curves-reward.png", ["reward/mean"])])
    lines = text.splitlines()
    final_rows = lines[lines.index("## Final metrics") : lines.index("## Best metrics")]
    assert "| reward/mean ↑ | 0.4000 @1 | **0.6000 @1** |" in final_rows
    assert "| entropy · | 1.5000 @1 | — |" in final_rows
    best_rows = lines[lines.index("## Best metrics") :]
    assert not any(row.startswith("| entropy") for row in best_rows), "no best for an unknown direction"
    assert "| method | grpo | rexrag |" in lines
    assert "| seed | 1 | 2 |" in lines
    assert "![Reward](curves-reward.png)" in lines


def test_run_id_prefixes():
    available = {"abc1" + "0" * 28: None, "abc2" + "0" * 28: None, "ffff" + "0" * 28: None}
    assert _resolve_run_ids(["ffff"], available, "e") == ["ffff" + "0" * 28]
    with pytest.raises(CompareError, match="ambiguous"):
        _resolve_run_ids(["abc"], available, "e")
    with pytest.raises(CompareError, match="run '1234' is not in experiment 'e'"):
        _resolve_run_ids(["1234"], available, "e")


def test_metric_families_claim_keys_once_and_list_in_display_order():
    from rlcore.compare.plots import group_metric_keys

    runs = [
        run(
            "a",
            {},
            **{
                key: history((0, 1.0))
                for key in (
                    "rollout/dead_end_rate",
                    "reward/kl_penalty",
                    "reward/mean",
                    "val/em",
                    "entropy",
                    "actor/kl",
                    "lr",
                )
            },
        )
    ]
    groups = [(slug, keys) for _, slug, keys in group_metric_keys(runs)]
    assert groups == [
        ("reward", ["reward/mean"]),
        ("accuracy", ["val/em"]),
        ("kl", ["actor/kl", "reward/kl_penalty"]),  # a KL penalty is a KL curve, not a reward curve
        ("entropy", ["entropy"]),
        ("dead_end", ["rollout/dead_end_rate"]),
    ]  # `lr` belongs to no family and gets no plot


def test_best_is_marked_only_beyond_the_relative_tolerance():
    # KL 1e-14 vs 0: a numerical tie, no best (the bug: one run was bolded on a 1e-14 difference)
    assert best_runs([1e-14, 0.0], "min") == set()
    # 0.5000 vs 0.50001: relative gap 2e-5 < 1e-3 -> tied -> nothing marked
    assert best_runs([0.5, 0.50001], "max") == set()
    # 0.50 vs 0.60: 0.6 is better by 0.1 > 1e-3 * 0.6 -> run 1
    assert best_runs([0.5, 0.6], "max") == {1}
    # two runs tied at the top (0.6 and 0.60001) both marked, the third (0.5) not
    assert best_runs([0.6, 0.5, 0.60001], "max") == {0, 2}
    # lower is better: 0.01 beats 0.02; a missing value (None) and a NaN never win
    assert best_runs([0.02, None, 0.01, float("nan")], "min") == {2}
    assert best_runs([0.2, 0.9], None) == set()  # neutral metric: no best at all


def test_markdown_states_direction_and_does_not_bold_ties_or_spreads():
    runs = [
        run(
            "a",
            {"train.seed": "3"},
            {"seeds": "none"},
            **{"kl": history((1, 0.0)), "reward/std": history((1, 0.2))},
        ),
        run("b", {"train.seed": "4"}, {}, **{"kl": history((1, 1e-14)), "reward/std": history((1, 0.4))}),
    ]
    lines = render_markdown("exp", runs, "sqlite:///x.db").splitlines()
    assert "| kl ↓ | 0 @1 | 1.000e-14 @1 |" in lines  # tied within tolerance: no bold
    assert "| reward/std · | 0.2000 @1 | 0.4000 @1 |" in lines  # neutral: stated, never bold
    assert "| seeds | 3 | 4 |" in lines  # the `none` tag falls back to the config's train.seed


def test_identical_curves_are_named_and_drawn_distinctly(tmp_path):
    same = history((0, 0.1), (1, 0.3))
    runs = [
        run("grpo", {}, {}, **{"reward/mean": same}),
        run("rex", {}, {}, **{"reward/mean": list(same)}),
        run("other", {}, {}, **{"reward/mean": history((0, 0.1), (1, 0.4))}),
    ]
    assert identical_curves(runs, "reward/mean") == [["grpo (grpo0000)", "rex (rex00000)"]]
    text = render_markdown("exp", runs, "sqlite:///x.db", [("Reward", "curves-reward.png", ["reward/mean"])])
    assert "- `reward/mean` is identical for grpo (grpo0000) = rex (rex00000)" in text
    styles = [run_style(i) for i in range(4)]
    assert len({s["linestyle"] for s in styles}) == 4 and len({s["marker"] for s in styles}) == 4
    path = plot_family(runs, "Reward", ["reward/mean"], tmp_path / "curves.png")
    assert path.stat().st_size > 5_000
