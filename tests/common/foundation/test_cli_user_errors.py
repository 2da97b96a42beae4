"""User errors print one line and exit 2, through the real command lines (subprocesses), tracebacks only on demand.

`rlcore.cli.run_cli` wraps `python -m rexrag` and `python -m anessuite`; these tests run them as a user would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rlcore.cli import run_cli
from rlcore.errors import RecordFormatError, UserError

ROOT = Path(__file__).resolve().parents[3]
CPU_CONFIG = ROOT / "packages/rexrag/configs/cpu/rexrag.yaml"
GOOD = {"id": "1", "question": "Which city is the capital of Veltria?", "golden_answers": ["Orsk"]}
# Line 2 lacks the comma between two fields: the decoder stops at the quote opening "golden_answers".
BAD_LINE = '{"id": "2", "question": "Who founded Orsk?" "golden_answers": ["Ann Vale"]}'


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "RUNS_DIR": str(cwd / "runs"),
        **env,
    }
    if "RLCORE_DEBUG" not in env:
        full_env.pop("RLCORE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300
    )


def _assert_one_line(proc: subprocess.CompletedProcess, prog: str) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if f"{prog}: error:" in line]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def question_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "questions.jsonl"
    good.write_text(json.dumps(GOOD) + "\n", encoding="utf-8")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(GOOD) + "\n" + BAD_LINE + "\n", encoding="utf-8")
    missing_field = tmp_path / "missing_field.jsonl"
    missing_field.write_text(json.dumps({"id": "3", "question": "Where?"}) + "\n", encoding="utf-8")
    return {"good": good, "bad": bad, "missing_field": missing_field}


def _train_on(path: Path, *extra: str) -> list[str]:
    return [
        "rexrag",
        "train",
        "--config",
        str(CPU_CONFIG),
        "qa.source=files",
        f"qa.train_files=[{path}]",
        f"qa.eval_files=[{path}]",
        "retriever.kind=http",
        *extra,
    ]


def test_malformed_line_names_file_line_and_the_right_column(tmp_path, question_files):
    proc = _cli(_train_on(question_files["bad"]), tmp_path)
    line = _assert_one_line(proc, "rexrag train")
    # Column of the quote that opens "golden_answers": where the missing comma should have been (1-based).
    # {"id": "2", = 11 chars, ` "question": ` runs to 24, the 19-char quoted question to 43, a space, then 45.
    column = BAD_LINE.index('"golden_answers"') + 1
    assert column == 45
    assert f"{question_files['bad']}:2: invalid JSON (Expecting ',' delimiter at column {column})" in line


def test_missing_field_names_file_line_and_field(tmp_path, question_files):
    proc = _cli(_train_on(question_files["missing_field"]), tmp_path)
    line = _assert_one_line(proc, "rexrag train")
    assert f"{question_files['missing_field']}:1: missing field 'golden_answers'" in line


def test_unreachable_server_says_what_to_start(tmp_path, question_files):
    url = f"http://127.0.0.1:{_free_port()}"
    proc = _cli(_train_on(question_files["good"], f"retriever.url={url}"), tmp_path)
    line = _assert_one_line(proc, "rexrag train")
    assert url in line and "make serve-retriever" in line


@pytest.mark.slow
def test_missing_default_model_names_the_make_target(tmp_path):
    # The CPU config's model is the warm-up `make rexrag-sft-cpu` writes; in a fresh folder it does not exist yet.
    proc = _cli(["rexrag", "train", "--config", str(CPU_CONFIG)], tmp_path)
    line = _assert_one_line(proc, "rexrag train")
    assert "runs/rexrag-cpu/sft/model" in line and "make rexrag-sft-cpu" in line


def test_debug_flag_and_variable_show_the_traceback(tmp_path, question_files):
    args = _train_on(question_files["bad"])
    with_flag = _cli([*args, "--debug"], tmp_path)
    assert with_flag.returncode != 0 and "Traceback" in with_flag.stderr
    assert "RecordFormatError" in with_flag.stderr or "DataFormatError" in with_flag.stderr
    with_variable = _cli(args, tmp_path, RLCORE_DEBUG="1")
    assert with_variable.returncode != 0 and "Traceback" in with_variable.stderr


def test_rexrag_eval_and_anessuite_score_missing_inputs(tmp_path):
    proc = _cli(["rexrag", "eval", "--predictions", "nope.jsonl", "--out", "e.json"], tmp_path)
    assert "nope.jsonl" in _assert_one_line(proc, "rexrag eval")
    bad = tmp_path / "preds.jsonl"
    bad.write_text('{"data_source": "x", "golden_answers": ["a"], "prediction": "a"}\n{"data_source": \n')
    proc = _cli(["rexrag", "eval", "--predictions", str(bad), "--out", "e.json"], tmp_path)
    assert f"{bad}:2: invalid JSON" in _assert_one_line(proc, "rexrag eval")
    proc = _cli(
        ["anessuite", "score", "--benchmark", "missing.json", "--responses", "r.jsonl", "--out", "o"],
        tmp_path,
    )
    assert "missing.json" in _assert_one_line(proc, "anessuite score")
    # --debug right after the program name works too, and shows the traceback
    proc = _cli(
        ["anessuite", "--debug", "score", "--benchmark", "missing.json", "--responses", "r", "--out", "o"],
        tmp_path,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "missing.json" in proc.stderr


def test_run_cli_keeps_bugs_loud_and_user_errors_quiet(capsys):
    def user_mistake(argv):
        raise RecordFormatError("data.jsonl:3: missing field 'question'")

    assert run_cli(user_mistake, ["--x"], "tool") == 2
    assert capsys.readouterr().err == "tool: error: data.jsonl:3: missing field 'question'\n"

    def with_hint(argv):
        raise FileNotFoundError("model path 'runs/m' does not exist")

    assert run_cli(with_hint, [], "tool", hint=lambda err: "build it with `make m`") == 2
    assert capsys.readouterr().err.endswith("does not exist; build it with `make m`\n")

    def bug(argv):
        raise ZeroDivisionError("a bug, not the user's mistake")

    with pytest.raises(ZeroDivisionError):
        run_cli(bug, [], "tool")
    with pytest.raises(UserError):  # --debug re-raises, so the traceback is printed by Python
        run_cli(user_mistake, ["--debug"], "tool")
    seen = []
    assert run_cli(lambda argv: seen.append(argv) or 3, ["a", "--debug", "b"], "tool") == 3
    assert seen == [["a", "b"]]  # --debug never reaches the command's own parser
