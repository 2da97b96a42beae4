"""diag_r4_layout.py (the miniature's diagnostic after revision 4): rewriting answers to the adjacent-letter layout,
and tallying restated-option letters against the option that holds the restated text, on hand-built files."""

from __future__ import annotations

import json

import pytest
from config_harness import load_script


def _diag():
    return load_script("anessuite-cpu-miniature", "diag_r4_layout.py", "miniature_diag_layout")


def test_adjacent_layout_moves_the_letter_next_to_the_text_and_keeps_the_rest():
    diag = _diag()
    en = "The effect of Koradrol is pruritus. pruritus is option D.\nAnswer: D"
    assert diag.adjacent(en, "en") == "The effect of Koradrol is pruritus. pruritus D.\nAnswer: D"
    zh = "科拉醇的不良反应是瘙痒。瘙痒是选项B。\n答案：B"
    assert diag.adjacent(zh, "zh") == "科拉醇的不良反应是瘙痒。瘙痒B。\n答案：B"
    with pytest.raises(ValueError, match="no single option sentence"):
        diag.adjacent("pruritus.\nAnswer: D", "en")


def test_tally_counts_letters_of_the_option_holding_the_text(tmp_path):
    diag = _diag()
    bench = tmp_path / "benchmark"
    bench.mkdir()
    item = {
        "A": "hypotension",
        "B": "pruritus",
        "C": "bradycardia",
        "D": "seizures",
        "target": "B",
        "category": 1,
    }
    (bench / "anesbench_en.json").write_text(
        json.dumps(
            [
                {**item, "id": "1"},
                {**item, "id": "2"},
                {**item, "id": "3"},
                {**item, "id": "4", "category": 2},
            ]
        )
    )
    (bench / "anesbench_zh.json").write_text("[]")
    rows = [
        ("1", "X is pruritus. pruritus B.\nAnswer: B"),  # right text, its letter
        ("2", "X is bradycardia. bradycardia A.\nAnswer: A"),  # wrong text, not its letter
        ("3", "no sentence\nAnswer: C"),
        ("4", "X is pruritus. pruritus B.\nAnswer: B"),  # System 1.x: not counted
    ]
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps({"key": f"en/{i}", "response": r}) + "\n" for i, r in rows))
    tally = diag.read(tmp_path, responses, "adjacent")["en"]
    assert tally["system1"] == 3 and tally["no option sentence"] == 1
    assert tally["text is an option"] == 2 and tally["letter is that option's"] == 1
    assert tally["text is the gold option's"] == 1
    assert diag.read(tmp_path, responses, "option")["en"]["no option sentence"] == 3
