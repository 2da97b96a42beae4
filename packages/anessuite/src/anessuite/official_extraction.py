"""An extraction that behaves like the official AnesBench evaluator's.

It is reported beside our abstaining extractor so a user sees how much of a gap to the paper is extraction.
Our own code, written from the prose description of the official behaviour:

1. every option's text (trailing period stripped, longest first) is replaced by its letter, case-insensitively;
2. a fixed cascade of patterns over the option letters (upper case only); the first pattern that matches
   anywhere decides and its LAST match is returned;
3. nothing matched: the option whose text is most similar to the whole response is returned, so the function
   never abstains (an empty or cut response still maps to some letter).

Known difference: the official fallback scores similarity with thefuzz's ``WRatio``; here it is
``difflib.SequenceMatcher.ratio`` on lower-cased text (no extra dependency), so the fallback can pick a
different letter for responses no pattern matches. Everything before the fallback follows the description.
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache

from anessuite.mcq import MCQItem

__all__ = ["official_extract", "official_patterns"]

_ZH_KEYS = r"(?:正确答案|正确选项|答案|选项|选择)"


@lru_cache(maxsize=16)
def official_patterns(num_choices: int) -> tuple[re.Pattern, ...]:
    """The ordered cascade for letters A..(A + num_choices - 1)."""
    last = chr(ord("A") + num_choices - 1)
    letter = f"[A-{last}]"
    other = f"[^A-{last}]"
    return tuple(
        re.compile(pattern, re.M)
        for pattern in (
            # 1. 答案/选项/正确答案/正确选项/选择 + colon(s) + any non-space run + letter
            rf"{_ZH_KEYS}\s*[:：]+\s*\S*?({letter})",
            # 2. "choose", or "answer"/"choice" not negated within 20 non-option characters, then the letter
            rf"(?:(?i:choose)|(?i:answer|choice)(?!{other}{{0,20}}(?:n't|not)))"
            rf"{other}{{0,10}}?(?:is|:|be)?{other}{{0,20}}?(?<![A-Za-z])({letter})(?![A-Za-z])",
            # 3. 答案/选项 + an optional character other than 不/非 + 是/为 + up to 8 characters + letter
            rf"{_ZH_KEYS}[^不非]?[是为]+.{{0,8}}?({letter})",
            # 4. letter followed within 8 non-option characters by 正确/准确/符合, not negated
            rf"({letter}){other}{{0,8}}?(?<!不)(?<!非)(?<!不是)(?:正确|准确|符合)",
            # 5. letter followed within 10 non-option characters by correct/right, not "not/n't correct"
            rf"({letter}){other}{{0,10}}?(?<!not )(?<!n't )(?i:correct|right)",
            # 6. the whole response is the letter with optional trailing punctuation
            rf"\A\s*({letter})[\s.。,，:：!！]*\Z",
            # 7. the response starts with the letter followed by . , : or the end
            rf"\A\s*({letter})(?:[.,:]|\Z)",
            # 8. any standalone letter (not next to an ASCII letter or '=')
            rf"(?<![A-Za-z=])({letter})(?![A-Za-z=])",
        )
    )


def _substitute_option_texts(text: str, item: MCQItem) -> str:
    options = sorted(item.options, key=lambda pair: len(pair[1]), reverse=True)
    for letter, option in options:
        option = option.strip().rstrip(".")
        if option:
            text = re.sub(re.escape(option), letter, text, flags=re.I)
    return text


def official_extract(text: str | None, item: MCQItem) -> str:
    """The letter the official-style extractor assigns to ``text`` (never None)."""
    text = text or ""
    processed = _substitute_option_texts(text, item)
    for pattern in official_patterns(item.num_choices):
        matches = pattern.findall(processed)
        if matches:
            return matches[-1]
    lowered = text.lower()
    scores = [
        (difflib.SequenceMatcher(None, lowered, option.lower()).ratio(), -index, letter)
        for index, (letter, option) in enumerate(item.options)
    ]
    return max(scores)[2]
