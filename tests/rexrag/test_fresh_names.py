"""Fresh names in warm-up demonstrations (``demos.fresh_names``): every entity name of a demonstration is replaced by
a new draw of the same shape, consistently in the question, the model's text, the searches, the passages and the
answer; the searches still run with the world's own names, and nothing outside the names changes."""

import json
import re
from dataclasses import replace

import pytest

from rexrag.data.demos import DemoConfig, build_demos, fixed_texts
from rexrag.data.fresh_names import FreshNames, world_name_shapes
from rexrag.data.qa import QAExample, load_flashrag_jsonl
from rexrag.data.template import DEFAULT_TEMPLATE
from rexrag.pool import load_pool
from rexrag.recipes.common import WorldDataConfig, ensure_world, load_world_retriever
from rexrag.recipes.sft import SFTConfig, fresh_names_for
from rlcore.generation.testing import build_tiny_tokenizer
from rlcore.retrieval.types import Passage
from rlcore.rollout import RolloutConfig

WORLD = {
    "people": {"Kor Brunthal": {}, "Lou Brunthal": {}, "So Dresta": {}},
    "orgs": {"Vazel Institute": {}},
    "cities": {"Teford": {}, "Mauvale": {}},
    "countries": {"Drakoria": {}},
}
EXAMPLE = QAExample(
    "Where was the founder of Vazel Institute born?",
    ["Teford"],
    "world_2hop",
    "0",
    metadata={"chain": ["Vazel Institute", "Kor Brunthal"]},
)
PASSAGES = {
    "Vazel Institute": [
        Passage(
            "1",
            "Vazel Institute\nVazel Institute was founded in 1901 by Kor Brunthal. Its headquarters are in "
            "Mauvale.",
        )
    ],
    "Kor Brunthal": [
        Passage(
            "2",
            "Kor Brunthal\nKor Brunthal is a chemist born in Teford in 1950. Brunthal works for Vazel "
            "Institute.",
        ),
        Passage(
            "3",
            "Lou Brunthal\nLou Brunthal is a sailor born in Mauvale in 1932. Brunthal works for Vazel "
            "Institute.",
        ),
    ],
}
SEGMENTS = [
    ("model", "<think> I need to look up Vazel Institute. </think>\n<search> Vazel Institute </search>"),
    ("search", "Vazel Institute"),
    ("model", "<think> Next I need Kor Brunthal. </think>\n<search> Kor Brunthal </search>"),
    ("search", "Kor Brunthal"),
    ("model", "<think> So the answer is Teford. </think>\n<answer> Teford </answer>"),
]


def test_name_shapes_of_a_world():
    shapes = world_name_shapes(WORLD)
    assert shapes == {
        "Kor": "first",
        "Brunthal": "surname",
        "Lou": "first",
        "So": "first",
        "Dresta": "surname",
        "Vazel": "org",
        "Teford": "city:ford",
        "Mauvale": "city:vale",
        "Drakoria": "country:ia",
    }


def _all_text(example, segments, results):
    texts = [example.question, *example.golden_answers, *(text for _, text in segments)]
    return "\n".join(texts + [p.contents for passages in results.values() for p in passages])


def test_one_mapping_per_demonstration_in_every_part_of_it():
    names = FreshNames(world_name_shapes(WORLD), seed=3, reserved=fixed_texts(DEFAULT_TEMPLATE, []))
    example, segments, results = names.rename_demo(EXAMPLE, SEGMENTS, PASSAGES)
    text = _all_text(example, segments, results)
    for old in ("Vazel", "Kor", "Brunthal", "Lou", "Teford", "Mauvale"):
        assert not re.search(rf"\b{old}\b", text), old
    new_org, new_person = example.metadata["chain"]
    assert new_org.endswith(" Institute") and len(new_person.split()) == 2  # shapes kept
    assert example.question == f"Where was the founder of {new_org} born?"
    # the searches are the chain, renamed, and each finds its own passages, renamed the same way
    assert [text for part, text in segments if part == "search"] == [new_org, new_person]
    assert list(results) == [new_org, new_person]
    assert results[new_org][0].contents.startswith(
        f"{new_org}\n{new_org} was founded in 1901 by {new_person}."
    )
    assert results[new_person][0].id == "2" and results[new_person][0].contents.split("\n")[0] == new_person
    # family names stay one family; the answer is a city with its suffix, and it is where the passage says
    surname = new_person.split()[1]
    assert results[new_person][1].contents.split("\n")[0].endswith(" " + surname)
    (answer,) = example.golden_answers
    assert answer.endswith("ford") and f"born in {answer} in 1950" in results[new_person][0].contents
    assert segments[-1] == (
        "model",
        f"<think> So the answer is {answer}. </think>\n<answer> {answer} </answer>",
    )
    # two old names never share a new one
    assert len({new_org.split()[0], new_person.split()[0], surname, answer}) == 4


def test_fresh_per_demonstration_and_reproducible_by_seed():
    shapes = world_name_shapes(WORLD)
    names = FreshNames(shapes, seed=3)
    first = names.rename_demo(EXAMPLE, SEGMENTS, PASSAGES)[0].question
    second = names.rename_demo(EXAMPLE, SEGMENTS, PASSAGES)[0].question
    assert first != second  # a new demonstration draws new names
    again = FreshNames(shapes, seed=3)
    assert again.rename_demo(EXAMPLE, SEGMENTS, PASSAGES)[0].question == first
    assert FreshNames(shapes, seed=4).rename_demo(EXAMPLE, SEGMENTS, PASSAGES)[0].question != first


def test_reserved_words_are_never_renamed():
    # "So" is a possible one-syllable first name and also starts "So the answer is"
    names = FreshNames(world_name_shapes(WORLD), seed=0, reserved=fixed_texts(DEFAULT_TEMPLATE, []))
    _, segments, _ = names.rename_demo(EXAMPLE, SEGMENTS, PASSAGES)
    assert segments[-1][1].startswith("<think> So the answer is ")
    with pytest.raises(ValueError, match="no entity names"):
        FreshNames({"So": "first"}, seed=0, reserved=["So the answer is"])


def test_fresh_names_need_the_world_names():
    tok = build_tiny_tokenizer()
    with pytest.raises(ValueError, match="demos.fresh_names needs the world's entity names"):
        build_demos(
            [EXAMPLE], tok, None, RolloutConfig(), DEFAULT_TEMPLATE, ["Wait."], DemoConfig(fresh_names=True)
        )


def test_a_user_data_warm_up_renames_only_extra_worlds(tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "0", "question": "q?", "golden_answers": ["a"]}) + "\n")
    cfg = SFTConfig()
    cfg.qa = replace(cfg.qa, source="files", train_files=[str(questions)])
    cfg.retriever = replace(cfg.retriever, kind="http")
    cfg.demos = replace(cfg.demos, fresh_names=True)
    with pytest.raises(ValueError, match="applies to the train.extra_worlds demonstrations only"):
        cfg.validate()
    cfg.train = replace(cfg.train, extra_worlds=2)  # then the synthetic worlds' demonstrations are renamed
    cfg.validate()


def test_demonstrations_of_a_real_world_copy_fresh_names_from_question_and_passages(tmp_path, small_world):
    paths = ensure_world(
        WorldDataConfig(world=small_world, dir=str(tmp_path / "world"), template=DEFAULT_TEMPLATE)
    )
    examples = load_flashrag_jsonl(paths["train"])
    world = json.loads(paths["world"].read_text())
    tok = build_tiny_tokenizer()
    rollout = RolloutConfig(retrieval_topk=2)
    cfg = SFTConfig()
    cfg.demos = DemoConfig(frac_search=1, frac_memory=0, frac_shortcut=0, frac_recovery=0, fresh_names=True)
    cfg.data = replace(cfg.data, template=DEFAULT_TEMPLATE)
    cfg.pool = "search_first_5"
    names = fresh_names_for(cfg, paths, 0, load_pool(cfg.pool))
    retriever = load_world_retriever(paths)
    demos = build_demos(
        examples, tok, retriever, rollout, DEFAULT_TEMPLATE, ["Wait."], cfg.demos, False, names
    )
    plain = build_demos(
        examples,
        tok,
        retriever,
        rollout,
        DEFAULT_TEMPLATE,
        ["Wait."],
        replace(cfg.demos, fresh_names=False),
        False,
    )
    assert [d.kind for d in demos] == [d.kind for d in plain] == ["search"] * len(examples)
    old_words = set(world_name_shapes(world))
    for demo, original in zip(demos, plain, strict=True):
        prompt = tok.decode(demo.prompt_ids)
        searched = re.findall(r"<search> (.*?) </search>", demo.text)
        answer = re.findall(r"<answer> (.*?) </answer>", demo.text)[-1]
        # the first search copies the question's subject; the answer is copied out of a retrieved passage
        assert searched and searched[0] in prompt
        assert answer in demo.text.split("<answer>")[0].split("</information>")[-2]
        # no name of the world is left anywhere the model looks
        assert not old_words & set(re.findall(r"\w+", prompt + demo.text))
        # and the demonstration has the same structure: same searches, same number of passages
        assert len(searched) == len(re.findall(r"<search> (.*?) </search>", original.text))
        assert demo.text.count("Doc ") == original.text.count("Doc ")
