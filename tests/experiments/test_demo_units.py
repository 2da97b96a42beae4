"""`make demo` pieces that run without models: config, stage runner (failure, abort, cleanup), health wait,
MLflow nesting, result collection. The end-to-end runs are in test_demo_e2e.py (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import psutil
import pytest
from demo_helpers import REPO, demo_command, demo_env, load_demo_modules, mlflow_runs

demo, stages_mod, report = load_demo_modules()


def test_config_yaml_is_the_resolved_default():
    """experiments/demo/config.yaml pins exactly the schema defaults, so README numbers match `make demo`."""
    from rlcore.config import load_config

    pinned = load_config(demo.DemoConfig, REPO / "experiments" / "demo" / "config.yaml")
    assert asdict(pinned) == asdict(demo.DemoConfig())


def test_smoke_preset_then_user_overrides(capsys: pytest.CaptureFixture[str]):
    import yaml

    assert demo.main(["--smoke", "--dry-run", "rexrag.train_steps=3"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["rexrag"]["train_steps"] == 3  # the user's override wins over the preset's 2
    assert resolved["rexrag"]["sft_steps"] == 2  # from the preset
    assert resolved["index"]["kind"] == "bm25"
    assert resolved["anessuite"]["limit_per_language"] == 2


def test_unknown_key_is_a_config_error():
    proc = subprocess.run(
        demo_command("--dry-run", "rexrag.train_step=3"),
        cwd=REPO,
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "rexrag.train_step" in proc.stderr and "train_steps" in proc.stderr


def _stages(tmp_path: Path):
    return stages_mod.Stages(tmp_path / "out", {**os.environ})


def test_failing_stage_names_stage_and_log(tmp_path: Path):
    stages = _stages(tmp_path)
    with pytest.raises(stages_mod.StageError) as caught:
        stages.run("index", [sys.executable, "-c", "print('building'); raise SystemExit(3)"])
    err = caught.value
    assert err.stage == "index" and err.log == stages.log_path("index")
    assert "stage 'index' failed: exited with code 3" in str(err) and str(err.log) in str(err)
    log = err.log.read_text()
    assert log.startswith("$ ") and "building" in log  # the command line, then its output
    assert "index" in stages.seconds


def test_successful_stage_is_timed_in_wall_clock_and_cpu(tmp_path: Path):
    stages = _stages(tmp_path)
    burn = "import time\nwhile time.process_time() < 1.5: pass\nprint('ok')"
    stages.run("anes-synth", [sys.executable, "-c", "pass"])  # ends well before the first 0.5 s sample
    assert stages.cpu_seconds["anes-synth"] > 0
    stages.run("sft", [sys.executable, "-c", burn])
    assert "ok" in stages.log_path("sft").read_text()
    # exact user + system time from wait4: the 1.5 s burned plus the interpreter's start-up, never above wall
    assert 1.5 <= stages.cpu_seconds["sft"] <= stages.seconds["sft"]
    assert stages.total_cpu_seconds() >= stages.cpu_seconds["sft"]


def test_abort_stops_the_other_branch(tmp_path: Path):
    """A failure in one branch sets the abort flag; the other branch's running process is stopped at once."""
    stages = _stages(tmp_path)
    errors: list[BaseException] = []

    def long_stage() -> None:
        try:
            stages.run("anes-eval", [sys.executable, "-c", "import time; time.sleep(120)"])
        except stages_mod.StageError as err:
            errors.append(err)

    thread = threading.Thread(target=long_stage)
    started = time.monotonic()
    thread.start()
    deadline = time.monotonic() + 30
    while not stages._procs and time.monotonic() < deadline:
        time.sleep(0.05)
    (proc,) = stages._procs
    stages.abort.set()
    thread.join(timeout=60)
    assert not thread.is_alive() and time.monotonic() - started < 60
    assert proc.poll() is not None  # the sleeping child was stopped, not left behind
    assert "stopped because another stage failed" in str(errors[0])


def test_stop_all_ends_process_groups(tmp_path: Path):
    """stop_all ends a tracked child and the grandchild it started (same process group)."""
    stages = _stages(tmp_path)
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"
    )
    proc = stages.popen("server", [sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    (grandchild,) = psutil.Process(proc.pid).children()
    stages.stop_all()
    assert proc.poll() is not None
    grandchild.wait(timeout=30)  # raises TimeoutExpired if it survived
    assert not grandchild.is_running()


def test_wait_for_health_reports_a_dead_server(tmp_path: Path):
    log = tmp_path / "server.log"
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(4)"])
    with pytest.raises(stages_mod.StageError, match="server exited with code 4 before it was healthy"):
        stages_mod.wait_for_health(
            "http://127.0.0.1:9", proc, timeout_s=60, stage="server", log=log, abort=threading.Event()
        )


def test_wait_for_health_polls_until_ok(tmp_path: Path):
    """A stand-in server answers 503 on the first /health request and 200 afterwards."""
    port = stages_mod.free_port()
    code = f"""
import http.server, json
calls = []
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        calls.append(1)
        ok = len(calls) > 1 and self.path == "/health"
        body = json.dumps({{"status": "ok" if ok else "loading", "passages": 7}}).encode()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", {port}), H).serve_forever()
"""
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        health = stages_mod.wait_for_health(
            f"http://127.0.0.1:{port}", proc, 60, "server", tmp_path / "s.log", threading.Event()
        )
        assert health == {"status": "ok", "passages": 7}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_last_line_reads_progress_bars(tmp_path: Path):
    log = tmp_path / "x.log"
    log.write_text("start\nsft:  10%|#  | 60/600\rsft:  20%|## | 120/600\r")
    assert stages_mod.last_line(log) == "sft:  20%|## | 120/600"
    assert stages_mod.last_line(tmp_path / "missing.log") == ""
    log.write_text("grpo:  40%|####  | 8/20\n12:00:01 INFO httpx: HTTP Request: POST http://x/retrieve 200\n")
    assert stages_mod.last_line(log) == "grpo:  40%|####  | 8/20"  # per-request client logs are skipped


def test_stage_runs_lists_the_children_created_under_the_parent_by_environment(tmp_path: Path, monkeypatch):
    from rlcore.tracking import start_run

    with start_run("demo", run_name="parent") as parent:
        monkeypatch.setenv("RLCORE_PARENT_RUN_ID", parent.run_id)  # what the demo hands its stages
        monkeypatch.setenv("RLCORE_RUN_TAGS", '{"demo.id": "d1"}')
        with start_run("demo", run_name="sft") as ours:
            pass
        monkeypatch.delenv("RLCORE_PARENT_RUN_ID")
        monkeypatch.delenv("RLCORE_RUN_TAGS")
        with start_run("demo", run_name="other-demo") as other:  # not started by this demo
            pass
    listed = report.stage_runs(os.environ["MLFLOW_TRACKING_URI"], "demo", parent.run_id)
    assert [a["run_id"] for a in listed] == [ours.run_id] and listed[0]["status"] == "FINISHED"
    runs = mlflow_runs()
    assert runs[ours.run_id].data.tags["demo.id"] == "d1"
    assert "mlflow.parentRunId" not in runs[other.run_id].data.tags


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_collect_results_and_summary(tmp_path: Path):
    out = tmp_path
    (out / "rexrag").mkdir()
    eval_json = {
        "average_em": 0.25,
        "n": 8,
        "by_source": {
            "world_1hop": {"em": 0.5, "n": 4, "searches": 1.0},
            "world_2hop": {"em": 0.0, "n": 4, "searches": 2.0},
        },
    }
    (out / "rexrag" / "eval.json").write_text(json.dumps(eval_json))
    _write_jsonl(
        out / "rexrag" / "metrics.jsonl", [{"step": 1, "reward/mean": 0.1}, {"step": 2, "reward/mean": 0.3}]
    )
    _write_jsonl(
        out / "rexrag" / "rexrag_metrics.jsonl",
        [
            {"step": 1, "rexrag/alpha": 3 / 19, "rexrag/probes_spawned": 6, "rexrag/probes_kept": 3,
             "rexrag/keep_ratio": 0.2, "rexrag/is_ess": 0.9},
            {"step": 2, "rexrag/alpha": 2 / 18, "rexrag/probes_spawned": 5, "rexrag/probes_kept": 2,
             "rexrag/keep_ratio": 0.18, "rexrag/is_ess": 0.8},
        ],
    )  # fmt: skip
    anes = {
        "model": "m",
        "avg": 0.5,
        "overall": {"accuracy": 0.5, "abstained": 0},
        "by_language": {
            "en": {"total": 0.75, "system1": 1.0, "system1.x": 0.5, "system2": 0.0, "n": 4},
            "zh": {"total": 0.25, "system1": 0.5, "system1.x": 0.0, "system2": None, "n": 4},
        },
    }
    (out / "anessuite" / "eval-cpt-sft").mkdir(parents=True)
    (out / "anessuite" / "eval-cpt-sft" / "results.json").write_text(json.dumps(anes))
    base = {
        **anes,
        "avg": 0.0,
        "by_language": {k: {**v, "total": 0.0, "system1": 0.0} for k, v in anes["by_language"].items()},
    }
    (out / "anessuite" / "eval-base").mkdir(parents=True)
    (out / "anessuite" / "eval-base" / "results.json").write_text(json.dumps(base))
    # rows in the configured order; a row whose evaluation wrote nothing is left out
    results = report.collect_results(out, ["base", "+CPT+SFT", "never ran"])
    rex = results["rexrag"]
    assert rex["average_em"] == 0.25 and rex["em_by_source"] == {"world_1hop": 0.5, "world_2hop": 0.0}
    assert rex["train_steps"] == 2
    assert rex["train_reward_mean"] == pytest.approx(0.2)  # (0.1 + 0.3) / 2
    assert rex["probes_spawned"] == 11 and rex["probes_kept"] == 5  # 6 + 5, 3 + 2
    assert rex["alpha_mean"] == pytest.approx(
        0.134503, abs=1e-6
    )  # (3/19 + 2/18) / 2 = (0.157895 + 0.111111) / 2
    assert rex["alpha_max"] == pytest.approx(3 / 19)
    assert rex["keep_ratio_last"] == 0.18
    assert rex["is_ess_mean"] == pytest.approx(0.85)  # (0.9 + 0.8) / 2
    assert rex["searches_per_question"] == pytest.approx(1.5)  # (1 + 2) / 2 over sources
    rows = results["anesbench"]["rows"]
    assert [r["label"] for r in rows] == ["base", "+CPT+SFT"]
    assert rows[1]["en"]["total"] == 0.75 and rows[1]["zh"]["system2"] is None
    summary = {
        "demo_id": "d",
        "status": "FINISHED",
        "wall_seconds": 90.0,
        "anes_mode": "loglik",
        "retrieval": {"kind": "flat", "training_queries": 12},
        "results": results,
        "stage_seconds": {"sft": 10.0, "total": 90.0},
        "paths": {"summary": "s.md"},
        "mlflow": {"experiment": "demo", "parent_run_id": "p", "nested_runs": [1, 2], "tracking_uri": "u",
                   "ui_command": "make mlflow-ui"},
    }  # fmt: skip
    text = report.format_summary(summary)
    assert "average EM 0.250 | world_1hop 0.500  world_2hop 0.000" in text
    assert "probes spawned 11, kept 5; alpha mean 0.135 max 0.158" in text
    assert "  base         0.000  0.500  0.000  0.000 |   0.000  0.000    n/a  0.000 |  0.000" in text
    assert "  +CPT+SFT     1.000  0.500  0.000  0.750 |   0.500  0.000    n/a  0.250 |  0.500" in text
    assert "(4 EN + 4 ZH questions, four options each: a guess scores 0.25" in text
    assert "Open the MLflow UI: make mlflow-ui" in text
    metrics = report.summary_metrics(summary)
    assert metrics["rexrag/average_em"] == 0.25 and metrics["anesbench/cpt-sft/avg"] == 0.5
    assert metrics["anesbench/base/en_total"] == 0.0 and metrics["anesbench/cpt-sft/zh_total"] == 0.25
    assert report.row_slug("+CPT+SFT") == "cpt-sft" and report.row_slug("base") == "base"
    assert metrics["time/sft_s"] == 10.0 and metrics["rexrag/em/world_2hop"] == 0.0


def test_the_summary_says_what_the_run_changed_against_its_start(tmp_path: Path):
    """Held-out EM first -> last evaluation, and probe statistics over the first and the last ten steps."""
    out = tmp_path / "out"
    (out / "rexrag").mkdir(parents=True)
    scores = {"average_em": 0.5, "n": 2, "by_source": {"world_1hop": {"em": 0.5, "searches": 1.0}}}
    (out / "rexrag" / "eval.json").write_text(json.dumps(scores))
    (out / "rexrag" / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward/mean": 0.1}) + "\n")
    curve = [
        {"step": 0, "heldout/em": 0.1},
        {"step": 20, "heldout/em": 0.4},
        {"step": 40, "heldout/em": 0.55},
    ]
    (out / "rexrag" / "heldout_curve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in curve))
    # 24 steps: dead ends fall from 1.0 (steps 1-12) to 0.5 (steps 13-24); kept probes right on the last 4 only
    probes = [
        {
            "step": s,
            "rexrag/dead_end_rate": 1.0 if s <= 12 else 0.5,
            "rexrag/probe_accuracy_kept": float(s > 20),
        }
        for s in range(1, 25)
    ]
    (out / "rexrag" / "rexrag_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in probes))
    rex = report.collect_results(out)["rexrag"]
    assert rex["heldout"]["first_em"] == 0.1 and rex["heldout"]["last_step"] == 40
    assert rex["heldout"]["change"] == pytest.approx(0.45)
    assert rex["moves"]["dead_end_rate"] == (1.0, 0.5)
    assert rex["moves"]["kept_probe_accuracy"] == (0.0, pytest.approx(0.4))  # 4 of the last 10 steps
    assert rex["moves"]["alpha"] == (None, None)  # not reported by these steps
    lines = report._movement_lines(rex)
    assert lines[0] == "  held-out EM (greedy, dev) 0.100 at step 0 -> 0.550 at step 40 (+0.450)"
    assert lines[1] == "  first -> last steps: dead end rate 1.00 -> 0.50; kept probe accuracy 0.00 -> 0.40"
    # one step is no before/after: the two windows would be the same step
    assert report.window_means(probes[:1], "rexrag/dead_end_rate") == (None, None)
    assert report.window_means(probes[:3], "rexrag/dead_end_rate") == (1.0, 1.0)


def test_anesbench_rows_are_label_model_pairs(capsys: pytest.CaptureFixture[str]):
    rows = demo.DemoConfig().anessuite.rows()
    assert rows == {"base": "base", "+CPT+SFT": "experiments/demo/committed/anessuite-cpt-sft"}
    for bad in ("['no-label-here']", "['a=x', 'a=y']"):
        assert demo.main(["--dry-run", f"anessuite.models={bad}"]) == 2
        assert "anessuite.models: expected distinct 'LABEL=MODEL' entries" in capsys.readouterr().err
