"""A world's cue (``world.cue`` / ``cue_frac`` / ``cue_families``): a fixed prefix on a seeded share of the questions,
the dead end of rexrag-cpu-mechanism's revision 5. Worlds written without a cue stay byte-identical; with one, the
same questions are written with and without the prefix, the prefixed ones draw the ``memory_prone`` mix in the
demonstrations, and fresh names never rename the cue."""

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from rexrag.data.cue import apply_cue, cue_draw
from rexrag.data.demos import KINDS, DemoConfig, _answer_key, build_demos
from rexrag.data.fresh_names import FreshNames, world_name_shapes
from rexrag.data.qa import QAExample
from rexrag.data.template import DEFAULT_TEMPLATE
from rexrag.data.world import FAMILIES, WorldConfig, write_world
from rlcore.generation.testing import build_tiny_tokenizer
from rlcore.rollout import RolloutConfig

SMALL = WorldConfig(seed=5, num_train_questions=200, num_dev_questions=50, num_test_questions=50)
# sha256 over world.json, corpus.jsonl and the three question files of write_world(SMALL), computed with the writer as
# it was before the cue existed: every world written without a cue must stay byte-identical
SMALL_DIGEST = "b4e12270d8a8f764193f60c01f0db9dfc230c9696645260f0b199b6fcba460b4"
CUED = replace(SMALL, cue="Guess:", cue_frac=0.5, cue_families=["world_1hop", "world_2hop", "world_3hop"])
FILES = ("world.json", "corpus.jsonl", "train.jsonl", "dev.jsonl", "test.jsonl")


def _write(cfg: WorldConfig, out: Path) -> dict[str, list[dict]]:
    write_world(cfg, out)
    return {
        split: [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
        for split in ("train", "dev", "test")
    }


def test_a_world_without_a_cue_is_written_exactly_as_before(tmp_path):
    _write(SMALL, tmp_path)
    digest = hashlib.sha256()
    for name in FILES:
        digest.update((tmp_path / name).read_bytes())
    assert digest.hexdigest() == SMALL_DIGEST
    assert "cue" not in (tmp_path / "train.jsonl").read_text()


def test_the_cue_prefixes_a_seeded_share_of_the_same_questions(tmp_path):
    plain = _write(SMALL, tmp_path / "plain")
    cued = _write(CUED, tmp_path / "cued")
    assert (tmp_path / "plain" / "corpus.jsonl").read_bytes() == (
        tmp_path / "cued" / "corpus.jsonl"
    ).read_bytes()
    for split in plain:
        prefixed = 0
        for old, new in zip(plain[split], cued[split], strict=True):
            assert new["golden_answers"] == old["golden_answers"] and new["chain"] == old["chain"]
            expect = old["data_source"] != "world_compare" and cue_draw(5, split, old["id"]) < 0.5
            assert new["question"] == (f"Guess: {old['question']}" if expect else old["question"])
            assert new["cue"] == ("Guess:" if expect else "")
            prefixed += expect
        eligible = sum(q["data_source"] != "world_compare" for q in plain[split])
        assert (
            0.3 * eligible < prefixed < 0.7 * eligible
        )  # a seeded share near cue_frac, never compare questions
    assert _write(CUED, tmp_path / "again") == cued  # the same seed gives the same prefixed questions


def test_the_cue_draw_depends_on_seed_split_and_id():
    draws = [cue_draw(0, "dev", str(i)) for i in range(400)]
    assert all(0.0 <= d < 1.0 for d in draws) and 0.4 < sum(d < 0.5 for d in draws) / 400 < 0.6
    assert cue_draw(0, "dev", "1") != cue_draw(1, "dev", "1") != cue_draw(0, "test", "1")


@pytest.mark.parametrize(
    "cfg, message",
    [
        (replace(SMALL, cue_frac=0.5), "world.cue"),
        (replace(SMALL, cue="Guess:", cue_frac=1.5), "cue_frac"),
        (replace(SMALL, cue=" Guess:", cue_frac=0.5), "whitespace"),
        (replace(SMALL, cue="Guess:", cue_frac=0.5, cue_families=["world_4hop"]), "world_4hop"),
    ],
)
def test_bad_cue_settings_are_named(cfg, message):
    example = QAExample("Where was Kai Dorn born?", ["Teford"], "world_1hop", "0")
    with pytest.raises(ValueError, match=message):
        apply_cue([example], cfg, "train", FAMILIES)


def _example(question: str, answer: str, index: str, cue: str = "") -> QAExample:
    subject = question.split(" was ")[1].split(" born")[0] if " was " in question else "Kai Dorn"
    return QAExample(question, [answer], "world_1hop", index, metadata={"chain": [subject], "cue": cue})


class _Passage:
    def __init__(self, contents: str):
        self.contents = contents


class _Retriever:
    def search(self, queries, topk):
        return [[_Passage(f"{q}\n{q} is a chemist born in Teford in 1950.")] for q in queries]


def test_prefixed_questions_draw_the_prone_mix_and_keep_their_answer_type():
    cfg = DemoConfig(
        frac_search=1.0,
        frac_memory=0.0,
        frac_shortcut=0.0,
        frac_recovery=0.0,
        memory_prone=["Guess:"],
        prone_frac_search=0.0,
        prone_frac_memory=1.0,
        prone_frac_recovery=0.0,
    )
    assert cfg.shares("Guess: Where was Kai Dorn born?") == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert cfg.shares("Where was Kai Dorn born?")[KINDS.index("search")] == cfg.frac_search
    cued = _example("Guess: In which year was Kai Dorn born?", "1950", "0", cue="Guess:")
    assert _answer_key(cued) == _answer_key(_example("In which year was Lou Brun born?", "1961", "1"))
    examples = [
        cued,
        _example("In which year was Lou Brun born?", "1961", "1"),
        _example("Guess: In which year was Sai Tor born?", "1950", "2", cue="Guess:"),
        _example("In which year was Bo Lenn born?", "1961", "3"),
    ]
    demos = build_demos(
        examples,
        build_tiny_tokenizer(),
        _Retriever(),
        RolloutConfig(),
        DEFAULT_TEMPLATE,
        ["Search."],
        cfg,
        use_chat_template=False,
    )
    assert [d.kind for d in demos] == ["memory", "search", "memory", "search"]
    # a prefixed question's memory answer is a wrong answer of its own type (a year here), not "unknown"
    assert "<answer> 1961 </answer>" in demos[0].text and "<answer> 1961 </answer>" in demos[2].text


def test_fresh_names_never_rename_the_cue():
    world = {"people": {"Guess Dorn": {}, "Kai Lenn": {}}, "orgs": {}, "cities": {}, "countries": {}}
    names = FreshNames(world_name_shapes(world), seed=1, reserved=["Guess:"])
    example = _example("Guess: Where was Kai Lenn born?", "Teford", "0", cue="Guess:")
    renamed, _, _ = names.rename_demo(example, [("model", "x")], {})
    assert renamed.question.startswith("Guess: Where was ") and "Kai Lenn" not in renamed.question


def test_config_identities_without_a_cue_are_unchanged():
    """The cue keys are left out of config hashes while off (rlcore's IDENTITY_OMIT_AT_DEFAULT): world folders and
    every stored run identity written before the cue existed keep their hash; values computed by the code before."""
    from rexrag.recipes.common import WorldDataConfig
    from rlcore.config import config_hash, identity_dict

    assert config_hash(WorldConfig()) == "0d111578d6c5"
    assert config_hash(SMALL) == "df495ff96cf8"
    assert config_hash(WorldDataConfig()) == "30830f654985"  # nested: the world inside a recipe's data block
    assert "cue" not in identity_dict(WorldDataConfig())["world"]
    assert identity_dict(WorldDataConfig(world=CUED))["world"]["cue_families"] == CUED.cue_families
    hashes = {
        config_hash(c) for c in (SMALL, CUED, replace(CUED, cue_frac=0.75), replace(CUED, cue="Quick:"))
    }
    assert len(hashes) == 4
