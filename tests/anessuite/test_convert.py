"""Converters on small fixtures: language by content/field (not file name), streaming parquet, schema errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from anessuite.__main__ import main
from anessuite.convert import convert_corpus, convert_qa, convert_r1
from anessuite.mcq import SchemaError


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_corpus_language_by_content_not_file_name(tmp_path):
    folder = tmp_path / "AnesCorpus"
    folder.mkdir()
    # file names as on the hub (AnesCorpus_zh-*): the official `--split cn` matched none of them
    pq.write_table(
        pa.table({"text": ["丙泊酚可引起低血压。", "Chinese file, English row about propofol.", "  "]}),
        folder / "AnesCorpus_zh-00000-of-00001.parquet",
        row_group_size=1,
    )
    pq.write_table(
        pa.table({"text": ["Sevoflurane is a volatile anesthetic.", "七氟烷是一种吸入麻醉药。"]}),
        folder / "AnesCorpus_en-00000-of-00001.parquet",
    )
    stats = convert_corpus(folder, tmp_path / "zh.jsonl", lang="zh")
    assert [r["text"] for r in _lines(tmp_path / "zh.jsonl")] == [
        "七氟烷是一种吸入麻醉药。",
        "丙泊酚可引起低血压。",
    ]
    # 5 rows read: 2 Chinese kept, 2 English skipped, 1 blank skipped as too short
    assert stats == {"read": 5, "written": 2, "skipped_language": 2, "skipped_short": 1}
    convert_corpus(folder, tmp_path / "all.jsonl", lang="all")
    assert len(_lines(tmp_path / "all.jsonl")) == 4


def test_corpus_missing_text_column_names_file_row_field(tmp_path):
    pq.write_table(pa.table({"content": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(SchemaError, match=r"bad.parquet: row 0: field 'text'.*fields found: \['content'\]"):
        convert_corpus(tmp_path / "bad.parquet", tmp_path / "o.jsonl")


def test_qa_to_chat(tmp_path):
    pq.write_table(
        pa.table(
            {
                "question": ["What is MAC?", "什么是MAC？", ""],
                "answer": ["Minimum alveolar concentration.", "最低肺泡浓度。", "x"],
            }
        ),
        tmp_path / "AnesQA_en.parquet",
    )
    stats = convert_qa(tmp_path, tmp_path / "sft.jsonl", lang="en", system_prompt="Be brief.")
    (record,) = _lines(tmp_path / "sft.jsonl")
    assert record["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is MAC?"},
        {"role": "assistant", "content": "Minimum alveolar concentration."},
    ]
    assert stats["skipped_language"] == 1 and stats["skipped_empty"] == 1


def test_r1_to_sft_and_rl(tmp_path):
    rows = [
        # options as a mapping, reasoning without a final answer line -> the line is appended
        {
            "id": "r1",
            "question": "Which drug reverses opioids?",
            "options": {"A": "Flumazenil", "B": "Naloxone", "C": "Atropine", "D": "Neostigmine"},
            "answer": "B",
            "reasoning": "Naloxone is an opioid antagonist.",
            "level": 1,
        },
        # list options, Chinese by content, a reasoning that already ends with the answer line, no id
        {
            "question": "哪种药物逆转肌松？",
            "choices": ["纳洛酮", "舒更葡糖"],
            "answer": "B",
            "cot": "舒更葡糖包裹罗库溴铵。\n答案：B",
            "level": 3,
        },
    ]
    source = tmp_path / "r1.jsonl"
    source.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows[:1]), encoding="utf-8")
    stats = convert_r1(source, tmp_path / "sft.jsonl", tmp_path / "rl.jsonl")
    (sft,) = _lines(tmp_path / "sft.jsonl")
    (rl,) = _lines(tmp_path / "rl.jsonl")
    assert sft["messages"][-1] == {
        "role": "assistant",
        "content": "Naloxone is an opioid antagonist.\nAnswer: B",
    }
    assert (
        rl["gold_letter"] == "B"
        and rl["num_choices"] == 4
        and rl["level"] == "system1"
        and rl["language"] == "en"
    )
    # the user turn is exactly the evaluation prompt for this item
    assert rl["prompt"] == sft["messages"][:-1]
    assert rl["prompt"][-1]["content"].endswith("A. Flumazenil\nB. Naloxone\nC. Atropine\nD. Neostigmine")
    assert stats["sft_written"] == stats["rl_written"] == 1

    source.write_text(json.dumps(rows[1], ensure_ascii=False), encoding="utf-8")
    convert_r1(source, tmp_path / "sft2.jsonl", tmp_path / "rl2.jsonl", lang="zh")
    (sft2,) = _lines(tmp_path / "sft2.jsonl")
    (rl2,) = _lines(tmp_path / "rl2.jsonl")
    assert sft2["messages"][-1]["content"] == "舒更葡糖包裹罗库溴铵。\n答案：B"  # not appended twice
    assert rl2["id"] == "r1-0" and rl2["language"] == "zh" and rl2["level"] == "system2"
    assert "题目：" in rl2["prompt"][-1]["content"]  # Chinese instructions for a Chinese item


def test_r1_bad_gold_names_record(tmp_path):
    source = tmp_path / "r1.jsonl"
    source.write_text(
        json.dumps({"id": "q9", "question": "?", "options": ["a", "b"], "answer": "C", "reasoning": "x"})
    )
    with pytest.raises(SchemaError, match=r"record 'q9': field 'answer'"):
        convert_r1(source, tmp_path / "s.jsonl", None)


def test_convert_cli_on_synthetic_world(tmp_path):
    from anessuite.synthetic.generate import WorldDataConfig, generate_world_data

    paths = generate_world_data(
        tmp_path / "w",
        WorldDataConfig(
            cpt_docs_en=6, cpt_docs_zh=2, rlvr_per_language=8, bench_en=(2, 1, 1), bench_zh=(2, 1, 1)
        ),
    )
    assert (
        main(
            [
                "convert",
                "corpus",
                "--input",
                str(paths["corpus"]),
                "--out",
                str(tmp_path / "c.jsonl"),
                "--lang",
                "zh",
            ]
        )
        == 0
    )
    assert len(_lines(tmp_path / "c.jsonl")) == 2
    assert (
        main(["convert", "r1", "--input", str(paths["anesr1"]), "--rl-out", str(tmp_path / "rl.jsonl")]) == 0
    )
    records = _lines(tmp_path / "rl.jsonl")
    assert len(records) == 16 and {r["language"] for r in records} == {"en", "zh"}


def _hub_download(folder, files):
    """A dataset folder as a Hub download leaves it: the data plus card, .gitattributes and Croissant file."""
    folder.mkdir(parents=True)
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n---\n# card\n", encoding="utf-8"
    )
    (folder / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")
    (folder / "croissant.json").write_text(json.dumps({"@context": {"@vocab": "https://schema.org/"}}))
    (folder / "meta.json").write_text(json.dumps({"name": "x", "version": 1}))
    cache = folder / ".cache" / "huggingface"
    cache.mkdir(parents=True)
    (cache / "stale.json").write_text("[{]")  # a broken file in a hidden folder is never read
    for name, table in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / name, row_group_size=2)
    return folder


def test_anescorpus_hub_layout_through_the_cli(tmp_path):
    # AnesCorpus card: one `text` column, splits AnesCorpus_en / AnesCorpus_zh as sharded parquet files
    folder = _hub_download(
        tmp_path / "AnesCorpus",
        {
            "data/AnesCorpus_en-00000-of-00002.parquet": pa.table(
                {"text": ["Propofol causes hypotension."] * 3}
            ),
            "data/AnesCorpus_en-00001-of-00002.parquet": pa.table({"text": ["Sugammadex binds rocuronium."]}),
            "data/AnesCorpus_zh-00000-of-00001.parquet": pa.table(
                {"text": ["舒更葡糖可逆转罗库溴铵。", "七氟烷用于吸入诱导。"]}
            ),
        },
    )
    out = tmp_path / "cpt.jsonl"
    assert main(["convert", "corpus", "--input", str(folder), "--out", str(out)]) == 0
    texts = [r["text"] for r in _lines(out)]
    assert len(texts) == 6 and texts[-1] == "七氟烷用于吸入诱导。"  # 4 EN + 2 ZH rows, nothing from the card


def test_anesqa_hub_layout_through_the_cli(tmp_path):
    # AnesQA: question/answer columns (free-text answers, not MCQ)
    folder = _hub_download(
        tmp_path / "AnesQA",
        {
            "data/AnesQA_en-00000-of-00001.parquet": pa.table(
                {"question": ["What is MAC?"], "answer": ["A potency measure."]}
            )
        },
    )
    out = tmp_path / "qa.jsonl"
    assert main(["convert", "qa", "--input", str(folder), "--out", str(out)]) == 0
    (record,) = _lines(out)
    assert record["messages"][-1] == {"role": "assistant", "content": "A potency measure."}


def test_r1_accepts_the_anesbench_2026_field_names(tmp_path):
    rows = [
        {
            "id": "5f0c2c3e-8a54-4f4e-9a43-1b2d3c4d5e6f",
            "question": "Which drug reverses rocuronium?",
            "A": "Neostigmine",
            "B": "Sugammadex",
            "C": "Naloxone",
            "D": "Flumazenil",
            "choice_num": 4,
            "target": "B",
            "category": 2,
            "reasoning": "Sugammadex encapsulates rocuronium.",
        }
    ]
    source = tmp_path / "anesr1.json"
    source.write_text(json.dumps(rows), encoding="utf-8")
    convert_r1(source, None, tmp_path / "rl.jsonl")
    (rl,) = _lines(tmp_path / "rl.jsonl")
    assert rl["gold_letter"] == "B" and rl["level"] == "system1.x" and rl["num_choices"] == 4
