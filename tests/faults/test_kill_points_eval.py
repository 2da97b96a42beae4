"""The AnesSuite evaluation (``python -m anessuite eval``) SIGKILLed after a few responses reached its cache, then
rerun: it asks only for the missing items and ends with the undisturbed run's responses and scores."""

import json
import signal
import sys

import pytest
from faults_helpers import read_jsonl, run_to_end, subprocess_env

from rlcore.faults import FAULT_ENV
from rlcore.generation.testing import build_tiny_qwen2, build_tiny_tokenizer

KILL_AFTER = 3  # responses on disk when the process dies (of 8)


def _command(model, cache, out):
    return [
        sys.executable,
        "-m",
        "anessuite",
        "eval",
        f"model={model}",
        "generation.mode=loglik",
        "limit_per_language=4",
        "backend.batch_size=1",  # the same forward per item whether it runs before or after the kill
        f"cache_dir={cache}",
        f"output_dir={out}",
        "tracking.enabled=false",
        "bootstrap_iters=50",
    ]


def _env(**extra):
    env = subprocess_env()
    env.pop(FAULT_ENV, None)
    env.update(extra)
    return env


def _scores(out):
    results = json.loads((out / "results.json").read_text())
    return {key: results[key] for key in ("overall", "by_language", "avg")}


@pytest.mark.slow
def test_evaluation_killed_mid_cache_then_rerun_equals_undisturbed(tmp_path):
    tokenizer = build_tiny_tokenizer()
    build_tiny_qwen2(tokenizer, seed=0).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    whole = run_to_end(_command(tmp_path / "model", tmp_path / "cache-a", tmp_path / "a"), _env())
    assert whole.returncode == 0, whole.stderr[-4000:]

    command = _command(tmp_path / "model", tmp_path / "cache-b", tmp_path / "b")
    killed = run_to_end(command, _env(**{FAULT_ENV: f"eval.cache:{KILL_AFTER}"}))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
    (cache_file,) = (tmp_path / "cache-b").glob("*.jsonl")
    assert len(read_jsonl(cache_file)) == KILL_AFTER

    rerun = run_to_end(command, _env())
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert f"{KILL_AFTER} cached, {8 - KILL_AFTER} to run" in rerun.stderr
    assert read_jsonl(tmp_path / "b" / "responses.jsonl") == read_jsonl(tmp_path / "a" / "responses.jsonl")
    assert _scores(tmp_path / "b") == _scores(tmp_path / "a")
