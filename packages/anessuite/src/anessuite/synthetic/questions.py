"""Multiple-choice questions on the synthetic world, at three levels, in English and Chinese, with a
step-by-step reasoning chain (AnesR1-style) for each.

Question templates come in two disjoint sets: ``train`` (RLVR / SFT data) and ``heldout`` (the benchmark), so
the benchmark tests the world's facts and rules in wording the model never trained on.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from anessuite.mcq import LETTERS, MCQItem
from anessuite.synthetic.world import CLASSES, EFFECTS, ORGANS, Condition, Drug, World

__all__ = ["make_question", "QUESTION_KINDS", "answer_line"]

TEMPLATES: dict[str, dict[str, dict[str, list[str]]]] = {
    "class": {
        "en": {
            "train": [
                "Which drug class does {drug} belong to?",
                "{drug} is classified as which type of agent?",
            ],
            "heldout": ["A colleague mentions {drug}. To which pharmacological class does it belong?"],
        },
        "zh": {
            "train": ["{drug}属于哪一类药物？", "{drug}被归为哪一类药物？"],
            "heldout": ["同事提到了{drug}，它属于哪一药理学类别？"],
        },
    },
    "organ": {
        "en": {
            "train": ["Which route mainly clears {drug}?", "{drug} is eliminated mainly by what?"],
            "heldout": ["Clearance of {drug} depends chiefly on which of the following?"],
        },
        "zh": {
            "train": ["{drug}主要通过什么清除？", "{drug}主要经由哪里消除？"],
            "heldout": ["{drug}的清除主要依赖于以下哪一项？"],
        },
    },
    "effect": {
        "en": {
            "train": [
                "What is the characteristic adverse effect of {drug}?",
                "Which adverse effect is typical of {drug}?",
            ],
            "heldout": ["After giving {drug}, which complication should the anesthetist watch for most?"],
        },
        "zh": {
            "train": ["{drug}的特征性不良反应是什么？", "{drug}典型的不良反应是哪一项？"],
            "heldout": ["给予{drug}后，麻醉医师最应警惕哪种并发症？"],
        },
    },
    "procedure": {
        "en": {
            "train": [
                "Under which drug class is the {procedure} performed?",
                "The {procedure} requires which class of drug?",
            ],
            "heldout": ["A patient is booked for the {procedure}. Which class of agent does it call for?"],
        },
        "zh": {
            "train": ["{procedure}在哪一类药物下进行？", "{procedure}需要使用哪一类药物？"],
            "heldout": ["一名患者预约了{procedure}，该操作需要哪一类药物？"],
        },
    },
    "avoid": {
        "en": {
            "train": [
                "A patient has {condition}. Which of the following drugs must be avoided?",
                "Which drug is contraindicated in a patient with {condition}?",
            ],
            "heldout": ["You are anesthetizing someone with {condition}. Which agent below is unsafe?"],
        },
        "zh": {
            "train": ["患者患有{condition}。以下哪种药物必须避免使用？", "{condition}患者禁用以下哪种药物？"],
            "heldout": ["你正在为一名{condition}患者实施麻醉，下列哪种药物不安全？"],
        },
    },
    "decide": {
        "en": {
            "train": [
                "A patient with {condition} is scheduled for the {procedure}. Which drug is the most "
                "appropriate choice?",
                "Which drug should be used for the {procedure} in a patient with {condition}?",
            ],
            "heldout": [
                "Plan the anesthetic: the {procedure} in a patient who has {condition}. Which agent "
                "do you choose?"
            ],
        },
        "zh": {
            "train": [
                "一名{condition}患者拟行{procedure}。最合适的药物是哪一种？",
                "{condition}患者行{procedure}应选用哪种药物？",
            ],
            "heldout": ["请制定麻醉方案：{condition}患者接受{procedure}，你会选择哪种药物？"],
        },
    },
}
LEVEL_OF = {
    "class": "system1",
    "organ": "system1",
    "effect": "system1",
    "procedure": "system1",
    "avoid": "system1.x",
    "decide": "system2",
}
QUESTION_KINDS = tuple(LEVEL_OF)


def answer_line(letter: str, lang: str) -> str:
    return f"答案：{letter}" if lang == "zh" else f"Answer: {letter}"


def _label(table: dict[str, tuple[str, str]], key: str, lang: str) -> str:
    return table[key][1] if lang == "zh" else table[key][0]


def _rule_text(condition: Condition, lang: str) -> str:
    if condition.rule_kind == "organ":
        organ = _label(ORGANS, condition.rule_target, lang)
        return f"须避免经{organ}清除的药物" if lang == "zh" else f"drugs cleared by {organ} must be avoided"
    effect = _label(EFFECTS, condition.rule_target, lang)
    return f"须避免可引起{effect}的药物" if lang == "zh" else f"drugs that can cause {effect} must be avoided"


def _drug_feature(drug: Drug, condition: Condition, lang: str) -> str:
    if condition.rule_kind == "organ":
        organ = _label(ORGANS, drug.organ, lang)
        return (
            f"{drug.name(lang)}经{organ}清除" if lang == "zh" else f"{drug.name(lang)} is cleared by {organ}"
        )
    effect = _label(EFFECTS, drug.effect, lang)
    return f"{drug.name(lang)}可引起{effect}" if lang == "zh" else f"{drug.name(lang)} can cause {effect}"


def _shuffle(
    rng: random.Random, correct: str, distractors: list[str]
) -> tuple[tuple[tuple[str, str], ...], str]:
    texts = [correct, *distractors]
    rng.shuffle(texts)
    options = tuple(zip(LETTERS, texts))
    return options, LETTERS[texts.index(correct)]


def _attribute(world: World, rng: random.Random, kind: str, lang: str):
    """System 1: one fact about a drug or a procedure."""
    if kind == "procedure":
        procedure = rng.choice(world.procedures)
        table, key, subject = CLASSES, procedure.drug_class, {"procedure": procedure.name(lang)}
        why = (
            f"{procedure.name(lang)}在{_label(CLASSES, key, lang)}下进行。"
            if lang == "zh"
            else f"The {procedure.name(lang)} is performed under a {_label(CLASSES, key, lang)}."
        )
    else:
        drug = rng.choice(world.drugs)
        table, attr = {
            "class": (CLASSES, "drug_class"),
            "organ": (ORGANS, "organ"),
            "effect": (EFFECTS, "effect"),
        }[kind]
        key, subject = getattr(drug, attr), {"drug": drug.name(lang)}
        value = _label(table, key, lang)
        why = {
            ("class", "en"): f"{drug.name_en} is a {value}.",
            ("class", "zh"): f"{drug.name_zh}属于{value}。",
            ("organ", "en"): f"{drug.name_en} is cleared by {value}.",
            ("organ", "zh"): f"{drug.name_zh}经{value}清除。",
            ("effect", "en"): f"The characteristic adverse effect of {drug.name_en} is {value}.",
            ("effect", "zh"): f"{drug.name_zh}的特征性不良反应是{value}。",
        }[(kind, lang)]
    others = [k for k in table if k != key]
    distractors = [_label(table, k, lang) for k in rng.sample(others, k=3)]
    return subject, _label(table, key, lang), distractors, why


def _avoid(world: World, rng: random.Random, lang: str):
    """System 1.x: apply one condition's rule to four drugs' known properties."""
    while True:
        condition = rng.choice(world.conditions)
        excluded = [d for d in world.drugs if condition.excludes(d)]
        allowed = [d for d in world.drugs if not condition.excludes(d)]
        if excluded and len(allowed) >= 3:
            break
    target = rng.choice(excluded)
    others = rng.sample(allowed, k=3)
    rule = _rule_text(condition, lang)
    facts = ("；".join if lang == "zh" else "; ".join)(
        _drug_feature(d, condition, lang) for d in [*others, target]
    )
    if lang == "zh":
        why = f"{condition.name_zh}患者{rule}。{facts}。只有{target.name_zh}违反这一原则，应避免使用。"
    else:
        why = f"In {condition.name_en}, {rule}. {facts}. Only {target.name_en} breaks this rule, so it must be avoided."
    return {"condition": condition.name(lang)}, target.name(lang), [d.name(lang) for d in others], why


def draw_decision(world: World, rng: random.Random):
    """A System 2 item's draw: (procedure, condition, answer, trap, two drugs outside the class).

    The procedure needs a class with one drug the condition excludes (the trap) and one it allows (the answer); the
    two other options are drugs of other classes the condition allows. The order of ``rng`` calls is part of every
    generated file (their hashes are pinned in the tests).
    """
    while True:
        procedure = rng.choice(world.procedures)
        condition = rng.choice(world.conditions)
        candidates = world.by_class[procedure.drug_class]
        excluded = [d for d in candidates if condition.excludes(d)]
        allowed = [d for d in candidates if not condition.excludes(d)]
        if excluded and allowed:
            break
    answer, trap = rng.choice(allowed), rng.choice(excluded)
    outside = rng.sample(
        [d for d in world.drugs if d.drug_class != procedure.drug_class and not condition.excludes(d)], k=2
    )
    return procedure, condition, answer, trap, outside


def _decide(world: World, rng: random.Random, lang: str):
    """System 2: procedure -> required class -> its drugs -> drop the one the condition excludes."""
    procedure, condition, answer, trap, outside = draw_decision(world, rng)
    klass = _label(CLASSES, procedure.drug_class, lang)
    rule = _rule_text(condition, lang)
    if lang == "zh":
        why = (
            f"{procedure.name_zh}需要{klass}。选项中属于{klass}的是{answer.name_zh}和{trap.name_zh}，"
            f"{outside[0].name_zh}和{outside[1].name_zh}不属于{klass}。{condition.name_zh}患者{rule}，"
            f"而{_drug_feature(trap, condition, lang)}，{_drug_feature(answer, condition, lang)}。"
            f"因此应选择{answer.name_zh}。"
        )
    else:
        why = (
            f"The {procedure.name_en} requires a {klass}. Among the options, {answer.name_en} and "
            f"{trap.name_en} are {klass}s; {outside[0].name_en} and {outside[1].name_en} are not. In "
            f"{condition.name_en}, {rule}: {_drug_feature(trap, condition, lang)}, while "
            f"{_drug_feature(answer, condition, lang)}. So {answer.name_en} is the appropriate choice."
        )
    subject = {"procedure": procedure.name(lang), "condition": condition.name(lang)}
    return subject, answer.name(lang), [trap.name(lang), outside[0].name(lang), outside[1].name(lang)], why


_BUILDERS: dict[str, Callable] = {
    "class": lambda w, r, lang: _attribute(w, r, "class", lang),
    "organ": lambda w, r, lang: _attribute(w, r, "organ", lang),
    "effect": lambda w, r, lang: _attribute(w, r, "effect", lang),
    "procedure": lambda w, r, lang: _attribute(w, r, "procedure", lang),
    "avoid": _avoid,
    "decide": _decide,
}


def make_question(
    world: World,
    rng: random.Random,
    kind: str,
    lang: str,
    split: str,
    qid: str,
    templates: dict[str, dict[str, dict[str, list[str]]]] | None = None,
) -> MCQItem:
    """One MCQ of ``kind`` in ``lang`` from the ``split`` template set ("train" or "heldout") of ``templates``
    (default :data:`TEMPLATES`).

    ``metadata`` holds ``reasoning`` (the chain ending in the answer line), ``kind`` and ``split``.
    """
    subject, correct, distractors, why = _BUILDERS[kind](world, rng, lang)
    template = rng.choice((TEMPLATES if templates is None else templates)[kind][lang][split])
    options, letter = _shuffle(rng, correct, distractors)
    reasoning = f"{why}\n{answer_line(letter, lang)}"
    return MCQItem(
        id=qid,
        question=template.format(**subject),
        options=options,
        answer=letter,
        language=lang,
        level=LEVEL_OF[kind],
        source=f"synthetic-{split}",
        metadata={"reasoning": reasoning, "kind": kind, "split": split},
    )
