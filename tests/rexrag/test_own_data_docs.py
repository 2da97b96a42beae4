"""The "Your own data" sequence of docs/rexrag.md, run verbatim at the documented quick size.

The block is taken from the markdown itself, so an edit that breaks the documented sequence fails here: it writes the
example corpus and questions, builds a BM25 index, serves it over HTTP, warms SmolLM2-135M-Instruct up on search
demonstrations built from the training questions through the server, trains it with GRPO through the server,
evaluates the result on the held-out questions, compares the runs and stops the server. The full sequence takes
tens of minutes on two CPU cores, so the test appends the quick-size overrides the docs name (fewer warm-up steps,
one GRPO step, no held-out curve) to the `sft` and `train` lines and nothing else; the held-out EM it reaches must
be the one the docs state for that size.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from docs_markdown import ROOT, code_blocks

from rexrag.data.veltria import write

DOC = ROOT / "docs/rexrag.md"
DOCUMENTED_PORT = "8765"
# the quick size: appended to the block's `rexrag sft` and `rexrag train` lines (the docs say so, checked below)
QUICK_SFT = "train.total_steps=8 eval.num_questions=0"
QUICK_TRAIN = "train.total_steps=1 heldout_curve.every=0 final_eval.enabled=false"
# two of the 18 held-out questions: greedy decoding of a model trained on another CPU may flip an answer or two
EM_TOLERANCE = 0.12


def _sequence_lines() -> list[str]:
    blocks = [b for b in code_blocks(DOC) if any("rexrag example-data" in line for _, line in b.lines)]
    assert len(blocks) == 1, "docs/rexrag.md must hold exactly one 'your own data' block"
    return [line for _, line in blocks[0].lines]


def _line(lines: list[str], needle: str) -> str:
    found = [line for line in lines if needle in line]
    assert len(found) == 1, f"the own-data block must hold exactly one `{needle}` line; it holds {len(found)}"
    return found[0]


def _overrides(line: str) -> dict[str, str]:
    return dict(
        token.split("=", 1) for token in shlex.split(line) if "=" in token and not token.startswith("-")
    )


def _documented_quick_em() -> float:
    match = re.search(r"at the quick size[^.]*?held-out\s+\*\*EM ([0-9.]+)\*\*", DOC.read_text(), re.I)
    assert match, "docs/rexrag.md must state the held-out EM the quick size reaches"
    return float(match.group(1))


def _tracked_experiment(line: str) -> str:
    """The MLflow experiment a `rexrag train` or `rexrag sft` line tracks into: its override, else its config's (through `base:`)."""
    if "tracking.experiment" in _overrides(line):
        return _overrides(line)["tracking.experiment"]
    tokens = shlex.split(line)
    config = ROOT / tokens[tokens.index("--config") + 1]
    while True:
        data = yaml.safe_load(config.read_text())
        if "experiment" in (data.get("tracking") or {}):
            return data["tracking"]["experiment"]
        assert "base" in data, f"{config} names no tracking.experiment"
        config = config.parent / data["base"]


def test_the_sequence_is_what_the_docs_say():
    lines = _sequence_lines()
    script = "\n".join(lines)
    for step in (
        "rexrag example-data",
        "rlcore.retrieval.build",
        "rlcore.retrieval.server",
        "rexrag sft",
        "rexrag train",
        "rexrag evaluate",
        "rlcore.compare",
    ):
        _line(lines, step)
    assert "SERVER_PID" in script and "kill $SERVER_PID" in script  # the server is stopped at the end
    order = [
        next(i for i, line in enumerate(lines) if step in line)
        for step in ("rexrag sft", "rexrag train", "rexrag evaluate")
    ]
    assert order == sorted(order), "warm-up, then training, then evaluation"


def test_each_step_reads_what_the_one_before_writes(tmp_path: Path):
    lines = _sequence_lines()
    sft = _overrides(_line(lines, "rexrag sft"))
    train = _overrides(_line(lines, "rexrag train"))
    evaluate = _overrides(_line(lines, "rexrag evaluate"))
    # the RL run starts from the folder the warm-up writes, the evaluation reads the RL run's final model
    assert train["model.path"] == sft["train.output_dir"] + "/model"
    assert evaluate["model"] == train["train.output_dir"] + "/final"
    # the same questions and the same server throughout; the evaluation is on the held-out questions
    assert sft["qa.train_files"] == train["qa.train_files"] == "[my_data/train.jsonl]"
    assert (
        sft["qa.eval_files"] == train["qa.eval_files"] == evaluate["qa.eval_files"] == "[my_data/test.jsonl]"
    )
    served = f"http://127.0.0.1:{DOCUMENTED_PORT}"
    assert sft["retriever.url"] == train["retriever.url"] == evaluate["retriever.url"] == served
    assert served in _line(lines, "rlcore.retrieval.server").replace("--port ", "http://127.0.0.1:")
    assert evaluate["use_chat_template"] == "true"  # the warm-up trains SmolLM2 in its chat template
    # the warm-up, the training run and the evaluation land in the experiment the comparison reads
    compared = shlex.split(_line(lines, "rlcore.compare"))
    experiment = compared[compared.index("--experiment") + 1]
    assert evaluate["tracking.experiment"] == experiment
    assert _tracked_experiment(_line(lines, "rexrag train")) == experiment
    assert _tracked_experiment(_line(lines, "rexrag sft")) == experiment
    # `example-data --out my_data` writes the files the lines read
    written = {path.relative_to(tmp_path).as_posix() for path in write(tmp_path / "my_data").values()}
    assert {"my_data/train.jsonl", "my_data/test.jsonl", "my_data/corpus.jsonl"} <= written


def test_the_quick_size_is_documented():
    text = " ".join(DOC.read_text().split())
    assert f"`{QUICK_SFT}`" in text and f"`{QUICK_TRAIN}`" in text, (QUICK_SFT, QUICK_TRAIN)
    assert 0.0 <= _documented_quick_em() <= 1.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _quick_script(port: str) -> str:
    lines = []
    for line in _sequence_lines():
        if "rexrag sft" in line:
            line = f"{line} {QUICK_SFT}"
        elif "rexrag train" in line:
            line = f"{line} {QUICK_TRAIN}"
        lines.append(line.replace(DOCUMENTED_PORT, port))
    return "set -euo pipefail\n" + "\n".join(lines)


# SmolLM2: 8 warm-up steps, one GRPO step and 18 held-out questions: 3.5 min of CPU and wall-clock on idle cores, 6 min
# on two cores shared with two training runs (past the suite's 900 s default)
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_own_data_sequence_end_to_end(tmp_path: Path):
    work = tmp_path / "checkout"
    work.mkdir()
    for entry in ROOT.iterdir():  # the repository as seen from its root, without writing into it
        if entry.name not in (".git", "runs", "my_data"):
            (work / entry.name).symlink_to(entry)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "python"  # `python` of the docs is this interpreter (a wrapper keeps its venv)
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "RUNS_DIR": str(tmp_path / "runs"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    proc = subprocess.Popen(
        ["bash", "-c", _quick_script(str(_free_port()))],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=1700)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the background server, whatever happened to the script
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, output[-4000:]
    data = work / "my_data"
    assert (data / "corpus.jsonl").is_file() and (data / "index").is_dir()
    warm_up = json.loads((data / "sft" / "results.json").read_text())
    assert "dev" not in warm_up and warm_up["demos"]["search"] > 42  # the questions plus answer swaps
    steps = [json.loads(line) for line in (data / "grpo" / "metrics.jsonl").read_text().splitlines() if line]
    assert [record["step"] for record in steps] == [1]
    assert (data / "grpo" / "final" / "config.json").is_file()
    scores = json.loads((data / "eval-grpo" / "eval.json").read_text())
    assert scores["n"] == 18 and set(scores["by_source"]) == {"veltria"}
    assert abs(scores["average_em"] - _documented_quick_em()) <= EM_TOLERANCE, scores["average_em"]
    assert scores["by_source"]["veltria"]["searches"] >= 0.9  # it answers by searching, not from memory
    assert (data / "eval-grpo" / "eval.png").stat().st_size > 5_000
    predictions = (data / "eval-grpo" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 18
    comparison = (data / "compare" / "comparison.md").read_text()
    assert "# Run comparison: my-data" in comparison and "grpo" in comparison
