"""experiments/rexrag-cpu-mechanism/searched_probe.py: the relation key and the per-group summary."""

from __future__ import annotations

import pytest
from config_harness import load_script


def _module():
    return load_script("rexrag-cpu-mechanism", "searched_probe.py", "searched_probe")


probe = _module()


@pytest.mark.parametrize(
    ("question", "key"),
    [
        # a named subject is replaced, so every birth-city question is one relation
        ("Where was Lou Brun born?", "Where was X"),
        ("Who founded Kor Works?", "Who founded X"),
        # "the ..." starts a chain: the 2-hop question is its own relation
        ("Where was the founder of Kor Works born?", "Where was the"),
        ("Who founded the organization that Lou Brun works for?", "Who founded the"),
        # other questions are keyed by their first three words
        ("In which year was Lou Brun born?", "In which year"),
        ("Which organization does Lou Brun work for?", "Which organization does"),
    ],
)
def test_relation(question, key):
    assert probe.relation(question) == key


def test_summary_counts_reading_only_where_the_answer_was_retrieved():
    rows = [
        {"correct": True, "first_exact": True, "gold_seen": True},
        {"correct": False, "first_exact": True, "gold_seen": True},
        {"correct": False, "first_exact": False, "gold_seen": False},
        # right without the answer in the passages (a lucky guess): accuracy counts it, the read rate does not
        {"correct": True, "first_exact": False, "gold_seen": False},
    ]
    assert probe.summary(rows) == {
        "n": 4,
        "accuracy": 0.5,  # 2 of 4
        "first_query_exact": 0.5,  # 2 of 4
        "gold_seen": 0.5,  # 2 of 4
        "read_rate": 0.5,  # 1 of the 2 that retrieved the answer
    }
    assert probe.summary(rows[2:3])["read_rate"] is None  # nothing retrieved: no read rate
