"""mcq_reward, the batched reward wrappers, and the registry a config uses to find them."""

from __future__ import annotations

from pathlib import Path

import pytest

import rlcore.rewards as rewards_package
from rlcore.rewards import REWARDS, get_reward, mcq_reward, register_reward

MCQ_REWARD_CASES = [
    # the stated letter equals gold
    ("The answer is C.", "C", 4, None, 1.0),
    # gold given in lowercase still compares as a letter
    ("The answer is C.", "c", 4, None, 1.0),
    # a different letter is wrong
    ("The answer is B.", "C", 4, None, 0.0),
    # abstaining (refusal) counts as wrong
    ("I cannot determine the answer.", "C", 4, None, 0.0),
    # option text resolves to the gold letter when options are passed
    (
        "The answer is naloxone.",
        "B",
        4,
        {"A": "Propofol", "B": "Naloxone", "C": "Flumazenil", "D": "Atropine"},
        1.0,
    ),
    # a 5-option question with gold E
    ("答案是E", "E", 5, None, 1.0),
]


@pytest.mark.parametrize(("completion", "gold", "num_choices", "options", "expected"), MCQ_REWARD_CASES)
def test_mcq_reward(completion, gold, num_choices, options, expected):
    assert mcq_reward(completion, gold, num_choices=num_choices, options=options) == expected


def test_mcq_reward_rejects_gold_outside_options():
    with pytest.raises(ValueError, match="gold_letter 'E' is not one of the 4 option letters"):
        mcq_reward("The answer is E.", "E", num_choices=4)


def test_builtin_rewards_are_registered():
    assert {"qa_em", "qa_f1", "mcq", "format"} <= set(REWARDS)


def test_qa_em_batched_reads_golden_answers_and_ignores_other_columns():
    completions = ["<answer>Paris</answer>", "<answer>Lyon</answer>", "<answer>x</answer>"]
    # row 3 has no gold (another task in a mixed batch) -> None; "prompts" is an unrelated column
    result = get_reward("qa_em")(
        completions, golden_answers=[["Paris"], "Paris", None], prompts=["q1", "q2", "q3"]
    )
    assert result == [1.0, 0.0, None]


def test_qa_f1_batched_with_bound_tag():
    # tag bound through get_reward, as a config would; F1([paris, france], [paris]) = 2*0.5*1/1.5 = 2/3
    fn = get_reward("qa_f1", tag="ans")
    assert fn(["<ans>Paris France</ans>"], golden_answers=[["Paris"]]) == [pytest.approx(2 / 3)]


def test_mcq_batched_per_row_num_choices_and_options():
    completions = ["The answer is E.", "The answer is E.", "the answer is naloxone", "Answer: A"]
    result = get_reward("mcq")(
        completions,
        gold_letter=["E", "A", "B", None],
        num_choices=[5, 4, 4, 4],  # row 2: E is out of range for 4 options -> abstain -> 0.0
        options=[None, None, ["Propofol", "Naloxone", "Flumazenil", "Atropine"], None],
    )
    assert result == [1.0, 0.0, 1.0, None]


def test_mcq_batched_accepts_chat_style_completions():
    # TRL-style conversational completions: the last message's content is scored
    completions = [[{"role": "assistant", "content": "答案：B"}]]
    assert get_reward("mcq")(completions, gold_letter=["B"]) == [1.0]


def test_format_batched_applies_options_to_every_row():
    completions = ["<think>a</think><answer>b</answer>", "<answer>b</answer>"]
    # require_think: row 2 fails only the order check -> 0.8
    assert get_reward("format", require_think=True)(completions, gold_letter=["B", "B"]) == [
        1.0,
        pytest.approx(0.8),
    ]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: get_reward("qa-em"), KeyError, "did you mean 'qa_em'"),
        (lambda: get_reward("qa_em")(["<answer>x</answer>"]), KeyError, "needs the column 'golden_answers'"),
        (
            lambda: get_reward("mcq")(["A", "B"], gold_letter=["A"]),
            ValueError,
            "has 1 values for 2 completions",
        ),
        (lambda: get_reward("mcq")("The answer is A", gold_letter=["A"]), TypeError, "got one string"),
    ],
)
def test_batched_errors_name_the_problem(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_register_reward_adds_and_refuses_duplicates():
    name = "test_length_penalty"

    @register_reward(name)
    def length_penalty(completions, **columns):
        return [-len(text) / 100 for text in completions]

    try:
        assert get_reward(name)(["abcd"]) == [-0.04]  # -4/100
        with pytest.raises(ValueError, match="already registered"):
            register_reward(name)(length_penalty)
    finally:
        del REWARDS[name]


def test_reward_modules_stay_small():
    # components stay under ~400 lines (CONVENTIONS.md)
    for path in Path(rewards_package.__file__).parent.glob("*.py"):
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 400, path.name
