"""Read the project's markdown the way a user does: the commands in its code blocks, its links, its paths.

Shared by tests/test_docs_commands.py, tests/test_docs_links.py and the "your own data" end-to-end test.

A code block can be excluded from the command test with a marker on the line right above its fence::

    <!-- docs-commands: skip <why this block cannot run offline> -->

The reason is required, so every excluded block says why in the markdown itself.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_MARKER = re.compile(r"<!--\s*docs-commands:\s*skip\s+(?P<reason>\S.*?)\s*-->")
FENCE = re.compile(r"^\s*(```|~~~)")
# A shell line that starts a documented command: optional `$ `, optional VAR=value prefixes, then the program.
COMMAND_START = re.compile(
    r"^(?:\$\s+)?(?:[A-Z_][A-Z0-9_]*=\S+\s+)*(?P<prog>make|(?:\.venv/bin/)?python3?)(?:\s|$)"
)


def doc_files() -> list[Path]:
    """The user-facing markdown: README.md, CONTRIBUTING.md and docs/*.md."""
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [path for path in files if path.is_file()]


@dataclass
class CodeBlock:
    path: Path
    line: int  # 1-based line of the opening fence
    lines: list[tuple[int, str]]  # (1-based line number, text) of the block's body
    skip_reason: str | None


@dataclass
class Command:
    path: Path
    line: int
    text: str  # the command with continuation lines joined and the trailing comment removed
    skip_reason: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def code_blocks(path: Path) -> list[CodeBlock]:
    blocks: list[CodeBlock] = []
    text_lines = path.read_text(encoding="utf-8").splitlines()
    current: CodeBlock | None = None
    previous = ""
    for number, line in enumerate(text_lines, 1):
        if FENCE.match(line):
            if current is None:
                marker = SKIP_MARKER.search(previous)
                current = CodeBlock(path, number, [], marker.group("reason") if marker else None)
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.lines.append((number, line))
        if line.strip():
            previous = line
    return blocks


def strip_comment(line: str) -> str:
    """Drop a trailing shell comment (`# ...` outside quotes)."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line.rstrip()


def block_commands(block: CodeBlock) -> list[Command]:
    """`python -m ...` and `make ...` lines of a code block, continuation lines joined."""
    commands: list[Command] = []
    pending: list[str] = []
    start = 0
    for number, raw in block.lines:
        line = strip_comment(raw).removesuffix("&").rstrip()  # a background job is checked like any command
        if pending:
            pending.append(line.rstrip("\\").strip())
            if not line.endswith("\\"):
                commands.append(Command(block.path, start, " ".join(pending), block.skip_reason))
                pending = []
            continue
        stripped = line.strip()
        match = COMMAND_START.match(stripped)
        if not match or (match.group("prog") != "make" and " -m " not in f" {stripped} "):
            continue
        if stripped.endswith("\\"):
            pending, start = [stripped.rstrip("\\").strip()], number
        else:
            commands.append(Command(block.path, number, stripped, block.skip_reason))
    return commands


def all_commands() -> list[Command]:
    return [cmd for path in doc_files() for block in code_blocks(path) for cmd in block_commands(block)]


INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


def inline_spans(path: Path) -> list[tuple[int, str]]:
    """Backticked spans outside code blocks, with their line numbers."""
    spans: list[tuple[int, str]] = []
    in_block = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            in_block = not in_block
            continue
        if not in_block:
            spans.extend((number, match.group(1)) for match in INLINE_CODE.finditer(line))
    return spans


def split_command(text: str) -> list[str]:
    return shlex.split(text)
