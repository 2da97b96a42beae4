"""Revision 5 of the miniature (README.md, "Revisions", 5): world-agnostic lookup drills that pretrain the
from-scratch base before anything else, and CPT documents replayed inside the SFT data of the arms with CPT
(``data.sft_replay``, off by default and left out of every earlier run's keys while off)."""

from __future__ import annotations

import json
import re

import pytest

from anessuite.pipeline import stage_cache
from anessuite.pipeline.config import PipelineConfig
from anessuite.pipeline.data import plan_data, prepare_data
from anessuite.synthetic.drills import (
    LETTERS,
    LookupDrillConfig,
    drill_chats,
    drill_documents,
    drill_units,
    lookup_drill,
)

VOCAB = [
    "a",
    "Ġthe",
    "ko",
    "rad",
    "rol",
    "Ġbrady",
    "card",
    "ia",
    "is",
    "xyz",
    "abcde",
    "ĠAB",
    "格",
    "达宁",
    "选项",
    "。",
]
VOCAB += [f"q{c}" for c in "bcdfghjklmnpqrstvwz"] + [
    "大",
    "小",
    "中",
    "山",
    "水",
    "火",
    "木",
    "金",
    "土",
    "日",
]
VOCAB += ["月", "星", "云", "风", "雨", "雪", "花", "草", "树", "石"]
UNITS = drill_units([piece.replace("Ġ", " ") for piece in VOCAB])


def test_units_are_short_lowercase_pieces_and_single_cjk_characters():
    # "abcde" is too long, "a" too short, "AB" not lowercase; "达宁" and "选项" give their characters
    assert "abcde" not in UNITS["en"] and "a" not in UNITS["en"] and "AB" not in UNITS["en"]
    assert {"the", "ko", "rad", "rol", "card", "ia", "is", "xyz", "qb"} <= set(UNITS["en"])
    assert {"达", "宁", "选", "项", "格"} <= set(UNITS["zh"]) and "。" not in UNITS["zh"]
    with pytest.raises(ValueError, match="at least 20"):
        drill_units(["ko", "格"])


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_restated_letter_is_the_letter_of_the_line_holding_its_text(lang):
    import random

    cfg = LookupDrillConfig()
    rng = random.Random(3)
    line = re.compile(r"- (.+) is option ([A-H])\.$" if lang == "en" else r"(.+)是选项([A-H])。$")
    for _ in range(50):
        drill, last = lookup_drill(rng, UNITS[lang], lang, cfg)
        rows = drill.split("\n")
        question, options, restated = rows[0], rows[1 : 1 + cfg.options], rows[1 + cfg.options :]
        letter_of = dict(line.fullmatch(row).groups() for row in options)
        assert list(letter_of.values()) == list(LETTERS[: cfg.options])  # distinct texts, letters in order
        assert len(restated) == cfg.restatements
        texts = []
        for row in restated:
            text, letter = (line.fullmatch(row if lang == "zh" else "- " + row)).groups()
            assert letter_of[text] == letter
            texts.append(text)
        assert len(set(texts)) == len(
            texts
        )  # every restatement is a fresh lookup, not a copy of an earlier one
        assert f"“{texts[0]}”" in question if lang == "zh" else f'"{texts[0]}"' in question
        assert last == letter_of[texts[-1]]


def test_documents_are_seeded_and_state_no_sentence():
    cfg = LookupDrillConfig(documents=40)
    docs = drill_documents(UNITS, cfg)
    assert docs == drill_documents(UNITS, cfg)
    assert docs != drill_documents(UNITS, LookupDrillConfig(documents=40, seed=1))
    assert {d["language"] for d in docs} == {"en", "zh"}
    for doc in docs:
        assert doc["text"].count("\n\n") == cfg.drills_per_document - 1
        # nothing but the drill layout: questions, option lines and restatements of made-up strings
        for row in doc["text"].replace("\n\n", "\n").split("\n"):
            assert re.fullmatch(
                r'Which option is "[a-z ]+"\?|(- )?[a-z ]+ is option [A-D]\.|“[\u4e00-\u9fff]+”是哪个选项？|[\u4e00-\u9fff]+是选项[A-D]。',
                row,
            ), row
    with pytest.raises(ValueError, match="options"):
        drill_documents(UNITS, LookupDrillConfig(options=9))


def test_drill_chats_use_the_prompt_layout_and_leave_the_corpus_as_it_was():
    cfg = LookupDrillConfig(documents=10, chats=6)
    assert drill_documents(UNITS, cfg) == drill_documents(UNITS, LookupDrillConfig(documents=10, chats=0))
    chats = drill_chats(UNITS, cfg)
    assert [c["language"] for c in chats] == ["en", "zh"] * 3
    for chat in chats:
        user, assistant = (m["content"] for m in chat["messages"])
        restated, answer = assistant.split("\n")
        letter = answer[-1]
        assert answer in (f"Answer: {letter}", f"答案：{letter}")
        assert user.startswith("Question: Which option is" if chat["language"] == "en" else "题目：“")
        # the restated sentence is one of the prompt's option lines, the one with the answer's letter
        line = ("- " if chat["language"] == "en" else "") + restated
        assert line in user.split("\n")[1:] and restated.endswith(
            f"{letter}." if chat["language"] == "en" else f"{letter}。"
        )


def test_extra_chats_are_mixed_in_as_they_are(tmp_path):
    extra = tmp_path / "extra.jsonl"
    chats = drill_chats(UNITS, LookupDrillConfig(chats=4))
    extra.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in chats), encoding="utf-8")
    cfg = PipelineConfig(name="extra", base_model="tiny-qwen2")
    before = stage_cache.stage_key(cfg, "sft", "m")
    cfg.data.sft_extra = str(extra)
    assert stage_cache.stage_key(cfg, "sft", "m") != before
    data = prepare_data(cfg.data, tmp_path / "prep", seed=0)
    mixed = [json.loads(line) for line in data["sft"].read_text(encoding="utf-8").splitlines()]
    assert sum(m in chats for m in mixed) == 4
    cfg.data.sft_extra = str(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match="data.sft_extra"):
        prepare_data(cfg.data, tmp_path / "prep2", seed=0)


def _synthetic_cfg(tmp_path, replay: float) -> PipelineConfig:
    cfg = PipelineConfig(name="replay", base_model="tiny-qwen2", output_dir=str(tmp_path / "run"))
    cfg.data.sft_replay = replay
    return cfg


def test_replay_off_keeps_keys_and_prepared_data(tmp_path):
    cfg = PipelineConfig(name="keys", base_model="tiny-qwen2")
    before = (stage_cache.training_fingerprint(cfg), stage_cache.stage_key(cfg, "sft", "m"))
    assert "sft_replay" not in stage_cache._data_identity(
        cfg
    ) and "sft_extra" not in stage_cache._data_identity(cfg)
    cfg.data.sft_replay = 0.25
    assert stage_cache.stage_key(cfg, "sft", "m") != before[1]
    assert stage_cache.training_fingerprint(cfg) != before[0]
    with pytest.raises(ValueError, match="sft_replay"):
        cfg.data.sft_replay = -0.1
        plan_data(cfg)


def test_replay_mixes_corpus_documents_into_sft_as_assistant_turns(tmp_path):
    plain = prepare_data(_synthetic_cfg(tmp_path, 0.0).data, tmp_path / "plain", seed=0)
    assert not (tmp_path / "plain" / "sft_replay.jsonl").exists()
    assert "sft_replay" not in json.loads((tmp_path / "plain" / "DONE.json").read_text())["config"]
    cfg = _synthetic_cfg(tmp_path, 0.5)
    data = prepare_data(cfg.data, tmp_path / "mixed", seed=0, plan=plan_data(cfg))
    stats = json.loads((tmp_path / "mixed" / "stats.json").read_text())
    sft_plain = plain["sft"].read_text().splitlines()
    sft_mixed = data["sft"].read_text().splitlines()
    assert stats["sft_replay"] == round(0.5 * len(sft_plain))
    assert len(sft_mixed) == len(sft_plain) + stats["sft_replay"]
    corpus = {json.loads(line)["text"] for line in data["cpt"].read_text().splitlines()}
    replayed = [
        json.loads(line)["messages"]
        for line in (tmp_path / "mixed" / "sft_replay.jsonl").read_text().splitlines()
    ]
    assert len({m[1]["content"] for m in replayed}) == len(replayed)  # drawn without replacement
    for messages in replayed:
        assert messages[0] == {"role": "user", "content": ""} and messages[1]["role"] == "assistant"
        assert messages[1]["content"] in corpus


def test_replay_without_cpt_still_reads_the_corpus():
    cfg = PipelineConfig(name="replay", base_model="m")
    cfg.cpt.enabled = False
    cfg.data.sft_replay = 0.25
    assert plan_data(cfg).needed["corpus"].startswith("the SFT stage's replay")
    cfg.data.sft_replay = 0.0
    assert "corpus" not in plan_data(cfg).needed
