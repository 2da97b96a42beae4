"""Pattern tables for ``rlcore.rewards.mcq.extract_choice`` (English and Chinese).

A *statement* pattern finds a place where a response states its choice. Two shapes:

- ``object``: a key phrase followed by the chosen thing, e.g. "the answer is C", "I choose C", "答案是C",
  "故选C". The text after the match (up to the end of the sentence) is resolved to a letter or option text.
- ``subject``: the chosen thing followed by a predicate, e.g. "C is correct", "C is the best answer", "C项正确".
  The clause before the match (back to the previous delimiter) must be just a letter ("Option C", "C项") or,
  when options are given, an option text.

Ranks order the evidence: 1 = final (``\\boxed{}``, "final answer", "最终答案"), 2 = explicit answer statements,
3 = weaker assertions ("C is correct", "it's C"), 4 = bare letters (the whole response, the last line, an
option label line). The extractor uses the highest rank present and, within it, the last statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OBJECT = "object"
SUBJECT = "subject"


@dataclass(frozen=True)
class StatementPattern:
    """One way of stating a choice; ``final`` (a named group) upgrades a match to rank 1."""

    name: str  # stable rule name reported by explain_choice
    lang: str  # "en" or "zh"
    shape: str  # OBJECT or SUBJECT
    rank: int  # 1 strongest .. 4 weakest
    regex: re.Pattern


_I = re.IGNORECASE
_ADVERB = r"(?:definitely|clearly|certainly|indeed|therefore|thus|hence|undoubtedly|obviously)"
_EN_BE = r"(?:is|would\s+be|should\s+be|must\s+be|will\s+be|has\s+to\s+be|seems\s+to\s+be|appears\s+to\s+be|remains)"
_EN_ADJ = (
    r"(?:correct|right|best|true|only\s+correct|"
    r"most\s+(?:appropriate|likely|accurate|suitable|correct|reasonable|plausible|fitting))"
)
_ZH_ADJ = r"(?:正确|最佳|最合适|最恰当|最合理|最准确|最符合|本题|此题|该题)"

STATEMENT_PATTERNS: tuple[StatementPattern, ...] = (
    # "the (final|correct) answer is C", "Answer: C", "the best option would be C"
    StatementPattern(
        "en_answer_is",
        "en",
        OBJECT,
        2,
        re.compile(
            rf"\b(?:(?P<final>final)\s+|{_EN_ADJ}\s+)?(?:answer|option|choice|selection)"
            rf"(?:\s+(?:to|for)\s+(?:this|the)\s+question|\s+here)?"
            rf"\s*(?:{_EN_BE}\b|[:=]|['’]s\b)",
            _I,
        ),
    ),
    # "Answer choices A and B are wrong; the right one is C"
    StatementPattern(
        "en_right_one",
        "en",
        OBJECT,
        2,
        re.compile(r"\b(?:correct|right|best|true)\s+one\s*(?:(?:is|would\s+be|must\s+be)\b|:)", _I),
    ),
    # "I choose C", "I'll go with C", "select C"
    StatementPattern(
        "en_choose",
        "en",
        OBJECT,
        2,
        re.compile(r"\b(?:choose|select|pick|go\s+with|going\s+with|opt\s+for)\b\s*:?", _I),
    ),
    # "not A but C" -> the chosen thing follows "but"
    StatementPattern(
        "en_not_but",
        "en",
        OBJECT,
        2,
        re.compile(
            r"\bnot\s+(?:option\s+|choice\s+)?[(\[]?[A-Za-z](?![A-Za-z0-9])[)\]]?\s*,?\s*but\s+(?:rather\s+)?",
            _I,
        ),
    ),
    # "C is the correct answer", "C would be my final answer"
    StatementPattern(
        "en_is_the_answer",
        "en",
        SUBJECT,
        2,
        re.compile(
            rf"\b{_EN_BE}\s+(?:{_ADVERB}\s+)?(?:the|my|our)\s+(?:(?P<final>final)\s+)?(?:{_EN_ADJ}\s+)?"
            rf"(?:answer|option|choice|one|response)\b",
            _I,
        ),
    ),
    # "C is correct", "Option C: correct", "C fits best"
    StatementPattern(
        "en_is_correct",
        "en",
        SUBJECT,
        3,
        re.compile(
            rf"(?:\b(?:is|would\s+be|must\s+be|seems|appears|looks)\s+(?:to\s+be\s+)?(?:{_ADVERB}\s+)?"
            rf"(?:the\s+)?(?:most\s+)?|[:\-–—]\s*|\bfits\s+)"
            rf"(?:correct|right|true|accurate|appropriate|best|likely|(?:[a-z]+\s+)?of\s+choice)\b",
            _I,
        ),
    ),
    # "So it's C", "This must be C"
    StatementPattern(
        "en_it_is",
        "en",
        OBJECT,
        3,
        re.compile(
            r"\b(?:it|this|that)(?:['’]s|\s+is|\s+must\s+be|\s+should\s+be|\s+has\s+to\s+be|\s+would\s+be)\b",
            _I,
        ),
    ),
    # "I think C", "I believe it's C"
    StatementPattern(
        "en_i_think",
        "en",
        OBJECT,
        3,
        re.compile(
            r"\bI\s+(?:think|believe|guess|would\s+say|['’]d\s+say|conclude)\b\s*(?:that\s+)?(?:it['’]s\s+|it\s+is\s+)?",
            _I,
        ),
    ),
    # "...; therefore B." (a lone letter closing the sentence; "therefore B is contraindicated" is not a choice)
    StatementPattern(
        "en_therefore",
        "en",
        OBJECT,
        3,
        re.compile(
            r"\b(?:therefore|thus|hence|so)\s*,?\s*(?=(?:option\s+)?[(\[]?[A-Za-z][)\]]?\s*(?:[.!;]|$))", _I
        ),
    ),
    # "The most likely diagnosis is B", "the best treatment is naloxone"
    StatementPattern(
        "en_best_thing",
        "en",
        OBJECT,
        3,
        re.compile(
            r"\b(?:most\s+(?:appropriate|likely|suitable|accurate|probable|common|effective)|best|preferred)"
            r"\s+(?:[A-Za-z\-]+\s+){1,3}?(?:is|would\s+be)\b",
            _I,
        ),
    ),
    # "答案是C", "正确答案：C", "最终答案为C", "【答案】C", "答：C"
    StatementPattern(
        "zh_answer_is",
        "zh",
        OBJECT,
        2,
        re.compile(
            rf"(?P<final>最终|最后)?的?{_ZH_ADJ}?的?(?:答案|选项|答(?=\s*[:：]))\s*"
            r"(?:应该|应当|应|就|当|只能|即|确定)?\s*(?:是|为|选择|选|[:：]|】)+"
        ),
    ),
    # "故选C", "选择C", "最终选C" (never "选项", "选择题")
    StatementPattern(
        "zh_choose",
        "zh",
        OBJECT,
        2,
        re.compile(r"(?P<final>最终|最后)?(?:选择|选定|选)(?![项择题])\s*[:：]?"),
    ),
    # "不是A，而是C"
    StatementPattern("zh_correction", "zh", OBJECT, 2, re.compile(r"而(?:应)?(?:是|为|选)")),
    # "正确的是C", "正确的选项为C"
    StatementPattern(
        "zh_right_one", "zh", OBJECT, 2, re.compile(r"正确的(?:答案|选项|选择)?\s*(?:应该|应)?(?:是|为)")
    ),
    # "C是正确答案", "C为本题答案", "C是最终答案"
    StatementPattern(
        "zh_is_the_answer",
        "zh",
        SUBJECT,
        2,
        re.compile(rf"(?:是|为)\s*(?:(?P<final>最终)的?|{_ZH_ADJ}的?)*(?:答案|选项|选择)"),
    ),
    # "C正确", "C项是正确的", "C最符合题意"
    StatementPattern(
        "zh_is_correct",
        "zh",
        SUBJECT,
        3,
        re.compile(
            r"(?:[:：]\s*)?(?:是|为)?(?:正确|准确|对的|符合题意|最符合|最合适|最恰当|最佳|最可能|最合理)"
        ),
    ),
    # "我认为是C", "应该是C"
    StatementPattern("zh_i_think", "zh", OBJECT, 3, re.compile(r"(?:我认为|我觉得|我倾向于|应该是|应为)")),
)

# Statements that abstain: a refusal after the chosen statement makes the extractor return None.
REFUSAL_PATTERNS: dict[str, re.Pattern] = {
    "en": re.compile(
        r"\b(?:cannot|can['’]t|can\s+not|unable\s+to|impossible\s+to|not\s+possible\s+to)\s+(?:be\s+)?"
        r"(?:determine|determined|tell|answer|answered|decide|decided|choose|select|identify|identified)\b"
        r"|\bnone\s+of\s+(?:the\s+)?(?:above|options|choices|answers|these|them)\b"
        r"|\bno\s+(?:correct|right|valid)\s+(?:answer|option|choice)\b"
        r"|\b(?:insufficient|not\s+enough)\s+information\b"
        r"|\bI\s+(?:don['’]t|do\s+not)\s+know\b"
        r"|\ball\s+(?:of\s+)?(?:the\s+)?(?:options|choices|answers)\s+are\s+(?:incorrect|wrong|false)\b",
        _I,
    ),
    "zh": re.compile(
        r"无法(?:确定|判断|回答|作答|选择|得出)|不能确定|难以(?:确定|判断)|以上(?:选项)?(?:都|均|皆)(?:不|错|非)"
        r"|(?:没有|无)(?:正确|合适)的?(?:答案|选项)|(?:所有|全部|各个?)选项(?:都|均)(?:不正确|错误|不对)"
        r"|我不知道|信息不足"
    ),
}

# Words that may follow a letter that is really a choice ("C because ...", "A is ..."). After a lowercase
# letter or after "A"/"I", any other lowercase word means the letter is an article, pronoun or word start.
CONNECTORS = frozenset(
    "is was are because since as and or but so which for given due with here then therefore thus hence "
    "option choice in that this seems appears would should must will being fits best only correct right "
    "according based from over".split()
)
# "I think ...", "I would ...": the letter I used as a pronoun.
PRONOUN_VERBS = frozenset(
    "think believe would will am have guess suppose chose choose select pick feel need can cannot should must "
    "might go".split()
)

# Phrase helpers (applied to the text after an OBJECT match).
SENTENCE_END = re.compile(r"[!?！？。；;\n]|\.(?=\s|$)")
CLAUSE_END = re.compile(r"[,，]")
LEAD_FILLER = re.compile(
    r"^(?:[\s:：=\-–—>]|(?:therefore|thus|hence|so|clearly|definitely|certainly|indeed|actually|then|likely|"
    r"most\s+likely|probably|undoubtedly|obviously|the|option|choice|letter|answer|number)\b|选项|答案)*",
    _I,
)
NEGATION_START = re.compile(r"^\s*(?:not\b|n['’]t\b|never\b|neither\b|不是|不选|并非|不|非)", _I)
CORRECTION = re.compile(
    r"\b(?:but|rather|instead)\b\s*(?:it\s+is|it['’]s)?|\bit\s+is\b|\bit['’]s\b|而是|应是|应为", _I
)
LETTER_TOKEN = re.compile(
    r"(?P<open>[(\[{【]\s*)?(?P<letter>[A-Za-z])(?![A-Za-z0-9_'’])(?!-[A-Za-z0-9])(?P<close>\s*[)\]}】])?"
)
MULTI_LETTER = re.compile(r"[A-Z]{2,4}(?![A-Za-z0-9])")
NEXT_WORD = re.compile(r"\s+([A-Za-z]+)")
HEDGE = re.compile(r"\s*(?:[?？]|吗|呢|吧)")
POST_NEGATION = re.compile(
    r"^\s*(?:(?:is|are|was|seems|would\s+be)\s+(?:not\b|incorrect|wrong|false|excluded|eliminated|ruled\s+out)"
    r"|(?:is|are|was|does)n['’]t\b|[:\-–—]?\s*(?:incorrect|wrong|false)\b"
    r"|(?:项|选项)?\s*(?:不|错|非|排除|可排除|被排除))",
    _I,
)
_HEDGE_WORD = (
    r"(?:(?:maybe|perhaps|possibly|probably|potentially|even|also|alternatively|或许|也许|可能)\s*)?"
)
_LETTER_ALONE = r"[(\[]?[A-Z][)\]]?(?![A-Za-z0-9])"
AMBIGUOUS_FOLLOWER = re.compile(
    # "A or B", "A, B or C", "C or maybe D", "C (or possibly D)", "B或E", "A和C", "B还是C"
    rf"^\s*(?:(?:,|、)\s*(?:option\s+)?{_LETTER_ALONE}\s*)*(?:,\s*)?[(\[]?\s*"
    rf"(?:[Oo]r|[Aa]nd|/|&|\+|或者?|和|及|与|以及|、|还是选?)\s*{_HEDGE_WORD}(?:option\s+|选项)?{_LETTER_ALONE}"
    # "A, C" / "B、E": a bare list of letters (not "C, D is a distractor")
    rf"|^\s*(?:,|、)\s*(?:option\s+|选项)?{_LETTER_ALONE}"
    r"(?!\s*(?:is|are|was|were|seems|would|could|might|can|has|does|项?(?:不|错|非|是错))\b)"
)
# Text just before an OBJECT match that negates it ("would not choose", "the incorrect answer is", "不选").
PRE_NEGATION = re.compile(
    r"(?:\bnot|n['’]t|\bnever|\bno|\bincorrect|\bwrong|\bfalse)\s*$"
    r"|(?:不|非|未|没|别|勿|并非|不会|不能|不应该?|错误?)(?:正确|准确|合适)?的?\s*$",
    _I,
)
# A condition or question in the same clause makes a statement hypothetical ("if the answer is A, ...").
CONDITIONAL = re.compile(
    r"\b(?:if|whether|suppose|supposing|assume|assuming|unless)\b|如果|假如|假设|若|是否", _I
)
CLAUSE_BREAK = re.compile(r"[.!?\n;,，。！？；]")

# Subject helpers (applied to the clause before a SUBJECT match, and to bare lines).
SUBJECT_DELIMITER = re.compile(
    r"[!?\n;,，。！？；]|(?<!\b[A-Za-z])\.|(?<=\b[A-Za-z])\.(?=\s+[(\[]?[A-Za-z][)\]]?(?![A-Za-z0-9'’]))"
)  # "B. Naloxone is correct" stays whole; "Not A. B is correct" splits after "A."
DISCOURSE = re.compile(
    r"^(?:[\s:：,，\-–—>]|(?:so|thus|hence|therefore|overall|finally|in\s+conclusion|in\s+summary|clearly|then|"
    r"and|but|only|here|now|the|I\s+think|I\s+believe|we\s+see\s+that)\b"
    r"|所以|因此|故|综上所述|综上|则|即|而|最终|只有|仅|以上选项中|选项中|其中|我认为|显然|本题)*",
    _I,
)
SUBJECT_LETTER = re.compile(
    r"(?:(?:option|choice|answer|letter|statement)\b\s*[:：]?\s*|选项|答案\s*[:：]?)?\s*"
    r"(?P<open>[(\[【]\s*)?(?P<letter>[A-Za-z])(?P<close>\s*[)\]】])?\s*(?:项|选项|option)?\s*[.。!！]?",
    _I,
)
# The subject of a predicate may carry its option text: "B. Naloxone is correct", "选项B（纳洛酮）是正确的".
SUBJECT_LABELLED = re.compile(
    r"(?:(?:option|choice|answer|letter|statement)\b\s*[:：]?\s*|选项)?\s*"
    r"(?P<open>[(\[【]\s*)?(?P<letter>[A-Za-z])(?P<close>\s*[)\]】])?\s*(?:项|选项)?"
    r"(?:\s*\.\s*(?![a-z])|\s*[:：]\s*|\s+[\-–—]\s+)(?:[^\s.!?。！？()][^.!?。！？()]{0,80})"  # not "E. coli"
    r"|(?:(?:option|choice)\b\s*|选项)?\s*(?P<letter2>[A-Za-z])\s*(?:项|选项)?\s*\([^()]{1,80}\)",
    _I,
)
SUBJECT_LIST = re.compile(
    r"(?:option\s+|选项)?[(\[]?(?P<first>[A-Za-z])[)\]]?\s*(?:项)?"
    r"(?:\s*(?:,|、|and|or|和|或|及|与)\s*(?:option\s+)?[(\[]?[A-Za-z][)\]]?\s*(?:项)?)+\s*(?:都|均)?",
    _I,
)
LABEL_LINE = re.compile(
    r"^\s*(?:[(\[](?P<a>[A-Za-z])[)\]]\s*|(?P<b>[A-Za-z])(?:[)\]]\s*|[:：]\s*|\.\s+(?![a-z])))\S"
)
# An option label inside a line ("... B: opioid antagonist. C: ..."): several of them = options analysed in turn.
INLINE_LABEL = re.compile(r"(?<![A-Za-z0-9])([A-J])(?:\s*[:：)]|\.(?=\s))\s*(?=\S)")
# "E. None of the above" / "option E: ..." just before a refusal phrase: the phrase restates an option.
OPTION_LABEL_BEFORE = re.compile(r"(?:^|[\s(\[])(?:[Oo]ption\s+[A-J]|[(\[]?[A-J][).:\]])\s*[:：\-]?\s*$")

# Phrases after a negation inside an option-text phrase are dropped ("flumazenil, not naloxone").
OPTION_NEGATED_TAIL = re.compile(
    r"\b(?:not|rather\s+than|instead\s+of|except|but\s+not)\b[^,;]*|(?:不是|而非|并非|不选|排除)[^，,；;]*",
    _I,
)

# A line naming an option's text is a choice only when nothing in it negates or avoids that option.
OPTION_LINE_NEGATION = re.compile(
    r"\b(?:not|no|never|avoid\w*|contraindicat\w*|instead|rather|except|unless|wrong|incorrect|harmful)\b"
    r"|[?？]|不|避免|禁忌|禁用|而非|并非|错误|除了",
    _I,
)
