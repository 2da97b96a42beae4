"""Every command quoted in README.md, CONTRIBUTING.md and docs/*.md exists and takes the arguments it is shown with.

Code blocks: each `python -m ...` line runs with `--dry-run` when it takes a config (`--config`, which checks the
file, every key and value) and with `--help` otherwise (which checks the module and subcommand); `pytest` lines must
name test paths that exist; each `make ...` line runs as `make -n` (the target exists and expands), and when it
passes variables, the recipe lines it would run with a `--config` are dry-run with those variables, so a wrong key
in `DEMO_ARGS=...` fails too. `make compare EXPERIMENT=x` and `rlcore.compare --experiment x` must name an MLflow
experiment some committed config or recipe creates.

Inline spans in prose (`make target`, `python -m module sub`) are checked statically: the target exists, the module
resolves, and a project CLI's subcommand exists.

A block that cannot run offline says why with `<!-- docs-commands: skip <reason> -->` above its fence
(tests/docs_markdown.py).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from docs_markdown import ROOT, Command, all_commands, doc_files, inline_spans

from rexrag.data.veltria import write as write_example

TIMEOUT_S = 180
COMMANDS = all_commands()
RUNNABLE = [cmd for cmd in COMMANDS if cmd.skip_reason is None]
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# Subcommands of the project's CLIs, as `python -m <module> --help` lists them.
PROJECT_CLIS = ("rexrag", "anessuite")


def _env(tmp_root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_root / 'mlflow.db'}",
    )
    return env


def _checkout_view(folder: Path) -> Path:
    """A folder that looks like the repository root (its top-level entries linked) plus the example input files
    the docs' "your own data" sequence writes first (`my_data/`), so the commands run as documented without
    writing into the checkout."""
    for entry in ROOT.iterdir():
        if entry.name not in (".git", "runs", "my_data"):
            (folder / entry.name).symlink_to(entry)
    write_example(folder / "my_data")
    return folder


def _run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(
            argv, cwd=env["DOCS_CWD"], env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {TIMEOUT_S} s"
    return proc.returncode, (proc.stdout + proc.stderr)[-3000:]


def _python_argv(tokens: list[str]) -> list[str]:
    """`python -m mod args` -> the argv that checks it (with --dry-run or --help appended)."""
    index = tokens.index("-m")
    module, args = tokens[index + 1], tokens[index + 2 :]
    if "--dry-run" in args or "--help" in args or "-h" in args:
        extra: list[str] = []
    elif "--config" in args:
        extra = ["--dry-run"]
    else:
        extra = ["--help"]
    return [sys.executable, "-m", module, *args, *extra]


def _known_experiments() -> set[str]:
    """MLflow experiment names that committed configs or recipe defaults create."""
    names: set[str] = set()
    yaml_files = [*ROOT.glob("packages/*/configs/**/*.yaml"), *ROOT.glob("experiments/**/*.yaml")]
    for path in yaml_files:
        names.update(re.findall(r"^\s*experiment:\s*['\"]?([\w.-]+)", path.read_text(encoding="utf-8"), re.M))
    for path in ROOT.glob("packages/*/src/**/*.py"):
        names.update(re.findall(r"experiment=['\"]([\w.-]+)['\"]", path.read_text(encoding="utf-8")))
    # experiments the docs' own commands create with an `experiment=` / `tracking.experiment=` override
    for cmd in COMMANDS:
        names.update(re.findall(r"(?:^|\s)(?:tracking\.)?experiment=([\w.-]+)", cmd.text))
    return names


def _compare_experiment(tokens: list[str]) -> str | None:
    for index, token in enumerate(tokens):
        if token.startswith("EXPERIMENT="):
            return token.split("=", 1)[1]
        if token == "--experiment" and index + 1 < len(tokens):
            return tokens[index + 1]
    return None


def _follow_make(output: str, env: dict[str, str]) -> list[tuple[str, int, str]]:
    """Dry-run the single-line `python -m ... --config` recipes that `make -n` printed."""
    results = []
    for line in output.replace("\\\n", " ").splitlines():
        line = line.strip()
        if " -m " not in line or "--config" not in line or re.search(r"[;|&$`()<>]", line):
            continue
        tokens = shlex.split(line)
        if not tokens[0].endswith(("python", "python3")):
            continue
        argv = _python_argv(tokens)
        results.append((line, *_run(argv, env)))
    return results


def _check(command: Command, env: dict[str, str], experiments: set[str]) -> list[str]:
    """Problems found with one documented command (empty when it is right)."""
    tokens = shlex.split(command.text)
    if tokens and tokens[0] == "$":
        tokens = tokens[1:]
    while tokens and ASSIGNMENT.match(tokens[0]):
        tokens = tokens[1:]
    problems = []
    experiment = _compare_experiment(tokens)
    if experiment is not None and ("compare" in tokens or "rlcore.compare" in tokens):
        if experiment not in experiments:
            problems.append(
                f"experiment '{experiment}' is created by no config or recipe (known: {sorted(experiments)})"
            )
    if tokens[0] == "make":
        argv = ["make", "-n", "--no-print-directory", *tokens[1:]]
        rc, output = _run(argv, env)
        if rc != 0:
            return [*problems, f"`{' '.join(argv)}` exited {rc}:\n{output}"]
        if any(ASSIGNMENT.match(token) for token in tokens[1:]):
            for line, follow_rc, follow_out in _follow_make(output, env):
                if follow_rc != 0:
                    problems.append(
                        f"the recipe it runs, `{line} --dry-run`, exited {follow_rc}:\n{follow_out}"
                    )
        return problems
    module = tokens[tokens.index("-m") + 1]
    if module == "pytest":
        paths = [
            token.split("::")[0] for token in tokens[tokens.index("-m") + 2 :] if not token.startswith("-")
        ]
        paths = [p for p in paths if "/" in p or p.endswith(".py")]
        problems += [f"test path {p} does not exist" for p in paths if not (ROOT / p).exists()]
        return problems
    argv = _python_argv(tokens)
    rc, output = _run(argv, env)
    if rc != 0:
        problems.append(f"`{' '.join(argv[2:])}` exited {rc}:\n{output}")
    return problems


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, list[str]]:
    env = _env(tmp_path_factory.mktemp("docs-commands"))
    env["DOCS_CWD"] = str(_checkout_view(tmp_path_factory.mktemp("checkout")))
    experiments = _known_experiments()
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = pool.map(lambda cmd: _check(cmd, env, experiments), RUNNABLE)
        return {f"{cmd.where} {cmd.text}": problems for cmd, problems in zip(RUNNABLE, found, strict=True)}


def test_the_docs_quote_commands():
    # The extraction itself must see the README's two front-door commands, or every other check is vacuous.
    texts = [cmd.text for cmd in COMMANDS]
    assert "make demo" in texts and "make test" in texts, texts


@pytest.mark.parametrize("command", RUNNABLE, ids=[f"{c.where}" for c in RUNNABLE])
def test_documented_command_runs(command: Command, results):
    problems = results[f"{command.where} {command.text}"]
    assert not problems, f"{command.where}: `{command.text}`\n" + "\n".join(problems)


def test_skipped_blocks_say_why():
    for command in COMMANDS:
        if command.skip_reason is not None:
            assert len(command.skip_reason.split()) >= 3, f"{command.where}: say why in a few words"


def _make_targets() -> set[str]:
    proc = subprocess.run(
        ["make", "-pRrq", "-f", "Makefile", ":"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return set(re.findall(r"^([A-Za-z0-9][\w.-]*):", proc.stdout, re.M))


def _project_subcommands(module: str) -> set[str]:
    """Subcommands a project CLI lists in its --help."""
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return set(re.findall(r"^\s{2,}([a-z][\w-]*)\s", proc.stdout, re.M)) | set(
        re.findall(r"\{([\w,-]+)\}", proc.stdout)[0].split(",") if "{" in proc.stdout else []
    )


def test_inline_commands_exist():
    targets = _make_targets()
    subcommands = {module: _project_subcommands(module) for module in PROJECT_CLIS}
    problems = []
    for path in doc_files():
        for line, span in inline_spans(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            words = span.split()
            make_words = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
            if words[0] == "make" and make_words:
                target = make_words[0]
                if target.endswith("*"):
                    if not any(t.startswith(target[:-1]) for t in targets):
                        problems.append(f"{where}: no make target matches `{target}`")
                elif target not in targets:
                    problems.append(f"{where}: `{span}`: no make target '{target}'")
            elif re.match(r"^(\.venv/bin/)?python3? -m \S", span):
                module = words[words.index("-m") + 1]
                if module == "venv":
                    continue
                if importlib.util.find_spec(module) is None:
                    problems.append(f"{where}: `{span}`: no module '{module}'")
                elif module in subcommands and len(words) > words.index("-m") + 2:
                    sub = words[words.index("-m") + 2]
                    if not sub.startswith("-") and sub not in subcommands[module]:
                        problems.append(f"{where}: `{span}`: '{module}' has no subcommand '{sub}'")
    assert not problems, "\n".join(problems)


SOURCE_COMMAND = re.compile(r"[`'\"](make [a-z][\w-]*|python -m [a-z][\w.]*(?: [a-z][\w-]*)?)")


def test_help_texts_and_error_messages_name_commands_that_exist():
    """`make <target>` and `python -m <module> [subcommand]` quoted in the packages' messages and help texts."""
    targets = _make_targets()
    subcommands = {module: _project_subcommands(module) for module in PROJECT_CLIS}
    problems, seen = [], 0
    for path in sorted(ROOT.glob("packages/*/src/**/*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for command in SOURCE_COMMAND.findall(line):
                seen += 1
                where = f"{path.relative_to(ROOT)}:{number}: `{command}`"
                words = command.split()
                if words[0] == "make":
                    if words[1] not in targets:
                        problems.append(f"{where}: no make target '{words[1]}'")
                    continue
                module = words[2]
                if importlib.util.find_spec(module) is None:
                    problems.append(f"{where}: no module '{module}'")
                elif module in subcommands and len(words) > 3 and words[3] not in subcommands[module]:
                    problems.append(f"{where}: '{module}' has no subcommand '{words[3]}'")
    assert seen > 20, f"only {seen} commands found in the sources: the pattern is broken"
    assert not problems, "\n".join(problems)
