"""Revision 4 of the miniature (README.md, "Revisions", 4): revision 3's world and base with a short prompt whose
option lines are the sentence every training answer ends with, so the answer's letter is copied from the prompt;
SFT records about half as long; the default prompt (and every earlier run's cache key and stage key) unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anessuite.evaluate import EvalConfig, _generation_hash
from anessuite.mcq import MCQItem
from anessuite.pipeline import stage_cache
from anessuite.pipeline.config import PipelineConfig
from anessuite.prompts import build_messages, format_options
from anessuite.records import read_records
from anessuite.synthetic.miniature3 import SCRATCH_VOCAB_SIZE, Miniature3Config, generate_miniature3_data
from anessuite.synthetic.scratch import capital_space_tokenizer, world_training_texts
from rlcore.config import load_config

EXP = Path(__file__).resolve().parents[2] / "experiments" / "anessuite-cpu-miniature"
ITEM = MCQItem(
    "q1", "What is the effect of Koradrol?", (("A", "pruritus"), ("B", "bradycardia")), "B", "en", "system1"
)


@pytest.fixture(scope="module")
def world3(tmp_path_factory):
    return generate_miniature3_data(tmp_path_factory.mktemp("mini3"), Miniature3Config(seed=0))


@pytest.fixture(scope="module")
def tokenizer3(world3):
    return capital_space_tokenizer(world_training_texts(world3["root"]), SCRATCH_VOCAB_SIZE)


def _cfg(name: str) -> PipelineConfig:
    return load_config(PipelineConfig, EXP / name, [])


def _item(r: dict) -> MCQItem:
    level = {1: "system1", 2: "system1.x", 3: "system2"}[r["level"]]
    return MCQItem(r["id"], r["question"], tuple(r["options"].items()), r["answer"], r["language"], level)


def _option_sentence(r: dict) -> str:
    """The last sentence before the answer line ("<text> is option X." / "<text>是选项X。")."""
    body = r["reasoning"].rsplit("\n", 1)[0]
    if r["language"] == "zh":
        return body.rstrip("。").rsplit("。", 1)[-1] + "。"
    return body.rsplit(". ", 1)[-1]


def test_option_lines_default_to_the_letter_first_layout_and_keep_earlier_keys():
    assert format_options(ITEM) == "A. pruritus\nB. bradycardia"
    assert (
        format_options(ITEM, "- {text} is option {letter}.")
        == "- pruritus is option A.\n- bradycardia is option B."
    )
    default, spelled = EvalConfig(), EvalConfig()
    spelled.prompt.option_line_en = spelled.prompt.option_line_zh = "{letter}. {text}"
    assert _generation_hash(default) == _generation_hash(spelled)  # earlier response caches stay valid
    spelled.prompt.option_line_en = "- {text} is option {letter}."
    assert _generation_hash(default) != _generation_hash(spelled)
    cfg = PipelineConfig(name="keys", base_model="tiny-qwen2")
    before = stage_cache.stage_key(cfg, "sft", "m")
    assert "option_line_en" not in stage_cache._section(cfg, "prompt")
    cfg.prompt.option_line_zh = "{text}是选项{letter}。"
    assert stage_cache.stage_key(cfg, "sft", "m") != before


def test_revision4_config_is_revision3_with_prompt_and_sft_batching_changed():
    r3, r4 = _cfg("pipeline_r3.yaml"), _cfg("pipeline_r4.yaml")
    assert r4.sft.group_by_length and not r3.sft.group_by_length
    assert r4.base_model == r3.base_model and r4.data == r3.data and r4.cpt == r3.cpt and r4.eval == r3.eval
    assert r4.output_dir != r3.output_dir
    assert len(r4.prompt.user_en) <= 30 and len(r4.prompt.user_zh) <= 25  # r3: the default instructions
    assert len(r3.prompt.user_en) > 250 and len(r3.prompt.user_zh) > 80


def test_every_training_answer_ends_with_one_of_its_prompts_option_lines(world3):
    prompt = _cfg("pipeline_r4.yaml").prompt
    records = list(read_records(world3["anesr1"]))
    assert len(records) == 1780
    for r in records:
        user = build_messages(_item(r), prompt)[-1]["content"]
        sentence = _option_sentence(r)
        line = f"- {sentence}" if r["language"] == "en" else sentence
        assert line in user.splitlines(), (r["id"], sentence, user)
        assert sum(sentence in option for option in user.splitlines()) == 1


def test_the_option_sentence_is_the_same_tokens_in_the_prompt_and_the_answer(world3, tokenizer3):
    """Copyable as tokens, not only as text: the sentence's token ids occur in the prompt's (EN lookup answers,
    which open the response without a space, differ in their first piece only)."""
    prompt = _cfg("pipeline_r4.yaml").prompt
    whole = first_piece_off = 0
    for r in read_records(world3["anesr1"]):
        messages = build_messages(_item(r), prompt)
        head = tokenizer3.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        body = r["reasoning"].rsplit("\n", 1)[0]
        head_ids = tokenizer3(head)["input_ids"]
        answer_ids = tokenizer3(head + body)["input_ids"][len(head_ids) :]
        size = len(tokenizer3(("" if r["language"] == "zh" else " ") + _option_sentence(r))["input_ids"])
        for drop in (0, 1):
            piece = answer_ids[len(answer_ids) - size + drop :]
            if any(head_ids[i : i + len(piece)] == piece for i in range(len(head_ids))):
                whole += drop == 0
                first_piece_off += drop == 1
                break
        else:
            raise AssertionError((r["id"], tokenizer3.convert_ids_to_tokens(answer_ids[-size:])))
    assert whole >= 1600 and first_piece_off <= 150


def test_revision4_chats_are_half_as_long_and_fit_the_lengths(world3, tokenizer3):
    r3, r4 = _cfg("pipeline_r3.yaml"), _cfg("pipeline_r4.yaml")
    lengths = {"r3": [], "r4": []}
    for r in read_records(world3["anesr1"]):
        for name, cfg in (("r3", r3), ("r4", r4)):
            chat = build_messages(_item(r), cfg.prompt) + [{"role": "assistant", "content": r["reasoning"]}]
            lengths[name].append(
                len(tokenizer3(tokenizer3.apply_chat_template(chat, tokenize=False))["input_ids"])
            )
    mean = {k: sum(v) / len(v) for k, v in lengths.items()}
    assert mean["r4"] < 0.5 * mean["r3"], mean
    assert max(lengths["r4"]) <= r4.sft.max_length


def test_sft_cost_script_reports_a_step_cost(tmp_path, monkeypatch):
    """The measurement script itself, on the tiny embedded model and a two-drug synthetic world."""
    import runpy
    import sys

    out, config = tmp_path / "cost.json", tmp_path / "synthetic.yaml"
    config.write_text(
        f"base: {EXP / 'pipeline_r4.yaml'}\ndata: {{corpus: '', anesqa: '', anesr1: '', benchmark: ''}}\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "sft_cost.py",
            "--config",
            str(config),
            "--model",
            "tiny-qwen2",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--out",
            str(out),
            "sft.max_samples=64",
            "sft.micro_batch_size=4",
        ],
    )
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(EXP / "sft_cost.py"), run_name="__main__")
    assert done.value.code == 0
    report = json.loads(out.read_text())
    assert report["records"] == 64 and report["steps_timed"] == 2 and report["group_by_length"] is True
    assert report["cpu_s_per_step"] > 0 and 0.5 < report["batch_tokens_real_share"] <= 1.0
