"""Aggregation against hand-computed numbers, bootstrap CIs, response matching, and the score CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anessuite.__main__ import main
from anessuite.mcq import MCQItem
from anessuite.report import TABLE3_COLUMNS, render_markdown, table3_row
from anessuite.scoring import aggregate, bootstrap_ci, length_stats, match_responses, score_items


def _item(key_id, lang, level, answer="A"):
    return MCQItem(
        id=key_id,
        question="q",
        options=(("A", "a"), ("B", "b"), ("C", "c"), ("D", "d")),
        answer=answer,
        language=lang,
        level=level,
    )


# (id, language, level, prediction); gold is always "A"; None = abstained.
CASES = [
    ("e1", "en", "system1", "A"),
    ("e2", "en", "system1", "A"),
    ("e3", "en", "system1", "A"),
    ("e4", "en", "system1", "B"),
    ("e5", "en", "system1.x", "A"),
    ("e6", "en", "system1.x", "C"),
    ("e7", "en", "system2", None),
    ("z1", "zh", "system1", "A"),
    ("z2", "zh", "system1", "A"),
    ("z3", "zh", "system1.x", None),
    ("z4", "zh", "system2", "A"),
]
ITEMS = [_item(i, lang, level) for i, lang, level, _ in CASES]
RESPONSES = [
    {"id": i, "language": lang, "prediction": pred, "response": "x" * (10 * n + 10)}
    for n, (i, lang, _, pred) in enumerate(CASES)
]


def _scored():
    return score_items(
        ITEMS, match_responses(ITEMS, RESPONSES), extract=lambda text, item: pytest.fail("unused")
    )


def test_aggregate_hand_computed():
    results = aggregate(_scored(), bootstrap_iters=200, seed=1)
    en, zh = results["by_language"]["en"], results["by_language"]["zh"]
    # EN: sys1 3/4 = 0.75, sys1.x 1/2 = 0.5, sys2 0/1 = 0, total (3+1+0)/7 = 0.571429 (question-weighted)
    assert (en["system1"], en["system1.x"], en["system2"]) == (0.75, 0.5, 0.0)
    assert en["total"] == pytest.approx(4 / 7, abs=1e-6) and en["n"] == 7 and en["abstained"] == 1
    assert en["n_by_level"] == {"system1": 4, "system1.x": 2, "system2": 1}
    # ZH: sys1 2/2 = 1, sys1.x 0/1 = 0 (abstained), sys2 1/1 = 1, total 3/4 = 0.75
    assert (zh["system1"], zh["system1.x"], zh["system2"], zh["total"]) == (1.0, 0.0, 1.0, 0.75)
    # Avg. = (4/7 + 3/4) / 2 = (0.571429 + 0.75) / 2 = 0.660714, NOT the pooled 7/11 = 0.636364
    assert results["avg"] == pytest.approx(0.660714, abs=1e-6)
    assert results["overall"]["accuracy"] == pytest.approx(7 / 11, abs=1e-6)
    assert results["overall"]["n"] == 11 and results["overall"]["abstained"] == 2
    assert results["overall"]["abstention_rate"] == pytest.approx(2 / 11, abs=1e-6)
    # char lengths are 10, 20, ..., 110: mean 60, median 60, p90 = ceil(0.9*11) = 10th value = 100, max 110
    assert results["response_length"]["chars"] == {"mean": 60.0, "median": 60.0, "p90": 100.0, "max": 110.0}
    lo, hi = en["ci95"]["total"]
    assert lo <= en["total"] <= hi and 0 <= lo < hi <= 1
    lo, hi = results["avg_ci95"]
    assert lo <= results["avg"] <= hi


def test_only_one_language_avg_is_that_total():
    scored = [s for s in _scored() if s.language == "zh"]
    results = aggregate(scored, bootstrap_iters=0)
    assert list(results["by_language"]) == ["zh"] and results["avg"] == 0.75
    assert results["by_language"]["zh"]["ci95"]["total"] is None  # no bootstrap requested


def test_missing_level_is_null():
    items = [_item("a", "en", "system1"), _item("b", "en", "system1")]
    scored = score_items(
        items, match_responses(items, [{"id": "a", "prediction": "A"}, {"id": "b", "prediction": "B"}]), None
    )
    entry = aggregate(scored, bootstrap_iters=0)["by_language"]["en"]
    assert entry["system1"] == 0.5 and entry["system2"] is None and entry["n_by_level"]["system2"] == 0


def test_bootstrap_ci_matches_normal_approximation():
    rng = np.random.default_rng(0)
    # p = 0.6, n = 400: normal 95% half-width = 1.96 * sqrt(0.6*0.4/400) = 1.96 * 0.0245 = 0.048
    lo, hi = bootstrap_ci([(240, 400)], iters=4000, rng=rng)
    assert lo == pytest.approx(0.6 - 0.048, abs=0.006) and hi == pytest.approx(0.6 + 0.048, abs=0.006)
    assert bootstrap_ci([(5, 5)], iters=100, rng=rng) == [1.0, 1.0]  # no variance when every answer is right
    assert bootstrap_ci([(0, 0)], iters=100, rng=rng) is None


def test_length_stats_small():
    # [3, 1, 2]: mean 2, median 2, p90 -> ceil(2.7)=3rd smallest = 3, max 3
    assert length_stats([3, 1, 2]) == {"mean": 2.0, "median": 2.0, "p90": 3.0, "max": 3.0}
    assert length_stats([]) is None


def test_match_responses_errors():
    both = [_item("q", "en", "system1"), _item("q", "zh", "system1")]
    with pytest.raises(ValueError, match="several languages"):
        match_responses(both, [{"id": "q", "response": "A"}])
    with pytest.raises(ValueError, match="no benchmark item"):
        match_responses(ITEMS, [{"id": "nope", "response": "A"}])
    with pytest.raises(ValueError, match="duplicate"):
        match_responses(ITEMS[:1], [{"id": "e1", "response": "A"}, {"key": "en/e1", "response": "A"}])
    with pytest.raises(ValueError, match="10 of 11 benchmark items have no response"):
        match_responses(ITEMS, RESPONSES[:1])
    assert list(match_responses(ITEMS, RESPONSES[:1], allow_partial=True)) == ["en/e1"]


def test_table3_row_and_markdown():
    row = table3_row(aggregate(_scored(), bootstrap_iters=0))
    assert list(row) == TABLE3_COLUMNS
    assert row["EN Sys1"] == 0.75 and row["ZH Total"] == 0.75
    text = render_markdown([{"Model": "m", **row}], ["Model", *TABLE3_COLUMNS])
    # 4/7 = 0.5714 -> "0.57"; avg 0.6607 -> "0.66"
    assert "| m | 0.75 | 0.50 | 0.00 | 0.57 | 1.00 | 0.00 | 1.00 | 0.75 | 0.66 |" in text


def test_score_cli_writes_contract_layout(tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps([item.to_record() for item in ITEMS], ensure_ascii=False))
    responses = tmp_path / "responses.jsonl"
    responses.write_text("\n".join(json.dumps(r) for r in RESPONSES))
    out = tmp_path / "out"
    assert (
        main(
            [
                "score",
                "--benchmark",
                str(bench),
                "--responses",
                str(responses),
                "--out",
                str(out),
                "--bootstrap-iters",
                "50",
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert set(results["overall"]) >= {"accuracy", "n", "abstained"}
    for lang in ("en", "zh"):
        assert set(results["by_language"][lang]) >= {"total", "system1", "system1.x", "system2", "n"}
    assert results["avg"] == pytest.approx(0.660714, abs=1e-6)
    assert "provenance" in results and results["coverage"] == {"answered": 11, "benchmark_items": 11}
    table = (out / "table.md").read_text().splitlines()
    assert table[0].startswith("| Model | EN Sys1 |") and "Avg. (official extraction)" in table[0]
    assert table[2].startswith("| responses | 0.75 | 0.50 | 0.00 | 0.57 |")  # the row carries our numbers
    assert (out / "table.csv").exists() and (out / "table.json").exists()
    assert (out / "levels.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "scored.jsonl").read_text().splitlines()) == 11
