"""``world.exclude_questions``: a world that leaves out question families or single relations. Off by default, and
every world written without it stays byte-identical by seed; on, no split asks an excluded question, the split
sizes and the one-question-per-subject limit still hold, and a family left out gives its share to the others."""

import hashlib
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from rexrag.data.world import (
    FAMILIES,
    FAMILY_RELATIONS,
    QUESTION_KINDS,
    SPLITS,
    WorldConfig,
    build_world,
    generate_questions,
    write_world,
)
from rexrag.recipes.train import RexRagTrainConfig
from rlcore.config import ConfigError, config_hash, load_config

ROOT = Path(__file__).resolve().parents[2]
MECHANISM = ROOT / "experiments/rexrag-cpu-mechanism"
# world 0 of rexrag-cpu-mechanism as registered up to revision 7 (cue on 75% of the 1-3-hop questions, one
# question per subject); sha256 over world.json, corpus.jsonl and the three question files, computed with the
# generator before exclude_questions existed
WORLD0_R7 = WorldConfig(
    seed=0,
    num_countries=8,
    num_cities=80,
    num_orgs=270,
    num_people=900,
    num_surnames=450,
    num_train_questions=600,
    num_dev_questions=100,
    num_test_questions=150,
    frac_1hop=0.45,
    frac_2hop=0.3,
    frac_3hop=0.15,
    frac_compare=0.1,
    max_questions_per_subject=1,
    cue="Guess:",
    cue_frac=0.75,
    cue_families=["world_1hop", "world_2hop", "world_3hop"],
)
WORLD0_R7_DIGEST = "4f5f4315f4db95d2c22820fec2c0e0aee7f291140c8e01766ae9468a51116abd"
FILES = ("world.json", "corpus.jsonl", "train.jsonl", "dev.jsonl", "test.jsonl")
# revision 8's exclusion: the relations the warm-up does not read from a passage, and the comparisons
R8 = ["birth_year", "founder", "employer.founder", "world_compare"]


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in FILES:
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def _read(folder: Path) -> dict[str, list[dict]]:
    return {
        split: [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]
        for split in SPLITS
    }


def _relation(question: str, answer: str, world) -> str:
    """The relation a question asks, recovered from its wording and its answer (independent of the generator)."""
    text = question.removeprefix("Guess: ")
    if " earlier, " in text:
        return "compare.birth_year" if text.startswith("Who was born") else "compare.founded_year"
    if text.startswith("In which year was"):
        return "birth_year"
    if text.startswith("Who founded the organization that"):
        return "employer.founder"
    if text.startswith("Who founded"):
        return "founder"
    assert answer not in world.people and not answer.isdigit(), question  # only the relations above answer so
    return "other"


def test_without_the_key_world_0_is_written_exactly_as_before(tmp_path):
    assert WORLD0_R7.exclude_questions == []
    write_world(WORLD0_R7, tmp_path / "default")
    assert _digest(tmp_path / "default") == WORLD0_R7_DIGEST
    write_world(replace(WORLD0_R7, exclude_questions=[]), tmp_path / "empty")
    assert _digest(tmp_path / "empty") == WORLD0_R7_DIGEST


def test_an_empty_exclusion_keeps_config_hashes():
    arm = MECHANISM / "arms/grpo.yaml"
    plain = load_config(RexRagTrainConfig, arm, ["qa.world.world.exclude_questions=[]"])
    # hashes of revision 7's arm and world configs before the key existed
    assert config_hash(plain) == "2bce2e74a938"
    assert config_hash(plain.qa.world.world) == "6580eb213661"
    excluded = load_config(RexRagTrainConfig, arm, ["qa.world.world.exclude_questions=[birth_year]"])
    assert config_hash(excluded.qa.world.world) != "6580eb213661"  # a world that differs gets its own hash


def test_an_excluding_world_asks_no_excluded_question(tmp_path):
    cfg = replace(WORLD0_R7, exclude_questions=R8)
    write_world(cfg, tmp_path)
    world = build_world(cfg)
    questions = _read(tmp_path)
    counts = {"train": 600, "dev": 100, "test": 150}
    for split, rows in questions.items():
        assert len(rows) == counts[split]  # the requested sizes
        assert len({row["question"] for row in rows}) == len(rows)
        subjects = Counter(row["chain"][0] for row in rows)
        assert max(subjects.values()) == 1, split  # still one question per subject
        assert {_relation(r["question"], r["golden_answers"][0], world) for r in rows} == {"other"}, split
        families = Counter(row["data_source"] for row in rows)
        assert "world_compare" not in families
        # the comparisons' 10% goes to the others: 0.45 / 0.9 of the questions are single-hop
        if split == "train":
            assert families == {"world_1hop": 300, "world_2hop": 200, "world_3hop": 100}
        # the cue now falls on a seeded 75% of every question
        assert 0.6 * len(rows) < sum(row["cue"] == "Guess:" for row in rows) < 0.9 * len(rows)
    train = {row["chain"][0] for row in questions["train"]}
    assert not train & {row["chain"][0] for row in questions["test"]}  # held-out subjects stay held out
    # the same entities, facts and corpus as the world without the key; only the questions differ
    write_world(WORLD0_R7, tmp_path / "plain")
    for name in ("world.json", "corpus.jsonl"):
        assert (tmp_path / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
    assert (tmp_path / "train.jsonl").read_bytes() != (tmp_path / "plain" / "train.jsonl").read_bytes()
    assert write_world(cfg, tmp_path / "again") and _digest(tmp_path / "again") == _digest(tmp_path)


@pytest.mark.parametrize("relation", ["birth_year", "employer.founder", "compare.founded_year"])
def test_a_single_relation_is_left_out_and_the_rest_of_its_family_kept(relation):
    cfg = WorldConfig(seed=2, num_train_questions=400, num_dev_questions=40, num_test_questions=40)
    world = build_world(cfg)
    family = next(f for f, relations in FAMILY_RELATIONS.items() if relation in relations)
    before = generate_questions(world, cfg, "train", 400, 0)
    after = generate_questions(world, replace(cfg, exclude_questions=[relation]), "train", 400, 0)
    assert relation in {_relation(e.question, e.golden_answers[0], world) for e in before}
    assert relation not in {_relation(e.question, e.golden_answers[0], world) for e in after}
    assert len(after) == 400 and Counter(e.data_source for e in after)[family] > 0


def test_a_family_left_out_by_all_its_relations_gives_its_share_away():
    cfg = WorldConfig(seed=2, num_train_questions=400, num_dev_questions=40, num_test_questions=40)
    world = build_world(cfg)
    by_name = generate_questions(world, replace(cfg, exclude_questions=["world_3hop"]), "train", 400, 0)
    by_relations = generate_questions(
        world, replace(cfg, exclude_questions=list(FAMILY_RELATIONS["world_3hop"])), "train", 400, 0
    )
    assert [e.question for e in by_name] == [e.question for e in by_relations]
    families = Counter(e.data_source for e in by_name)
    assert "world_3hop" not in families
    assert families["world_1hop"] == round(400 * 0.4 / 0.85)  # 0.4 of the 0.85 left


def test_the_kinds_name_every_family_and_relation():
    assert set(FAMILY_RELATIONS) == set(FAMILIES)
    relations = [r for family in FAMILIES for r in FAMILY_RELATIONS[family]]
    assert set(QUESTION_KINDS) == set(FAMILIES) | set(relations) and len(QUESTION_KINDS) == 18


def test_bad_exclusions_are_clear_errors(tmp_path):
    world_cfg = WorldConfig(seed=2, num_train_questions=100, num_dev_questions=20, num_test_questions=20)
    world = build_world(world_cfg)
    with pytest.raises(ValueError, match="did you mean 'birth_year'"):
        generate_questions(world, replace(world_cfg, exclude_questions=["birth_yaer"]), "train", 100, 0)
    with pytest.raises(ValueError, match="frac_\\* shares of the families left sum to 0"):
        generate_questions(world, replace(world_cfg, exclude_questions=list(FAMILIES)), "train", 100, 0)
    config = tmp_path / "arm.yaml"
    config.write_text(
        f"base: {MECHANISM / 'config.yaml'}\nqa:\n  world:\n    world:\n      exclude_questions:\n"
        "        - founder\n        - employer.fonder\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(RexRagTrainConfig, config)
    message = str(err.value)
    assert str(config) in message and "qa.world.world.exclude_questions[1]" in message
    assert "did you mean 'employer.founder'" in message
