"""The "Your own data" sequence of docs/rexrag.md, run verbatim (only the port is swapped for a free one).

The block is taken from the markdown itself, so an edit that breaks the documented sequence fails here: it writes the
example corpus and questions, builds a BM25 index, serves it over HTTP, evaluates SmolLM2-135M-Instruct through the
server with the CPU evaluation config, compares the runs and stops the server. The EM it reaches must be the one
the docs state.
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
from docs_markdown import ROOT, code_blocks

DOC = ROOT / "docs/rexrag.md"
DOCUMENTED_PORT = "8765"


def _sequence() -> str:
    blocks = [b for b in code_blocks(DOC) if any("rexrag example-data" in line for _, line in b.lines)]
    assert len(blocks) == 1, "docs/rexrag.md must hold exactly one 'your own data' block"
    return "\n".join(line for _, line in blocks[0].lines)


def _documented_em() -> float:
    match = re.search(
        r"SmolLM2-135M-Instruct\s+scores \*\*EM ([0-9.]+)\*\* on the 30 questions", DOC.read_text()
    )
    assert match, "docs/rexrag.md must state the EM the sequence reaches"
    return float(match.group(1))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_sequence_is_what_the_docs_say():
    script = _sequence()
    for step in (
        "example-data",
        "rlcore.retrieval.build",
        "rlcore.retrieval.server",
        "rexrag evaluate",
        "compare",
    ):
        assert step in script, step
    assert "SERVER_PID" in script and "kill $SERVER_PID" in script  # the server is stopped at the end


def _warm_up_block() -> list[str]:
    blocks = [b for b in code_blocks(DOC) if any("rexrag sft" in line for _, line in b.lines)]
    assert len(blocks) == 1, "docs/rexrag.md must hold exactly one own-data warm-up block"
    return [line for _, line in blocks[0].lines]


def _overrides(line: str) -> dict[str, str]:
    return dict(
        token.split("=", 1) for token in shlex.split(line) if "=" in token and not token.startswith("-")
    )


def test_the_warm_up_block_trains_from_the_warm_up_it_writes(tmp_path: Path):
    sft_line, train_line = _warm_up_block()
    assert "python -m rexrag sft" in sft_line and "python -m rexrag train" in train_line
    sft, train = _overrides(sft_line), _overrides(train_line)
    # the RL run starts from the folder the warm-up writes, on the same questions and the same server
    assert train["model.path"] == sft["train.output_dir"] + "/model"
    assert sft["qa.train_files"] == train["qa.train_files"] == "[my_data/train.jsonl]"
    assert sft["qa.eval_files"] == train["qa.eval_files"] == "[my_data/test.jsonl]"
    served = f"http://127.0.0.1:{DOCUMENTED_PORT}"
    assert sft["retriever.url"] == train["retriever.url"] == served and served in _sequence()
    assert train["qa.source"] == "files" and train["retriever.kind"] == "http"
    # `example-data --out my_data` writes the files both lines read
    from rexrag.data.veltria import write

    written = {path.relative_to(tmp_path).as_posix() for path in write(tmp_path / "my_data").values()}
    assert {"my_data/train.jsonl", "my_data/test.jsonl"} <= written


@pytest.mark.slow  # SmolLM2 answers 30 questions through the HTTP server: ~1-2 min on two CPU cores
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
    port = str(_free_port())
    script = "set -euo pipefail\n" + _sequence().replace(DOCUMENTED_PORT, port)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "RUNS_DIR": str(tmp_path / "runs"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=900)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the background server, whatever happened to the script
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, output[-4000:]
    data = work / "my_data"
    assert (data / "corpus.jsonl").is_file() and (data / "index").is_dir()
    scores = json.loads((data / "eval-smollm2" / "eval.json").read_text())
    assert scores["n"] == 30 and set(scores["by_source"]) == {"veltria"}
    assert abs(scores["average_em"] - _documented_em()) <= 0.05, scores["average_em"]
    assert (data / "eval-smollm2" / "eval.png").stat().st_size > 5_000
    predictions = (data / "eval-smollm2" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 30
    assert "# Run comparison: my-data" in (data / "compare" / "comparison.md").read_text()
