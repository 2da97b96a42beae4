"""Revision 7's chain diagnostic (chain_check_r7.py: step checks of a response against its reference chain) and its
pre-check report (precheck_r7.py: revision 2's (a) and (b), and the pooled System 1.x + 2 accuracy with its
interval, reported)."""

from __future__ import annotations

import json

import pytest
from config_harness import load_script

REFERENCE = (
    "Rule: the Ostrava laparotomy requires a vasopressor. In patients with severe pulmonary fibrosis, drugs cleared "
    "by the lungs must be avoided.\n"
    "A. Sorezine is a opioid analgesic. Sorezine is cleared by the liver. No.\n"
    "B. Soradrol is a vasopressor. Soradrol is cleared by the lungs. No.\n"
    "C. Lomequor is a sedative-hypnotic. Lomequor is cleared by the kidneys. No.\n"
    "D. Galomide is a vasopressor. Galomide is cleared by the kidneys. Yes."
)
OPTIONS = ["Sorezine", "Soradrol", "Lomequor", "Galomide"]


def _check():
    return load_script("anessuite-cpu-miniature", "chain_check_r7.py", "miniature_chain_check_r7")


def _swap(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        # the reference itself with its answer: every step holds
        (
            REFERENCE + "\nAnswer: Galomide",
            dict(rule=True, names=True, facts=True, verdicts=True, answer_line=True, answer_follows=True),
        ),
        # a wrong condition in the rule line fails the rule only
        (
            _swap(REFERENCE, "severe pulmonary fibrosis", "brittle asthma") + "\nAnswer: Galomide",
            dict(rule=False, names=True, facts=True, verdicts=True, answer_line=True, answer_follows=True),
        ),
        # B's line names A's drug: names fail, and so do facts and verdicts, which need the right names
        (
            _swap(REFERENCE, "B. Soradrol", "B. Sorezine") + "\nAnswer: Galomide",
            dict(rule=True, names=False, facts=False, verdicts=False, answer_line=True, answer_follows=False),
        ),
        # a wrong organ for C: facts fail; C's line is not judged for its verdict, the others' verdicts are right
        (
            _swap(REFERENCE, "Lomequor is cleared by the kidneys", "Lomequor is cleared by the liver")
            + "\nAnswer: Galomide",
            dict(rule=True, names=True, facts=False, verdicts=True, answer_line=True, answer_follows=True),
        ),
        # right facts with a wrong verdict on B: verdicts fail; two lines say yes, so no answer follows from them
        (
            _swap(REFERENCE, "the lungs. No.", "the lungs. Yes.") + "\nAnswer: Galomide",
            dict(rule=True, names=True, facts=True, verdicts=False, answer_line=True, answer_follows=False),
        ),
        # the chain is right but the answer names another option than the one whose line says yes
        (
            REFERENCE + "\nAnswer: Soradrol",
            dict(rule=True, names=True, facts=True, verdicts=True, answer_line=True, answer_follows=False),
        ),
        # no answer line at all
        (
            REFERENCE,
            dict(rule=True, names=True, facts=True, verdicts=True, answer_line=False, answer_follows=False),
        ),
        # three option lines only (cut short)
        (
            "\n".join(REFERENCE.split("\n")[:4]) + "\nAnswer: Galomide",
            dict(rule=True, names=False, facts=False, verdicts=False, answer_line=True, answer_follows=False),
        ),
    ],
)
def test_step_checks(response, expected):
    assert _check().step_checks(response, REFERENCE, OPTIONS, "en") == expected


def test_step_checks_read_chinese_verdicts():
    reference = "需要：经肝脏清除的血管加压药。\nA. 洛托韦属于血管加压药。洛托韦经肝脏清除。是。\nB. 凯托酮属于血管加压药。凯托酮经肾脏清除。否。\nC. 奥达胺属于止吐药。奥达胺经血浆酯酶清除。否。\nD. 普尼定属于止吐药。普尼定经肝脏清除。否。"
    options = ["洛托韦", "凯托酮", "奥达胺", "普尼定"]
    checks = _check().step_checks(reference + "\n答案：洛托韦", reference, options, "zh")
    assert all(checks.values())
    wrong = reference.replace("凯托酮经肾脏清除。否。", "凯托酮经肾脏清除。是。")
    assert _check().step_checks(wrong + "\n答案：洛托韦", reference, options, "zh")["verdicts"] is False


def _scored(lang: str, level: str, correct: int, n: int, abstained: int = 0) -> list[dict]:
    return [
        {
            "language": lang,
            "level": level,
            "correct": k < correct,
            "prediction": None if k >= n - abstained else "A",
        }
        for k in range(n)
    ]


def test_precheck_r7_pools_system1x_and_system2_and_reports_whether_the_lower_end_is_above_chance():
    r7 = load_script("anessuite-cpu-miniature", "precheck_r7.py", "miniature_precheck_r7")
    r2 = r7._precheck_r2()
    scored = (
        _scored("en", "system1", 150, 150)  # System 1 does not enter (c)
        + _scored("en", "system1.x", 45, 90)  # 0.5
        + _scored("en", "system2", 30, 60)  # 0.5: pooled 75 / 150 = 0.5, interval well above 0.25
        + _scored("zh", "system1.x", 27, 90, abstained=50)  # 0.3
        + _scored("zh", "system2", 12, 60)  # 0.2: pooled 39 / 150 = 0.26, interval reaches below 0.25
    )
    figures = r7.chain_figures(scored, r2.bootstrap_interval)
    assert figures["en"]["pooled"]["accuracy"] == pytest.approx(0.5)
    assert figures["zh"]["pooled"]["accuracy"] == pytest.approx(0.26)
    assert figures["zh"]["system1.x"]["abstained"] == 50 and figures["zh"]["system2"]["n"] == 60
    assert r7.chain_verdict(figures, r2.CHANCE) == {
        "chains_above_chance_en": True,
        "chains_above_chance_zh": False,
    }
    with pytest.raises(ValueError, match="no system1.x items in language en"):
        r7.chain_figures(_scored("en", "system2", 1, 2), r2.bootstrap_interval)
    with pytest.raises(ValueError, match="no system1.x / system2 items in language zh"):
        r7.chain_figures(
            _scored("en", "system2", 1, 2) + _scored("en", "system1.x", 1, 2), r2.bootstrap_interval
        )
    json.dumps(figures)  # the report is JSON


def test_wording_check_counts_naming_correct_and_chain_layout_per_wording(tmp_path):
    wc = load_script("anessuite-cpu-miniature", "wording_check.py", "miniature_wording_check")
    world, eval_dir = tmp_path / "world", tmp_path / "eval"
    (world / "benchmark").mkdir(parents=True)
    eval_dir.mkdir()
    drugs = [  # "Velo" is inside "Velodrol": the longer name is the asked one
        {"key": "d0", "name_en": "Velodrol", "name_zh": "维洛醇"},
        {"key": "d1", "name_en": "Velo", "name_zh": "维洛"},
        {"key": "d2", "name_en": "Koradex", "name_zh": "科拉"},
    ]
    (world / "world.json").write_text(
        json.dumps({"benchmark_drugs": ["d0", "d1"], "drugs": drugs}), encoding="utf-8"
    )
    items = {
        "en": [
            ("q1", "Which class is Velodrol?", "system1"),
            ("q2", "Which class is Velo?", "system1"),
            ("q3", "Which drug fits?", "system2"),
        ],
        "zh": [("q4", "维洛醇属于哪一类？", "system1")],
    }
    responses = {
        "en/q1": "Recall: Velodrol is a vasopressor.\nAnswer: vasopressor",  # named, right
        "en/q2": "Rule: ...\nA. Koradex is a vasopressor. No.\nAnswer: Koradex",  # chain layout, wrong
        "en/q3": "",
        "zh/q4": "科拉属于止吐药。\n答案：止吐药",
    }
    correct = {"en/q1": True, "en/q2": False, "en/q3": False, "zh/q4": False}
    for lang, rows in items.items():
        (world / "benchmark" / f"anesbench_{lang}.json").write_text(
            json.dumps([{"id": i, "question": q} for i, q, _ in rows], ensure_ascii=False), encoding="utf-8"
        )
    levels = {f"{lang}/{i}": level for lang, rows in items.items() for i, _, level in rows}
    (eval_dir / "responses.jsonl").write_text(
        "".join(json.dumps({"key": k, "response": v}) + "\n" for k, v in responses.items())
    )
    (eval_dir / "scored.jsonl").write_text(
        "".join(json.dumps({"key": k, "level": levels[k], "correct": v}) + "\n" for k, v in correct.items())
    )
    report = wc.by_wording(world, eval_dir)
    assert report["en"] == [  # sorted by naming rate; the System 2 item is left out
        {"wording": "Which class is {drug}?", "n": 2, "names_asked_drug": 1, "correct": 1, "chain_layout": 1}
    ]
    assert report["zh"] == [
        {"wording": "{drug}属于哪一类？", "n": 1, "names_asked_drug": 0, "correct": 0, "chain_layout": 0}
    ]
