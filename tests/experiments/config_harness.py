"""Find every committed recipe config and validate it by running its recipe with ``--dry-run``.

Convention (experiments/README.md): the leading comment block of each config names the entry point,

    # recipe: rexrag.train                 -> python -m rexrag.train --config FILE --dry-run
    # recipe: anessuite eval               -> python -m anessuite eval --config FILE --dry-run

and ``--dry-run`` prints the resolved config as YAML (``rlcore.config.recipe_main``) and exits 0.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIG_GLOBS = (
    "experiments/*/*.yaml",  # config.yaml, experiment.yaml and stage configs next to them (e.g. pipeline.yaml)
    "experiments/*/arms/*.yaml",  # one small override per arm
    "packages/*/configs/**/*.yaml",
    "packages/*/src/*/configs/**/*.yaml",
)
_RECIPE_LINE = re.compile(r"^#\s*recipe:\s*(?P<argv>\S.*?)\s*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_WORD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class RecipeLineError(ValueError):
    """The config does not say which recipe validates it (or says it in a form the test cannot run)."""


def load_script(experiment: str, filename: str, name: str) -> ModuleType:
    """Import ``experiments/<experiment>/<filename>`` (a script, not a package module) as module ``name``."""
    path = REPO / "experiments" / experiment / filename
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_configs(root: Path = REPO) -> list[Path]:
    """Every committed recipe config, relative to ``root``, sorted and without duplicates."""
    found = {
        path.relative_to(root) for pattern in CONFIG_GLOBS for path in root.glob(pattern) if path.is_file()
    }
    return sorted(found)


def recipe_argv(config: Path) -> list[str]:
    """``["rexrag.train"]`` or ``["anessuite", "eval"]`` from the ``# recipe:`` line of the leading comments.

    Raises:
        RecipeLineError: no such line before the first YAML line, or a malformed module/subcommand.
    """
    for number, line in enumerate(config.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break
        match = _RECIPE_LINE.match(stripped)
        if match:
            module, *subcommand = match.group("argv").split()
            if not _MODULE.match(module) or not all(_WORD.match(word) for word in subcommand):
                raise RecipeLineError(
                    f"{config}:{number}: '{stripped}' is not '# recipe: <python.module> [subcommand]'"
                )
            return [module, *subcommand]
    raise RecipeLineError(
        f"{config}: no '# recipe: <python module>' line in the comments at the top of the file; add one "
        "(e.g. '# recipe: rexrag.train') so tests/experiments/test_configs.py can dry-run it"
    )


@dataclass
class DryRun:
    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    resolved: Any = None  # the printed YAML, parsed


def dry_run(
    config: Path,
    root: Path = REPO,
    scratch: Path | None = None,
    timeout: float = 600,
    extra_env: dict[str, str] | None = None,
    overrides: list[str] | None = None,
) -> DryRun:
    """Run ``python -m <recipe> --config <config> --dry-run [overrides]`` from ``root``; offline, writing nothing
    outside ``scratch``."""
    command = [sys.executable, "-m", *recipe_argv(root / config), "--config", str(config), "--dry-run"]
    command += overrides or []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    if scratch is not None:
        env["RUNS_DIR"] = str(scratch / "runs")
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch / 'mlflow.db'}"
    proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    result = DryRun(command, proc.returncode, proc.stdout, proc.stderr)
    if proc.returncode == 0:
        try:
            result.resolved = yaml.safe_load(proc.stdout)
        except yaml.YAMLError:
            result.resolved = None
    return result


def find_key(tree: Any, name: str) -> list[Any]:
    """Values of every mapping key called ``name`` anywhere in ``tree``."""
    found = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == name:
                found.append(value)
            found.extend(find_key(value, name))
    elif isinstance(tree, list):
        for item in tree:
            found.extend(find_key(item, name))
    return found


def explain(config: Path, result: DryRun) -> str:
    """A failure message that says what ran and what it printed."""
    tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-25:])
    return f"{config}: `{' '.join(result.command[1:])}` exited {result.returncode}\n{tail}"
