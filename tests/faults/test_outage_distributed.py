"""Two CPU processes (gloo), each with its own HTTP retrieval client: rank 1's server is SIGKILLed after step 1 and
never comes back, rank 0's keeps answering. When rank 1's outage budget runs out, both ranks agree to stop, write
step 1's checkpoint together and exit non-zero with the reason; resuming with a live server on both ranks ends
with the uninterrupted two-process run's per-step metrics and final weights."""

import subprocess
import sys

import pytest
import torch
from faults_helpers import (
    REPO,
    ServerProcess,
    build_world_and_model,
    deterministic,
    final_weights,
    free_port,
    read_jsonl,
    subprocess_env,
)

from rlcore.faults import FAULT_ENV
from rlcore.trainer.checkpoint import list_checkpoints

TOTAL_STEPS = 3
WORKER = REPO / "tests" / "faults" / "dist_outage_worker.py"


def _launch(out, world_dir, model_dir, urls, max_outage_s=600.0, kill_pid=None):
    """Both ranks as plain subprocesses with torchrun's environment; (return code, output) per rank."""
    port = free_port()
    args = [out, world_dir, model_dir, ",".join(urls), TOTAL_STEPS, max_outage_s]
    args += [kill_pid] if kill_pid is not None else []
    procs = []
    for rank in range(2):
        env = subprocess_env(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        env["PYTHONPATH"] = f"{REPO / 'tests' / 'faults'}:{env['PYTHONPATH']}"
        env.pop(FAULT_ENV, None)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), *map(str, args)],
                env=env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    results = []
    try:
        for proc in procs:
            output, _ = proc.communicate(timeout=600)
            results.append((proc.returncode, output))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return results


# three two-process launches: 2 min on two cores under load 8-9 when it passes; room for slower days
@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(1800)
def test_one_rank_out_of_budget_stops_both_with_a_checkpoint_and_resume_is_exact(tmp_path):
    world_dir, paths, model_dir = build_world_and_model(tmp_path)
    with (
        ServerProcess(paths["index"], log=tmp_path / "a.log") as server_a,
        ServerProcess(paths["index"], log=tmp_path / "b.log") as server_b,
    ):
        reference = tmp_path / "uninterrupted"
        for code, output in _launch(reference, world_dir, model_dir, [server_a.url, server_a.url]):
            assert code == 0, output[-4000:]

        out = tmp_path / "outage"
        ranks = _launch(
            out,
            world_dir,
            model_dir,
            [server_a.url, server_b.url],
            max_outage_s=2.0,
            kill_pid=server_b.proc.pid,
        )
        for rank, (code, output) in enumerate(ranks):
            assert code == 2, output[-4000:]
            assert f"OUTAGE {rank} " in output and "checkpoint of step 1 is in" in output, output[-4000:]
        assert "max_outage_s=2s" in ranks[1][1] and server_b.url in ranks[1][1]  # its own outage
        assert "another rank's retrieval server" in ranks[0][1]  # rank 0's searches were answered
        assert [step for step, _ in list_checkpoints(out)] == [1]  # save_every=0: written for the outage
        assert [m["step"] for m in read_jsonl(out / "metrics.jsonl")] == [1]

        for code, output in _launch(out, world_dir, model_dir, [server_a.url, server_a.url]):
            assert code == 0 and "LAST_STEP 3" in output, output[-4000:]
    expected = deterministic(read_jsonl(reference / "metrics.jsonl"))
    assert [m["step"] for m in expected] == [1, 2, 3]
    assert deterministic(read_jsonl(out / "metrics.jsonl")) == expected
    expected_weights, got = final_weights(reference), final_weights(out)
    assert expected_weights.keys() == got.keys()
    assert all(torch.equal(expected_weights[name], got[name]) for name in expected_weights)
