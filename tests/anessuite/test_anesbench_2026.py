"""The AnesBench 2026 release layout, loaded as users download it and scored through the user-facing command.

The fixture folder ``fixtures/anesbench_2026`` is written by us in the exact published schema: one JSON list per
language (``anesbench_en.json`` / ``anesbench_zh.json``), records with ``id`` (UUID string), ``question``,
options ``A``..``I`` (as many as ``choice_num``), ``choice_num`` (int), ``target`` (letter) and ``category``
(int 1/2/3), plus the non-data files a download carries (dataset card, ``meta.json``, a Croissant file).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from anessuite.__main__ import main
from anessuite.benchmark import benchmark_files, detect_layout, load_anesbench
from anessuite.mcq import SchemaError

FIXTURE = Path(__file__).parent / "fixtures" / "anesbench_2026"


@pytest.fixture()
def bench(tmp_path):
    """A copy of the fixture folder plus the .gitattributes every Hub download has (not committed here: a
    .gitattributes inside this repository would change how git stores the fixture)."""
    folder = tmp_path / "AnesBench"
    shutil.copytree(FIXTURE, folder)
    (folder / ".gitattributes").write_text("*.json filter=lfs diff=lfs merge=lfs -text\n")
    return folder


def _records(folder, name):
    return json.loads((folder / name).read_text(encoding="utf-8"))


def _write(path, records):
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def test_fixture_is_in_the_published_schema():
    """Guards the fixture itself: field names, types and value forms of the dataset card."""
    for name, language_cjk in (("anesbench_en.json", False), ("anesbench_zh.json", True)):
        records = _records(FIXTURE, name)
        assert isinstance(records, list) and records
        for record in records:
            options = sorted(k for k in record if len(k) == 1 and k.isupper())
            assert set(record) == {"id", "question", "choice_num", "target", "category", *options}
            assert str(uuid.UUID(record["id"])) == record["id"]
            assert type(record["choice_num"]) is int and type(record["category"]) is int
            assert options == [chr(65 + i) for i in range(record["choice_num"])]
            assert record["target"] in options and record["category"] in (1, 2, 3)
            assert any("\u4e00" <= ch <= "\u9fff" for ch in record["question"]) == language_cjk
    counts = {
        len([k for k in r if len(k) == 1])
        for n in ("en", "zh")
        for r in _records(FIXTURE, f"anesbench_{n}.json")
    }
    assert min(counts) == 4 and max(counts) == 9


def test_folder_loads_both_languages_and_skips_non_data_files(bench):
    assert [p.name for p in benchmark_files(bench)] == ["anesbench_en.json", "anesbench_zh.json"]
    items = load_anesbench(bench)
    by_lang = {lang: [i for i in items if i.language == lang] for lang in ("en", "zh")}
    assert len(by_lang["en"]) == 10 and len(by_lang["zh"]) == 8
    levels = [i.level for i in by_lang["en"]]
    # category 1/2/3 = System 1 / 1.x / 2; the fixture card says 5/3/2 and 4/2/2
    assert (levels.count("system1"), levels.count("system1.x"), levels.count("system2")) == (5, 3, 2)
    zh_levels = [i.level for i in by_lang["zh"]]
    assert (zh_levels.count("system1"), zh_levels.count("system1.x"), zh_levels.count("system2")) == (4, 2, 2)
    first_zh = by_lang["zh"][0]
    assert first_zh.answer == "B" and first_zh.option_text("B") == "纳洛酮" and first_zh.num_choices == 4
    assert max(i.num_choices for i in items) == 9
    assert detect_layout(set(_records(bench, "anesbench_en.json")[0])) == "2026"


def test_one_file_and_language_subset(bench):
    items = load_anesbench(bench / "anesbench_zh.json")
    assert {i.language for i in items} == {"zh"} and len(items) == 8
    assert {i.language for i in load_anesbench(bench, languages=["en"])} == {"en"}


def test_jsonl_and_parquet_copies_load_the_same_items(bench, tmp_path):
    records = _records(bench, "anesbench_en.json")
    jsonl = tmp_path / "anesbench_en.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    parquet_dir = tmp_path / "parquet"
    parquet_dir.mkdir()
    # a Parquet export has a column per option; options beyond choice_num are null
    columns = sorted({k for r in records for k in r})
    pq.write_table(
        pa.table({c: [r.get(c) for r in records] for c in columns}), parquet_dir / "anesbench_en.parquet"
    )
    (parquet_dir / "README.md").write_text("card\n")
    reference = [(i.key, i.options, i.answer, i.level) for i in load_anesbench(bench / "anesbench_en.json")]
    for source in (jsonl, parquet_dir):
        assert [(i.key, i.options, i.answer, i.level) for i in load_anesbench(source)] == reference


def test_a_chinese_stem_made_mostly_of_an_english_name_stays_chinese(tmp_path):
    records = _records(FIXTURE, "anesbench_zh.json")
    records[0] = {**records[0], "question": "Dexmedetomidine infusion after cardiac surgery的作用是"}
    items = load_anesbench(_write(tmp_path / "anesbench_zh.json", records))
    assert {i.language for i in items} == {"zh"}  # the file's majority language, not the stem's script


@pytest.mark.parametrize(
    "mutate, field, fragment",
    [
        # category must be 1, 2 or 3 (System 1 / 1.x / 2)
        (lambda r: r.update(category=4), "category", "1, 2 or 3"),
        (lambda r: r.update(category=0), "category", "1, 2 or 3"),
        # the target must be one of the item's own options: F does not exist with choice_num 4
        (lambda r: r.update(target="F"), "target", "not one of the options"),
        (lambda r: r.pop("target"), "target", "missing"),
        # choice_num 5 but only A..D are given
        (lambda r: r.update(choice_num=5), "choice_num", "'E' is missing"),
        # choice_num 3 but D is present
        (lambda r: r.update(choice_num=3), "choice_num", "'D' is present"),
        (lambda r: r.update(choice_num="4"), "choice_num", "integer"),
    ],
)
def test_validation_errors_name_file_record_and_field(tmp_path, mutate, field, fragment):
    records = _records(FIXTURE, "anesbench_en.json")
    target = records[2]
    mutate(target)
    path = _write(tmp_path / "anesbench_en.json", records)
    with pytest.raises(SchemaError) as err:
        load_anesbench(path)
    message = str(err.value)
    assert "anesbench_en.json" in message and f"record '{target['id']}'" in message
    assert f"field '{field}'" in message and fragment in message


def test_duplicate_id_is_an_error(tmp_path):
    records = _records(FIXTURE, "anesbench_en.json")
    records.append(dict(records[3]))
    with pytest.raises(
        SchemaError, match=rf"anesbench_en.json: record '{records[3]['id']}': field 'id': duplicate"
    ):
        load_anesbench(_write(tmp_path / "anesbench_en.json", records))


def test_score_command_on_the_folder_with_no_flags(bench, tmp_path, capsys):
    responses = tmp_path / "R.jsonl"
    lines = []
    for name in ("anesbench_en.json", "anesbench_zh.json"):
        for index, record in enumerate(_records(bench, name)):
            # right on even rows, a wrong letter on odd rows, EN and ZH answer lines
            letter = record["target"] if index % 2 == 0 else ("A" if record["target"] != "A" else "B")
            text = f"The answer is {letter}." if name.endswith("en.json") else f"答案：{letter}"
            lines.append(json.dumps({"id": record["id"], "response": text}, ensure_ascii=False))
    responses.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "O"
    assert main(["score", "--benchmark", str(bench), "--responses", str(responses), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["by_language"]) == {"en", "zh"}
    assert results["overall"]["n"] == 18 and results["overall"]["abstained"] == 0
    # rows 0,2,4,6,8 of 10 EN items and 0,2,4,6 of 8 ZH items are right
    assert results["by_language"]["en"]["total"] == 0.5 and results["by_language"]["zh"]["total"] == 0.5
    assert results["by_language"]["en"]["n_by_level"] == {"system1": 5, "system1.x": 3, "system2": 2}
    assert results["avg"] == 0.5
    for name in ("scored.jsonl", "table.md", "table.csv", "levels.png"):
        assert (out / name).is_file()
    assert set(results["benchmark"]["sha256"]) == {"anesbench_en.json", "anesbench_zh.json"}
    assert "overall accuracy 0.5" in capsys.readouterr().out


def test_official_prompt_preset_layout():
    from anessuite.prompts import PromptConfig, build_messages

    zh = load_anesbench(FIXTURE / "anesbench_zh.json")[1]  # five options A..E
    system, user = build_messages(zh, PromptConfig(preset="official"))
    assert system["role"] == "system" and "anesthesiology" in system["content"]
    # English instructions for a Chinese item (as the official code), letters "A, B, C, D and E", no answer format
    assert "from A, B, C, D and E" in user["content"] and "step by step" in user["content"]
    assert "Answer:" not in user["content"] and "答案" not in user["content"]
    assert user["content"].endswith(
        f"{zh.question}\nA. {zh.option_text('A')}\nB. {zh.option_text('B')}\n"
        f"C. {zh.option_text('C')}\nD. {zh.option_text('D')}\nE. {zh.option_text('E')}"
    )
    ours = build_messages(zh, PromptConfig())
    assert "答案：X" in ours[-1]["content"]  # the default keeps our bilingual prompt
    with pytest.raises(ValueError, match="preset"):
        build_messages(zh, PromptConfig(preset="paper"))
