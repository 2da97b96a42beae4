"""Two CPU processes (gloo): DeepSpeed ZeRO-2 / ZeRO-3 through `accelerate launch`, and DDP through torchrun."""

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


def _launch(mode: str, out, port: int):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    worker = [str(HERE / "dist_worker.py"), str(out)]
    if mode == "ddp":  # plain DDP over gloo: torchrun (accelerate's CPU launcher starts a single process)
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(port),
            *worker,
        ]
    else:
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(REPO / f"infra/accelerate/{mode}.yaml"),
            "--num_processes",
            "2",
            "--main_process_port",
            str(port),
            *worker,
        ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.distributed
def test_zero2_zero3_and_ddp_on_two_cpu_processes_agree(tmp_path):
    """ZeRO-2 and ZeRO-3 through `accelerate launch` (torch AdamW, zero_allow_untested_optimizer) and DDP
    through torchrun run the same 2 steps; being the same maths, they must log the same metrics."""
    config = json.loads((REPO / "infra/deepspeed/zero2.json").read_text())
    assert config["zero_optimization"]["stage"] == 2 and config["zero_allow_untested_optimizer"] is True
    runs = {}
    for port, mode in enumerate(("zero2", "zero3", "ddp"), start=29731):
        out = tmp_path / mode
        stdout = _launch(mode, out, port)
        # the two ranks print at once, so one line can hold both reports: the checksum is matched as a number
        lines = re.findall(r"RANK (\d) WORLD (\d) LAST_STEP (\d) CHECKSUM ([-+0-9.eE]+)", stdout)
        assert sorted(rank for rank, *_ in lines) == ["0", "1"], stdout
        assert {world for _, world, _, _ in lines} == {"2"}  # both ranks see the true world size
        assert {step for _, _, step, _ in lines} == {"2"}
        assert len({checksum for *_, checksum in lines}) == 1  # identical weights on both ranks
        metrics = read_metrics(out)  # written once, by rank 0
        assert [m["step"] for m in metrics] == [1, 2]
        for m in metrics:
            assert m["optim/skipped_steps"] == 0 and m["optim/grad_norm"] > 0
            assert m["rollout/num_trajectories"] == 8  # 2 prompts x 4 rollouts over both ranks
        checkpoint = out / "checkpoints" / "step-00000002"
        assert (checkpoint / "COMPLETE").is_file()
        assert sorted(p.name for p in checkpoint.glob("rng_state_*.json")) == [
            "rng_state_0.json",
            "rng_state_1.json",
        ]  # each rank's random streams, as JSON
        assert not list(checkpoint.rglob("*.pkl"))
        runs[mode] = metrics
    # DeepSpeed's layout (sharded optimizer states) inside our atomic folder
    assert (tmp_path / "zero2" / "checkpoints" / "step-00000002" / "pytorch_model").is_dir()
    # Step 1 starts from the same weights and samples the same rollouts, so every mode must agree up to float
    # summation order, amplified a little by the 4 optimizer updates inside the step (lr 0.01); a wrong
    # normaliser or a missing rank's gradient would be off by far more. From step 2 on, last-bit differences
    # in the weights may change a sampled token, so only step 1 is compared.
    for mode in ("zero3", "ddp"):
        ours, reference = runs[mode][0], runs["zero2"][0]
        assert ours["reward/mean"] == reference["reward/mean"]
        assert ours["optim/grad_norm"] == pytest.approx(reference["optim/grad_norm"], rel=1e-3)
        assert ours["loss/total"] == pytest.approx(reference["loss/total"], abs=1e-5)
        assert ours["kl"] == pytest.approx(reference["kl"], rel=1e-3)
    # the final Hugging Face folder (ZeRO-3: gathered 16-bit-on-save weights) holds trained weights
    initial = dict(load_causal_lm("tiny-qwen2").named_parameters())
    final = load_causal_lm(tmp_path / "zero3" / "final")
    assert any(not torch.equal(p, initial[n]) for n, p in final.named_parameters())
