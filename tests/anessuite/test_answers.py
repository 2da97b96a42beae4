"""Answer extraction as AnesBench scoring uses it: the shared rlcore extractor fed with the item's option
texts, option count and language. The first block replays the official evaluator's failure cases
(spec section 3.5), then more EN/ZH cases (61 in all, one comment each). The extractor's own rule table lives in
tests/common/rewards."""

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
    # --- more English statements ---
    # lower-case letter in a clear statement
    (EN, "The correct option is b.", "B"),
    # parenthesised letter
    (EN, "I would choose (D).", "D"),
    # "Option C" with trailing explanation
    (EN, "Option C is the best answer because atropine blocks muscarinic receptors.", "C"),
    # markdown bold letter on the last line
    (EN, "Reasoning about each drug...\n**B**", "B"),
    # answer line after a long reasoning that mentions other letters
    (
        EN,
        "A is a benzodiazepine antagonist. C is anticholinergic. D inhibits cholinesterase.\nAnswer: B",
        "B",
    ),
    # the final answer wins over an earlier tentative one
    (EN, "At first I thought A. On reflection, the answer is B.", "B"),
    # boxed with option text inside
    (EN, "\\boxed{Naloxone}", "B"),
    # "B) Naloxone" as the last line
    (EN, "Considering all options:\nB) Naloxone", "B"),
    # two options named as correct without resolution: abstain rather than guess
    (EN, "Both A and C could be correct.", None),
    # "none of the above" is not an option here
    (EN, "None of the options is correct.", None),
    # a question back to the user is not an answer
    (EN, "Could you clarify what is being asked?", None),
    # negated option text: "not flumazenil" must not pick A
    (EN, "It is not flumazenil; the answer is naloxone.", "B"),
    # "Answer: B." with trailing period
    (EN, "Answer: B.", "B"),
    # the letter repeated in a final summary
    (EN, "Final answer: D (Neostigmine)", "D"),
    # answer key in upper case
    (EN, "ANSWER: C", "C"),
    # only the option letter, nothing else
    (EN, "C", "C"),
    # only the option letter with a period
    (EN, "D.", "D"),
    # 5-option item, letter beyond D is legal there
    (EN5, "The answer is E.", "E"),
    # 5-option item, option text with a unit
    (EN5, "The dose is 3 mg, so the answer is 3 mg.", "C"),
    # 5-option item, refusal still abstains
    (EN5, "I cannot answer this question.", None),
    # --- more Chinese statements ---
    # "正确选项为"
    (ZH, "正确选项为A。", "A"),
    # "故选" with the letter
    (ZH, "综合以上分析，故选D。", "D"),
    # "最终答案"
    (ZH, "最终答案：C", "C"),
    # boxed inside Chinese text
    (ZH, "因此答案为\\boxed{B}。", "B"),
    # "应选择" + letter
    (ZH, "应选择B项。", "B"),
    # Chinese negation of one option, no choice stated: abstain
    (ZH, "A项不正确。", None),
    # "选项C正确"
    (ZH, "选项C正确，其余选项均不符合。", "C"),
    # Chinese answer line after reasoning mentioning other letters
    (ZH, "A是苯二氮䓬拮抗剂，C是抗胆碱药。\n答案：B", "B"),
    # Chinese "不知道" refusal
    (ZH, "我不知道。", None),
    # Chinese option text for another option (阿托品 = C)
    (ZH, "答案是阿托品。", "C"),
    # half-width colon in Chinese
    (ZH, "答案:D", "D"),
    # "正确答案是" with a space before the letter
    (ZH, "正确答案是 A", "A"),
    # Chinese answer for a letter beyond the options: abstain
    (ZH, "答案：F", None),
    # English answer line inside a Chinese response
    (ZH, "分析如上。\nAnswer: B", "B"),
    # only whitespace
    (ZH, "\n\n", None),
    # "选项B和选项C都不对，应选D"
    (ZH, "选项B和选项C都不对，应选D。", "D"),
    # "排除A、C、D，答案为B"
    (ZH, "排除A、C、D，答案为B。", "B"),
    # bold answer key with the letter after it
    (EN, "**Answer:** A", "A"),
    # English article "A" at the start of a sentence followed by a real answer line
    (EN, "A careful look at each option helps.\nAnswer: D", "D"),
]


@pytest.mark.parametrize("item, response, expected", CASES)
def test_extract_prediction(item, response, expected):
    assert extract_prediction(response, item) == expected
