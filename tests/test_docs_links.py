"""The docs point only at things the project has: relative links and backticked repository paths exist.

A backticked span counts as a repository path when it starts with one of the repository's committed top-level
folders (or names a top-level file); `{a,b}` alternatives are expanded and `*` must match at least one file.
Spans with placeholders (`<name>`, `...`, `$VAR`) and outputs written at run time (`runs/`, `.cache/`) are not
paths of the repository and are left alone.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from docs_markdown import ROOT, doc_files, inline_spans

TOP_LEVEL = ("packages", "docs", "experiments", "infra", "benchmarks", "tests", "mk", "requirements", "specs")
TOP_FILES = ("README.md", "CONTRIBUTING.md", "Makefile", "pyproject.toml")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|\$|\bN\b")


def _expand_braces(text: str) -> list[str]:
    match = re.search(r"\{([^{}]*)\}", text)
    if not match:
        return [text]
    return [
        expanded
        for choice in match.group(1).split(",")
        for expanded in _expand_braces(text[: match.start()] + choice + text[match.end() :])
    ]


def _exists(relative: str) -> bool:
    relative = relative.rstrip("/")
    if "*" in relative:
        return any(ROOT.glob(relative))
    return (ROOT / relative).exists()


def _path_candidates(span: str) -> list[str]:
    """The repository paths a backticked span names (empty when it names none)."""
    candidates = []
    for word in span.split():
        word = word.strip(",;:()'\"").split("::")[0]
        if "=" in word:
            word = word.split("=", 1)[1]
        if PLACEHOLDER.search(word):
            continue
        if word.split("/")[0] in TOP_LEVEL and "/" in word or word in TOP_FILES:
            candidates.extend(_expand_braces(word))
    return candidates


def test_relative_links_resolve():
    missing = []
    for path in doc_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for target in LINK.findall(line):
                if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                    continue
                file_part = target.split("#")[0]
                if not (path.parent / file_part).exists():
                    missing.append(f"{path.relative_to(ROOT)}:{number}: link to {target}")
    assert not missing, "\n".join(missing)


def test_backticked_paths_exist():
    missing = []
    checked = 0
    for path in doc_files():
        for number, span in inline_spans(path):
            for candidate in _path_candidates(span):
                checked += 1
                if not _exists(candidate):
                    missing.append(
                        f"{path.relative_to(ROOT)}:{number}: `{span}` -> {candidate} does not exist"
                    )
    assert checked > 50, f"only {checked} paths found: the extraction is broken"
    assert not missing, "\n".join(missing)


def test_docs_name_no_files_outside_the_project():
    """Design notes the project was built from are not part of it: the docs may not send readers there."""
    offenders = []
    for path in doc_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\bspecs?/[\w.-]+\.md|\bspec section\b|/work/", line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not offenders, "\n".join(offenders)


def test_path_helpers():
    # Braces expand to every alternative; placeholders and run outputs are not repository paths.
    assert _expand_braces("a/x_{3b,7b}.yaml") == ["a/x_3b.yaml", "a/x_7b.yaml"]
    assert _path_candidates("python -m x --config packages/a.yaml") == ["packages/a.yaml"]
    assert _path_candidates("runs/demo/<time>/") == []
    assert _path_candidates("infra/launch_train.sh --dry-run") == ["infra/launch_train.sh"]
    assert not _exists("specs/tiny-scale.md")
    assert Path(ROOT / "README.md").is_file()


def test_recipe_modules_exist():
    """`RECIPE=<module>` (infra/launch_train.sh) must name a module `python -m` can run."""
    missing = []
    for path in doc_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for module in re.findall(r"RECIPE=([\w.]+)", line):
                if importlib.util.find_spec(module) is None:
                    missing.append(f"{path.relative_to(ROOT)}:{number}: RECIPE={module} is no module")
    assert not missing, "\n".join(missing)


def test_code_and_configs_name_no_design_notes():
    """Comments, docstrings and configs may cite the papers and the official code, not notes outside the project."""
    pattern = re.compile(r"\bspecs?/[\w.-]+\.md|\bspec (?:section|bug|rexrag|anessuite|\d)|docs/dev/|/work/")
    offenders = []
    for folder in ("packages", "experiments", "infra", "benchmarks", "mk"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".yaml", ".md", ".sh", ".mk", ".toml") or not path.is_file():
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not offenders, "\n".join(offenders)
