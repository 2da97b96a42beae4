"""rlcore.io: the one JSONL reader; every error names the file and the line."""

import gzip

import pytest

from rlcore.io import iter_jsonl_records, read_jsonl


class MyFormatError(Exception):
    pass


def test_records_with_line_numbers_skip_blank_lines_and_read_gzip(tmp_path):
    text = '{"a": 1}\n\n   \n{"a": 2}\n'
    plain = tmp_path / "x.jsonl"
    plain.write_text(text)
    packed = tmp_path / "x.jsonl.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    for path in (plain, packed):
        assert list(iter_jsonl_records(path)) == [(1, {"a": 1}), (4, {"a": 2})]
    assert read_jsonl(plain, limit=1) == [{"a": 1}]


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"a": 1}\n{"a": \n', r"x\.jsonl:2: invalid JSON"),  # truncated object on line 2
        (b'{"a": 1}\n[1, 2]\n', r"x\.jsonl:2: expected a JSON object, got list"),  # not an object
        (b'{"a": 1}\n\n{"a": "\xff"}\n', r"x\.jsonl:3: invalid UTF-8"),  # bad bytes on line 3
    ],
)
def test_errors_name_file_and_line_with_the_callers_exception(tmp_path, content, message):
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(MyFormatError, match=message):
        list(iter_jsonl_records(path, MyFormatError))


def test_non_objects_allowed_when_asked_and_missing_file_named(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("[1]\n2\n")
    assert [v for _, v in iter_jsonl_records(path, objects_only=False)] == [[1], 2]
    with pytest.raises(FileNotFoundError, match="prompts not found: .*nope.jsonl"):
        list(iter_jsonl_records(tmp_path / "nope.jsonl", what="prompts"))
