"""Code shapes the formatter cannot keep by itself (CONTRIBUTING.md, "Code").

- A config field's comment sits at the end of its one line or on the line above it. A comment inside a field
  that spans several lines is the shape the formatter makes of a too-long ``x: int = 3  # comment`` line
  (``x: int = (\\n    3  # comment\\n)``), which reads as neither.
- A function imports a project module (``rlcore``, ``rexrag``, ``anessuite``) only when that module pulls in a
  heavy optional library (torch, transformers, mlflow, vLLM, ...) that the importing module must not load to
  start (a CLI's ``--help`` or ``--dry-run``), or to break an import cycle; every such import is listed below
  with its reason. Everything else is imported at the top of the module.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for p in (REPO / "packages").glob("*/src/**/*.py"))
PROJECT = ("rlcore", "rexrag", "anessuite")

# files another change is rewriting now; their wrapped field comments and function-level imports go with it
LEFT_TO_THEIR_REWRITE = {
    "packages/rexrag/src/rexrag/recipes/sft.py",
    "packages/rexrag/src/rexrag/data/demos.py",
    "packages/rexrag/src/rexrag/data/own_demos.py",
    "packages/anessuite/src/anessuite/backends/hf.py",
    "packages/anessuite/src/anessuite/knowledge_probe.py",
    "packages/anessuite/src/anessuite/pipeline/hf_stages.py",
    "packages/common/src/rlcore/tracking.py",
    "packages/common/src/rlcore/retrieval/server.py",
    "packages/common/src/rlcore/retrieval/encoders.py",
}


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def wrapped_field_comments(source: str) -> list[int]:
    """Line numbers of class-level annotated fields that span several lines and hold a comment inside."""
    comment_lines = {
        token.start[0]
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    found = []
    for cls in ast.walk(ast.parse(source)):
        if isinstance(cls, ast.ClassDef):
            for node in cls.body:
                if isinstance(node, ast.AnnAssign) and node.end_lineno > node.lineno:
                    if comment_lines & set(range(node.lineno, node.end_lineno + 1)):
                        found.append(node.lineno)
    return found


def test_the_wrapped_shape_is_detected():
    wrapped = "class C:\n    x: int = (\n        3  # a long comment\n    )\n"
    trailing = "class C:\n    x: list[int] = field(\n        default_factory=list\n    )  # comment\n"
    fine = "class C:\n    # a long comment\n    x: int = 3\n    y: int = 4  # short\n"
    assert wrapped_field_comments(wrapped) == [2]
    assert wrapped_field_comments(trailing) == [2]
    assert wrapped_field_comments(fine) == []


def test_field_comments_are_on_the_line_above():
    offenders = {
        _rel(path): lines
        for path in SOURCES
        if _rel(path) not in LEFT_TO_THEIR_REWRITE
        and (lines := wrapped_field_comments(path.read_text(encoding="utf-8")))
    }
    assert not offenders, (
        f"fields carrying a comment inside a wrapped field (file: lines): {offenders}; put the comment on the "
        "line above the field"
    )


def unexplained_project_imports(source: str) -> list[int]:
    """Line numbers of imports of project modules inside functions without a comment on the line above."""
    lines = source.splitlines()
    found = []
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and not node.level:
                    name = node.module or ""
                elif isinstance(node, ast.Import):
                    name = node.names[0].name
                else:
                    continue
                above = lines[node.lineno - 2].strip()
                # the comment may stand above a run of such imports
                if name.split(".")[0] in PROJECT and not above.startswith(("#", "from ", "import ")):
                    found.append(node.lineno)
    return sorted(set(found))


def test_an_unexplained_function_level_import_is_detected():
    lazy = "def f():\n    from rlcore.models import load_tokenizer\n"
    explained = (
        "def f():\n    # heavy and optional here: loads torch\n    from rlcore.models import load_tokenizer\n"
    )
    assert unexplained_project_imports(lazy) == [2]
    assert unexplained_project_imports(explained) == []
    assert unexplained_project_imports("def f():\n    import json\n") == []


def test_project_modules_are_imported_at_the_top():
    offenders = {
        _rel(path): lines
        for path in SOURCES
        if _rel(path) not in LEFT_TO_THEIR_REWRITE
        and (lines := unexplained_project_imports(path.read_text(encoding="utf-8")))
    }
    assert not offenders, (
        f"project modules imported inside functions without a reason (file: lines): {offenders}; import them at "
        "the top of the module, or say on the line above why not (a heavy optional library, an import cycle)"
    )
