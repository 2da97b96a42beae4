"""Two CPU processes (gloo) training through `accelerate launch` with DeepSpeed ZeRO-2 and a torch optimizer."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trainer_helpers import read_metrics

from rlcore.models import load_causal_lm

HERE = Path(__file__).parent
REPO = HERE.parents[2]


@pytest.mark.slow
@pytest.mark.distributed
def test_zero2_two_processes_through_accelerate_launch(tmp_path):
    config = json.loads((REPO / "infra/deepspeed/zero2.json").read_text())
    assert config["zero_optimization"]["stage"] == 2 and config["zero_allow_untested_optimizer"] is True
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "infra/accelerate/zero2.yaml"),
        "--num_processes",
        "2",
        "--main_process_port",
        "29731",
        str(HERE / "dist_worker.py"),
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    lines = re.findall(r"RANK (\d) WORLD (\d) LAST_STEP (\d) CHECKSUM (\S+)", done.stdout)
    assert sorted(rank for rank, *_ in lines) == ["0", "1"], done.stdout
    assert {world for _, world, _, _ in lines} == {"2"}  # both ranks see the true world size
    assert {step for _, _, step, _ in lines} == {"2"}
    assert len({checksum for *_, checksum in lines}) == 1  # identical weights on both ranks

    metrics = read_metrics(tmp_path)  # written once, by rank 0
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert m["optim/skipped_steps"] == 0 and m["optim/grad_norm"] > 0
        assert m["rollout/num_trajectories"] == 8  # 2 prompts x 4 rollouts over both ranks
    # DeepSpeed's checkpoint layout (sharded optimizer states per rank) inside our atomic folder
    checkpoint = tmp_path / "checkpoints" / "step-00000002"
    assert (checkpoint / "COMPLETE").is_file() and (checkpoint / "pytorch_model").is_dir()
    assert sorted(p.name for p in checkpoint.glob("random_states_*.pkl")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    # the final Hugging Face folder holds the trained weights, different from the initial ones
    initial = load_causal_lm("tiny-qwen2")
    final = load_causal_lm(tmp_path / "final")
    changed = [
        n for n, p in final.named_parameters() if not torch.equal(p, dict(initial.named_parameters())[n])
    ]
    assert changed
