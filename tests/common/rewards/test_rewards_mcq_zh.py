"""Chinese MCQ choice extraction: one row per case, with why that answer is right.

Rows cover the Chinese statement forms of the AnesBench extractor (spec anessuite.md section 3.5) and the
failure cases of section 8: negations, several letters, option text, refusals, out-of-range letters.
"""

from __future__ import annotations

import pytest

from rlcore.rewards import extract_choice

DRUGS_ZH = {"A": "丙泊酚", "B": "纳洛酮", "C": "氟马西尼", "D": "阿托品"}

# (response, num_choices, options, expected letter)
CASES = [
    # --- explicit statements ---
    # "答案" + full-width colon (NFKC turns it into ":")
    ("答案：D", 4, None, "D"),
    # "答案是" + letter
    ("答案是C", 4, None, "C"),
    # "正确答案" + colon
    ("正确答案：C", 4, None, "C"),
    # modal "应该" between key and verb
    ("正确答案应该是B。", 4, None, "B"),
    # "选" + letter
    ("选C", 4, None, "C"),
    # "故选" is the textbook conclusion
    ("故选C。", 4, None, "C"),
    # "选择" + letter after a summary phrase
    ("综上所述，本题选择B。", 4, None, "B"),
    # "最终答案" is the strongest statement
    ("最终答案为A", 4, None, "A"),
    # bracketed heading 【答案】
    ("【答案】D", 4, None, "D"),
    # exam-style "答：" label
    ("答：B", 4, None, "B"),
    # lowercase letter after a Chinese key
    ("答案是c", 4, None, "C"),
    # full-width brackets and letter
    ("答案：（Ｂ）", 4, None, "B"),
    # bold markdown around the statement
    ("**答案：C**", 4, None, "C"),
    # a boxed letter after a Chinese label
    ("答案：\\boxed{D}", 4, None, "D"),
    # a space between key and letter
    ("正确选项为 B", 4, None, "B"),
    # "选择题" (multiple-choice question) is not "选" + letter; the answer follows
    ("这是一道选择题，答案是C。", 4, None, "C"),
    # "C是正确答案": the letter as the subject of "is the correct answer"
    ("C是正确答案", 4, None, "C"),
    # "正确的是" + letter
    ("所以正确的是D", 4, None, "D"),
    # the letter with its option text in full-width parentheses as the subject of "是正确的"
    ("选项B（纳洛酮）是正确的。", 4, None, "B"),
    # "最符合题意" after "C项"
    ("C项最符合题意", 4, None, "C"),
    # --- negations ---
    # per-option verdicts: only C is marked correct
    ("A项错误，B项错误，C项正确，D项错误。", 4, None, "C"),
    # per-option verdicts with colons: only B is "正确"
    ("A项：错误。B项：正确。C项：错误。", 4, None, "B"),
    # "A选项不正确" is negated; "D选项正确" is the choice
    ("A选项不正确，D选项正确。", 4, None, "D"),
    # "不选A" is negated; "选C" is the choice
    ("不选A，选C", 4, None, "C"),
    # "不是A，而是C": the correction names C
    ("答案不是A，而是C", 4, None, "C"),
    # the negated B is skipped; the conclusion is D
    ("B不正确，因为它会加重呼吸抑制，所以答案是D。", 4, None, "D"),
    # eliminated letters do not count
    ("排除A、B，答案为C。", 4, None, "C"),
    # "A项是错误的" in the explanation is not a positive statement
    ("答案：C。解析：A项是错误的。", 4, None, "C"),
    # "不正确的是C" answers an inverted question we cannot see: abstain rather than guess
    ("不正确的是C", 4, None, None),
    # --- several letters, hypotheticals, questions ---
    # "如果答案是A" is hypothetical; the conclusion is D
    ("如果答案是A，剂量就会过高，因此答案是D。", 4, None, "D"),
    # a later hedge ("也可能是C") does not overrule the explicit statement
    ("我认为答案是B。不过也可能是C。", 4, None, "B"),
    # letters discussed along the way, then the final answer
    ("先考虑A，再看B，最终答案：D", 4, None, "D"),
    # the explicit answer outranks a later weak "B项正确" about a subgroup (children only)
    ("答案为C。B项正确仅限于儿童。", 4, None, "C"),
    # two letters as one answer (multi-select style) is not a single choice
    ("答案是AB", 4, None, None),
    # "A或C" states two letters
    ("答案为A或C", 4, None, None),
    # "A和B都正确" states two letters
    ("A和B都正确", 4, None, None),
    # a question, not a statement
    ("D正确吗？", 4, None, None),
    # "选A还是选B呢？" weighs two letters and asks: no choice
    ("选A还是选B呢？", 4, None, None),
    # --- letters inside terms ---
    # "维生素C" (vitamin C) is a term, not a choice
    ("维生素C缺乏会导致坏血病。", 4, None, None),
    # --- refusals ---
    # "none of the above is right"
    ("以上都不对", 4, None, None),
    # "cannot determine the answer"
    ("无法确定答案。", 4, None, None),
    # "there is no correct answer"
    ("没有正确答案", 4, None, None),
    # a refusal after a weak assertion is the final conclusion
    ("B项正确。但再想想，所有选项都不正确。", 4, None, None),
    # --- range and 5/10-option questions ---
    # E does not exist with 4 options
    ("正确答案是E", 4, None, None),
    # E exists with 5 options
    ("正确答案是E", 5, None, "E"),
    # J is the tenth option
    ("答案是J", 10, None, "J"),
    # G with 10 options after a summary
    ("综上，选G。", 10, None, "G"),
    # --- option text instead of the letter ---
    # the statement names option B's text
    ("答案是纳洛酮", 4, DRUGS_ZH, "B"),
    # option text as the subject of "是正确答案"
    ("氟马西尼是正确答案。", 4, DRUGS_ZH, "C"),
    # --- reasoning formats and mixed language ---
    # the text after </think> decides
    ("<think>答案可能是A</think>答案：B", 4, None, "B"),
    # an English statement inside a Chinese response
    ("根据以上分析，Answer: C", 4, None, "C"),
]


@pytest.mark.parametrize(("text", "num_choices", "options", "expected"), CASES)
def test_extract_choice_chinese(text, num_choices, options, expected):
    assert extract_choice(text, num_choices=num_choices, lang="zh", options=options) == expected


@pytest.mark.parametrize(("text", "num_choices", "options", "expected"), CASES)
def test_auto_language_agrees_with_zh(text, num_choices, options, expected):
    # lang="auto" runs both families; Chinese rows must not change under it
    assert extract_choice(text, num_choices=num_choices, lang="auto", options=options) == expected


def test_chinese_table_is_large_enough():
    assert len(CASES) >= 35


@pytest.mark.parametrize(
    ("text", "lang", "expected"),
    [
        ("The answer is B.", "zh", "B"),  # zh also reads English statements (models often answer "Answer: B")
        (
            "答案是B",
            "en",
            "B",
        ),  # an English item answered in Chinese is still read (issue 12: both directions)
        ("答案是B", "auto", "B"),  # auto reads both
    ],
)
def test_every_lang_reads_both_pattern_families(text, lang, expected):
    assert extract_choice(text, lang=lang) == expected
