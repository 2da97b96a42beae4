"""The rendered Table 3 report: both extractions side by side, CIs, n, abstentions, truncations, the paper column,
and responses cut inside <think> counted as truncated and never scored."""

from __future__ import annotations

import json

from anessuite.answers import extract_prediction
from anessuite.mcq import MCQItem
from anessuite.report import paper_row_for, paper_rows, table3_report
from anessuite.score import score_to_dir
from anessuite.scoring import aggregate, cut_in_thinking, score_items

OPTIONS = (("A", "Propofol"), ("B", "Naloxone"), ("C", "Flumazenil"), ("D", "Atropine"))


def _items():
    return [
        MCQItem(id=f"e{i}", question=f"q{i}", options=OPTIONS, answer="B", language="en", level=level)
        for i, level in enumerate(["system1", "system1", "system1.x", "system2"])
    ]


RESPONSES = {
    # our extractor and the official-style one agree: right
    "en/e0": {"response": "The answer is B.", "finish_reason": "stop"},
    # no statement: we abstain, the official-style cascade takes the standalone letter B (right)
    "en/e1": {"response": "Option B has the best profile", "finish_reason": "stop"},
    # cut inside <think> at the token cap: truncated, never scored by us (the official-style one reads "B")
    "en/e2": {"response": "<think>Maybe B because", "finish_reason": "length"},
    # a server that returns reasoning_content separately: answer empty at the cap -> truncated
    "en/e3": {"response": "", "reasoning": "B seems", "finish_reason": "length"},
}


def test_cut_in_thinking():
    assert cut_in_thinking({"response": "<think>x"})
    assert not cut_in_thinking({"response": "<think>x</think> Answer: B"})
    assert cut_in_thinking({"response": "", "reasoning": "x", "finish_reason": "length"})
    assert not cut_in_thinking({"response": "", "reasoning": "x", "finish_reason": "stop"})


def test_official_column_truncations_and_paper_row(tmp_path):
    items = _items()
    scored = score_items(items, RESPONSES, extract_prediction)
    assert [s.prediction for s in scored] == ["B", None, None, None]
    assert [s.truncated for s in scored] == [False, False, True, True]
    assert [s.official_prediction for s in scored][:3] == ["B", "B", "B"]
    results = aggregate(scored, bootstrap_iters=20)
    en = results["by_language"]["en"]
    assert en["total"] == 0.25 and en["truncated"] == 2 and en["abstained"] == 3
    # official-style: e0, e1, e2 right (3 of 4); e3's empty answer maps to the most similar option text
    assert en["official"]["system1"] == 1.0 and results["overall"]["truncated"] == 2
    results["eval"] = {"model": "/models/Qwen2.5-7B-Instruct"}
    markdown, rows, columns = table3_report({"final": results})
    header = markdown.splitlines()[0]
    assert (
        "Avg. (official extraction)" in header and "paper Avg." in header and header.endswith("| truncated |")
    )
    # the row label is a folder name; the evaluated model's name finds the paper row (Avg. 0.59)
    # EN Sys1: e0 right, e1 abstained = 0.50; Sys1.x and Sys2 truncated = 0; total 1/4
    assert "| final | 0.50 | 0.00 | 0.00 | 0.25 |" in markdown and "| 0.59 | 4 | 3 | 2 |" in markdown
    assert "Per language" in markdown and "0.56 / 0.44 / 0.36 / 0.51" in markdown
    assert rows[0]["EN Total paper"] == 0.51 and "EN Total ci95 low" in columns


def test_no_paper_column_for_an_unknown_model(tmp_path):
    items = _items()
    responses = [{"key": key, **record} for key, record in RESPONSES.items()]
    results = score_to_dir(items, responses, tmp_path, model_name="my-model", bootstrap_iters=10)
    table = (tmp_path / "table.md").read_text()
    assert "paper" not in table.splitlines()[0] and "Avg. (official extraction)" in table
    flat = json.loads((tmp_path / "table.json").read_text())
    assert flat[0]["Model"] == "my-model" and flat[0]["truncated"] == 2
    assert results["avg_official"] == flat[0]["Avg. (official extraction)"]


def test_paper_data_is_marked_transcribed():
    from pathlib import Path

    import anessuite

    data = json.loads((Path(anessuite.__file__).parent / "paper_table3.json").read_text())
    assert data["transcribed"] is True and data["verified"] is False
    rows = paper_rows()
    # spot checks against the paper's Table 3: Qwen2.5-7B-Instruct EN 0.56/0.44/0.36/0.51, ZH total 0.66, Avg 0.59
    qwen = paper_row_for("qwen2.5-7b-instruct")
    assert len(rows) == 15
    assert (qwen["en_system1"], qwen["en_total"], qwen["zh_total"], qwen["avg"]) == (0.56, 0.51, 0.66, 0.59)
    for row in data["rows"]:  # Avg. is the mean of the two totals, to rounding, except where a note says not
        consistent = abs((row["en_total"] + row["zh_total"]) / 2 - row["avg"]) <= 0.011
        assert consistent != ("note" in row), row["model"]
    assert paper_row_for("Qwen/Qwen2.5-7B-Instruct") == qwen and paper_row_for("smollm2") is None
