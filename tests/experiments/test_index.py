"""experiments/README.md's index table and the experiment folders agree: every folder has a row, every row
names a folder, a status from the allowed ones, and a make target that exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from config_harness import REPO

README = REPO / "experiments" / "README.md"
# "pre-checks failed": a pre-registered experiment whose design failed its own pre-checks, so its main runs were not
# made; "hypotheses failed": one that ran as registered and whose hypotheses did not hold
STATUSES = {
    "reproduced on CPU",
    "needs GPU",
    "reproduced on GPU",
    "not run yet",
    "pre-checks failed",
    "hypotheses failed",
}
COLUMNS = ["name", "paper table", "make target", "status", "notes"]


def parse_index(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of the markdown table between the index markers."""
    match = re.search(r"<!-- index:start[^>]*-->\n(?P<table>.*?)<!-- index:end -->", text, re.S)
    if match is None:
        raise AssertionError(
            "experiments/README.md lost its <!-- index:start --> / <!-- index:end --> markers"
        )
    lines = [line.strip() for line in match.group("table").strip().splitlines() if line.strip()]

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip("|").split("|")]

    header = cells(lines[0])
    assert re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[1]), f"second table line is not a separator: {lines[1]}"
    rows = []
    for line in lines[2:]:
        values = cells(line)
        assert len(values) == len(header), f"row has {len(values)} cells, header {len(header)}: {line}"
        rows.append(dict(zip(header, values)))
    return header, rows


def folder_name(cell: str) -> str:
    """`[rexrag-tiny](rexrag-tiny/)` or `rexrag-tiny` -> `rexrag-tiny`."""
    link = re.fullmatch(r"\[([^\]]+)\]\([^)]*\)", cell)
    return (link.group(1) if link else cell).strip("`")


def experiment_folders(root: Path = REPO) -> list[str]:
    return sorted(
        p.name for p in (root / "experiments").iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )


HEADER, ROWS = parse_index(README.read_text(encoding="utf-8"))


def test_index_columns():
    assert HEADER == COLUMNS


def test_every_folder_has_a_row_and_every_row_a_folder():
    listed = [folder_name(row["name"]) for row in ROWS]
    assert len(listed) == len(set(listed)), f"duplicate rows: {listed}"
    folders = experiment_folders()
    assert sorted(listed) == folders, (
        f"experiments/README.md index and folders differ: missing rows {sorted(set(folders) - set(listed))}, "
        f"rows without a folder {sorted(set(listed) - set(folders))}"
    )


@pytest.mark.parametrize(
    "row",
    ROWS or [pytest.param(None, marks=pytest.mark.skip(reason="index has no rows yet"))],
    ids=[folder_name(r["name"]) for r in ROWS] or ["none-yet"],
)
def test_row_status_and_make_target(row: dict[str, str]):
    name = folder_name(row["name"])
    assert row["status"] in STATUSES, f"{name}: status '{row['status']}' is not one of {sorted(STATUSES)}"
    target = row["make target"].strip("`").removeprefix("make ").strip()
    assert target, f"{name}: no make target"
    # -n: print the recipe without running it; fails when the target does not exist
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", target], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{name}: `make {target}` is not a target: {result.stderr.strip()}"
    assert (REPO / "experiments" / name / "README.md").is_file(), (
        f"{name}: experiments/{name}/README.md missing"
    )


def test_parser_catches_a_broken_table():
    text = "<!-- index:start -->\n| name | status |\n|---|---|\n| a | b | c |\n<!-- index:end -->\n"
    with pytest.raises(AssertionError, match="row has 3 cells, header 2"):
        parse_index(text)
    good = (
        "<!-- index:start x -->\n| name | status |\n|---|---|\n| [a](a/) | needs GPU |\n<!-- index:end -->\n"
    )
    header, rows = parse_index(good)
    assert header == ["name", "status"] and folder_name(rows[0]["name"]) == "a"
