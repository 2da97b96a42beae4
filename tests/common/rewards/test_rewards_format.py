"""Format reward: five checks worth 0.2 each (balanced, final_answer, order, non_empty, no_stray_text)."""

from __future__ import annotations

import pytest

from rlcore.rewards import format_report, format_reward

CASES = [
    # all five checks pass: 5 * 0.2 = 1.0
    ("<think>plan</think><answer>Paris</answer>", {}, 1.0),
    # multi-turn search protocol with the retriever's information block: all pass, 1.0
    (
        "<think>need facts</think><search>capital of France</search>"
        "<information>Doc 1 Paris</information><think>found</think><answer>Paris</answer>",
        {},
        1.0,
    ),
    # think is optional by default: an answer block alone passes everything, 1.0
    ("<answer>Paris</answer>", {}, 1.0),
    # text outside blocks fails no_stray_text only: 4 * 0.2 = 0.8
    ("<think>plan</think> so <answer>Paris</answer>", {}, 0.8),
    # text after the answer fails final_answer and no_stray_text: 3 * 0.2 = 0.6
    ("<think>plan</think><answer>Paris</answer> done", {}, 0.6),
    # empty answer fails non_empty only: 0.8
    ("<think>plan</think><answer> </answer>", {}, 0.8),
    # truncated: think passes, but no answer -> final_answer and order fail: 3 * 0.2 = 0.6
    ("<think>plan</think>", {}, 0.6),
    # unclosed answer: balanced, final_answer and order fail; non_empty (think) passes; the stray
    # "<answer>Paris" is outside any block so no_stray_text fails: 1 * 0.2 = 0.2
    ("<think>plan</think><answer>Paris", {}, 0.2),
    # nested tags: <think> inside <answer> breaks pairing. Blocks found: (think: "x"). Tokens 4 vs 2 blocks ->
    # unbalanced; no answer block -> final_answer, order fail; non_empty passes; stray tags outside -> fail: 0.2
    ("<answer><think>x</think>Paris</answer>", {}, 0.2),
    # two answers: final_answer fails (exactly one required) and order fails (grammar ends with one A): 0.6
    ("<answer>Lyon</answer><answer>Paris</answer>", {}, 0.6),
    # answer before search: order fails, final_answer fails (answer not last): 0.6
    ("<answer>Paris</answer><search>q</search>", {}, 0.6),
    # require_think: an answer without a preceding think fails order only: 0.8
    ("<answer>Paris</answer>", {"require_think": True}, 0.8),
    # allow_search=False (single-turn MCQ): a search block breaks the grammar T? A -> order fails: 0.8
    ("<search>q</search><answer>C</answer>", {"allow_search": False}, 0.8),
    # custom tag names are honoured: all pass, 1.0
    ("<reasoning>r</reasoning><final>C</final>", {"think_tag": "reasoning", "answer_tag": "final"}, 1.0),
    # no protocol tag at all scores 0.0 (checks would otherwise pass vacuously)
    ("The answer is Paris.", {}, 0.0),
    # empty completion scores 0.0
    ("", {}, 0.0),
]


@pytest.mark.parametrize(("completion", "kwargs", "expected"), CASES)
def test_format_reward(completion, kwargs, expected):
    assert format_reward(completion, **kwargs) == pytest.approx(expected, abs=1e-12)


def test_format_report_names_the_failed_check():
    # text between blocks: only the stray-text check fails
    report = format_report("<think>a</think> b <answer>c</answer>")
    assert (report.balanced, report.final_answer, report.order, report.non_empty) == (True, True, True, True)
    assert report.no_stray_text is False


def test_format_reward_rejects_bad_tag_names():
    with pytest.raises(ValueError, match="answer_tag must be a plain tag name"):
        format_reward("<answer>x</answer>", answer_tag="ans wer")
    with pytest.raises(ValueError, match="four tag names must differ"):
        format_reward("<answer>x</answer>", think_tag="answer")
