"""Shared pieces of the fault tests: a real retrieval server run as a subprocess on 127.0.0.1 that a test can kill
(SIGKILL) and restart on the same port, and a small BM25 index to serve."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from rlcore.faults import FAULT_ENV

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The test's environment with the three package sources first on the path (a fresh clone's layout)."""
    paths = [str(REPO / "packages" / name / "src") for name in ("common", "rexrag", "anessuite")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    env.update(extra)
    return env


def build_small_index(folder: Path, num_passages: int = 40) -> Path:
    """A BM25 index over ``num_passages`` generated passages (title ``Topic <i>``)."""
    from rlcore.retrieval import build_index

    corpus = folder / "corpus.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    with corpus.open("w", encoding="utf-8") as handle:
        for i in range(num_passages):
            text = (
                f"Topic {i}\nTopic {i} is about item number {i} and colour {['red', 'blue', 'green'][i % 3]}."
            )
            handle.write(json.dumps({"id": str(i), "contents": text}) + "\n")
    build_index(corpus, folder / "index", kind="bm25")
    return folder / "index"


class ServerProcess:
    """``python -m rlcore.retrieval.server`` over an index, as a subprocess on a fixed loopback port."""

    def __init__(
        self,
        index: Path,
        kind: str = "bm25",
        port: int | None = None,
        log: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ):
        self.index, self.kind, self.port = Path(index), kind, port or free_port()
        self.log, self.extra_args = log, extra_args
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True, timeout: float = 120.0) -> ServerProcess:
        command = [
            sys.executable,
            "-m",
            "rlcore.retrieval.server",
            "--index",
            str(self.index),
            "--kind",
            self.kind,
            "--port",
            str(self.port),
            *self.extra_args,
        ]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(command, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT)
        if self.log:
            out.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, (
                f"retrieval server exited with {self.proc.returncode}; log: {self.log_text()}"
            )
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(
            f"retrieval server on {self.url} not ready after {timeout}s; log: {self.log_text()}"
        )

    def kill(self) -> None:
        """SIGKILL, as a pre-emption or the OOM killer would: no graceful shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log and self.log.exists() else ""

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.kill()


SMALL_WORLD = {  # the world of tests/rexrag's small_world fixture: 30 people, 16 / 4 / 6 questions
    "seed": 5,
    "num_countries": 3,
    "num_cities": 8,
    "num_orgs": 10,
    "num_people": 30,
    "num_surnames": 20,
    "num_train_questions": 16,
    "num_dev_questions": 4,
    "num_test_questions": 6,
}


def build_world_and_model(root: Path) -> tuple[Path, dict[str, Path], Path]:
    """The small synthetic world (corpus, questions, BM25 index) and the random tiny Qwen2 policy on disk."""
    from rexrag.data.template import DEFAULT_TEMPLATE
    from rexrag.data.world import WorldConfig
    from rexrag.recipes.common import WorldDataConfig, ensure_world
    from rlcore.generation.testing import build_tiny_qwen2, build_tiny_tokenizer

    world_dir = root / "world"
    paths = ensure_world(
        WorldDataConfig(world=WorldConfig(**SMALL_WORLD), dir=str(world_dir), template=DEFAULT_TEMPLATE)
    )
    tok = build_tiny_tokenizer()
    build_tiny_qwen2(tok, seed=0).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return world_dir, paths, root / "model"


def run_to_end(command: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def deterministic(metrics: list[dict]) -> list[dict]:
    """Per-step metrics without the wall-clock ones, which legitimately differ between runs."""
    return [{k: v for k, v in m.items() if not k.startswith(("time/", "throughput/"))} for m in metrics]


def final_weights(output_dir: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted((Path(output_dir) / "final").glob("*.safetensors"))
    assert files, f"no final weights in {output_dir}/final"
    weights = {}
    for file in files:
        weights.update(load_file(file))
    return weights


def pipeline_command(tmp_path: Path, config_text: str, out: Path) -> list[str]:
    """``python -m anessuite pipeline`` on ``config_text`` (written to tmp_path), into ``out``."""
    config = tmp_path / "pipeline.yaml"
    config.write_text(config_text)
    return [sys.executable, "-m", "anessuite", "pipeline", "--config", str(config), f"output_dir={out}"]


def fault_free_env(**extra: str) -> dict[str, str]:
    """:func:`subprocess_env` without an inherited fault point, plus ``extra`` (e.g. the one to arm)."""
    env = subprocess_env()
    env.pop(FAULT_ENV, None)
    env.update(extra)
    return env


def stage_final_weights(out: Path, stage: str) -> dict:
    """The weights of a finished pipeline stage's final model (its DONE.json names the folder)."""
    from safetensors.torch import load_file

    final = Path(out) / json.loads((Path(out) / stage / "DONE.json").read_text())["final"]
    return load_file(next(final.glob("*.safetensors")))
