"""World generator: older worlds stay identical by seed, and ``max_questions_per_subject`` gives question sets in
which no subject recurs."""

import hashlib
import json
from collections import Counter
from dataclasses import replace

import pytest

from rexrag.data.world import SPLITS, WorldConfig, build_world, corpus_passages, generate_questions

# sha256 of the generated world (entities, facts, splits, corpus, every question of every split), computed with the
# generator as it was before max_questions_per_subject existed. The second config is the world of the committed
# CPU experiments (rexrag-cpu, rexrag-cpu-long, rexrag-cpu-multiworld: packages/rexrag/configs/cpu/*.yaml).
OLD_WORLD_DIGESTS = {
    "default seed 0": (WorldConfig(), "c91022c31e858f369f1d8c33897aba7aaf953c6c7dc372c9204b1a20a8fe4778"),
    "cpu experiments (seed 0)": (
        WorldConfig(seed=0, frac_1hop=0.45, frac_2hop=0.3, frac_3hop=0.15, frac_compare=0.1),
        "64660d943d319f126e4d3da153eb5a086b8b69aeefac782eee0122da61325f5c",
    ),
    "cpu mix, seed 7 (an extra world)": (
        WorldConfig(seed=7, frac_1hop=0.45, frac_2hop=0.3, frac_3hop=0.15, frac_compare=0.1),
        "4f6711ada895e999bd535129b96ddef4bb5a49d609dc051e6e8acf897a070bff",
    ),
}


def _questions(cfg: WorldConfig, world=None) -> dict[str, list]:
    world = world or build_world(cfg)
    counts = {"train": cfg.num_train_questions, "dev": cfg.num_dev_questions, "test": cfg.num_test_questions}
    return {
        split: generate_questions(world, cfg, split, counts[split], offset)
        for offset, split in enumerate(SPLITS)
    }


def world_digest(cfg: WorldConfig) -> str:
    world = build_world(cfg)
    payload = {
        "world": world.__dict__,
        "corpus": corpus_passages(world),
        "questions": {
            split: [[e.question, e.golden_answers, e.data_source, e.metadata] for e in examples]
            for split, examples in _questions(cfg, world).items()
        },
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("name", sorted(OLD_WORLD_DIGESTS))
def test_worlds_written_before_the_subject_limit_are_unchanged(name):
    cfg, digest = OLD_WORLD_DIGESTS[name]
    assert cfg.max_questions_per_subject == 0
    assert world_digest(cfg) == digest


def _subjects(example) -> list[str]:
    chain = example.metadata["chain"]
    return chain[:2] if example.data_source == "world_compare" else chain[:1]


def test_one_question_per_subject():
    cfg = WorldConfig(
        seed=3,
        num_train_questions=250,
        num_dev_questions=40,
        num_test_questions=40,
        max_questions_per_subject=1,
    )
    questions = _questions(cfg)
    for split, examples in questions.items():
        counts = Counter(name for example in examples for name in _subjects(example))
        assert max(counts.values()) == 1, split  # no subject recurs inside a split
        assert len({e.question for e in examples}) == len(examples)
    # without the limit the same world repeats subjects (6 single-hop relations per person, ...)
    unlimited = _questions(WorldConfig(seed=3, num_train_questions=250))["train"]
    assert max(Counter(n for e in unlimited for n in _subjects(e)).values()) > 1
    # every family is represented; the first one (1-hop, 40% of 250 = 100) always gets its quota, families that
    # run out of free subjects are filled from the leftovers
    families = Counter(e.data_source for e in questions["train"])
    assert set(families) == {"world_1hop", "world_2hop", "world_3hop", "world_compare"}
    assert families["world_1hop"] >= 100 and sum(families.values()) == 250
    # train and test subjects stay disjoint
    train = {n for e in questions["train"] for n in _subjects(e)}
    assert not train & {n for e in questions["test"] for n in _subjects(e)}


def test_a_limit_the_world_cannot_meet_is_a_clear_error():
    # about 0.7 * (300 + 90 + 40) = 301 train subjects: 2,000 questions with one each cannot exist
    with pytest.raises(ValueError, match="max_questions_per_subject"):
        _questions(WorldConfig(max_questions_per_subject=1))
    with pytest.raises(ValueError, match=">= 0"):
        _questions(WorldConfig(max_questions_per_subject=-1))
    # a limit of 2 admits twice as many
    cfg = WorldConfig(seed=1, num_train_questions=500, num_dev_questions=40, num_test_questions=40)
    two = _questions(replace(cfg, max_questions_per_subject=2))["train"]
    assert max(Counter(n for e in two for n in _subjects(e)).values()) == 2
