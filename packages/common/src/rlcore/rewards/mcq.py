"""Multiple-choice answer extraction (English and Chinese) and the MCQ correctness reward.

``extract_choice(text, num_choices=4, lang="auto", options=None)`` returns the stated option letter ("A".."J")
or None when the response states no usable choice. It replaces the official AnesBench extractor (spec
anessuite.md sections 3.5 and 8), fixing each of its failure cases:

=====================================================  ==========================================================
official behaviour                                     here
=====================================================  ==========================================================
first regex family that matches anywhere wins          ranked evidence: final (``\\boxed{}``, "final answer") >
("Answer choices A and B are wrong; the right one is   explicit ("the answer is", "选C") > weak ("C is correct",
C" -> A)                                               "it's C") > bare letters; the LAST statement of the best
                                                       rank decides, so revisions and long analyses work
any standalone letter as last resort; letters inside   letters count only inside a statement; word-internal,
words; "A" as an article; "Vitamin C", "E. coli"       hyphenated ("C-reactive") and digit-adjacent ("B12")
                                                       letters never count; "a"/"A"/"I"/lowercase letters
                                                       followed by an ordinary word are articles or pronouns
negations only partly handled                          "not B", "B is incorrect", "不选B", "B不正确", "the
                                                       incorrect answer is B" are never chosen; "not A but C",
                                                       "不是A，而是C" choose C; "if the answer is A" and "is it
                                                       A?" are hypothetical and ignored
option text rewritten to letters everywhere            option texts (``options``) are matched only inside a
                                                       statement ("the answer is naloxone"), longest option first
fuzzy fallback: never abstains                         None for no statement, refusals ("none of the above",
                                                       "I cannot determine", "无法确定"), several letters stated
                                                       ("A or B", "答案：AB") and letters beyond ``num_choices``
uppercase only                                         lowercase letters, full-width letters and punctuation
                                                       (NFKC), markdown bold, LaTeX ``\\text{}``
=====================================================  ==========================================================

If the response has a complete ``<answer>...</answer>`` block, only its content is read. If it has a closed
``<think>`` block, the text after ``</think>`` is read first and the whole text only when that part states
nothing. A refusal that comes after the chosen statement wins (the last conclusion decides). Unless
``options`` name it as an option, "none of the above" is a refusal.

Both pattern families are always read, whatever ``lang`` says ("en", "zh" or "auto"): Chinese responses often
state the answer in English ("Answer: C") and English items get "答案：C" from Chinese-tuned models.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rlcore.rewards import mcq_patterns as P
from rlcore.rewards.qa import extract_answer_block

__all__ = ["ChoiceResult", "explain_choice", "extract_choice", "mcq_reward"]

_ALL_LETTERS = "ABCDEFGHIJ"
_LATEX_WRAPPER = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mathit|mbox|emph)\s*\{([^{}]*)\}")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_CJK = re.compile(r"[\u3400-\u9fff]")
_PHRASE_WINDOW = 400  # characters after a key phrase that can hold its object (a sentence, an option text)


@dataclass(frozen=True)
class ChoiceResult:
    """What ``explain_choice`` decided; ``reason``: matched | no_statement | refusal | ambiguous | out_of_range."""

    letter: str | None  # "A".."J" or None
    reason: str
    rule: str | None = None  # name of the statement rule that decided, e.g. "en_answer_is", "boxed"
    rank: int | None = None  # 1 final .. 4 bare
    position: int = -1  # character offset of the deciding statement in the text that was read


@dataclass(frozen=True)
class _Context:
    letters: str  # valid uppercase letters
    options: dict[str, str]  # letter -> normalised option text (may be empty)
    langs: tuple[str, ...]


@dataclass(frozen=True)
class _Candidate:
    rank: int
    position: int  # where the statement ends (refusals after it override it)
    rule: str
    letter: str | None  # None: the statement is conclusive but unusable (see reason)
    reason: str


# ------------------------------------------------------------------------------------------------ helpers


def _clean(text: str) -> str:
    """NFKC (full-width letters/colons/brackets to ASCII), unwrap LaTeX text macros, drop markdown emphasis."""
    text = unicodedata.normalize("NFKC", text)
    for _ in range(2):  # \textbf{\text{C}}
        text = _LATEX_WRAPPER.sub(r"\1", text)
    text = re.sub(r"\\[()\[\]]", " ", text)
    return re.sub(r"[*`$#]", "", text)


def _normalize_option_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(char)[0] in "PS" else char for char in text)
    text = re.sub(r"\b(?:a|an|the)\b", " ", text)
    return " ".join(text.split())


def _contains(haystack: str, needle: str) -> bool:
    if needle.isascii():
        return f" {needle} " in f" {haystack} "
    return needle in haystack


def _match_option_text(phrase: str, context: _Context, allow_contains: bool = True) -> str | None:
    """Letter whose option text the phrase states (equal, or the only option text it contains)."""
    if not context.options:
        return None
    phrase = _normalize_option_text(P.OPTION_NEGATED_TAIL.sub(" ", phrase))
    if not phrase:
        return None
    for letter, option in context.options.items():
        if option and phrase == option:
            return letter
    if not allow_contains:
        return None
    found = [
        (letter, option) for letter, option in context.options.items() if option and _contains(phrase, option)
    ]
    # An option contained in a longer found option ("propofol" in "propofol and fentanyl") is not a second hit.
    found = [
        (letter, option) for letter, option in found if not any(option != o and option in o for _, o in found)
    ]
    return found[0][0] if len(found) == 1 else None


def _letter_verdict(token: re.Match, rest: str, context: _Context) -> tuple[str, str | None]:
    """Judge a letter token followed by ``rest``: ("letter", X), ("poison", reason), ("skip", None) or ("word", None)."""
    letter = token.group("letter")
    labelled = bool(token.group("close"))
    if P.HEDGE.match(rest) or P.POST_NEGATION.match(rest):
        return "skip", None
    if not labelled and (letter.islower() or letter in "AI"):
        following = P.NEXT_WORD.match(rest)
        if following:
            word = following.group(1)
            uppercase_title = letter.isupper() and word[0].isupper()
            pronoun = letter in "Ii" and word.lower() in P.PRONOUN_VERBS
            if pronoun or (not uppercase_title and word.lower() not in P.CONNECTORS):
                return "word", None
        if letter.islower() and re.match(r"\.[A-Za-z]", rest):
            return "word", None  # "e.g."
    if P.AMBIGUOUS_FOLLOWER.match(rest):
        return "poison", "ambiguous"
    if letter.upper() not in context.letters:
        return "poison", "out_of_range"
    return "letter", letter.upper()


def _resolve_object(phrase: str, context: _Context) -> tuple[str | None, str] | None:
    """Resolve the text after an OBJECT statement: (letter, "matched"), (None, reason) or None (no statement)."""
    sentence_end = P.SENTENCE_END.search(phrase)
    sentence = phrase[: sentence_end.start()] if sentence_end else phrase
    body = sentence[P.LEAD_FILLER.match(sentence).end() :]
    if P.NEGATION_START.match(body):
        correction = P.CORRECTION.search(body)
        return _resolve_object(body[correction.end() :], context) if correction else None
    multi = P.MULTI_LETTER.match(body)
    if multi and set(multi.group()) <= set(context.letters) and len(set(multi.group())) > 1:
        return None, "ambiguous"
    token = P.LETTER_TOKEN.match(body)
    if token:
        kind, value = _letter_verdict(token, body[token.end() :], context)
        asks = sentence_end and sentence_end.group() in "?？" and not body[token.end() :].strip()
        if kind == "letter" and not asks:  # "The answer is B?" asks, it does not state
            return value, "matched"
        if kind == "poison":
            return None, value
        if kind == "skip" or (asks and kind == "letter"):
            return None
    clause_end = P.CLAUSE_END.search(body)
    for part in ([body[: clause_end.start()]] if clause_end else []) + [body]:
        letter = _match_option_text(part, context)
        if letter:
            return letter, "matched"
    return None


def _resolve_bare(
    fragment: str, context: _Context, allow_contains: bool, labelled: bool = False
) -> tuple[str | None, str] | None:
    """Resolve a clause that should be just a choice ("Option C", "(c)", "C项", "A and B" -> ambiguous).

    ``labelled`` (predicate subjects only) also accepts a letter with its option text: "B. Naloxone", "B (x)".
    """
    body = fragment[P.DISCOURSE.match(fragment).end() :].strip()
    if not body:
        return None
    if P.SUBJECT_LIST.fullmatch(body):
        return None, "ambiguous"
    bare = P.SUBJECT_LETTER.fullmatch(body) or (P.SUBJECT_LABELLED.fullmatch(body) if labelled else None)
    if bare:
        letter = (bare.group("letter") or bare.group("letter2")).upper()
        return (letter, "matched") if letter in context.letters else (None, "out_of_range")
    letter = _match_option_text(body, context, allow_contains=allow_contains)
    return (letter, "matched") if letter else None


# ------------------------------------------------------------------------------------------------ candidates


def _statement_candidates(text: str, context: _Context) -> list[_Candidate]:
    candidates = []
    clause_breaks = [m.end() for m in P.CLAUSE_BREAK.finditer(text)]  # sorted, for O(log n) clause lookups
    for pattern in P.STATEMENT_PATTERNS:
        if pattern.lang not in context.langs:
            continue
        for match in pattern.regex.finditer(text):
            rank = 1 if match.groupdict().get("final") else pattern.rank
            if pattern.shape == P.OBJECT:
                index = bisect.bisect_right(clause_breaks, match.start()) - 1
                clause_start = clause_breaks[index] if index >= 0 else 0
                before = text[max(clause_start, match.start() - 30) : match.start()]
                if P.PRE_NEGATION.search(before) or P.CONDITIONAL.search(text[clause_start : match.start()]):
                    continue
                resolved = _resolve_object(text[match.end() : match.end() + _PHRASE_WINDOW], context)
                position = match.end()
            else:
                if P.HEDGE.match(text, match.end()):
                    continue
                prefix = text[max(0, match.start() - 200) : match.start()]
                fragment = P.SUBJECT_DELIMITER.split(prefix)[-1]
                resolved = _resolve_bare(fragment, context, allow_contains=True, labelled=True)
                position = match.end()
            if resolved is not None:
                candidates.append(_Candidate(rank, position, pattern.name, resolved[0], resolved[1]))
    return candidates


def _boxed_candidates(text: str, context: _Context) -> list[_Candidate]:
    candidates = []
    for match in _BOXED.finditer(text):
        depth, index = 1, match.end()
        while index < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            index += 1
        if depth:
            continue  # unclosed (truncated) box
        content = text[match.end() : index - 1]
        resolved = _resolve_bare(content, context, allow_contains=False) or _resolve_object(content, context)
        if resolved is not None:
            candidates.append(_Candidate(1, index, "boxed", resolved[0], resolved[1]))
    return candidates


def _bare_candidates(text: str, context: _Context) -> list[_Candidate]:
    """Rank 4: the whole response, its last line, or its only option-label line ("C. Naloxone ...")."""
    candidates = []
    lines = [(m.start(), m.group()) for m in re.finditer(r"[^\n]+", text) if m.group().strip()]
    if not lines:
        return candidates
    whole = _resolve_bare(text.strip().rstrip(".。!！"), context, allow_contains=False)
    if whole is not None:
        return [_Candidate(4, len(text), "bare_response", whole[0], whole[1])]
    start, last_line = lines[-1]
    last = _resolve_bare(last_line.strip().rstrip(".。!！"), context, allow_contains=False)
    if last is not None:
        candidates.append(_Candidate(4, start + len(last_line), "bare_last_line", last[0], last[1]))
    plain = not P.LABEL_LINE.match(last_line) and not P.OPTION_LINE_NEGATION.search(last_line)
    if not candidates and context.options and plain:
        # "The patient needs naloxone.": the last line names exactly one option's text and negates nothing
        letter = _match_option_text(last_line, context)
        if letter:
            candidates.append(_Candidate(4, start + len(last_line), "option_text_line", letter, "matched"))
    labels = [(start, m) for start, line in lines if (m := P.LABEL_LINE.match(line))]
    label_letters = {(m.group("a") or m.group("b")).upper() for _, m in labels}
    inline = {m.group(1) for m in P.INLINE_LABEL.finditer(text)}  # "A: x. B: y." on one line counts too
    if len(label_letters) == 1 and len(inline | label_letters) == 1:  # several labels = options restated
        start, label = labels[-1]
        letter = label_letters.pop()
        reason = "matched" if letter in context.letters else "out_of_range"
        candidates.append(
            _Candidate(4, start + label.end(), "label_line", letter if reason == "matched" else None, reason)
        )
    return candidates


def _refusal_positions(text: str, context: _Context) -> list[int]:
    positions = []
    for lang in context.langs:
        for match in P.REFUSAL_PATTERNS[lang].finditer(text):
            before = text[max(0, match.start() - 12) : match.start()]
            if P.OPTION_LABEL_BEFORE.search(before):
                continue  # "E. None of the above" restates an option
            refusal = _normalize_option_text(match.group())
            if any(refusal in option for option in context.options.values()):
                continue  # a real option: matched as option text instead
            positions.append(match.start())
    return positions


def _decide(text: str, context: _Context) -> ChoiceResult:
    if "zh" in context.langs and not _CJK.search(text):  # Chinese patterns cannot match: skip their cost
        context = _Context(
            context.letters, context.options, tuple(lang for lang in context.langs if lang != "zh")
        )
    candidates = _boxed_candidates(text, context) + _statement_candidates(text, context)
    if not candidates:
        candidates = _bare_candidates(text, context)
    refusals = _refusal_positions(text, context)
    if not candidates:
        return ChoiceResult(None, "refusal" if refusals else "no_statement")
    best_rank = min(candidate.rank for candidate in candidates)
    chosen = max(
        (c for c in candidates if c.rank == best_rank), key=lambda c: (c.position, c.letter is not None)
    )
    if any(position >= chosen.position for position in refusals):
        return ChoiceResult(None, "refusal", chosen.rule, chosen.rank, chosen.position)
    return ChoiceResult(chosen.letter, chosen.reason, chosen.rule, chosen.rank, chosen.position)


# ------------------------------------------------------------------------------------------------ public API


def _make_context(num_choices: int, lang: str, options: Mapping[str, str] | Sequence[str] | None) -> _Context:
    if not isinstance(num_choices, int) or not 1 <= num_choices <= len(_ALL_LETTERS):
        raise ValueError(
            f"extract_choice: num_choices must be an int in 1..{len(_ALL_LETTERS)}, got {num_choices!r}"
        )
    # Both families for every language (see the module docstring); Chinese ones are skipped on non-CJK text.
    langs = {"auto": ("en", "zh"), "en": ("en", "zh"), "zh": ("zh", "en")}.get(lang)
    if langs is None:
        raise ValueError(f"extract_choice: lang must be 'auto', 'en' or 'zh', got {lang!r}")
    letters = _ALL_LETTERS[:num_choices]
    if options is None:
        option_map: dict[str, str] = {}
    elif isinstance(options, Mapping):
        option_map = {}
        for key, value in options.items():
            if not isinstance(key, str) or key.upper() not in letters:
                raise ValueError(f"extract_choice: option key {key!r} is not one of {list(letters)}")
            option_map[key.upper()] = _normalize_option_text(str(value))
    elif isinstance(options, Sequence) and not isinstance(options, str):
        if len(options) > num_choices:
            raise ValueError(f"extract_choice: {len(options)} options given for num_choices={num_choices}")
        option_map = {letter: _normalize_option_text(str(value)) for letter, value in zip(letters, options)}
    else:
        raise TypeError(
            f"extract_choice: options must be a dict letter->text or a list of texts, got {options!r}"
        )
    return _Context(letters, option_map, langs)


def explain_choice(
    text: str | None,
    num_choices: int = 4,
    lang: str = "auto",
    options: Mapping[str, str] | Sequence[str] | None = None,
) -> ChoiceResult:
    """Like ``extract_choice`` but also says which rule decided and why a None was returned."""
    context = _make_context(num_choices, lang, options)
    if text is None or not text.strip():
        return ChoiceResult(None, "no_statement")
    block = extract_answer_block(text)
    if block is not None:
        return _decide(_clean(block), context)
    if "</think>" in text:
        tail = _decide(_clean(text.rsplit("</think>", 1)[1]), context)
        if tail.reason != "no_statement":
            return tail
    return _decide(_clean(text), context)


def extract_choice(
    text: str | None,
    num_choices: int = 4,
    lang: str = "auto",
    options: Mapping[str, str] | Sequence[str] | None = None,
) -> str | None:
    """The option letter ("A".."J") a response states, or None when it states no usable choice.

    ``options`` (dict letter -> text, or texts in letter order) lets "the answer is naloxone" count.
    See the module docstring for the rules and the failure cases of the official extractor they fix.
    """
    return explain_choice(text, num_choices=num_choices, lang=lang, options=options).letter


def mcq_reward(
    completion: str | None,
    gold_letter: str,
    num_choices: int = 4,
    options: Mapping[str, str] | Sequence[str] | None = None,
    lang: str = "auto",
) -> float:
    """1.0 when the extracted letter equals ``gold_letter`` (case-insensitive), else 0.0 (abstaining is wrong)."""
    context = _make_context(num_choices, lang, options)
    if not isinstance(gold_letter, str) or gold_letter.strip().upper() not in context.letters:
        raise ValueError(
            f"mcq_reward: gold_letter {gold_letter!r} is not one of the {num_choices} option letters"
        )
    predicted = extract_choice(completion, num_choices=num_choices, lang=lang, options=options)
    return float(predicted == gold_letter.strip().upper())
