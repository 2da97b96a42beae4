"""benchmarks/retrieval/peer_searchr1.py runs a Search-R1 checkout's retrieval_server.py on a CPU-only machine:
CUDA moves and fp16 become no-ops, the server binds 127.0.0.1 on the given port, and the script gets its own
command line. The checkout here is a stand-in written by the test with the same file path and the same GPU calls."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "benchmarks" / "retrieval" / "peer_searchr1.py"

STAND_IN = """
import sys
import torch
import uvicorn
from fastapi import FastAPI

model = torch.nn.Linear(2, 2)
model.cuda()                      # as their load_model does
model = model.half()              # retrieval_use_fp16=True in their __main__
inputs = {"x": torch.zeros(1, 2)}
inputs = {k: v.cuda() for k, v in inputs.items()}
torch.cuda.empty_cache()
app = FastAPI()

@app.post("/retrieve")
def retrieve():
    return {"argv": sys.argv[1:], "dtype": str(model.weight.dtype), "device": str(inputs["x"].device)}

if __name__ == "__main__":
    uvicorn.run(app, host="0.0.0.0", port=8000)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_launcher_runs_the_checkout_on_cpu_on_loopback(tmp_path):
    script = tmp_path / "Search-R1" / "search_r1" / "search" / "retrieval_server.py"
    script.parent.mkdir(parents=True)
    script.write_text(STAND_IN)
    port = _free_port()
    command = [sys.executable, str(LAUNCHER), "--checkout", str(tmp_path / "Search-R1"), "--port", str(port)]
    command += [
        "--index",
        "idx/flat.faiss",
        "--corpus",
        "wiki.jsonl",
        "--model",
        str(tmp_path / "e5-base-v2"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/retrieve", json={}, timeout=5).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the stand-in server never answered"
                time.sleep(0.2)
        listening = [c.laddr for c in psutil.Process(process.pid).net_connections() if c.status == "LISTEN"]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert answer["dtype"] == "torch.float32" and answer["device"] == "cpu"  # no fp16, no CUDA
    assert listening == [("127.0.0.1", port)]  # not 0.0.0.0:8000
    assert answer["argv"] == [
        "--index_path", "idx/flat.faiss", "--corpus_path", "wiki.jsonl", "--topk", "3",
        "--retriever_name", "e5", "--retriever_model", str(tmp_path / "e5-base-v2"),
    ]  # fmt: skip


def test_launcher_names_a_folder_that_is_not_a_checkout(tmp_path):
    result = subprocess.run(
        [sys.executable, str(LAUNCHER), "--checkout", str(tmp_path), "--port", "1", "--index", "i"]
        + ["--corpus", "c", "--model", "m"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert (
        "search_r1/search/retrieval_server.py not found: PEER must be a Search-R1 checkout" in result.stderr
    )
