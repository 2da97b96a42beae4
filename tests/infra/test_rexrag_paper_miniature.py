"""`make rexrag-paper-miniature`, stage by stage as the make target runs them: the paper configuration with a
tiny model and small sizes through the paper's data preparation, the launcher (torchrun, DeepSpeed ZeRO-2 on two
CPU ranks), the HTTP retrieval server, a stop with a checkpoint, a resume, then greedy evaluation on two test
sets into the paper's table layout."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from infra_helpers import INFRA, REPO


def _stage(*command: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_make_target_runs_these_stages():
    recipe = (REPO / "mk" / "miniature.mk").read_text()
    assert "infra/rexrag_paper_miniature.py world --out $(REXRAG_MINI_DIR)" in recipe
    assert (
        "rexrag-data FLASHRAG=$(REXRAG_MINI_DIR)/data/flashrag OUT=$(REXRAG_MINI_DIR)/data/searchr1" in recipe
    )
    assert "infra/rexrag_paper_miniature.py run --out $(REXRAG_MINI_DIR)" in recipe
    mk = (REPO / "mk" / "rexrag.mk").read_text()
    assert "-m rexrag prepare-data --flashrag $(FLASHRAG) --out $(OUT)" in mk, "what `make rexrag-data` runs"


@pytest.mark.parametrize(
    "recipe, config", [("train", "rexrag_paper.yaml"), ("evaluate", "rexrag_paper_eval.yaml")]
)
def test_override_files_load_over_the_paper_configs(recipe: str, config: str):
    """Each override file resolves (with its paper base) into a valid config: every key and value checked."""
    command = [
        sys.executable,
        "-m",
        "rexrag",
        recipe,
        "--config",
        str(INFRA / "miniature" / config),
        "--dry-run",
    ]
    resolved = _stage(*command, timeout=300).stdout
    assert "model:" in resolved and "hotpotqa/dev.jsonl" in resolved and "triviaqa" not in resolved


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(3600)  # 15-20 min measured on two cores shared by many other jobs
def test_paper_pipeline_in_miniature(tmp_path: Path):
    from rlcore.models import resolve_model_path

    resolve_model_path("tiny-qwen2")  # built once here, not raced by the two ranks
    out = tmp_path / "mini"
    py = sys.executable
    _stage(py, str(INFRA / "rexrag_paper_miniature.py"), "world", "--out", str(out), timeout=300)
    flashrag, searchr1 = out / "data" / "flashrag", out / "data" / "searchr1"
    _stage(
        py, "-m", "rexrag", "prepare-data", "--flashrag", str(flashrag), "--out", str(searchr1), timeout=300
    )
    result = _stage(py, str(INFRA / "rexrag_paper_miniature.py"), "run", "--out", str(out), timeout=3000)

    # resumed: the first launch stopped with a checkpoint at step 2, the second went on from it to step 4
    # (its progress bar starts at 2/4) in the same MLflow run
    second_launch = (out / "logs" / "train-2.log").read_text()
    assert "| 2/4" in second_launch and "| 0/4" not in second_launch
    with sqlite3.connect(out / "mlflow.db") as db:
        runs = db.execute(
            "select count(*) from runs r join experiments e on r.experiment_id = e.experiment_id where e.name = ?",
            ("rexrag-paper-miniature",),
        ).fetchone()[0]
    assert runs == 1
    steps = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps] == [1, 2, 3, 4]
    # ZeRO-2 over two ranks: each checkpoint holds one optimizer-state shard per rank
    for checkpoint in sorted((out / "train" / "checkpoints").iterdir()):
        shards = sorted(p.name for p in checkpoint.rglob("*optim_states.pt"))
        assert [name.split("_mp_")[0] for name in shards] == ["zero_pp_rank_0", "zero_pp_rank_1"], checkpoint
    # REX-RAG's sampler and correction ran every step (a random tiny policy never answers, so it spawns no
    # probe: the probe path itself is covered by tests/rexrag with scripted policies)
    rexrag_rows = [
        json.loads(line) for line in (out / "train" / "rexrag_metrics.jsonl").read_text().splitlines()
    ]
    assert {int(row["step"]) for row in rexrag_rows} == {1, 2, 3, 4}
    assert all("rexrag/probes_spawned" in row and "rexrag/is_weight_mean" in row for row in rexrag_rows)
    # greedy evaluation on two test sets, in the paper's table layout
    scores = json.loads((out / "eval" / "eval.json").read_text())
    assert sorted(scores["by_source"]) == ["hotpotqa", "nq"]
    header = (out / "table.md").read_text().splitlines()[0]
    assert [cell.strip() for cell in header.strip("|").split("|")] == ["Method", "NQ", "HotpotQA", "Avg."]
    assert "REX-RAG (miniature)" in result.stdout
    # two sampled passes at T = 1 reported beside greedy, as the official evaluation sampled
    assert scores["sampled"]["samples"] == 2 and scores["sampled"]["temperature"] == 1.0
    assert "| REX-RAG (miniature) (sampled T=1, n=2) |" in (out / "table.md").read_text()
