"""Answer extraction as AnesBench scoring uses it: the shared rlcore extractor fed with the item's option
texts, option count and language. The first block replays the official evaluator's failure cases
(spec section 3.5); the full EN/ZH rule table lives in tests/common/rewards."""

from __future__ import annotations

import pytest

from anessuite.answers import extract_prediction
from anessuite.mcq import MCQItem

EN = MCQItem(
    id="e",
    question="Which drug reverses opioid-induced respiratory depression?",
    options=(("A", "Flumazenil"), ("B", "Naloxone"), ("C", "Atropine"), ("D", "Neostigmine")),
    answer="B",
    language="en",
)
EN5 = MCQItem(
    id="e5",
    question="?",
    options=tuple(zip("ABCDE", ["1 mg", "2 mg", "3 mg", "4 mg", "It cannot be calculated"])),
    answer="E",
    language="en",
)
ZH = MCQItem(
    id="z",
    question="哪种药物可逆转阿片类药物引起的呼吸抑制？",
    options=(("A", "氟马西尼"), ("B", "纳洛酮"), ("C", "阿托品"), ("D", "新斯的明")),
    answer="B",
    language="zh",
)

CASES = [
    # plain final statement
    (EN, "The answer is B.", "B"),
    # colon form
    (EN, "Answer: C", "C"),
    # bold final answer line
    (EN, "Reasoning...\n**Final Answer: B**", "B"),
    # LaTeX boxed answer
    (EN, "so the final answer is \\boxed{C}", "C"),
    # option text instead of the letter: Naloxone is option B
    (EN, "Therefore the correct answer is Naloxone.", "B"),
    # negation before the real choice: "B is not correct" must not be taken
    (EN, "B is not correct. D is correct.", "D"),
    # "not A, it is C"
    (EN, "The answer is not A, it is C", "C"),
    # the official extractor returned A here (first letter after "Answer choices"); the choice is C
    (EN, "Answer choices A and B are wrong; the right one is C", "C"),
    # refusal: the official fuzzy fallback returned an arbitrary letter; we abstain
    (EN, "I can't determine the answer from the information given.", None),
    # empty / whitespace responses abstain
    (EN, "", None),
    (EN, "   \n", None),
    # an English article "A" inside reasoning is not a choice
    (EN, "A patient on opioids may need reversal, but I am not sure which drug is meant.", None),
    # letter E does not exist on a 4-option item
    (EN, "Answer: E", None),
    # ...but does on a 5-option item; its option text is also recognised
    (EN5, "Answer: E", "E"),
    (EN5, "The answer is: It cannot be calculated.", "E"),
    # Chinese statements
    (ZH, "答案：B", "B"),
    (ZH, "经过分析，正确答案是D。", "D"),
    (ZH, "因此选C。", "C"),
    # Chinese option text instead of the letter (纳洛酮 = B)
    (ZH, "综上，应选用纳洛酮。", "B"),
    # Chinese negation then choice
    (ZH, "A项不正确，B项正确。", "B"),
    # Chinese refusal
    (ZH, "无法确定答案。", None),
    # full-width letter after the Chinese answer key
    (ZH, "答案：Ｂ", "B"),
]


@pytest.mark.parametrize("item, response, expected", CASES)
def test_extract_prediction(item, response, expected):
    assert extract_prediction(response, item) == expected
