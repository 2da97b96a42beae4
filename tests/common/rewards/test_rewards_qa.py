"""Table-driven tests of the QA rewards: normalisation, EM, token F1, answer-block extraction, EM/F1 rewards."""

from __future__ import annotations

import pytest

from rlcore.rewards import (
    exact_match,
    extract_answer_block,
    normalize_answer,
    qa_em_reward,
    qa_f1_reward,
    token_f1,
)

NORMALIZE_CASES = [
    # lowercase, "!" deleted, article "the" dropped
    ("The Eiffel Tower!", "eiffel tower"),
    # runs of spaces collapse, ends are trimmed
    ("  New   York  City ", "new york city"),
    # punctuation is deleted, not replaced by a space (SQuAD), so the periods vanish
    ("U.S.A.", "usa"),
    # "an" and "a" are articles and disappear
    ("An apple a day", "apple day"),
    # "the" inside a word is not an article
    ("theater", "theater"),
    # hyphens are deleted first, so "the" is then inside one word and stays
    ("state-of-the-art", "stateoftheart"),
    # "&" is ASCII punctuation: deleted, the double space collapses
    ("Rock & Roll", "rock roll"),
    # non-ASCII letters are kept (only string.punctuation is removed)
    ("Café", "café"),
    # a lone article normalises to the empty string
    ("A", ""),
]


@pytest.mark.parametrize(("text", "expected"), NORMALIZE_CASES)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


EXACT_MATCH_CASES = [
    # identical after lowercasing
    ("Paris", ["paris"], 1.0),
    # the leading article is dropped before comparing
    ("the Paris", ["Paris"], 1.0),
    # extra tokens make it a different string
    ("Paris, France", ["Paris"], 0.0),
    # matches the second gold: any gold counts
    ("Barack Obama", ["Obama", "Barack Obama"], 1.0),
    # no prediction (no answer block) scores 0
    (None, ["Paris"], 0.0),
    # the thousands separator is punctuation and is deleted
    ("1,000", ["1000"], 1.0),
    # a single gold may be passed as a plain string
    ("Yes", "yes", 1.0),
    # similar but not equal strings do not match
    ("Nueva York", ["New York"], 0.0),
]


@pytest.mark.parametrize(("prediction", "golds", "expected"), EXACT_MATCH_CASES)
def test_exact_match(prediction, golds, expected):
    assert exact_match(prediction, golds) == expected


F1_CASES = [
    # pred [barack, obama], gold [obama]: P = 1/2, R = 1/1, F1 = 2*0.5*1/1.5 = 0.6667
    ("Barack Obama", ["Obama"], 2 / 3),
    # pred [president, obama], gold [barack, obama]: common 1, P = R = 1/2, F1 = 0.5
    ("the president Obama", ["Barack Obama"], 0.5),
    # max over golds: London -> 0; [paris, france]: P = 1, R = 1/2, F1 = 2/3
    ("Paris", ["London", "Paris France"], 2 / 3),
    # multiset overlap: pred {x:2, y:1}, gold {x:1, y:2}: common = 1 + 1 = 2, P = R = 2/3, F1 = 2/3
    ("x x y", ["x y y"], 2 / 3),
    # [new, york, city] vs [new, york]: common 2, P = 2/3, R = 1, F1 = 2*(2/3)/(5/3) = 0.8
    ("new york city", ["New York"], 0.8),
    # empty prediction vs non-empty gold shares nothing
    ("", ["Paris"], 0.0),
    # both normalise to empty (articles only): SQuAD counts that as agreement
    ("The", ["a"], 1.0),
    # no prediction scores 0
    (None, ["Paris"], 0.0),
]


@pytest.mark.parametrize(("prediction", "golds", "expected"), F1_CASES)
def test_token_f1(prediction, golds, expected):
    assert token_f1(prediction, golds) == pytest.approx(expected, abs=1e-9)


BLOCK_CASES = [
    # content is stripped
    ("<answer> Paris </answer>", "answer", "Paris"),
    # the LAST complete block wins
    ("<answer>A</answer> then <answer>B</answer>", "answer", "B"),
    # a trailing unclosed block (truncated generation) is ignored
    ("<answer>A</answer> <answer>B", "answer", "A"),
    # no block at all
    ("Paris is the capital.", "answer", None),
    # content may span lines
    ("<answer>\nline1\nline2\n</answer>", "answer", "line1\nline2"),
    # a block never contains another opening tag: the innermost, latest opening wins
    ("<answer>x <answer>y</answer>", "answer", "y"),
    # tags are case-sensitive, like the rollout engine's stop rule
    ("<Answer>x</Answer>", "answer", None),
    # the tag is configurable
    ("<final>z</final> <answer>w</answer>", "final", "z"),
    # an empty block is an (empty) answer, not a missing one
    ("<answer></answer>", "answer", ""),
    # one block in the response is enough: we score the response only, so the official
    # "at least two matches" rule (the first being the prompt's example) does not apply
    ("<think>capital of China</think>\n<answer> Beijing </answer>", "answer", "Beijing"),
]


@pytest.mark.parametrize(("text", "tag", "expected"), BLOCK_CASES)
def test_extract_answer_block(text, tag, expected):
    assert extract_answer_block(text, tag=tag) == expected


QA_REWARD_CASES = [
    # a correct answer block after reasoning
    (qa_em_reward, "<think>it is in France</think><answer>Paris</answer>", ["paris"], 1.0),
    # the right words without an answer block score 0: the reward reads only the block
    (qa_em_reward, "Paris", ["Paris"], 0.0),
    # a wrong answer
    (qa_em_reward, "<answer>London</answer>", ["Paris"], 0.0),
    # an early wrong block is superseded by the last one
    (qa_em_reward, "<answer>Lyon</answer> no wait <answer>Paris</answer>", ["Paris"], 1.0),
    # the last COMPLETE block counts; the truncated one after it is ignored
    (qa_em_reward, "<answer>Paris</answer> <answer>Lon", ["Paris"], 1.0),
    # no completion at all
    (qa_em_reward, None, ["Paris"], 0.0),
    # F1 of [paris, france] vs [paris]: P = 1/2, R = 1, F1 = 2/3
    (qa_f1_reward, "<answer>Paris France</answer>", ["Paris"], 2 / 3),
    # F1 without a block is 0
    (qa_f1_reward, "Paris", ["Paris"], 0.0),
]


@pytest.mark.parametrize(("reward", "completion", "golds", "expected"), QA_REWARD_CASES)
def test_qa_rewards(reward, completion, golds, expected):
    assert reward(completion, golds) == pytest.approx(expected, abs=1e-9)


def test_qa_reward_custom_tag():
    # the same tag option as extract_answer_block: only <ans> blocks are read
    assert qa_em_reward("<answer>London</answer><ans>Paris</ans>", ["Paris"], tag="ans") == 1.0


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: exact_match("Paris", []), ValueError, "golden_answers is empty"),
        (lambda: token_f1("Paris", [3]), TypeError, r"golden_answers\[0\] is int"),
        (lambda: extract_answer_block("x", tag="a>b"), ValueError, "plain tag name"),
        (lambda: normalize_answer(None), TypeError, "expects a str"),
    ],
)
def test_qa_bad_input_names_the_problem(call, error, message):
    with pytest.raises(error, match=message):
        call()
