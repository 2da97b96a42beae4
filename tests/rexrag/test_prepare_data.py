"""`python -m rexrag prepare-data` / `make rexrag-data`: FlashRAG files in, Search-R1 parquet files out, and the
loader reads both ours and files in the layout the official merge scripts write."""

from __future__ import annotations

import json
import subprocess

import pyarrow.parquet as pq
import pytest
from flashrag_layout import OFFICIAL_SHAPE_TEMPLATE, official_rows, write_flashrag, write_parquet

from rexrag.__main__ import main as rexrag_main
from rexrag.data.prepare import prepare_data
from rexrag.data.qa import DataFormatError, load_many, load_qa_file, stored_template
from rexrag.data.template import DEFAULT_TEMPLATE, TEMPLATE_FILE, render_prompt


@pytest.fixture
def flashrag(tmp_path):
    return write_flashrag(tmp_path / "FlashRAG_datasets")


def test_prepare_data_writes_the_searchr1_layout(flashrag, tmp_path):
    out = tmp_path / "out"
    result = prepare_data(flashrag, out, DEFAULT_TEMPLATE)
    train = pq.read_table(out / "train.parquet")
    assert train.column_names == [
        "id",
        "question",
        "golden_answers",
        "data_source",
        "prompt",
        "ability",
        "reward_model",
        "extra_info",
    ]
    rows = train.to_pylist()
    # NQ train then HotpotQA train (3 each), indices restarting per source as in the official merged file
    assert [r["data_source"] for r in rows] == ["nq"] * 3 + ["hotpotqa"] * 3
    assert [r["extra_info"] for r in rows] == [{"split": "train", "index": i} for i in (0, 1, 2, 0, 1, 2)]
    first = rows[0]
    # "  nq train question number 0 " -> stripped, "?" appended, rendered into the one-message chat list
    assert first["question"] == "nq train question number 0?"
    assert first["prompt"] == [
        {"role": "user", "content": render_prompt("nq train question number 0", DEFAULT_TEMPLATE)}
    ]
    assert first["ability"] == "fact-reasoning"
    assert first["reward_model"] == {"style": "rule", "ground_truth": {"target": ["nq answer 0", "alias 0"]}}
    assert first["id"] == "train_0"
    # test sets: test split when published, else dev (official rule); one file each plus the merged one
    merged = pq.read_table(out / "test.parquet").to_pylist()
    assert [r["data_source"] for r in merged[::3]] == [
        "nq",
        "triviaqa",
        "popqa",
        "hotpotqa",
        "2wikimultihopqa",
        "musique",
        "bamboogle",
    ]
    by_source = {r["data_source"]: r["id"] for r in merged}
    assert by_source["nq"].startswith("test_") and by_source["hotpotqa"].startswith("dev_")
    assert by_source["musique"].startswith("dev_") and by_source["bamboogle"].startswith("test_")
    assert all(r["extra_info"]["split"] == "test" for r in merged)
    assert pq.read_table(out / "test" / "musique.parquet").num_rows == 3
    assert result["counts"]["test/popqa"] == 3 and len(result["counts"]) == 9
    assert (out / TEMPLATE_FILE).read_text() == DEFAULT_TEMPLATE
    # our own files load back with the template they were rendered with
    examples = load_qa_file(str(out / "train.parquet"))
    assert stored_template(examples) == DEFAULT_TEMPLATE
    assert examples[3].group_key == "hotpotqa:0" and examples[3].golden_answers == [
        "hotpotqa answer 0",
        "alias 0",
    ]
    assert len({e.group_key for e in load_many([str(out / "test.parquet")])}) == 21


def test_loader_reads_the_official_scripts_layout(tmp_path):
    rows = official_rows("nq", ["who wrote hamlet?", "capital of peru?"]) + official_rows(
        "hotpotqa", ["which river is longer, the nile or the amazon?"]
    )
    path = write_parquet(rows, tmp_path / "searchr1" / "train.parquet")
    examples = load_qa_file(str(path))
    assert [e.question for e in examples] == [
        "who wrote hamlet?",
        "capital of peru?",
        "which river is longer, the nile or the amazon?",
    ]
    assert [e.group_key for e in examples] == ["nq:0", "nq:1", "hotpotqa:0"]
    assert stored_template(examples) == OFFICIAL_SHAPE_TEMPLATE
    # without the question column the question is read back through the template
    for row in rows:
        del row["question"]
    path = write_parquet(rows, tmp_path / "noquestion.parquet")
    examples = load_qa_file(str(path))
    assert examples[2].question == "which river is longer, the nile or the amazon?"
    assert stored_template(examples) == OFFICIAL_SHAPE_TEMPLATE


def test_a_row_that_does_not_round_trip_names_file_row_and_field(tmp_path):
    rows = official_rows("nq", ["q one?", "q two?", "q three?"])
    rows[2]["prompt"][0]["content"] = rows[2]["prompt"][0]["content"].replace("Work out", "Figure out")
    path = write_parquet(rows, tmp_path / "train.parquet")
    with pytest.raises(DataFormatError, match=r"train\.parquet row 2: field 'prompt' does not round-trip"):
        load_qa_file(str(path))


def test_two_files_with_different_templates_are_named(tmp_path):
    a = write_parquet(official_rows("nq", ["q one?"]), tmp_path / "a.parquet")
    b = write_parquet(
        official_rows("hotpotqa", ["q two?"], template="Other words. Q: {question}\n"), tmp_path / "b.parquet"
    )
    examples = load_many([str(a), str(b)])
    with pytest.raises(DataFormatError, match=r"a\.parquet.*b\.parquet"):
        stored_template(examples)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda r: r["reward_model"]["ground_truth"].pop("target"),
            r"row 1: field 'reward_model.ground_truth.target'",
        ),
        (lambda r: r["extra_info"].pop("index"), r"row 1: field 'extra_info.index'"),
        (
            lambda r: r.update(prompt=[{"role": "system", "content": "x"}]),
            r"row 1: field 'prompt' must end with a user",
        ),
    ],
)
def test_bad_parquet_records_name_row_and_field(tmp_path, mutate, message):
    rows = official_rows("nq", ["q one?", "q two?"])
    mutate(rows[1])
    path = write_parquet(rows, tmp_path / "bad.parquet")
    with pytest.raises(DataFormatError, match=message):
        load_qa_file(str(path))


def test_bad_flashrag_records_name_file_line_and_field(flashrag, tmp_path):
    path = flashrag / "nq" / "train.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = json.dumps({"id": "train_1", "question": None, "golden_answers": ["x"]})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"nq/train\.jsonl:2: field 'question' must be a string"):
        prepare_data(flashrag, tmp_path / "out", DEFAULT_TEMPLATE)
    lines[1] = json.dumps({"id": "train_1", "question": "q", "golden_answers": []})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        DataFormatError, match=r"nq/train\.jsonl row 1 \(id train_1\): field 'golden_answers' is empty"
    ):
        prepare_data(flashrag, tmp_path / "out", DEFAULT_TEMPLATE)


def test_missing_benchmark_lists_the_folder(flashrag, tmp_path):
    for split in ("train", "dev"):
        (flashrag / "musique" / f"{split}.jsonl").unlink()
    with pytest.raises(DataFormatError, match=r"musique: no test.jsonl / dev.jsonl / train.jsonl found"):
        prepare_data(flashrag, tmp_path / "out", DEFAULT_TEMPLATE)


def test_cli_and_make_target(flashrag, tmp_path, capsys):
    template_file = tmp_path / "template.txt"
    template_file.write_text(OFFICIAL_SHAPE_TEMPLATE)
    out = tmp_path / "cli"
    code = rexrag_main(
        [
            "prepare-data",
            "--flashrag",
            str(flashrag),
            "--out",
            str(out),
            "--template-file",
            str(template_file),
        ]
    )
    assert code == 0 and "train/hotpotqa: 3 questions" in capsys.readouterr().out
    assert stored_template(load_qa_file(str(out / "train.parquet"))) == OFFICIAL_SHAPE_TEMPLATE
    # the make target passes FLASHRAG and OUT through to the same command
    dry = subprocess.run(
        ["make", "-n", "rexrag-data", f"FLASHRAG={flashrag}", f"OUT={out}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"-m rexrag prepare-data --flashrag {flashrag} --out {out}" in dry.stdout
