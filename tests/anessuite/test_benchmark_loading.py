"""AnesBench layouts, level mapping, schema errors, and the MCQ task registry."""

from __future__ import annotations

import json

import pytest

from anessuite.benchmark import detect_layout, load_anesbench, load_items
from anessuite.mcq import MCQItem, SchemaError, detect_language, normalize_level
from anessuite.tasks import TaskSpec, load_mcq_file, load_task_spec


def _write(path, records):
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


BILINGUAL = [
    {
        "id": "1bb76e22",
        "choice_num": 4,
        "answer": "B",
        "level": 1,
        "en_question": "Which drug reverses opioid overdose?",
        "en_A": "Flumazenil",
        "en_B": "Naloxone",
        "en_C": "Atropine",
        "en_D": "Neostigmine",
        "zh_question": "哪种药物可以逆转阿片类药物过量?",
        "zh_A": "氟马西尼",
        "zh_B": "纳洛酮",
        "zh_C": "阿托品",
        "zh_D": "新斯的明",
    },
    {
        "id": "2cc",
        "choice_num": 5,
        "answer": "e",  # lower case is accepted and normalised
        "level": 3,
        "en_question": "Best next step?",
        **{f"en_{x}": f"option {x}" for x in "ABCDE"},
        "zh_question": "下一步最佳处理是什么?",
        **{f"zh_{x}": f"选项{x}" for x in "ABCDE"},
    },
]


def test_bilingual_layout_defaults_to_english(tmp_path):
    items = load_anesbench(_write(tmp_path / "anesbench.json", BILINGUAL))
    assert [item.key for item in items] == ["en/1bb76e22", "en/2cc"]
    first = items[0]
    assert first.language == "en" and first.level == "system1" and first.answer == "B"
    assert first.option_text("B") == "Naloxone" and first.num_choices == 4
    assert items[1].num_choices == 5 and items[1].answer == "E" and items[1].level == "system2"


def test_bilingual_layout_both_languages_and_cn_prefix(tmp_path):
    records = [{k.replace("zh_", "cn_"): v for k, v in r.items()} for r in BILINGUAL]
    items = load_anesbench(_write(tmp_path / "b.json", records), languages=["en", "zh"])
    assert sorted(item.key for item in items) == ["en/1bb76e22", "en/2cc", "zh/1bb76e22", "zh/2cc"]
    zh = next(item for item in items if item.key == "zh/1bb76e22")
    assert zh.question.startswith("哪种") and zh.option_text("B") == "纳洛酮"


def test_2026_release_two_files_language_from_content_not_name(tmp_path):
    folder = tmp_path / "bench"
    folder.mkdir()
    en = [
        {
            "id": "e1",
            "question": "Dose of drug X?",
            "A": "1",
            "B": "2",
            "C": "3",
            "D": "4",
            "answer": "C",
            "level": "System 1.x",
        }
    ]
    # The Chinese file reuses English-prefixed keys and a misleading file name: content decides.
    zh = [
        {
            "id": "z1",
            "en_question": "丙泊酚的主要副作用是什么?",
            "en_A": "低血压",
            "en_B": "高血压",
            "en_C": "心动过速",
            "en_D": "发热",
            "answer": "A",
            "level": 2,
            "choice_num": 4,
        }
    ]
    _write(folder / "anesbench_en.json", en)
    _write(folder / "anesbench_en_copy.json", zh)
    items = load_anesbench(folder)
    assert {(i.id, i.language, i.level) for i in items} == {
        ("e1", "en", "system1.x"),
        ("z1", "zh", "system1.x"),
    }
    assert [i.key for i in load_anesbench(folder, languages=["zh"])] == ["zh/z1"]


def test_flat_layout_with_options_list_and_language_field(tmp_path):
    records = [
        {"id": "q", "question": "Q?", "options": ["a", "b", "c"], "answer": "b", "level": 1, "language": "zh"}
    ]
    (item,) = load_anesbench(_write(tmp_path / "x.json", records))
    assert item.options == (("A", "a"), ("B", "b"), ("C", "c")) and item.language == "zh"


def test_unknown_layout_lists_fields(tmp_path):
    path = _write(tmp_path / "odd.json", [{"stem": "?", "choices": [], "gold": 1}])
    with pytest.raises(SchemaError) as err:
        load_anesbench(path)
    message = str(err.value)
    assert "odd.json" in message and "['choices', 'gold', 'stem']" in message


@pytest.mark.parametrize(
    "mutate, field, fragment",
    [
        # answer letter not among the 4 options
        (lambda r: r.update(answer="F"), "answer", "not one of the options"),
        # two letters: AnesBench is single-answer
        (lambda r: r.update(answer="AB"), "answer", "single option letter"),
        (lambda r: r.pop("answer"), "answer", "missing"),
        # level code 4 does not exist (1/2/3 only)
        (lambda r: r.update(level=4), "level", "1, 2 or 3"),
        (lambda r: r.update(level="hard"), "level", "unknown level"),
        (lambda r: r.pop("level"), "level", "missing"),
        # choice_num says 4 but option D is missing: choice_num and the options disagree
        (lambda r: r.pop("en_D"), "choice_num", "'en_D' is missing"),
        # an empty option text
        (lambda r: r.update(en_C="  "), "en_C", "non-empty"),
        # choice_num 4 but a fifth option is present
        (lambda r: r.update(en_E="extra"), "choice_num", "'en_E' is present"),
        (lambda r: r.update(choice_num="four"), "choice_num", "integer"),
        (lambda r: r.update(en_question=""), "en_question", "non-empty"),
    ],
)
def test_schema_errors_name_record_and_field(tmp_path, mutate, field, fragment):
    records = [dict(BILINGUAL[1]), dict(BILINGUAL[0])]
    mutate(records[1])
    with pytest.raises(SchemaError) as err:
        load_anesbench(_write(tmp_path / "bad.json", records))
    message = str(err.value)
    assert "record '1bb76e22'" in message and f"field '{field}'" in message and fragment in message


def test_duplicate_ids_rejected(tmp_path):
    with pytest.raises(SchemaError, match="duplicate"):
        load_anesbench(_write(tmp_path / "d.json", [BILINGUAL[0], BILINGUAL[0]]))


@pytest.mark.parametrize(
    "raw, level",
    [
        (1, "system1"),
        (2, "system1.x"),  # the original integer code: 2 means System 1.x, not System 2
        (3, "system2"),
        ("3", "system2"),
        ("System 1", "system1"),
        ("system1.x", "system1.x"),
        ("System_1.x", "system1.x"),
        ("1.x", "system1.x"),
        ("System 2", "system2"),  # a spelled-out label is read literally
        (2.0, "system1.x"),
    ],
)
def test_normalize_level(raw, level):
    assert normalize_level(raw) == level


@pytest.mark.parametrize("raw", [0, 4, True, "System 3", None, 1.5])
def test_normalize_level_rejects(raw):
    with pytest.raises(ValueError):
        normalize_level(raw)


def test_detect_language():
    assert detect_language("What is the MAC of sevoflurane?") == "en"
    assert detect_language("七氟烷的MAC值是多少?") == "zh"
    # a Chinese stem with a long English drug name is still Chinese (9 CJK vs 15 Latin: 9*5=45 >= 9+15)
    assert detect_language("患者术中使用dexmedetomidine后出现") == "zh"


def test_medqa_medmcqa_mmlu_registry(tmp_path):
    medqa = tmp_path / "medqa.jsonl"
    medqa.write_text(
        json.dumps(
            {
                "question": "Q1",
                "options": {"A": "x", "B": "y", "C": "z", "D": "w"},
                "answer_idx": "D",
                "answer": "w",
            }
        )
        + "\n"
    )
    (item,) = load_mcq_file(medqa, "medqa")
    assert item.answer == "D" and item.num_choices == 4 and item.id == "medqa-0" and item.level is None

    medmcqa = _write(
        tmp_path / "medmcqa.json",
        [{"id": "m1", "question": "Q", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 2}],
    )
    assert load_mcq_file(medmcqa, "medmcqa")[0].answer == "C"  # cop 2 with 0 = A -> C

    mmlu = _write(
        tmp_path / "mmlu.json",
        [
            {"question": "anat", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": 1},
            {"question": "law", "subject": "professional_law", "choices": ["a", "b", "c", "d"], "answer": 0},
        ],
    )
    items = load_items(mmlu, task="mmlu-medical")
    assert [(i.question, i.answer) for i in items] == [("anat", "B")]  # the law question is filtered out


def test_task_spec_yaml_and_errors(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "name: mine\nquestion_field: q\noption_fields: [o1, o2, o3]\nanswer_field: gold\n"
        "answer_format: index1\n"
    )
    spec = load_task_spec(spec_file)
    data = _write(tmp_path / "mine.json", [{"id": 7, "q": "?", "o1": "a", "o2": "b", "o3": "c", "gold": 3}])
    assert load_items(data, task_spec=spec_file)[0].answer == "C"  # index1: 3 -> C
    bad = _write(tmp_path / "bad.json", [{"id": 8, "q": "?", "o1": "a", "o2": "b", "o3": "c", "gold": 4}])
    with pytest.raises(SchemaError, match=r"record '8': field 'gold': index 4 outside the 3 options"):
        load_mcq_file(bad, spec)
    spec_file.write_text("name: x\nquestion_fild: q\n")
    with pytest.raises(ValueError, match="question_fild"):
        load_task_spec(spec_file)
    with pytest.raises(ValueError, match="exactly one"):
        TaskSpec(name="y", question_field="q")


def test_detect_layout_and_record_roundtrip(tmp_path):
    assert detect_layout({"en_question", "zh_question"}) == "bilingual"
    assert detect_layout({"zh_question", "zh_A"}) == "prefixed"
    assert detect_layout({"question", "options"}) == "flat"
    item = MCQItem(
        id="r", question="Q", options=(("A", "x"), ("B", "y")), answer="B", language="en", level="system2"
    )
    (back,) = load_anesbench(_write(tmp_path / "r.json", [item.to_record()]))
    assert back == item.__class__(**{**item.__dict__, "source": "r.json"})
