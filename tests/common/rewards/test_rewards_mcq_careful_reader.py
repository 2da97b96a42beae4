"""MCQ extraction cases where a careful human reader decides (issue 12, deliverable 5), English and Chinese.

Each row: (response, item language, options or None, expected letter or None = abstain), with a comment saying
why a careful reader gives that answer. Groups: letter lists and hedges abstain; a negated letter followed by a
positive statement picks the positive one; an answer line in the other language is read; an option's text
without a letter counts when it names exactly one option; restating every option chooses nothing.
"""

from __future__ import annotations

import pytest

from rlcore.rewards import extract_choice

EN = ["Propofol", "Naloxone", "Flumazenil", "Atropine"]
EN5 = ["Propofol", "Naloxone", "Flumazenil", "Atropine", "Neostigmine"]
ZH = ["丙泊酚", "纳洛酮", "氟马西尼", "阿托品", "新斯的明"]

CASES = [
    # ---------------------------------------------------------------- letter lists abstain
    # two letters after "the answer is", comma-separated: the reader cannot tell which one is meant
    ("The answer is A, C.", "en", None, None),
    # an answer label followed by a comma list
    ("Answer: B, D", "en", None, None),
    # three letters in a list
    ("The correct options are A, B, D.", "en", None, None),
    # a list with "and" at the end
    ("The answer is A, C and D.", "en", None, None),
    # Chinese enumeration comma 、 between two letters
    ("答案：B、E", "zh", None, None),
    # 、 after 答案是
    ("答案是A、C", "zh", None, None),
    # three letters with 、
    ("正确答案为A、B、D。", "zh", None, None),
    # full-width comma between letters (NFKC makes it ASCII)
    ("答案：B，D", "zh", None, None),
    # a comma followed by a letter that starts a new clause is not a list: C is chosen, D is dismissed
    ("The answer is C, D is a distractor.", "en", None, "C"),
    # a comma then "because": one letter
    ("The answer is C, because flumazenil reverses benzodiazepines.", "en", EN, "C"),
    # ---------------------------------------------------------------- hedges between two letters abstain
    # "or maybe" offers two letters
    ("The answer is C or maybe D.", "en", None, None),
    # a weak statement with a hedge after a comma
    ("I think C, or maybe D.", "en", None, None),
    # a parenthesised alternative
    ("Answer: C (or possibly D)", "en", None, None),
    # "or perhaps"
    ("The best answer is B or perhaps E.", "en", EN5, None),
    # Chinese 或 between two letters
    ("答案是B或E", "zh", None, None),
    # 或者 with a hedge word
    ("答案可能是B或者E。", "zh", None, None),
    # 还是 asks which of two
    ("答案是B还是E？", "zh", None, None),
    # 吧？ turns the statement into a guess the writer asks to confirm
    ("答案是B吧？", "zh", None, None),
    # 吧 with a weak statement
    ("应该是C吧？", "zh", None, None),
    # 吧 without a question mark is still a hedge
    ("我觉得是D吧", "zh", None, None),
    # an English statement that ends in a question mark asks, it does not answer
    ("The answer is B?", "en", None, None),
    # the question is followed by a confirmed statement: the reader takes the confirmation
    ("The answer is B? Checking the dose again: yes, the answer is B.", "en", None, "B"),
    # a hedge, then a clear final answer
    ("Maybe C or D. After checking the contraindications, the final answer is D.", "en", None, "D"),
    # 吧？ then a clear Chinese conclusion
    ("是B吧？再核对一下剂量，最终答案是B。", "zh", None, "B"),
    # ---------------------------------------------------------------- negation, then the chosen letter
    # "Not A." excludes A; "B is correct." chooses B
    ("Not A. B is correct.", "en", None, "B"),
    # "isn't" excludes A; "B is right" chooses B
    ("The answer isn't A. B is right.", "en", None, "B"),
    # same without the final period
    ("The answer isn't A. B is right", "en", None, "B"),
    # "is not" spelled out
    ("The answer is not A. C is correct.", "en", None, "C"),
    # negated option, then the positive statement in the next sentence
    ("A is wrong. D is the correct answer.", "en", None, "D"),
    # "Not A, B." a reader hears "not A, but B"
    ("Not A but B.", "en", None, "B"),
    # Chinese: 不是A，B正确
    ("不是A。B正确。", "zh", None, "B"),
    # Chinese: 答案不是A，而是C
    ("答案不是A，而是C。", "zh", None, "C"),
    # Chinese: A错误，正确答案是D
    ("A错误，正确答案是D。", "zh", None, "D"),
    # excluded letters listed, then the choice
    ("Not A and not B. The answer is C.", "en", None, "C"),
    # ---------------------------------------------------------------- answer line in the other language
    # an English item answered with a Chinese answer line after English reasoning
    ("Naloxone antagonises opioid receptors.\n答案：B", "en", EN, "B"),
    # an English item, Chinese reasoning and answer
    ("纳洛酮是阿片受体拮抗剂，因此选B。", "en", EN, "B"),
    # an English item, 正确答案是
    ("Analysis of each option...\n正确答案是C", "en", None, "C"),
    # a Chinese item answered in English
    ("纳洛酮可以逆转吗啡的作用。\nAnswer: B", "zh", ZH, "B"),
    # a Chinese item with an English final answer sentence
    ("分析略。The correct answer is E.", "zh", ZH, "E"),
    # a Chinese item, English boxed answer
    ("综上，\\boxed{D}", "zh", ZH, "D"),
    # both lines agree
    ("Final answer: B\n最终答案：B", "zh", ZH, "B"),
    # the last explicit statement wins even across languages (a revision)
    ("答案：A\nOn reflection, the answer is D.", "en", None, "D"),
    # ---------------------------------------------------------------- option text without a letter
    # the last line names exactly one option text
    ("The patient needs naloxone.", "en", EN, "B"),
    # the option text alone as the whole response
    ("Naloxone", "en", EN, "B"),
    # the option text in a reasoning conclusion with "the best drug is"
    ("The best drug here is flumazenil.", "en", EN, "C"),
    # Chinese option text after 选
    ("选纳洛酮", "zh", ZH, "B"),
    # Chinese option text after 正确答案是
    ("正确答案是新斯的明。", "zh", ZH, "E"),
    # Chinese: the last line names one option
    ("分析如下：……\n应给予阿托品。", "zh", ZH, "D"),
    # the last line avoids an option: it is not chosen
    ("Avoid propofol in this patient.", "en", EN, None),
    # the last line negates the option
    ("The patient does not need atropine.", "en", EN, None),
    # Chinese negation: 禁用
    ("该患者禁用丙泊酚。", "zh", ZH, None),
    # the last line names two options: no single choice
    ("Both naloxone and flumazenil are antagonists.", "en", EN, None),
    # a question about an option is not a choice
    ("Should we give atropine?", "en", EN, None),
    # ---------------------------------------------------------------- all options listed, no choice
    # the options restated one per line
    ("A. Propofol\nB. Naloxone\nC. Flumazenil\nD. Atropine", "en", EN, None),
    # every option named in one sentence
    ("Propofol, naloxone, flumazenil and atropine are all used in anesthesia.", "en", EN, None),
    # Chinese options restated
    ("A. 丙泊酚\nB. 纳洛酮\nC. 氟马西尼\nD. 阿托品\nE. 新斯的明", "zh", ZH, None),
    # options analysed one by one without a conclusion
    ("A: sedative. B: opioid antagonist. C: benzodiazepine antagonist. D: anticholinergic.", "en", EN, None),
    # Chinese analysis of each option without a conclusion
    ("A项是镇静药；B项是阿片拮抗剂；C项是苯二氮䓬拮抗剂；D项是抗胆碱药。", "zh", ZH, None),
    # ---------------------------------------------------------------- controls a careful reader also accepts
    # a plain letter answer
    ("B", "en", None, "B"),
    # a labelled answer line after a list of eliminated options
    ("A, C and D are unsafe here.\nAnswer: B", "en", None, "B"),
    # a Chinese label line after analysis
    ("A、C、D均不符合。\n答案：B", "zh", None, "B"),
    # a bold final answer
    ("**Final answer: C**", "en", None, "C"),
    # "option E" in a five-option item
    ("The answer is option E.", "en", EN5, "E"),
    # "选项E" in Chinese
    ("故选项E正确。", "zh", ZH, "E"),
    # a letter beyond the item's options is not a valid answer
    ("The answer is F.", "en", EN5, None),
    # a refusal after a tentative letter
    ("Possibly B, but I cannot determine the answer from the information given.", "en", None, None),
    # Chinese refusal
    ("题目信息不足，无法确定答案。", "zh", None, None),
]


@pytest.mark.parametrize(("text", "lang", "options", "expected"), CASES)
def test_careful_reader(text, lang, options, expected):
    num_choices = len(options) if options else 5
    assert extract_choice(text, num_choices=num_choices, lang=lang, options=options) == expected


def test_at_least_sixty_cases_in_both_languages():
    assert len(CASES) >= 60
    assert sum(lang == "zh" for _, lang, _, _ in CASES) >= 25
    assert sum(lang == "en" for _, lang, _, _ in CASES) >= 25
