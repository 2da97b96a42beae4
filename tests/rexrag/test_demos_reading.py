"""Revision 7's demonstration options: a final thought that quotes the passage (demos.quote), extra copies of some
question types (demos.extra_prefixes / extra_copies) and the distractor grouping (demos.distractor_key). Off, each
leaves every earlier warm-up's demonstrations and config hash as they were."""

import pytest
from demos_cases import DOUBT

from rexrag.data.demos import DemoConfig, _answer_key, build_demos, passage_quote
from rexrag.data.qa import QAExample
from rexrag.data.template import DEFAULT_TEMPLATE
from rexrag.recipes.sft import SFTConfig
from rlcore.config import config_hash, identity_dict
from rlcore.generation.testing import build_tiny_tokenizer
from rlcore.rollout import RolloutConfig

HOP = "Next I need {answer}."
FACTS = {
    "Lou Brun": "Lou Brun is a baker born in Gunby in 1922. Brun works for Kor Works.",
    "Kai Dorn": "Kai Dorn is a sailor born in Teford in 1950. Dorn works for Kor Works.",
    "Kor Works": "Kor Works was founded in 1850 by Mil Shaith. Its headquarters are in Gunby.",
}


def question(text, answer, chain, source="world_1hop", cue=""):
    shown = f"{cue} {text}" if cue else text
    return QAExample(shown, [answer], source, text, metadata={"chain": chain, "cue": cue})


YEAR = question("In which year was Lou Brun born?", "1922", ["Lou Brun"], cue="Guess:")
FOUNDER = question("Who founded Kor Works?", "Mil Shaith", ["Kor Works"])
CITY = question("Where was Kai Dorn born?", "Teford", ["Kai Dorn"])


class Facts:
    """The passage of each queried entity first, then another entity's (top-k BM25 returns neighbours too)."""

    def search(self, queries, k):
        others = sorted(FACTS)
        return [
            [{"contents": f"{q}\n{FACTS[q]}"}]
            + [{"contents": f"{o}\n{FACTS[o]}"} for o in others if o != q][: k - 1]
            for q in queries
        ]


def build(examples, **demos):
    cfg = DemoConfig(
        frac_search=1, frac_memory=0, frac_shortcut=0, frac_recovery=0, final_thought=HOP, **demos
    )
    return build_demos(
        examples,
        build_tiny_tokenizer(),
        Facts(),
        RolloutConfig(retrieval_topk=2),
        DEFAULT_TEMPLATE,
        [DOUBT],
        cfg,
        False,
    )


def test_the_quote_is_the_passage_words_before_the_answer():
    passages = [
        {"contents": "Kai Dorn\nKai Dorn ... born in Teford in 1950."},
        {"contents": "Lou Brun\n" + FACTS["Lou Brun"]},
    ]
    assert passage_quote("1922", passages, 2) == "Gunby in"  # the first passage holding the answer
    assert passage_quote("Mil Shaith", [{"contents": "Kor Works\n" + FACTS["Kor Works"]}], 1) == "by"
    assert (
        passage_quote("Gunby", [{"contents": "Gunby\nGunby is a city."}], 1) == ""
    )  # the title line is not text
    assert passage_quote("192", passages, 2) == ""  # a whole word only: "1922" does not hold "192"


def test_quoted_questions_write_the_span_in_the_thought_and_the_answer_alone():
    year, founder, city = build([YEAR, FOUNDER, CITY], quote={"In which year was": 2, "Who founded": 1})
    # the cue is not part of the beginning the quote keys on
    assert year.text.endswith("<think> Next I need Gunby in 1922. </think>\n<answer> 1922 </answer>")
    assert founder.text.endswith("<think> Next I need by Mil Shaith. </think>\n<answer> Mil Shaith </answer>")
    assert city.text.endswith("<think> Next I need Teford. </think>\n<answer> Teford </answer>")  # not listed
    # the quote is model-written text: trained
    tok = build_tiny_tokenizer()
    trained = tok.decode([t for t, m in zip(year.response_ids, year.loss_mask, strict=True) if m])
    assert "Next I need Gunby in 1922." in trained
    # wrong final answers are never quoted: a shortcut of a 2-hop founder question keeps its plain thought
    two_hop = question(
        "Who founded the organization that Lou Brun works for?",
        "Mil Shaith",
        ["Lou Brun", "Kor Works"],
        "world_2hop",
    )
    cfg = DemoConfig(
        frac_search=0,
        frac_memory=0,
        frac_shortcut=1,
        frac_recovery=0,
        final_thought=HOP,
        quote={"Who founded": 1},
    )
    (shortcut,) = build_demos(
        [two_hop], tok, Facts(), RolloutConfig(retrieval_topk=2), DEFAULT_TEMPLATE, [DOUBT], cfg, False
    )
    assert shortcut.kind == "shortcut" and "<think> Next I need Kor Works. </think>" in shortcut.text


def test_extra_copies_come_after_the_others_and_keep_their_draws():
    mix = dict(frac_search=0.5, frac_memory=0.3, frac_shortcut=0.0, frac_recovery=0.2, seed=5)
    tok = build_tiny_tokenizer()
    examples = [YEAR, FOUNDER, CITY] * 30

    def demos(**extra):
        return build_demos(
            examples,
            tok,
            Facts(),
            RolloutConfig(retrieval_topk=2),
            DEFAULT_TEMPLATE,
            [DOUBT],
            DemoConfig(**mix, **extra),
            False,
        )

    plain = demos()
    more = demos(extra_prefixes=["In which year was", "Who founded"], extra_copies=2)
    assert len(more) == len(plain) + 2 * 60  # 30 year and 30 founder questions, twice more each
    assert [d.text for d in more[: len(plain)]] == [d.text for d in plain]
    asked = [tok.decode(d.prompt_ids) for d in more[len(plain) :]]
    assert all("In which year was" in q or "Who founded" in q for q in asked)
    assert len({d.kind for d in more[len(plain) :]}) > 1  # each copy draws its own kind
    assert [d.text for d in demos(extra_prefixes=["Who founded"])] == [d.text for d in plain]  # 0 copies: off


def test_first_words_split_a_wording_by_the_subject_and_the_template_does_not():
    other = question("Where was Lou Brun born?", "Gunby", ["Lou Brun"])
    # three words reach into the subject: one group per first name, so "Where was Kai" has no other answer
    assert _answer_key(CITY) == ("world_1hop", "Where was Kai") != _answer_key(other)
    assert (
        _answer_key(CITY, "template")
        == ("world_1hop", "Where was {} born?")
        == _answer_key(other, "template")
    )
    assert _answer_key(YEAR, "template") == (
        "world_1hop",
        "In which year was {} born?",
    )  # the cue is left out
    compare = question(
        "Who was born earlier, Kai Dorn or Lou Brun?", "Lou Brun", ["Kai Dorn", "Lou Brun"], "world_compare"
    )
    assert _answer_key(compare, "template")[1] == "Who was born earlier, {} or {}?"
    own = QAExample("Who wrote the book?", ["x"], "nq", "9")  # no chain: the first three words
    assert _answer_key(own, "template") == _answer_key(own) == ("nq", "Who wrote the")
    memory = dict(frac_search=0, frac_memory=1, frac_shortcut=0, frac_recovery=0, seed=1)
    tok = build_tiny_tokenizer()

    def answers(**key):
        demos = build_demos(
            [CITY, other],
            tok,
            Facts(),
            RolloutConfig(),
            DEFAULT_TEMPLATE,
            [DOUBT],
            DemoConfig(**memory, **key),
            False,
        )
        return [d.text.split("<answer> ")[1].split(" </answer>")[0] for d in demos]

    assert answers() == ["unknown", "unknown"]  # the default, as every stored warm-up drew it
    assert answers(distractor_key="template") == ["Gunby", "Teford"]  # a confident wrong city


def test_the_options_are_left_out_of_old_identities_and_checked():
    off = DemoConfig(seed=3)
    on = DemoConfig(
        seed=3,
        quote={"In which year was": 2},
        extra_prefixes=["Who"],
        extra_copies=1,
        distractor_key="template",
    )
    for name in ("quote", "extra_prefixes", "extra_copies", "distractor_key"):
        assert name not in identity_dict(off) and name in identity_dict(on)
    assert config_hash(on) != config_hash(off)
    for demos, match in (
        (DemoConfig(distractor_key="words"), "demos.distractor_key must be one of"),
        (DemoConfig(extra_copies=-1), "demos.extra_copies must be >= 0"),
        (DemoConfig(quote={"In which year was": 0}), "every demos.quote count >= 1"),
    ):
        with pytest.raises(ValueError, match=match):
            SFTConfig(demos=demos).validate()
