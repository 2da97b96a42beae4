"""Revision 3 of the miniature's world (``--design miniature3``): revision 2's world, corpus and AnesQA pairs by seed;
every training fact as an MCQ in training wordings the benchmark never uses; option-lookup items; every answer
restates the chosen option before its letter; a tokenizer that gives a capitalised name the same pieces everywhere;
and SFT records that fit the pipeline's SFT length (revision 2's EN System 2 records were cut before their answer)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from anessuite.__main__ import main as anessuite_main
from anessuite.benchmark import load_anesbench
from anessuite.mcq import LEVELS, MCQItem
from anessuite.prompts import build_messages
from anessuite.records import file_sha256, read_records
from anessuite.synthetic.miniature import HELDOUT
from anessuite.synthetic.miniature2 import Miniature2Config, generate_miniature2_data
from anessuite.synthetic.miniature3 import (
    LOOKUP_WORDINGS,
    SCRATCH_VOCAB_SIZE,
    TRAIN_WORDINGS,
    Miniature3Config,
    generate_miniature3_data,
)
from anessuite.synthetic.scratch import capital_space_tokenizer, world_training_texts
from anessuite.synthetic.world import CLASSES, EFFECTS, ORGANS, Drug
from rlcore.models import train_bpe_tokenizer

CFG = Miniature3Config(seed=0)
REPO = Path(__file__).resolve().parents[2]
EXP = REPO / "experiments" / "anessuite-cpu-miniature"


@pytest.fixture(scope="module")
def world3(tmp_path_factory):
    return generate_miniature3_data(tmp_path_factory.mktemp("mini3"), CFG)


@pytest.fixture(scope="module")
def tokenizer3(world3):
    return capital_space_tokenizer(world_training_texts(world3["root"]), SCRATCH_VOCAB_SIZE)


def _drugs(paths) -> tuple[list[Drug], list[Drug]]:
    dump = json.loads((paths["root"] / "world.json").read_text(encoding="utf-8"))
    drugs = [Drug(**d) for d in dump["drugs"]]
    bench = set(dump["benchmark_drugs"])
    return [d for d in drugs if d.key in bench], [d for d in drugs if d.key not in bench]


def _r1(paths) -> list[dict]:
    return list(read_records(paths["anesr1"]))


def _item(r: dict) -> MCQItem:
    return MCQItem(r["id"], r["question"], tuple(r["options"].items()), r["answer"], r["language"])


def _pattern(template: str) -> re.Pattern:
    """A wording as a regex whose placeholders match any text."""
    parts = re.split(r"\{[a-z]+\}", template)
    return re.compile("^" + "(.+)".join(re.escape(p) for p in parts) + "$")


def test_world_corpus_and_anesqa_are_revision2s(world3, tmp_path):
    """Only what SFT/GRPO see as MCQs changes: the drugs, the CPT corpus and the AnesQA pairs are revision 2's."""
    world2 = generate_miniature2_data(tmp_path / "r2", Miniature2Config(seed=0))
    assert (world3["root"] / "world.json").read_text() == (world2["root"] / "world.json").read_text()
    for lang in ("en", "zh"):
        name = f"AnesCorpus_{lang}-00000-of-00001.parquet"
        assert file_sha256(world3["corpus"] / name) == file_sha256(world2["corpus"] / name)
    assert file_sha256(world3["anesqa"]) == file_sha256(world2["anesqa"])
    assert file_sha256(world3["probe"]) == file_sha256(world2["probe"])
    assert file_sha256(world3["anesr1"]) != file_sha256(world2["anesr1"])


def test_benchmark_drugs_never_reach_sft_or_grpo_data(world3):
    bench, training = _drugs(world3)
    table = pq.read_table(world3["anesqa"]).to_pydict()
    blob = "\n".join(table["question"] + table["answer"])
    blob += "\n".join(
        f"{r['question']}\n{json.dumps(r['options'], ensure_ascii=False)}\n{r['reasoning']}"
        for r in _r1(world3)
    )
    for drug in bench:
        assert drug.name_en not in blob and drug.name_zh not in blob, drug


def test_every_training_fact_is_one_mcq_per_language_with_its_true_value(world3):
    _, training = _drugs(world3)
    records = [r for r in _r1(world3) if r["id"].split("-")[-1].startswith("f")]
    assert len(records) == 2 * 3 * len(training) == 1080
    col = {"en": 0, "zh": 1}
    asked = Counter()
    for r in records:
        (drug,) = [d for d in training if d.name(r["language"]) in r["question"]]
        texts = set(r["options"].values())
        for attribute, table, key in (
            ("class", CLASSES, drug.drug_class),
            ("organ", ORGANS, drug.organ),
            ("effect", EFFECTS, drug.effect),
        ):
            if texts <= {v[col[r["language"]]] for v in table.values()}:
                assert r["options"][r["answer"]] == table[key][col[r["language"]]], r
                asked[(drug.key, attribute, r["language"])] += 1
                break
        else:
            pytest.fail(f"{r['id']}: options are not one attribute's values")
    assert set(asked.values()) == {1} and len(asked) == 1080


def test_every_answer_restates_the_chosen_option_right_before_its_letter(world3):
    records = _r1(world3)
    kinds = Counter(r["id"].split("-")[-1][0] for r in records)
    assert kinds["l"] == 2 * CFG.lookup_per_language
    for r in records:
        text, letter = r["options"][r["answer"]], r["answer"]
        body, answer_line = r["reasoning"].rsplit("\n", 1)
        sentence = f"{text}是选项{letter}。" if r["language"] == "zh" else f"{text} is option {letter}."
        assert body.endswith(sentence), r["reasoning"]
        assert answer_line == (f"答案：{letter}" if r["language"] == "zh" else f"Answer: {letter}")
    lookups = [r for r in records if r["id"].split("-")[-1].startswith("l")]
    letters = Counter(r["answer"] for r in lookups)
    assert len(letters) == 4 and min(letters.values()) >= 40, letters
    for r in lookups:
        assert any(_pattern(w).match(r["question"]) for w in LOOKUP_WORDINGS[r["language"]])
        assert (
            f"“{r['options'][r['answer']]}”" in r["question"]
            or f'"{r["options"][r["answer"]]}"' in r["question"]
        )


def test_training_wordings_are_many_and_never_the_benchmarks(world3):
    for kind, by_lang in TRAIN_WORDINGS.items():
        for lang, sets in by_lang.items():
            assert not set(sets["train"]) & set(HELDOUT[kind][lang]), (kind, lang)
            assert (
                len(set(sets["train"]))
                == len(sets["train"])
                >= (8 if kind in ("class", "organ", "effect") else 4)
            )
    # every System 1 training wording is used, and no training question is in a benchmark wording
    used = Counter()
    for r in _r1(world3):
        for kind in ("class", "organ", "effect"):
            for w in TRAIN_WORDINGS[kind][r["language"]]["train"]:
                used[w] += bool(_pattern(w).match(r["question"]))
        heldout = [w for kind in HELDOUT for w in HELDOUT[kind][r["language"]]]
        assert not any(_pattern(w).match(r["question"]) for w in heldout), r["question"]
    assert all(
        used[w] > 0
        for k in ("class", "organ", "effect")
        for lang in ("en", "zh")
        for w in TRAIN_WORDINGS[k][lang]["train"]
    )
    # the benchmark's System 1 questions are in held-out wordings only
    for item in load_anesbench(world3["benchmark"], languages=["en", "zh"]):
        if item.level == "system1":
            train = [
                w for k in ("class", "organ", "effect") for w in TRAIN_WORDINGS[k][item.language]["train"]
            ]
            assert not any(_pattern(w).match(item.question) for w in train), item.question


def test_benchmark_sizes_unchanged(world3):
    items = load_anesbench(world3["benchmark"], languages=["en", "zh"])
    for lang, sizes in (("en", CFG.bench_en), ("zh", CFG.bench_zh)):
        assert tuple(sum(i.language == lang and i.level == lvl for i in items) for lvl in LEVELS) == sizes


def test_a_name_is_the_same_pieces_at_a_sentence_start_and_inside(world3, tokenizer3):
    """Revision 2's byte-level tokenizer cut "Koradrol is" and "of Koradrol" differently (0 of 204 EN names the
    same, measured); the revision-3 tokenizer gives every EN and ZH name one piece sequence in every position."""
    bench, training = _drugs(world3)
    plain = train_bpe_tokenizer(world_training_texts(world3["root"]), vocab_size=SCRATCH_VOCAB_SIZE)
    differs = 0
    for drug in [*bench, *training]:
        name = drug.name_en
        for tok in (tokenizer3, plain):
            alone = tok(name, add_special_tokens=False)["input_ids"]
            contexts = [f"{name} is a", f"The effect of {name} is", f"Answer:\n{name} is", f"x. {name}"]
            same = all(
                any(ids[i : i + len(alone)] == alone for i in range(len(ids)))
                for ids in (tok(c, add_special_tokens=False)["input_ids"] for c in contexts)
            )
            if tok is tokenizer3:
                assert same and 2 <= len(alone) <= 4, (name, tok.convert_ids_to_tokens(alone))
            else:
                differs += not same
        zh = tokenizer3(drug.name_zh, add_special_tokens=False)["input_ids"]
        assert 2 <= len(zh) <= 5
    assert differs == len(bench) + len(training)
    assert tokenizer3.decode(tokenizer3("The effect of Koradrol is B.\nAnswer: B")["input_ids"]) == (
        "The effect of Koradrol is B.\nAnswer: B"
    )


def test_sft_records_fit_the_sft_length_and_responses_fit_the_evaluation_cap(world3, tokenizer3):
    """pipeline_r3.yaml's sft.max_length holds every AnesR1 chat whole in the pipeline's own prompt (revision 2's 384
    cut every EN System 2 record before its answer line), and eval.max_new_tokens / the GRPO rollout cap hold every
    training response."""
    from anessuite.pipeline.config import PipelineConfig
    from rlcore.config import load_config

    cfg = load_config(PipelineConfig, EXP / "pipeline_r3.yaml", [])
    longest_chat = longest_response = 0
    for r in _r1(world3):
        messages = build_messages(_item(r), cfg.prompt)
        chat = tokenizer3.apply_chat_template(
            [*messages, {"role": "assistant", "content": r["reasoning"]}], tokenize=False
        )
        longest_chat = max(longest_chat, len(tokenizer3(chat)["input_ids"]))
        longest_response = max(longest_response, len(tokenizer3(r["reasoning"])["input_ids"]) + 1)
    assert longest_chat <= cfg.sft.max_length, longest_chat
    assert longest_response <= cfg.eval.max_new_tokens, longest_response
    assert longest_response <= cfg.grpo.rollout.max_new_tokens_per_turn, longest_response
    assert longest_chat > 384  # the reason the length changed


def test_reproducible_by_seed(world3, tmp_path):
    again = generate_miniature3_data(tmp_path / "again", CFG)
    for role in ("anesr1", "anesqa", "probe"):
        assert file_sha256(world3[role]) == file_sha256(again[role])
    for name in ("anesbench_en.json", "anesbench_zh.json"):
        assert file_sha256(world3["benchmark"] / name) == file_sha256(again["benchmark"] / name)
    other = generate_miniature3_data(tmp_path / "seed1", Miniature3Config(seed=1))
    assert file_sha256(other["anesr1"]) != file_sha256(world3["anesr1"])


def test_cli_writes_the_revision3_world_and_its_tokenizer(tmp_path, capsys):
    assert (
        anessuite_main(
            [
                "synth",
                "--design",
                "miniature3",
                "--seed",
                "0",
                "--out",
                str(tmp_path / "w"),
                "--scratch-model",
                str(tmp_path / "base"),
            ]
        )
        == 0
    )
    shape = json.loads((tmp_path / "base" / "scratch_config.json").read_text())
    assert shape["vocab_size"] == SCRATCH_VOCAB_SIZE and shape["space_before_capital"] is True
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
    assert manifest["design"] == "miniature3" and manifest["anesr1_items"] == 2 * (540 + 100 + 100 + 150)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "base")
    alone = tok.tokenize("Koradrol")
    assert tok.tokenize("of Koradrol")[-len(alone) :] == alone == tok.tokenize("Koradrol is")[: len(alone)]


def test_revision3_configs_prepare_data_without_benchmark_drugs(world3, tmp_path):
    """pipeline_r3.yaml through the pipeline's data preparation: no SFT chat or GRPO prompt names a benchmark drug."""
    from anessuite.pipeline.config import PipelineConfig
    from anessuite.pipeline.data import plan_data, prepare_data
    from rlcore.config import load_config

    root = world3["root"]
    overrides = [
        f"data.corpus={root / 'corpus'}",
        f"data.anesqa={world3['anesqa']}",
        f"data.anesr1={world3['anesr1']}",
        f"data.benchmark={world3['benchmark']}",
    ]
    cfg = load_config(PipelineConfig, EXP / "pipeline_r3.yaml", overrides)
    assert cfg.grpo.enabled
    assert (cfg.sft.total_steps, cfg.sft.lr, cfg.cpt.total_steps) == (1000, 1.0e-3, 800)
    prepared = prepare_data(
        cfg.data, tmp_path / "data", seed=cfg.seed, prompt=cfg.prompt, plan=plan_data(cfg)
    )
    sft, rl = prepared["sft"].read_text("utf-8"), prepared["rl"].read_text("utf-8")
    assert rl.count("\n") == 2 * (540 + 100 + 100 + 150)
    bench, _ = _drugs(world3)
    for drug in bench:
        for name in (drug.name_en, drug.name_zh):
            assert name not in sft and name not in rl, name
