"""Search demonstrations from a user's own questions and index (the SFT warm-up's ``qa.source=files``): the
question-as-query fallback, answer swaps that can only be solved by reading, and the recipe's source checks."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from rexrag.data import veltria
from rexrag.data.demos import DemoConfig, build_demos, plan_demo
from rexrag.data.own_demos import (
    SFTQAConfig,
    answer_coverage,
    answer_swap_demos,
    corpus_words,
    own_tokenizer_texts,
    swap_answer,
    validate_source,
)
from rexrag.data.qa import QAExample, load_flashrag_jsonl
from rexrag.recipes.common import SHORT_TEMPLATE
from rlcore.models import train_bpe_tokenizer
from rlcore.retrieval import Passage, build_index, load_retriever
from rlcore.rollout import RolloutConfig

OWN = QAExample("Which river flows through Orsk?", ["Tamsel"], "veltria", "v0")
ROLLOUT = RolloutConfig(max_turns=4, max_new_tokens_per_turn=40, max_response_tokens=512, retrieval_topk=2)


def test_a_question_without_an_entity_chain_searches_with_itself():
    assert plan_demo(OWN, "search", "Aubre", "") == [
        (
            "model",
            "<think> I need to search for this. </think>\n<search> Which river flows through Orsk? </search>",
        ),
        ("search", "Which river flows through Orsk?"),
        ("model", "<think> So the answer is Tamsel. </think>\n<answer> Tamsel </answer>"),
    ]
    # a memory demonstration needs no chain at all; a shortcut needs two hops, so it becomes a memory one
    assert plan_demo(OWN, "memory", "Aubre", "")[-1][1].endswith("<answer> Aubre </answer>")


@pytest.mark.parametrize(
    ("answer", "expected_shape"),
    [
        ("Ilda Marrow", r"^[A-Z]\w+ [A-Z]\w+$"),  # both names replaced by corpus names
        ("1412", r"^[1-9]\d{3}$"),  # a four-digit number stays a four-digit number (no leading zero)
        ("the Querrin Downs", r"^the [A-Z]\w+ [A-Z]\w+$"),  # lowercase words next to names are kept
        ("glass", r"^[a-z]{4,}$"),  # no name or number: the lowercase word is replaced
    ],
)
def test_swap_answer_keeps_the_shape(answer, expected_shape):
    import re

    rng = random.Random(0)
    names, words = ["Almsey", "Brask", "Corin", "Velm"], ["copper", "timber", "wool"]
    for _ in range(20):
        swapped = swap_answer(answer, rng, names, words)
        assert swapped != answer and re.match(expected_shape, swapped), swapped


def test_swap_answer_gives_up_when_nothing_can_replace_it():
    rng = random.Random(0)
    assert swap_answer("Orsk", rng, [], ["wool"]) == ""  # a name but no names in the corpus
    assert swap_answer("...", rng, ["Velm"], ["wool"]) == ""  # no word at all


def test_corpus_words_skip_sentence_openers():
    names, words = corpus_words(
        [Passage("0", "Orsk\nOrsk is a town on the river Tamsel. It was founded by Ilda.")]
    )
    # "Orsk" (title line, then sentence start) and "It" open sentences; Tamsel and Ilda are names
    assert names == ["Ilda", "Tamsel"]
    assert words == ["founded", "river", "town"]


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("veltria")
    paths = veltria.write(folder)
    build_index(paths["corpus"], folder / "index", kind="bm25")
    retriever = load_retriever(folder / "index", kind="bm25")
    train = load_flashrag_jsonl(paths["train"])
    tokenizer = train_bpe_tokenizer(own_tokenizer_texts(train, retriever, ROLLOUT, SHORT_TEMPLATE, []), 1024)
    return paths, retriever, train, tokenizer


def test_example_data_splits_by_entity(own_data):
    paths, _, train, _ = own_data
    test = load_flashrag_jsonl(paths["test"])
    assert (len(train), len(test)) == (42, 18)
    held_out_towns = {town for town, *_ in veltria.TOWNS[veltria.HELDOUT_FROM :]}
    assert all(not any(town in ex.question for town in held_out_towns) for ex in train)
    assert all(any(town in ex.question for town in held_out_towns) for ex in test[:12])


def test_search_with_the_question_finds_every_answer_of_the_example(own_data):
    _, retriever, train, _ = own_data
    assert answer_coverage(train, retriever, 2) == 1.0
    assert answer_coverage([QAExample("Who built the moon?", ["Nobody"], "x", "0")], retriever, 2) == 0.0


def test_built_demonstrations_search_with_the_question_through_the_real_index(own_data):
    _, retriever, train, tokenizer = own_data
    only_search = DemoConfig(frac_search=1.0, frac_memory=0.0, frac_shortcut=0.0, frac_recovery=0.0)
    demos = build_demos(train, tokenizer, retriever, ROLLOUT, SHORT_TEMPLATE, ["<think> Wait."], only_search)
    assert len(demos) == len(train) and {d.kind for d in demos} == {"search"}
    first = demos[0]
    assert "<search> Which river flows through Orsk? </search>" in first.text
    assert "Orsk is a town in Veltria on the river Tamsel" in first.text  # the passage the index returned
    assert first.text.endswith("<answer> Tamsel </answer>")
    trained = tokenizer.decode([t for t, m in zip(first.response_ids, first.loss_mask) if m])
    assert (
        "Tamsel" in trained and "Veltria" not in trained
    )  # the observation is conditioned on, never trained


def test_answer_swaps_move_the_answer_in_passage_and_answer_alike(own_data):
    _, retriever, train, tokenizer = own_data
    cfg = DemoConfig(answer_swaps=3, seed=0)
    demos = answer_swap_demos(
        train, tokenizer, retriever, ROLLOUT, SHORT_TEMPLATE, cfg, use_chat_template=False
    )
    assert len(demos) == 3 * len(train)  # every example answer is in its passages
    swapped_answers = set()
    first_passages = {
        ex.question: "\n".join(p.contents for p in passages)
        for ex, passages in zip(train, retriever.search([ex.question for ex in train], 2))
    }
    for demo, example in zip(demos, [ex for ex in train for _ in range(3)]):
        answer = demo.text.rsplit("<answer> ", 1)[1].removesuffix(" </answer>")
        information = demo.text.split("<information>", 1)[1].split("</information>", 1)[0]
        assert answer not in example.golden_answers
        assert answer in information  # readable from the passage ...
        replaced = max((a for a in example.golden_answers if a in first_passages[example.question]), key=len)
        assert replaced not in information  # ... and the true answer is gone from it
        swapped_answers.add(answer)
    assert len(swapped_answers) > len(train)  # not a fixed mapping the model could learn by heart
    assert answer_swap_demos(train, tokenizer, retriever, ROLLOUT, SHORT_TEMPLATE, DemoConfig()) == []


def test_source_checks():
    validate_source(SFTQAConfig(), "world-bm25")
    validate_source(SFTQAConfig(source="files", train_files=["q.jsonl"]), "http")
    with pytest.raises(ValueError, match="qa.train_files"):
        validate_source(SFTQAConfig(source="files"), "http")
    with pytest.raises(ValueError, match="retriever.kind=index"):
        validate_source(SFTQAConfig(source="files", train_files=["q.jsonl"]), "world-bm25")
    with pytest.raises(ValueError, match="needs qa.source=files"):
        validate_source(SFTQAConfig(), "http")


def _sft(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rexrag", "sft", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_sft_dry_run_names_a_bad_source_in_one_line(tmp_path):
    done = _sft(
        "--config",
        str(Path(__file__).resolve().parents[2] / "packages/rexrag/configs/cpu/sft_own_data.yaml"),
        "--dry-run",
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "qa.train_files" in done.stderr and "Traceback" not in done.stderr


def test_warm_up_on_own_questions_through_an_index_folder(own_data, tmp_path):
    # the from-scratch variant: the recipe path of SmolLM2's warm-up, with a model small enough for a unit test
    paths, *_ = own_data
    index = paths["corpus"].parent / "index"
    done = _sft(
        "--config",
        str(Path(__file__).resolve().parents[2] / "packages/rexrag/configs/cpu/sft_own_data_scratch.yaml"),
        f"qa.train_files=[{paths['train']}]",
        f"qa.eval_files=[{paths['test']}]",
        "qa.max_eval_examples=3",
        "retriever.kind=index",
        f"retriever.index_dir={index}",
        "retriever.index_kind=bm25",
        "demos.answer_swaps=2",
        "train.total_steps=3",
        "train.batch_size=4",
        "optim.warmup_steps=1",
        f"train.output_dir={tmp_path / 'sft'}",
        "model.vocab_size=600",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "sft" / "results.json").read_text())
    body = results.get("results", results)
    assert body["demos"]["search"] >= 2 * 42  # the answer swaps are search demonstrations
    assert body["dev"]["n"] == 3 and set(body["dev"]["by_source"]) == {"veltria"}
    assert body["world_dir"] is None
    assert (tmp_path / "sft" / "model" / "prompt_template.txt").read_text() == SHORT_TEMPLATE
