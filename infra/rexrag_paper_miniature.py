"""The REX-RAG paper pipeline in miniature, on CPU: the command to run before booking GPUs.

    make rexrag-paper-miniature [REXRAG_MINI_DIR=runs/rexrag-paper-miniature]

which runs, in order:

    python infra/rexrag_paper_miniature.py world --out DIR     # synthetic world -> FlashRAG dataset layout
    make rexrag-data FLASHRAG=DIR/data/flashrag OUT=DIR/data/searchr1   # the paper's parquet preparation
    python infra/rexrag_paper_miniature.py run --out DIR       # index, train (stop, resume), evaluate, table

``world`` writes a small synthetic knowledge world (a few hundred passages) and lays its questions out as the
FlashRAG files the paper's data preparation reads: NQ and HotpotQA ``train.jsonl`` (the training mix) and the
seven benchmarks' evaluation splits, each a slice of the world's test questions under the benchmark's folder
name. ``run`` builds a MiniLM Flat index over the world's corpus, then trains with the paper configuration
(``infra/miniature/rexrag_paper.yaml``: the paper config with only model, sizes and the evaluated test sets
overridden) through ``infra/launch_train.sh``: torchrun, DeepSpeed ZeRO-2 on two CPU ranks, the HTTP retrieval
server started and waited for by the launcher, probes and the policy correction on. The first launch stops
after step 2 (a checkpoint), the second resumes from it and finishes; then the paper's evaluation config
(``infra/miniature/rexrag_paper_eval.yaml``) evaluates the final model greedily on two test sets over the same
server, and ``python -m rexrag table`` prints the paper's table layout (also written to ``DIR/table.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
TRAIN_CONFIG = INFRA / "miniature" / "rexrag_paper.yaml"
EVAL_CONFIG = INFRA / "miniature" / "rexrag_paper_eval.yaml"
# The seven benchmarks and the evaluation split the paper's files use for each (packages/rexrag/configs/paper).
EVAL_SPLITS = {
    "nq": "test",
    "triviaqa": "test",
    "popqa": "test",
    "hotpotqa": "dev",
    "2wikimultihopqa": "dev",
    "musique": "dev",
    "bamboogle": "test",
}
TRAIN_SOURCES = ("nq", "hotpotqa")
WORLD = [
    "seed=0",
    "num_countries=4",
    "num_cities=20",
    "num_orgs=45",
    "num_people=150",
    "num_surnames=80",
    "num_train_questions=200",
    "num_dev_questions=40",
    "num_test_questions=70",
]
STOP_STEP = 2
ROW_NAME = "REX-RAG (miniature)"

logger = logging.getLogger("rexrag_paper_miniature")


def _run(command: list[str], log: Path, env: dict[str, str] | None = None) -> str:
    """Run one step with its output in ``log`` (watch it with tail -f), echoing the command; a failure raises
    with the command and the log's tail. Returns the output."""
    shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    logger.info("$ %s%s   (log: %s)", f"{shown} " if shown else "", shlex.join(command), log)
    started = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as sink:
        result = subprocess.run(
            command,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    output = log.read_text(encoding="utf-8", errors="replace")
    if result.returncode != 0:
        raise RuntimeError(f"step failed (exit {result.returncode}): {shlex.join(command)}\n{output[-4000:]}")
    logger.info("  done in %.0f s", time.perf_counter() - started)
    return output


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _as_flashrag(line: str) -> str:
    """A world record in FlashRAG's published schema: ``id``, ``question``, ``golden_answers`` and everything
    else under ``metadata`` (no ``data_source``: the loader names the source after the benchmark folder)."""
    record = json.loads(line)
    keep = {key: record.pop(key) for key in ("id", "question", "golden_answers")}
    record.pop("data_source", None)
    return json.dumps({**keep, "metadata": record}, ensure_ascii=False)


def write_flashrag_layout(world_dir: Path, flashrag: Path) -> dict[str, int]:
    """The world's questions as FlashRAG files: train halves for NQ / HotpotQA, a test slice per benchmark."""
    train = [_as_flashrag(line) for line in _lines(world_dir / "train.jsonl")]
    test = [_as_flashrag(line) for line in _lines(world_dir / "test.jsonl")]
    counts = {}
    half = len(train) // 2
    for source, rows in zip(TRAIN_SOURCES, (train[:half], train[half:])):
        (flashrag / source).mkdir(parents=True, exist_ok=True)
        (flashrag / source / "train.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        counts[f"{source}/train"] = len(rows)
    per_benchmark = len(test) // len(EVAL_SPLITS)
    for index, (source, split) in enumerate(EVAL_SPLITS.items()):
        rows = test[index * per_benchmark : (index + 1) * per_benchmark]
        (flashrag / source).mkdir(parents=True, exist_ok=True)
        (flashrag / source / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        counts[f"{source}/{split}"] = len(rows)
    return counts


def stage_world(out: Path) -> None:
    world_dir = out / "world"
    _run(
        [sys.executable, "-m", "rexrag", "make-world", "--out", str(world_dir), *WORLD],
        out / "logs" / "world.log",
    )
    counts = write_flashrag_layout(world_dir, out / "data" / "flashrag")
    logger.info("FlashRAG layout in %s: %s", out / "data" / "flashrag", counts)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch_env(out: Path, port: int) -> dict[str, str]:
    """What infra/launch_train.sh and infra/serve_retriever.sh get: 2 CPU ranks, ZeRO-2, the server on CPU."""
    return {
        "PYTHON": sys.executable,
        "RECIPE": "rexrag.recipes.train",
        "CONFIG": str(TRAIN_CONFIG),
        "LAUNCHER": "torchrun",
        "ZERO_STAGE": "2",
        "NPROC_PER_NODE": "2",
        "MASTER_PORT": str(_free_port()),
        "START_RETRIEVER": "1",
        "RETRIEVER_INDEX": str(out / "index"),
        "RETRIEVER_KIND": "flat",
        "RETRIEVER_GPU": "0",
        "RETRIEVER_PORT": str(port),
        "RETRIEVER_DEVICE": "cpu",
        "LOG_DIR": str(out / "logs"),
        "REXRAG_DATA": str(out / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}",
    }


def build_index(out: Path) -> None:
    corpus = out / "world" / "corpus.jsonl"
    command = [
        sys.executable,
        "-m",
        "rlcore.retrieval.build",
        "--corpus",
        str(corpus),
        "--out",
        str(out / "index"),
    ]
    _run([*command, "--kind", "flat", "--encoder", "minilm"], out / "logs" / "index.log")


def train_stop_and_resume(out: Path, env: dict[str, str]) -> None:
    """Launch to the stop at STOP_STEP (a checkpoint), then launch again: it must go on from the checkpoint."""
    from rlcore.trainer.checkpoint import list_checkpoints

    run_dir = out / "train"
    launch = [str(INFRA / "launch_train.sh"), "--", f"train.output_dir={run_dir}"]
    _run([*launch, f"train.stop_after_step={STOP_STEP}"], out / "logs" / "train-1.log", env)
    checkpoints = [step for step, _ in list_checkpoints(run_dir)]
    if checkpoints != [STOP_STEP]:
        raise RuntimeError(
            f"checkpoints {checkpoints} after the stop at step {STOP_STEP}, expected [{STOP_STEP}]"
        )
    before = _lines(run_dir / "metrics.jsonl")
    _run(launch, out / "logs" / "train-2.log", env)
    after = _lines(run_dir / "metrics.jsonl")
    steps = [json.loads(line)["step"] for line in after]
    # a resumed run keeps the first launch's records as they are and appends the rest; a run that started over
    # would have rewritten steps 1..STOP_STEP (their timings differ)
    if after[: len(before)] != before or steps[len(before) :] != list(range(STOP_STEP + 1, steps[-1] + 1)):
        raise RuntimeError(f"the second launch did not resume from step {STOP_STEP}: metrics steps {steps}")


def evaluate_and_table(out: Path, env: dict[str, str]) -> str:
    """Serve the index again, evaluate the final model with the paper's evaluation config, print the table."""
    port = env["RETRIEVER_PORT"]
    _run([str(INFRA / "serve_retriever.sh"), "--background"], out / "logs" / "serve-for-eval.log", env)
    try:
        evaluate = [sys.executable, "-m", "rexrag", "evaluate", "--config", str(EVAL_CONFIG)]
        evaluate += [f"model={out / 'train' / 'final'}", f"name={ROW_NAME}", f"output_dir={out / 'eval'}"]
        evaluate += [f"retriever.url=http://127.0.0.1:{port}"]
        _run(evaluate, out / "logs" / "eval.log", {k: env[k] for k in ("REXRAG_DATA", "MLFLOW_TRACKING_URI")})
    finally:
        pid_file = out / "logs" / f"retriever-{port}.pid"
        if pid_file.is_file():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)  # the server started above
    table = [sys.executable, "-m", "rexrag", "table", f"{ROW_NAME}={out / 'eval' / 'eval.json'}"]
    return _run([*table, "--out-dir", str(out), "--stem", "table"], out / "logs" / "table.log")


def stage_run(out: Path) -> str:
    if not (out / "data" / "searchr1" / "train.parquet").is_file():
        raise FileNotFoundError(
            f"{out / 'data' / 'searchr1' / 'train.parquet'} is missing: run `make rexrag-data`"
        )
    env = _launch_env(out, _free_port())
    build_index(out)
    train_stop_and_resume(out, env)
    return evaluate_and_table(out, env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("world", "run"))
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "rexrag-paper-miniature")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    out = args.out.resolve()
    started = time.perf_counter()
    if args.stage == "world":
        stage_world(out)
    else:
        print(stage_run(out), end="")
        logger.info("miniature finished in %.0f s (this stage)", time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
