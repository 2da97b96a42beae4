"""infra/launch_train.sh: the exact launcher command lines for accelerate, torchrun and deepspeed, the shared
environment, the retrieval-service wait, input validation, and real (non-dry) launches on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from infra_helpers import FAKE_PYTHON, INFRA, base_env, free_port, run_script

DS = {stage: str(INFRA / "deepspeed" / f"zero{stage}.json") for stage in (1, 2, 3)}


def ds_env(stage: int) -> list[str]:
    return [
        "env",
        "ACCELERATE_USE_DEEPSPEED=true",
        f"ACCELERATE_DEEPSPEED_CONFIG_FILE={DS[stage]}",
        f"RLCORE_DEEPSPEED_CONFIG={DS[stage]}",
    ]


def test_accelerate_single_node_default(dry_run, tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text("seed: 1\n")
    out = dry_run(
        "launch_train.sh",
        "--",
        "trainer.lr=1e-6",
        "seed=3",
        RECIPE="rexrag.train",
        CONFIG=str(config),
        NPROC_PER_NODE="8",
    )
    assert out.commands == [
        ds_env(2)
        + [
            FAKE_PYTHON,
            "-m",
            "accelerate.commands.launch",
            "--num_machines",
            "1",
            "--num_processes",
            "8",
            "--machine_rank",
            "0",
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            "29500",
            "--use_deepspeed",
            "--deepspeed_config_file",
            DS[2],
            "-m",
            "rexrag.train",
            "--config",
            str(config),
            "trainer.lr=1e-6",
            "seed=3",
        ]
    ]
    assert "node 0 of 1, 8 processes per node (world size 8), ZeRO stage 2" in out.notes


def test_accelerate_multinode_uses_standard_launcher_and_global_process_count(dry_run):
    out = dry_run(
        "launch_train.sh",
        RECIPE="anessuite.grpo",
        NNODES="4",
        NODE_RANK="2",
        NPROC_PER_NODE="8",
        MASTER_ADDR="node001",
        MASTER_PORT="29611",
        ZERO_STAGE="3",
        MIXED_PRECISION="bf16",
    )
    cmd = out.command_with("accelerate.commands.launch")
    joined = " ".join(cmd)
    # accelerate counts processes over all machines: 4 nodes x 8 GPUs = 32
    assert "--num_machines 4 --num_processes 32 --machine_rank 2" in joined
    assert "--main_process_ip node001 --main_process_port 29611" in joined
    assert f"--deepspeed_config_file {DS[3]} --deepspeed_multinode_launcher standard" in joined
    assert "--mixed_precision bf16 -m anessuite.grpo" in joined
    assert cmd[:4] == ds_env(3)[:4]


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_each_zero_stage_reads_its_json(dry_run, stage: int):
    out = dry_run("launch_train.sh", RECIPE="m", ZERO_STAGE=str(stage), NPROC_PER_NODE="2")
    cmd = out.commands[-1]
    assert cmd[:4] == ds_env(stage)
    assert cmd[cmd.index("--deepspeed_config_file") + 1] == DS[stage]


def test_zero_stage_0_means_plain_ddp(dry_run):
    out = dry_run("launch_train.sh", RECIPE="m", ZERO_STAGE="0", NPROC_PER_NODE="8")
    cmd = out.commands[-1]
    assert cmd[0] == FAKE_PYTHON, "no DeepSpeed environment without ZeRO"
    assert "--multi_gpu" in cmd and "--use_deepspeed" not in cmd


def test_ds_config_override_and_config_key(dry_run, tmp_path: Path):
    custom = tmp_path / "my_zero.json"
    custom.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    out = dry_run(
        "launch_train.sh",
        RECIPE="m",
        DS_CONFIG=str(custom),
        DS_CONFIG_KEY="trainer.deepspeed",
        NPROC_PER_NODE="1",
        LAUNCHER="torchrun",
    )
    cmd = out.commands[-1]
    assert f"ACCELERATE_DEEPSPEED_CONFIG_FILE={custom}" in cmd
    assert cmd[-1] == f"trainer.deepspeed={custom}"


def test_torchrun_multinode(dry_run):
    out = dry_run(
        "launch_train.sh",
        "--",
        "a=1",
        RECIPE="rexrag.train",
        LAUNCHER="torchrun",
        NNODES="2",
        NODE_RANK="1",
        NPROC_PER_NODE="8",
        MASTER_ADDR="n1",
    )
    assert out.commands == [
        ds_env(2)
        + [
            FAKE_PYTHON,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "2",
            "--nproc-per-node",
            "8",
            "--node-rank",
            "1",
            "--master-addr",
            "n1",
            "--master-port",
            "29500",
            "-m",
            "rexrag.train",
            "a=1",
        ]
    ]


def test_deepspeed_single_node_has_no_hostfile(dry_run):
    out = dry_run("launch_train.sh", RECIPE="m", LAUNCHER="deepspeed", NPROC_PER_NODE="8", ZERO_STAGE="1")
    assert out.commands == [
        ds_env(1)
        + [
            FAKE_PYTHON,
            "-m",
            "deepspeed.launcher.runner",
            "--num_gpus",
            "8",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            "29500",
            "--no_local_rank",
            "--module",
            "m",
        ]
    ]


def test_deepspeed_multinode_runs_without_ssh_from_a_hostfile(dry_run, tmp_path: Path):
    out = dry_run(
        "launch_train.sh",
        RECIPE="m",
        LAUNCHER="deepspeed",
        NNODES="2",
        NODE_RANK="1",
        NPROC_PER_NODE="8",
        MASTER_ADDR="n1",
        SLURM_JOB_ID="77",
    )
    hostfile = str(tmp_path / "logs" / "hostfile-77")
    assert any(hostfile in note and "slots=8" in note for note in out.notes)
    cmd = out.commands[-1]
    tail = cmd[cmd.index("deepspeed.launcher.runner") + 1 :]
    assert tail == [
        "--num_gpus",
        "8",
        "--master_addr",
        "n1",
        "--master_port",
        "29500",
        "--hostfile",
        hostfile,
        "--no_ssh",
        "--node_rank",
        "1",
        "--num_nodes",
        "2",
        "--no_local_rank",
        "--module",
        "m",
    ]


def test_slurm_variables_set_the_topology(dry_run):
    out = dry_run(
        "launch_train.sh",
        RECIPE="m",
        LAUNCHER="torchrun",
        SLURM_NNODES="3",
        SLURM_NODEID="2",
        SLURM_GPUS_ON_NODE="4",
        MASTER_ADDR="h0",
    )
    joined = " ".join(out.commands[-1])
    assert "--nnodes 3 --nproc-per-node 4 --node-rank 2 --master-addr h0" in joined


def test_start_retriever_runs_it_first_and_waits_for_health(dry_run, tmp_path: Path):
    out = dry_run(
        "launch_train.sh",
        RECIPE="rexrag.train",
        LAUNCHER="torchrun",
        NPROC_PER_NODE="8",
        START_RETRIEVER="1",
        RETRIEVER_INDEX="/indexes/wiki18",
        RETRIEVER_PORT="8123",
        RETRIEVER_WAIT_TIMEOUT="42",
    )
    server, train = out.commands
    assert server[:4] == [FAKE_PYTHON, "-m", "rlcore.retrieval.server", "--index"]
    assert server[-4:] == [">", str(tmp_path / "logs" / "retriever-8123.log"), "2>&1", "&"]
    assert "GET http://127.0.0.1:8123/health answers 2xx (timeout 42 s)" in " ".join(out.notes)
    assert "RLCORE_RETRIEVER_URL=http://127.0.0.1:8123" in train
    assert out.stdout.index("rlcore.retrieval.server") < out.stdout.index("torch.distributed.run")


def test_external_retriever_url_is_waited_for(dry_run):
    out = dry_run(
        "launch_train.sh",
        RECIPE="m",
        NPROC_PER_NODE="1",
        RETRIEVER_URL="http://search:9000/",
        RETRIEVER_WAIT_TIMEOUT="5",
    )
    assert out.notes[0] == "wait until GET http://search:9000/health answers 2xx (timeout 5 s)"
    assert len(out.commands) == 1 and "RLCORE_RETRIEVER_URL=http://search:9000/" in out.commands[0]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "set RECIPE"),
        ({"RECIPE": "m", "LAUNCHER": "mpirun"}, "LAUNCHER=mpirun is not one of"),
        ({"RECIPE": "m", "ZERO_STAGE": "4"}, "ZERO_STAGE=4 is not one of"),
        ({"RECIPE": "m", "NNODES": "2", "NODE_RANK": "2"}, "NODE_RANK=2 must be in [0, NNODES=2)"),
        ({"RECIPE": "m", "NPROC_PER_NODE": "zero"}, "NPROC_PER_NODE must be a positive integer"),
        ({"RECIPE": "m", "LAUNCHER": "python", "NPROC_PER_NODE": "8"}, "LAUNCHER=python runs one process"),
    ],
)
def test_bad_settings_fail_with_a_clear_message(fails, env: dict[str, str], message: str):
    assert message in fails("launch_train.sh", **env)


def test_unknown_option_is_rejected(fails):
    assert "unknown option --nodes" in fails("launch_train.sh", "--nodes", "2", RECIPE="m")


def test_real_run_refuses_missing_deepspeed_config(fails, tmp_path: Path):
    stderr = fails(
        "launch_train.sh", dry=False, RECIPE="m", DS_CONFIG=str(tmp_path / "missing.json"), NPROC_PER_NODE="1"
    )
    assert f"DeepSpeed config (DS_CONFIG) not found: {tmp_path / 'missing.json'}" in stderr


# --- real launches on CPU: a fake recipe module records what it was started with ------------------------

FAKE_RECIPE = """
import json, os, sys
out = os.environ["FAKE_RECIPE_OUT"]
rank = os.environ.get("RANK", "solo")
with open(os.path.join(out, f"rank-{rank}.json"), "w") as handle:
    json.dump({"argv": sys.argv[1:], "world_size": os.environ.get("WORLD_SIZE"),
               "retriever_url": os.environ.get("RLCORE_RETRIEVER_URL"),
               "ds_config": os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")}, handle)
if os.environ.get("RLCORE_RETRIEVER_URL"):
    import urllib.request
    urllib.request.urlopen(os.environ["RLCORE_RETRIEVER_URL"] + "/health", timeout=5)
"""

# Stands in for rlcore.retrieval.server: answers GET /health with 200 after a short start-up delay.
FAKE_SERVER = """
import argparse, http.server, json, os, time
parser = argparse.ArgumentParser()
parser.add_argument("--host"); parser.add_argument("--port", type=int)
args, _ = parser.parse_known_args()
time.sleep(1.0)
status = os.environ.get("FAKE_SERVER_STATUS", "ok")
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": status, "error": "index is corrupt"}).encode()
        self.send_response(200 if status == "ok" else 503); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer((args.host, args.port), Handler).serve_forever()
"""


@pytest.fixture
def fake_modules(tmp_path: Path) -> Path:
    root = tmp_path / "fake_pkgs"
    (root / "fakerecipe").mkdir(parents=True)
    (root / "fakerecipe" / "__init__.py").write_text("")
    (root / "fakerecipe" / "__main__.py").write_text(textwrap.dedent(FAKE_RECIPE))
    server_dir = root / "rlcore" / "retrieval"
    server_dir.mkdir(parents=True)
    (root / "rlcore" / "__init__.py").write_text("")
    (server_dir / "__init__.py").write_text("")
    (server_dir / "server.py").write_text(textwrap.dedent(FAKE_SERVER))
    (tmp_path / "out").mkdir()
    return root


def test_real_torchrun_launch_starts_every_rank(fake_modules: Path, tmp_path: Path):
    env = base_env(
        tmp_path,
        RECIPE="fakerecipe",
        LAUNCHER="torchrun",
        ZERO_STAGE="0",
        NPROC_PER_NODE="2",
        MASTER_PORT=str(free_port()),
        PYTHON=sys.executable,
        PYTHONPATH=str(fake_modules),
        FAKE_RECIPE_OUT=str(tmp_path / "out"),
    )
    result = run_script("launch_train.sh", "--", "x=1", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    records = {p.name: json.loads(p.read_text()) for p in (tmp_path / "out").iterdir()}
    assert sorted(records) == ["rank-0.json", "rank-1.json"]
    assert all(r["argv"] == ["x=1"] and r["world_size"] == "2" for r in records.values())


def test_real_run_with_retriever_waits_then_stops_it(fake_modules: Path, tmp_path: Path):
    port = free_port()
    env = base_env(
        tmp_path,
        RECIPE="fakerecipe",
        LAUNCHER="python",
        ZERO_STAGE="0",
        START_RETRIEVER="1",
        RETRIEVER_INDEX=str(tmp_path),
        RETRIEVER_PORT=str(port),
        RETRIEVER_GPU="0",
        PYTHON=sys.executable,
        PYTHONPATH=str(fake_modules),
        FAKE_RECIPE_OUT=str(tmp_path / "out"),
    )
    result = run_script("launch_train.sh", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out" / "rank-solo.json").read_text())
    assert record["retriever_url"] == f"http://127.0.0.1:{port}"
    pid = int((tmp_path / "logs" / f"retriever-{port}.pid").read_text())
    assert "is up after" in result.stderr
    assert f"stopping the retrieval server (pid {pid})" in result.stderr
    assert not _alive(pid), "the retrieval server outlived the training run"


def _alive(pid: int, wait_s: float = 5.0) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.1)
    return True


def test_real_run_fails_fast_when_the_retriever_dies(fake_modules: Path, tmp_path: Path):
    (fake_modules / "rlcore" / "retrieval" / "server.py").write_text("raise SystemExit('index is corrupt')\n")
    env = base_env(
        tmp_path,
        RECIPE="fakerecipe",
        LAUNCHER="python",
        ZERO_STAGE="0",
        START_RETRIEVER="1",
        RETRIEVER_INDEX=str(tmp_path),
        RETRIEVER_PORT=str(free_port()),
        RETRIEVER_GPU="0",
        PYTHON=sys.executable,
        PYTHONPATH=str(fake_modules),
        FAKE_RECIPE_OUT=str(tmp_path / "out"),
    )
    result = run_script("launch_train.sh", env=env, timeout=60)
    assert result.returncode != 0
    assert "exited before" in result.stderr and "index is corrupt" in result.stderr
    assert not list((tmp_path / "out").iterdir()), "training must not start without the retriever"


def test_real_run_stops_waiting_when_health_reports_an_error(fake_modules: Path, tmp_path: Path):
    """The real server stays up after a failed index load and says so on /health: no 900 s wait."""
    port = free_port()
    env = base_env(
        tmp_path,
        RECIPE="fakerecipe",
        LAUNCHER="python",
        ZERO_STAGE="0",
        START_RETRIEVER="1",
        RETRIEVER_INDEX=str(tmp_path),
        RETRIEVER_PORT=str(port),
        RETRIEVER_GPU="0",
        FAKE_SERVER_STATUS="error",
        PYTHON=sys.executable,
        PYTHONPATH=str(fake_modules),
        FAKE_RECIPE_OUT=str(tmp_path / "out"),
    )
    started = time.monotonic()
    result = run_script("launch_train.sh", env=env, timeout=60)
    assert result.returncode != 0
    assert "reports an error" in result.stderr and "index is corrupt" in result.stderr
    assert time.monotonic() - started < 30
    pid = int((tmp_path / "logs" / f"retriever-{port}.pid").read_text())
    assert not _alive(pid), "an unhealthy server started by the launcher must not be left running"
    assert not list((tmp_path / "out").iterdir())


def test_real_run_times_out_on_an_unreachable_retriever(fake_modules: Path, tmp_path: Path):
    env = base_env(
        tmp_path,
        RECIPE="fakerecipe",
        LAUNCHER="python",
        ZERO_STAGE="0",
        RETRIEVER_URL=f"http://127.0.0.1:{free_port()}",
        RETRIEVER_WAIT_TIMEOUT="3",
        PYTHON=sys.executable,
        PYTHONPATH=str(fake_modules),
        FAKE_RECIPE_OUT=str(tmp_path / "out"),
    )
    result = run_script("launch_train.sh", env=env, timeout=60)
    assert result.returncode != 0
    assert "did not answer within 3s" in result.stderr
    assert not list((tmp_path / "out").iterdir())


REAL_CLIENT = """
import json, os, urllib.request
body = json.dumps({"queries": ["which organ produces insulin"], "topk": 1, "return_scores": True}).encode()
request = urllib.request.Request(os.environ["RLCORE_RETRIEVER_URL"] + "/retrieve", data=body,
                                 headers={"Content-Type": "application/json"})
answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
with open(os.path.join(os.environ["FAKE_RECIPE_OUT"], "answer.json"), "w") as handle:
    json.dump(answer, handle)
"""


def test_real_retrieval_server_started_by_the_launcher(tmp_path: Path):
    """The real rlcore.retrieval.server (BM25, CPU) accepts the flags serve_retriever.sh generates, turns
    healthy, answers the training process, and is stopped when training ends."""
    corpus = tmp_path / "corpus.jsonl"
    passages = [
        ("p1", "Paris\nParis is the capital of France."),
        ("p2", "Insulin\nInsulin is a hormone produced by the pancreas."),
        ("p3", "Propofol\nPropofol is an intravenous general anesthetic."),
    ]
    corpus.write_text("".join(json.dumps({"id": i, "contents": c}) + "\n" for i, c in passages))
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlcore.retrieval.build",
            "--corpus",
            str(corpus),
            "--out",
            str(tmp_path / "index"),
            "--kind",
            "bm25",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    client = tmp_path / "client_pkg" / "realclient"
    client.mkdir(parents=True)
    (client / "__init__.py").write_text("")
    (client / "__main__.py").write_text(textwrap.dedent(REAL_CLIENT))
    (tmp_path / "out").mkdir()
    port = free_port()
    env = base_env(
        tmp_path,
        RECIPE="realclient",
        LAUNCHER="python",
        ZERO_STAGE="0",
        START_RETRIEVER="1",
        RETRIEVER_INDEX=str(tmp_path / "index"),
        RETRIEVER_KIND="bm25",
        RETRIEVER_GPU="0",
        RETRIEVER_PORT=str(port),
        RETRIEVER_WAIT_TIMEOUT="90",
        PYTHON=sys.executable,
        PYTHONPATH=str(tmp_path / "client_pkg"),
        FAKE_RECIPE_OUT=str(tmp_path / "out"),
        HF_HUB_OFFLINE="1",
    )
    result = run_script("launch_train.sh", env=env, timeout=180)
    assert result.returncode == 0, result.stderr + (tmp_path / "logs" / f"retriever-{port}.log").read_text()
    answer = json.loads((tmp_path / "out" / "answer.json").read_text())
    assert answer["result"][0][0]["document"]["id"] == "p2"
    pid = int((tmp_path / "logs" / f"retriever-{port}.pid").read_text())
    assert not _alive(pid)
