"""Service launchers (retrieval, vLLM, MLflow), GPU env setup and SLURM templates: exact dry-run commands,
validation, secrets kept off the command line, and a real MLflow server start on loopback."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from infra_helpers import FAKE_PYTHON, INFRA, REPO, base_env, free_port, run_script

SCRIPTS = sorted([*INFRA.glob("*.sh"), *INFRA.glob("slurm/*.sbatch")])


# --- every script ------------------------------------------------------------------------------------------


def test_the_expected_launchers_exist():
    names = {p.relative_to(INFRA).as_posix() for p in SCRIPTS}
    assert {
        "lib.sh",
        "launch_train.sh",
        "serve_retriever.sh",
        "serve_vllm.sh",
        "serve_mlflow.sh",
        "setup_gpu_env.sh",
        "slurm/train_1node.sbatch",
        "slurm/train_multinode.sbatch",
    } <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_script_parses_and_has_no_machine_paths(script: Path):
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    code_lines = [line for line in script.read_text().splitlines() if not line.lstrip().startswith("#")]
    for line in code_lines:
        assert not re.search(r"(/home/|/work/|/scratch/|/data/|/mnt/|/Users/)", line), (
            f"hard-coded path: {line}"
        )
    if script.name != "lib.sh":
        assert os.access(script, os.X_OK), f"{script} is not executable"


@pytest.mark.parametrize("script", [p for p in SCRIPTS if p.name != "lib.sh"], ids=lambda p: p.name)
def test_help_prints_usage_and_environment(script: Path, tmp_path: Path):
    result = run_script(script, "--help", env=base_env(tmp_path), parse=False)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    assert "#!/" not in result.stdout and "SBATCH" not in result.stdout


# --- retrieval service -------------------------------------------------------------------------------------


def test_retriever_gpu_defaults(dry_run):
    out = dry_run("serve_retriever.sh", RETRIEVER_INDEX="/indexes/e5_flat")
    # --gpu: the server puts the Flat index on every visible GPU, fp16, sharded
    assert out.commands == [
        [
            FAKE_PYTHON,
            "-m",
            "rlcore.retrieval.server",
            "--index",
            "/indexes/e5_flat",
            "--kind",
            "flat",
            "--host",
            "127.0.0.1",
            "--port",
            "8100",
            "--gpu",
        ]
    ]


def test_retriever_gpu_subset_extra_args_and_background(dry_run, tmp_path: Path):
    out = dry_run(
        "serve_retriever.sh",
        "--background",
        "--",
        "--nprobe",
        "64",
        RETRIEVER_INDEX="/i",
        RETRIEVER_GPUS="4,5,6,7",
        RETRIEVER_KIND="ivfpq",
        RETRIEVER_PORT="9001",
        RETRIEVER_DEVICE="cuda",
        RETRIEVER_EXTRA_ARGS="--max-batch-queries 512",
        RETRIEVER_WAIT_TIMEOUT="60",
    )
    (cmd,) = out.commands
    assert cmd[:2] == ["env", "CUDA_VISIBLE_DEVICES=4,5,6,7"]
    assert cmd[cmd.index("--kind") + 1] == "ivfpq"
    assert cmd[-11:] == [
        "--gpu",
        "--device",
        "cuda",
        "--max-batch-queries",
        "512",
        "--nprobe",
        "64",
        ">",
        str(tmp_path / "logs" / "retriever-9001.log"),
        "2>&1",
        "&",
    ]
    assert "wait until GET http://127.0.0.1:9001/health answers 2xx (timeout 60 s)" in out.notes


def test_retriever_on_cpu_and_on_all_interfaces(dry_run):
    out = dry_run(
        "serve_retriever.sh",
        "--background",
        RETRIEVER_INDEX="/i",
        RETRIEVER_GPU="0",
        RETRIEVER_KIND="bm25",
        RETRIEVER_MMAP="1",
        RETRIEVER_HOST="0.0.0.0",
        RLCORE_RETRIEVER_TOKEN="tok-123",
    )
    cmd = out.commands[0]
    assert "--gpu" not in cmd and "--mmap" in cmd
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert "tok-123" not in out.stdout, "the bearer token stays in the environment"
    # binding every interface is still health-checked through loopback
    assert any("GET http://127.0.0.1:8100/health" in note for note in out.notes)


def test_retriever_rejects_unknown_kind(fails):
    assert "RETRIEVER_KIND=faiss is not one of" in fails(
        "serve_retriever.sh", RETRIEVER_INDEX="/i", RETRIEVER_KIND="faiss"
    )


def test_retriever_needs_an_index(fails, tmp_path: Path):
    assert "set RETRIEVER_INDEX" in fails("serve_retriever.sh")
    missing = tmp_path / "nope"
    stderr = fails("serve_retriever.sh", dry=False, RETRIEVER_INDEX=str(missing))
    assert f"retrieval index (RETRIEVER_INDEX) not found: {missing}" in stderr


# --- vLLM ----------------------------------------------------------------------------------------------------


def test_vllm_command(dry_run):
    out = dry_run(
        "serve_vllm.sh",
        VLLM_MODEL="/ckpt/morpheus-7b",
        VLLM_DP="8",
        VLLM_MAX_MODEL_LEN="8192",
        VLLM_SERVED_NAME="morpheus",
        VLLM_API_KEY="sk-secret-value",
    )
    assert out.commands == [
        [
            "vllm",
            "serve",
            "/ckpt/morpheus-7b",
            "--host",
            "127.0.0.1",
            "--port",
            "8000",
            "--tensor-parallel-size",
            "1",
            "--data-parallel-size",
            "8",
            "--dtype",
            "bfloat16",
            "--gpu-memory-utilization",
            "0.90",
            "--seed",
            "0",
            "--logprobs-mode",
            "processed_logprobs",
            "--max-model-len",
            "8192",
            "--served-model-name",
            "morpheus",
        ]
    ]
    assert "sk-secret-value" not in out.stdout + out.stderr


def test_vllm_is_taken_from_the_python_environment(dry_run, tmp_path: Path):
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    for name in ("python", "vllm"):
        (bindir / name).write_text("#!/bin/sh\n")
        (bindir / name).chmod(0o755)
    out = dry_run("serve_vllm.sh", "--background", VLLM_MODEL="m", PYTHON=str(bindir / "python"), VLLM_TP="2")
    assert out.commands[0][:3] == [str(bindir / "vllm"), "serve", "m"]
    assert "vLLM serving OpenAI API at http://127.0.0.1:8000/v1" in out.notes


def test_vllm_validation(fails):
    assert "set VLLM_MODEL" in fails("serve_vllm.sh")
    assert "VLLM_TP must be a positive integer" in fails("serve_vllm.sh", VLLM_MODEL="m", VLLM_TP="0")


# --- MLflow ----------------------------------------------------------------------------------------------------


def test_mlflow_sqlite_default_under_runs_dir(dry_run, tmp_path: Path):
    out = dry_run("serve_mlflow.sh")
    runs = tmp_path / "runs"
    assert out.commands == [
        [
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{runs / 'mlflow.db'}",
            "--artifacts-destination",
            str(runs / "mlartifacts"),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            "5000",
            "--workers",
            "2",
        ]
    ]


def test_mlflow_postgresql_keeps_the_password_in_the_environment(dry_run):
    out = dry_run(
        "serve_mlflow.sh",
        MLFLOW_BACKEND="postgresql",
        MLFLOW_PG_HOST="db.internal",
        MLFLOW_PG_USER="tracker",
        MLFLOW_PG_DB="exp",
        PGPASSWORD="hunter2",
        MLFLOW_PORT="5055",
    )
    cmd = out.commands[0]
    assert cmd[cmd.index("--backend-store-uri") + 1] == "postgresql://tracker@db.internal:5432/exp"
    assert "hunter2" not in out.stdout + out.stderr


def test_mlflow_rejects_a_password_in_the_uri(fails):
    stderr = fails("serve_mlflow.sh", MLFLOW_BACKEND_STORE_URI="postgresql://u:pw@h:5432/db")
    assert "carries a password" in stderr


def test_mlflow_relative_sqlite_path_is_made_absolute(dry_run):
    out = dry_run("serve_mlflow.sh", MLFLOW_DB="shared/mlflow.db")
    cmd = out.commands[0]
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{REPO / 'shared/mlflow.db'}"


@pytest.mark.slow
def test_real_mlflow_server_answers_health_on_loopback(tmp_path: Path):
    """Starts the real `mlflow server` with the generated flags (about 6-10 s), then stops it."""
    port = free_port()
    env = base_env(
        tmp_path, PYTHON=sys.executable, MLFLOW_PORT=str(port), MLFLOW_WORKERS="1", MLFLOW_WAIT_TIMEOUT="90"
    )
    # own session: the server and the helper processes it forks form one group we can stop together
    result = run_script("serve_mlflow.sh", "--background", env=env, timeout=120, new_session=True)
    pid_file = tmp_path / "logs" / f"mlflow-{port}.pid"
    try:
        assert result.returncode == 0, result.stderr + (tmp_path / "logs" / f"mlflow-{port}.log").read_text()
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=5", timeout=10
        ) as response:
            assert response.status == 200
        assert (tmp_path / "runs" / "mlflow.db").is_file()
    finally:
        if pid_file.exists():
            _stop_group(int(pid_file.read_text()))


def _stop_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        group = os.getpgid(pid)
        assert group != os.getpgid(0), "refusing to signal the test runner's own process group"
        os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            os.killpg(group, 0)
            time.sleep(0.2)
        os.killpg(group, signal.SIGKILL)


# --- GPU environment setup -------------------------------------------------------------------------------------


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_gpu_setup_steps_in_order(dry_run, tmp_path: Path):
    venv = tmp_path / "gpu-venv"
    out = dry_run("setup_gpu_env.sh", VENV_DIR=str(venv), TORCH_INDEX_URL="https://example.invalid/cu999")
    py = str(venv / "bin" / "python")
    cpu, gpu = REPO / "requirements" / "cpu.txt", REPO / "requirements" / "gpu.txt"
    cpu_pins = _pins(cpu)
    steps = out.commands
    assert steps[0] == ["python3", "-m", "venv", str(venv)]
    assert steps[1] == [
        "env",
        "-u",
        "PIP_FIND_LINKS",
        "PIP_CONFIG_FILE=/dev/null",
        py,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--index-url",
        "https://example.invalid/cu999",
        f"torch=={cpu_pins['torch']}",
    ]
    assert steps[2] == [py, str(INFRA / "check_gpu_env.py"), "--stage", "torch"]
    cpu_step = steps[3]
    assert cpu_step[:2] == ["env", "DS_BUILD_OPS=0"] and ["-c", str(cpu)] == cpu_step[7:9]
    installed = {arg.split("==")[0].lower() for arg in cpu_step[9:]}
    assert installed == set(cpu_pins) - {"faiss-cpu"}, "every cpu.txt pin but faiss-cpu"
    assert steps[4] == [py, "-m", "pip", "uninstall", "--yes", "--quiet", "faiss-cpu"]
    assert steps[5][-4:] == ["-c", str(cpu), "-r", str(gpu)], "gpu extra installed under the cpu pins"
    assert steps[6][-3:] == ["--no-deps", "-r", str(REPO / "requirements" / "assets.txt")]
    assert steps[7][-6:] == [
        "-e",
        str(REPO / "packages/common"),
        "-e",
        str(REPO / "packages/rexrag"),
        "-e",
        str(REPO / "packages/anessuite"),
    ]
    assert steps[8] == [
        py,
        str(INFRA / "check_gpu_env.py"),
        "--stage",
        "all",
        "--transformers",
        cpu_pins["transformers"],
    ]
    assert len(steps) == 9
    assert not any("faiss-cpu==" in arg for step in steps for arg in step)


def test_pins_are_compatible_with_vllm_0_31():
    """vllm 0.31.0 requires torch==2.13.0 and transformers>=5.10.4,<5.18.0 (its wheel metadata)."""
    cpu, gpu = _pins(REPO / "requirements" / "cpu.txt"), _pins(REPO / "requirements" / "gpu.txt")
    assert gpu["vllm"] == "0.31.0"
    assert cpu["torch"] == "2.13.0"
    major, minor, patch = (int(x) for x in cpu["transformers"].split("."))
    assert (5, 10, 4) <= (major, minor, patch) < (5, 18, 0)
    assert gpu["faiss-gpu"] == cpu["faiss-cpu"], "the GPU faiss replaces the CPU one at the same version"


def test_check_gpu_env_rejects_a_cpu_torch():
    """This machine has the CPU torch build: the check must say so and fail."""
    result = subprocess.run(
        [sys.executable, str(INFRA / "check_gpu_env.py"), "--stage", "torch"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    import torch

    if torch.version.cuda:
        pytest.skip("torch here is a CUDA build; the CPU-build rejection cannot be exercised")
    assert result.returncode == 1
    assert "is the CPU build" in result.stderr


# --- SLURM --------------------------------------------------------------------------------------------------------


def test_sbatch_headers_ask_for_8_gpu_nodes():
    for name, nodes in (("train_1node.sbatch", "1"), ("train_multinode.sbatch", "2")):
        text = (INFRA / "slurm" / name).read_text()
        assert "#SBATCH --gpus-per-node=8" in text
        assert f"#SBATCH --nodes={nodes}" in text
        assert "#SBATCH --ntasks-per-node=1" in text


def test_one_node_job_runs_the_launcher_for_8_gpus(dry_run):
    out = dry_run(
        "slurm/train_1node.sbatch",
        "--",
        "trainer.total_steps=10",
        RECIPE="rexrag.train",
        CONFIG=str(REPO / "pyproject.toml"),
        SLURM_GPUS_ON_NODE="8",
        LAUNCHER="torchrun",
    )
    (cmd,) = out.commands
    assert cmd[cmd.index("torch.distributed.run") :] == [
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "8",
        "--node-rank",
        "0",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        "29500",
        "-m",
        "rexrag.train",
        "--config",
        str(REPO / "pyproject.toml"),
        "trainer.total_steps=10",
    ]


def test_one_node_job_with_local_retriever(dry_run):
    out = dry_run(
        "slurm/train_1node.sbatch",
        RECIPE="rexrag.train",
        START_RETRIEVER="1",
        RETRIEVER_INDEX="/idx",
        SLURM_GPUS_ON_NODE="8",
    )
    server, train = out.commands
    assert "rlcore.retrieval.server" in server and server[-1] == "&", "the retriever starts in the background"
    assert "accelerate.commands.launch" in train and "RLCORE_RETRIEVER_URL=http://127.0.0.1:8100" in train


def test_multinode_job_sruns_one_launcher_per_node(dry_run):
    out = dry_run(
        "slurm/train_multinode.sbatch",
        "--",
        "seed=1",
        RECIPE="rexrag.train",
        SLURM_NNODES="4",
        MASTER_ADDR="gpu-a01",
        NODE_RANK="3",
        SLURM_JOB_ID="123",
    )
    srun, node0 = out.commands
    assert srun == [
        "srun",
        "--nodes",
        "4",
        "--ntasks-per-node",
        "1",
        "--kill-on-bad-exit=1",
        str(INFRA / "launch_train.sh"),
        "--",
        "seed=1",
    ]
    joined = " ".join(node0)
    assert "--num_machines 4 --num_processes 32 --machine_rank 0 --main_process_ip gpu-a01" in joined
    assert node0[-3:] == ["-m", "rexrag.train", "seed=1"]


def test_multinode_job_outside_slurm_needs_topology(fails):
    assert "not inside a SLURM allocation" in fails("slurm/train_multinode.sbatch", RECIPE="m")
    assert "set MASTER_ADDR" in fails("slurm/train_multinode.sbatch", RECIPE="m", SLURM_NNODES="2")


def test_sbatch_outside_the_repository_says_where_to_submit(tmp_path: Path):
    script = tmp_path / "copied.sbatch"  # SLURM runs a spooled copy of the script
    script.write_text((INFRA / "slurm" / "train_1node.sbatch").read_text())
    env = base_env(tmp_path, RECIPE="m", SLURM_SUBMIT_DIR=str(tmp_path))
    result = subprocess.run(["bash", str(script), "--dry-run"], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "submit from the repository root or set REPO_ROOT" in result.stderr


def test_dry_run_lines_round_trip_through_the_shell(tmp_path: Path):
    """What --dry-run prints parses back to the exact argv (spaces, quotes, $, empty strings)."""
    tricky = ["plain", "two words", "it's", "$HOME", "", "a=b c", "x;y", "*"]
    script = tmp_path / "t.sh"
    script.write_text(f'source "{INFRA / "lib.sh"}"\nDRY_RUN=1\nrun tool "$@"\n')
    result = subprocess.run(
        ["bash", str(script), *tricky], capture_output=True, text=True, env=base_env(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert shlex.split(result.stdout) == ["tool", *tricky]
