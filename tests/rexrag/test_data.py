"""QA loaders (Search-R1 parquet, FlashRAG JSONL, hub), the prompt template and the synthetic world."""

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rexrag.data.qa import DataFormatError, load_benchmark, load_flashrag_jsonl, load_many, load_qa_file
from rexrag.data.template import (
    DEFAULT_TEMPLATE,
    TemplateError,
    load_template,
    normalize_question,
    render_prompt,
)
from rexrag.data.world import WorldConfig, build_world, corpus_passages, generate_questions, write_world


def _searchr1_rows():
    # two sources whose extra_info.index both restart at 0, as in Search-R1's merged NQ + HotpotQA train file
    rows = []
    for source in ("nq", "hotpotqa"):
        for index in range(2):
            rows.append(
                {
                    "data_source": source,
                    "prompt": [
                        {
                            "role": "user",
                            "content": f"Some instructions. Question: {source} question {index}?\n",
                        }
                    ],
                    "ability": "fact-reasoning",
                    "reward_model": {
                        "style": "rule",
                        "ground_truth": {"target": [f"ans {source} {index}", "alias"]},
                    },
                    "extra_info": {"split": "train", "index": index},
                }
            )
    return rows


def test_searchr1_parquet_loader_and_unique_group_keys(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(_searchr1_rows()), path)
    examples = load_qa_file(str(path))
    assert [e.data_source for e in examples] == ["nq", "nq", "hotpotqa", "hotpotqa"]
    assert examples[0].golden_answers == ["ans nq 0", "alias"]
    assert examples[0].question == "nq question 0?"  # taken from the "Question:" line of the stored message
    assert examples[0].prompt_messages[0]["role"] == "user"
    # the bare index collides across sources (0, 1, 0, 1); source + index does not
    assert len({e.index for e in examples}) == 2
    assert len({e.group_key for e in examples}) == 4


def test_searchr1_parquet_missing_column_is_named(tmp_path):
    path = tmp_path / "bad.parquet"
    rows = [{k: v for k, v in r.items() if k != "reward_model"} for r in _searchr1_rows()]
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataFormatError, match=r"bad.parquet: missing columns \['reward_model'\]"):
        load_qa_file(str(path))


def test_flashrag_jsonl_loader_and_errors(tmp_path):
    folder = tmp_path / "popqa"
    folder.mkdir()
    path = folder / "test.jsonl"
    path.write_text(
        json.dumps({"id": "test_0", "question": "who?", "golden_answers": ["A", "B"], "metadata": {"x": 1}})
        + "\n\n"
        + json.dumps({"id": "test_1", "question": "what?", "golden_answers": "C"})
        + "\n"
    )
    examples = load_benchmark("popqa", tmp_path)
    assert [e.data_source for e in examples] == ["popqa", "popqa"]  # from the folder name
    assert examples[1].golden_answers == ["C"] and examples[0].metadata == {"metadata": {"x": 1}}
    path.write_text(json.dumps({"id": "1", "question": "q"}) + "\n")
    with pytest.raises(DataFormatError, match=r"test.jsonl:1: missing field 'golden_answers'"):
        load_flashrag_jsonl(path)
    path.write_text("{not json\n")
    with pytest.raises(DataFormatError, match=r"test.jsonl:1: invalid JSON"):
        load_flashrag_jsonl(path)


def test_hub_name_offline_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataFormatError, match="HF_HUB_OFFLINE is set"):
        load_benchmark("musique", tmp_path)  # no local file -> hub -> offline
    with pytest.raises(DataFormatError, match="HF_HUB_OFFLINE"):
        load_qa_file("hub:nq")
    with pytest.raises(DataFormatError, match="cannot tell the format"):
        load_qa_file("data.csv")


def test_template_wording_and_placeholder():
    assert normalize_question("  who founded it ") == "who founded it?"
    assert normalize_question("who?") == "who?"
    text = render_prompt("who founded it", DEFAULT_TEMPLATE)
    assert text.endswith("Question: who founded it?\n")
    for tag in ("<think>", "</think>", "<search>", "</search>", "<information>", "<answer>", "</answer>"):
        assert tag in text
    assert render_prompt("q", "Q: {question} {not a placeholder}") == "Q: q? {not a placeholder}"
    with pytest.raises(TemplateError, match="placeholder"):
        load_template("no placeholder")


def test_world_is_seeded_and_facts_live_in_the_corpus(tmp_path):
    cfg = WorldConfig(seed=3, num_train_questions=300, num_dev_questions=40, num_test_questions=60)
    assert build_world(cfg).__dict__ == build_world(cfg).__dict__
    assert build_world(cfg).people != build_world(WorldConfig(seed=4)).people
    world = build_world(cfg)
    passages = {p["contents"].split("\n")[0]: p["contents"] for p in corpus_passages(world)}
    assert len(passages) == len(world.people) + len(world.orgs) + len(world.cities) + len(world.countries)
    for split, count in (("train", 300), ("test", 60)):
        questions = generate_questions(world, cfg, split, count, seed_offset=0)
        assert len({q.question for q in questions}) == count
        for q in questions:
            chain = q.metadata["chain"]
            if q.data_source == "world_compare":  # both compared entities are subjects of this split
                assert all(world.split_of[name] == split for name in chain) and q.golden_answers[0] in chain
                continue
            assert world.split_of[chain[0]] == split
            # following the chain through the passages reaches the answer: the last hop's passage states it
            assert q.golden_answers[0] in passages[chain[-1]]
            for hop, nxt in zip(chain, chain[1:]):
                assert nxt in passages[hop]
    test_subjects = {q.metadata["chain"][0] for q in generate_questions(world, cfg, "test", 60, 2)}
    train_subjects = {q.metadata["chain"][0] for q in generate_questions(world, cfg, "train", 300, 0)}
    assert not test_subjects & train_subjects  # held-out subjects


def test_write_world_layouts(tmp_path):
    cfg = WorldConfig(seed=1, num_train_questions=200, num_dev_questions=20, num_test_questions=40)
    paths = write_world(cfg, tmp_path)
    corpus = [json.loads(line) for line in paths["corpus"].read_text().splitlines()]
    assert set(corpus[0]) == {"id", "contents"} and "\n" in corpus[0]["contents"]
    jsonl = load_qa_file(str(paths["test"]))
    parquet = load_qa_file(str(paths["test_parquet"]))
    assert [(e.question, e.golden_answers, e.data_source) for e in jsonl] == [
        (e.question, e.golden_answers, e.data_source) for e in parquet
    ]
    families = Counter(e.data_source for e in load_many([str(paths["train"])]))
    assert set(families) == {"world_1hop", "world_2hop", "world_3hop", "world_compare"}
    # 3-hop share is 0.15 of 200 = 30
    assert families["world_3hop"] == 30
