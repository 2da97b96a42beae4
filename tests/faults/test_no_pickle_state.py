"""No state of ours is unpickled: every ``torch.load`` in the packages passes ``weights_only=True`` (plain
containers and tensors only), and nothing imports ``pickle`` / calls ``numpy.load(allow_pickle=True)``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "packages").glob("*/src/**/*.py"))


def _is_torch_load(call: ast.Call) -> bool:
    func = call.func
    return (
        isinstance(func, ast.Attribute) and func.attr == "load" and getattr(func.value, "id", "") == "torch"
    )


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def unsafe_loads(source: str, filename: str) -> list[str]:
    """``file:line`` of every torch.load without a literal ``weights_only=True``, every pickle import and every
    ``allow_pickle=True``."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Call):
            weights_only = _keyword(node, "weights_only")
            if _is_torch_load(node) and not (
                isinstance(weights_only, ast.Constant) and weights_only.value is True
            ):
                found.append(f"{filename}:{node.lineno}: torch.load without weights_only=True")
            allow = _keyword(node, "allow_pickle")
            if isinstance(allow, ast.Constant) and allow.value is True:
                found.append(f"{filename}:{node.lineno}: allow_pickle=True")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(n and n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib") for n in names):
                found.append(f"{filename}:{node.lineno}: imports a pickle library")
    return found


def test_the_scan_catches_what_it_should():
    bad = (
        "import torch, pickle\n"
        "torch.load(p)\n"  # weights_only left to the torch version's default
        "torch.load(p, weights_only=False)\n"
        "torch.load(p, weights_only=flag)\n"  # not provably True
        "np.load(p, allow_pickle=True)\n"
        "torch.load(p, map_location='cpu', weights_only=True)\n"  # the one good call
    )
    assert [line.split(":")[1] for line in unsafe_loads(bad, "x.py")] == ["1", "2", "3", "4", "5"]


def test_no_torch_load_in_the_packages_unpickles():
    assert SOURCES, "no package sources found"
    offenders = [
        hit for path in SOURCES for hit in unsafe_loads(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert not offenders, "\n".join(offenders)
