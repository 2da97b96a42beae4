"""Repository-wide rules: import direction between packages and a size cap on source files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "rlcore": ROOT / "packages/common/src/rlcore",
    "rexrag": ROOT / "packages/rexrag/src/rexrag",
    "anessuite": ROOT / "packages/anessuite/src/anessuite",
}
# Who may import whom: the shared core imports neither project; the projects never import each other.
FORBIDDEN = {"rlcore": {"rexrag", "anessuite"}, "rexrag": {"anessuite"}, "anessuite": {"rexrag"}}
MAX_LINES = 600  # CONVENTIONS.md: recipes under ~600 lines, components under ~400
# Folders held to the component cap: the trainer is one short loop over phase modules, each with room to grow.
COMPONENT_FOLDERS = {ROOT / "packages/common/src/rlcore/trainer": 400}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_import_direction(package):
    offenders = []
    for path in sorted(PACKAGES[package].rglob("*.py")):
        bad = _imported_roots(path) & (FORBIDDEN[package] | {"experiments", "infra", "benchmarks", "tests"})
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_each_package_has_its_own_pyproject():
    for name in ("common", "rexrag", "anessuite"):
        assert (ROOT / "packages" / name / "pyproject.toml").is_file()


def test_source_files_stay_readable():
    too_long = []
    for folder in PACKAGES.values():
        for path in folder.rglob("*.py"):
            lines = sum(1 for _ in path.open(encoding="utf-8"))
            if lines > MAX_LINES:
                too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not too_long, f"split these files (cap {MAX_LINES} lines):\n" + "\n".join(too_long)


@pytest.mark.parametrize("folder", sorted(COMPONENT_FOLDERS), ids=lambda p: str(p.relative_to(ROOT)))
def test_component_folders_stay_under_their_cap(folder):
    cap = COMPONENT_FOLDERS[folder]
    sizes = {path: sum(1 for _ in path.open(encoding="utf-8")) for path in sorted(folder.rglob("*.py"))}
    assert sizes, f"{folder} holds no Python files (moved? update COMPONENT_FOLDERS)"
    too_long = [f"{path.relative_to(ROOT)}: {lines} lines" for path, lines in sizes.items() if lines > cap]
    assert not too_long, f"split these files (cap {cap} lines):\n" + "\n".join(too_long)


def test_test_file_basenames_are_unique():
    """Without __init__.py files pytest imports test modules by basename; two equal names break collection."""
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name == "conftest.py":
            continue
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(ROOT)} and {path.relative_to(ROOT)}")
        seen.setdefault(path.name, path)
    assert not clashes, "rename one of each pair (prefix the area):\n" + "\n".join(clashes)
