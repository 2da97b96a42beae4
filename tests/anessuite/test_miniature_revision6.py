"""Revision 6 of the miniature (README.md, "Revisions", 6): AnesR1 SFT answers that end with the chosen option's
text instead of its letter (``data.sft_answer: text``; revision 3's items without their option sentence,
``anessuite.synthetic.miniature6``), and SFT chats mixed in through ``data.sft_extra`` checked record by record
before any training."""

from __future__ import annotations

import json

import pytest

from anessuite.convert import convert_r1
from anessuite.pipeline import stage_cache
from anessuite.pipeline.config import PipelineConfig
from anessuite.pipeline.data import check_sft_chats, prepare_data
from anessuite.synthetic.miniature6 import (
    dev_items,
    with_lead_in,
    without_option_sentence,
    write_text_answer_r1,
)
from rlcore.rewards import extract_choice

EN = {
    "id": "mini3-r1-en-f00005",
    "question": "What is the characteristic adverse effect of Quelodexol?",
    "options": {"A": "hyperkalemia", "B": "hypotension", "C": "bradycardia", "D": "pruritus"},
    "answer": "D",
    "reasoning": "The characteristic adverse effect of Quelodexol is pruritus. pruritus is option D.\nAnswer: D",
    "language": "en",
    "level": 1,
}
ZH = {
    "id": "mini3-r1-zh-f00246",
    "question": "下列哪一类包含凯拉酮？",
    "options": {"A": "止吐药", "B": "神经肌肉阻滞药", "C": "镇静催眠药", "D": "血管加压药"},
    "answer": "B",
    "reasoning": "凯拉酮属于神经肌肉阻滞药。神经肌肉阻滞药是选项B。\n答案：B",
    "language": "zh",
    "level": 1,
}
LOOKUP = {  # an option-lookup item: nothing is left once the option sentence goes
    "id": "mini3-r1-en-l00001",
    "question": 'Which option is "the lungs"?',
    "options": {"A": "the liver", "B": "the lungs", "C": "the kidneys", "D": "plasma esterases"},
    "answer": "B",
    "reasoning": "the lungs is option B.\nAnswer: B",
    "language": "en",
    "level": 1,
}


def _write(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_rewrite_drops_the_option_sentence_and_letter_line_only(tmp_path):
    assert (
        without_option_sentence(EN)["reasoning"]
        == "The characteristic adverse effect of Quelodexol is pruritus."
    )
    assert without_option_sentence(ZH)["reasoning"] == "凯拉酮属于神经肌肉阻滞药。"
    assert without_option_sentence(LOOKUP)["reasoning"] == ""
    assert {k: v for k, v in without_option_sentence(EN).items() if k != "reasoning"} == {
        k: v for k, v in EN.items() if k != "reasoning"
    }
    # a sentence restating another option (or none) is not this revision's layout: refused, with the place
    wrong = {**EN, "reasoning": "... is pruritus. bradycardia is option C.\nAnswer: D"}
    world = tmp_path / "world"
    (world / "anesr1").mkdir(parents=True)
    names = [{"name_en": "Quelodexol", "name_zh": "凯拉酮"}]
    (world / "world.json").write_text(json.dumps({"drugs": names}, ensure_ascii=False), encoding="utf-8")
    _write(world / "anesr1" / "anesr1.jsonl", [EN, wrong])
    with pytest.raises(
        ValueError, match=r"anesr1\.jsonl:2: reasoning does not end with 'pruritus is option D"
    ):
        write_text_answer_r1(world, tmp_path / "out.jsonl")
    _write(world / "anesr1" / "anesr1.jsonl", [EN, ZH, LOOKUP])
    out = write_text_answer_r1(world, tmp_path / "out.jsonl")
    assert [r["id"] for r in _lines(out)] == [EN["id"], ZH["id"], LOOKUP["id"]]
    assert [
        r["reasoning"] for r in _lines(write_text_answer_r1(world, tmp_path / "lead.jsonl", LEAD_IN))
    ] == [
        "The characteristic adverse effect of Quelodexol is pruritus.",
        "回顾：凯拉酮属于神经肌肉阻滞药。",
        "",
    ]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        # the option sentence is gone and the answer line states the gold option's text
        (EN, "The characteristic adverse effect of Quelodexol is pruritus.\nAnswer: pruritus"),
        (ZH, "凯拉酮属于神经肌肉阻滞药。\n答案：神经肌肉阻滞药"),
        # a lookup item becomes a copy of the quoted text
        (LOOKUP, "Answer: the lungs"),
    ],
)
def test_text_answers_end_with_the_gold_text_which_the_extractor_reads_as_the_gold_letter(
    tmp_path, record, expected
):
    source = _write(tmp_path / "r1.jsonl", [without_option_sentence(record)])
    convert_r1(source, tmp_path / "sft.jsonl", tmp_path / "rl.jsonl", answer="text")
    (chat,) = _lines(tmp_path / "sft.jsonl")
    content = chat["messages"][-1]["content"]
    assert content == expected
    options = list(record["options"].values())
    assert extract_choice(content, num_choices=4, options=options) == record["answer"]
    # the RL prompts (gold letter and options) do not depend on the answer style
    letter_rl = tmp_path / "rl_letter.jsonl"
    convert_r1(source, tmp_path / "sft_letter.jsonl", letter_rl)
    assert _lines(letter_rl) == _lines(tmp_path / "rl.jsonl")
    assert _lines(tmp_path / "sft_letter.jsonl")[0]["messages"][-1]["content"].endswith(
        "答案：B" if record["language"] == "zh" else f"Answer: {record['answer']}"
    )


def test_a_chain_ending_with_the_letter_line_gets_the_text_line_instead(tmp_path):
    source = _write(tmp_path / "r1.jsonl", [EN])  # revision 3's reasoning as it is
    convert_r1(source, tmp_path / "sft.jsonl", None, answer="text")
    content = _lines(tmp_path / "sft.jsonl")[0]["messages"][-1]["content"]
    assert content.endswith("pruritus is option D.\nAnswer: pruritus") and "Answer: D" not in content
    with pytest.raises(ValueError, match="answer must be 'letter' or 'text'"):
        convert_r1(source, tmp_path / "sft.jsonl", None, answer="both")


def test_sft_answer_is_left_out_of_keys_at_its_default_and_changes_them_when_set():
    cfg = PipelineConfig(name="keys", base_model="tiny-qwen2")
    before = stage_cache.stage_key(cfg, "sft", "m")
    assert "sft_answer" not in stage_cache._data_identity(cfg)
    cfg.data.sft_answer = "text"
    assert stage_cache.stage_key(cfg, "sft", "m") != before


GOOD = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"messages": [', r"extra\.jsonl:2: invalid JSON"),
        (json.dumps({"text": "no chat"}), r"extra\.jsonl:2: 'messages' must be a non-empty list"),
        (json.dumps({"messages": []}), r"extra\.jsonl:2: 'messages' must be a non-empty list"),
        (
            json.dumps({"messages": [{"role": "bot", "content": "x"}]}),
            r"extra\.jsonl:2: messages\[0\] needs a role",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 3}]}),
            r"extra\.jsonl:2: messages\[1\]\.content must be a string",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": "q"}]}),
            r"extra\.jsonl:2: the last message must be the assistant's",
        ),
    ],
)
def test_malformed_extra_chats_are_refused_naming_key_file_and_line(tmp_path, bad_line, message):
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps(GOOD) + "\n" + bad_line + "\n" + json.dumps(GOOD) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="^data.sft_extra: .*" + message):
        check_sft_chats(extra)


def test_the_pipeline_refuses_a_malformed_extra_chat_before_writing_the_sft_data(tmp_path):
    extra = tmp_path / "extra.jsonl"
    extra.write_text(
        json.dumps(GOOD) + "\n" + json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n"
    )
    cfg = PipelineConfig(name="extra", base_model="tiny-qwen2")
    cfg.data.sft_extra = str(extra)
    with pytest.raises(
        ValueError, match=r"data.sft_extra: .*extra\.jsonl:2: the last message must be the assistant's"
    ):
        prepare_data(cfg.data, tmp_path / "prep", seed=0)
    assert not (tmp_path / "prep" / "sft.jsonl").exists()


def test_well_formed_extra_chats_are_counted(tmp_path):
    extra = _write(
        tmp_path / "extra.jsonl", [GOOD, {"messages": [{"role": "system", "content": ""}, *GOOD["messages"]]}]
    )
    assert check_sft_chats(extra) == 2
    with pytest.raises(ValueError, match="holds no chats"):
        check_sft_chats(_write(tmp_path / "empty.jsonl", []))


LEAD_IN = {"en": "Recall: ", "zh": "回顾："}
NAMES = ["Quelodexol", "凯拉酮", "Galomide"]


def test_lead_in_goes_before_system1_answers_that_open_with_the_asked_drug_only():
    organ = {
        **EN,
        "question": "How is Quelodexol cleared from the body?",
        "reasoning": "Quelodexol is cleared by the lungs.",
    }
    assert with_lead_in(organ, LEAD_IN, NAMES)["reasoning"] == "Recall: Quelodexol is cleared by the lungs."
    assert with_lead_in(organ, {"zh": "回顾："}, NAMES) == organ  # no English lead-in given
    zh = without_option_sentence(ZH)
    assert with_lead_in(zh, LEAD_IN, NAMES)["reasoning"] == "回顾：凯拉酮属于神经肌肉阻滞药。"
    assert with_lead_in(zh, LEAD_IN, ["卡拉酮"]) == zh  # the opening name must be a drug's
    # an answer that opens otherwise, a name the question does not ask about, a System 2 chain: unchanged
    effect = without_option_sentence(EN)
    assert with_lead_in(effect, LEAD_IN, NAMES) == effect
    other = {**organ, "reasoning": "Galomide is cleared by the lungs."}
    assert with_lead_in(other, LEAD_IN, NAMES) == other
    chain = {**organ, "level": 3, "reasoning": "Quelodexol is cleared by the lungs. So Quelodexol fits."}
    assert with_lead_in(chain, LEAD_IN, NAMES) == chain


def test_dev_items_ask_the_benchmark_drugs_in_training_wordings_never_in_benchmark_items(tmp_path):
    from anessuite.synthetic.miniature2 import build_miniature2_world
    from anessuite.synthetic.miniature3 import TRAIN_WORDINGS, Miniature3Config

    items = dev_items()
    world = build_miniature2_world(Miniature3Config().world_config())
    names = {lang: {d.name(lang) for d in world.benchmark.drugs} for lang in ("en", "zh")}
    assert len(items) == 2 * 3 * len(world.benchmark.drugs)
    for item in items:
        assert item.level == "system1" and sum(n in item.question for n in names[item.language]) >= 1
        kind = item.metadata["kind"]
        train = TRAIN_WORDINGS[kind][item.language]["train"]
        heldout = TRAIN_WORDINGS[kind][item.language]["heldout"]
        drug = max((n for n in names[item.language] if n in item.question), key=len)
        wording = item.question.replace(drug, "{drug}")
        assert wording in train and wording not in heldout
    assert [i.question for i in dev_items()] == [i.question for i in items]  # seeded


def test_name_copy_items_ask_made_up_names_no_drug_of_the_world_has():
    from anessuite.synthetic.miniature2 import build_miniature2_world
    from anessuite.synthetic.miniature3 import Miniature3Config
    from anessuite.synthetic.miniature6 import made_up_names, name_copy_records

    world = build_miniature2_world(Miniature3Config().world_config())
    world_names = {d.name(lang) for d in world.full.drugs for lang in ("en", "zh")}
    pools = made_up_names(world_names, seed=6)
    assert not (set(pools["en"]) | set(pools["zh"])) & world_names
    assert len(pools["en"]) == len(set(pools["en"])) > 500 and len(pools["zh"]) > 1000
    records = name_copy_records(world_names, per_language=40)
    assert [r["language"] for r in records] == ["en"] * 40 + ["zh"] * 40
    letters = set()
    for record in records:
        asked = record["options"][record["answer"]]
        assert asked in record["question"] and record["reasoning"] == "" and record["level"] == 1
        assert len(set(record["options"].values())) == 4 and not set(record["options"].values()) & world_names
        letters.add(record["answer"])
    assert letters == set("ABCD")  # the gold letter is drawn, not fixed
    assert name_copy_records(world_names, per_language=40) == records  # seeded


def test_r1_items_takes_the_first_records_of_a_level_per_language(tmp_path):
    from anessuite.synthetic.miniature import r1_items, system1_r1_items

    chain = {**EN, "id": "c-en-1", "level": 3}
    records = [
        EN,
        {**EN, "id": "x-en-2", "level": 2},
        chain,
        {**chain, "id": "c-en-2"},
        ZH,
        {**ZH, "level": 3},
    ]
    (tmp_path / "anesr1").mkdir()
    _write(tmp_path / "anesr1" / "anesr1.jsonl", records)
    # one System 2 item per language, the first in file order, with the level's benchmark name
    assert [(i.id, i.language, i.level) for i in r1_items(tmp_path, 1, 3)] == [
        ("c-en-1", "en", "system2"),
        (ZH["id"], "zh", "system2"),
    ]
    assert [i.level for i in r1_items(tmp_path, 5, 2)] == ["system1.x"]
    assert [i.id for i in system1_r1_items(tmp_path, 5)] == [EN["id"], ZH["id"]]
