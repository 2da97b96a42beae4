"""`python -m rexrag evaluate` end to end on the synthetic world with a tiny random Qwen2: greedy scores, sampled
passes reported beside them (mean and spread), and the checkpoint's prompt template."""

from __future__ import annotations

import json
import math

import pytest

from rexrag.evaluation import format_markdown, summarize_samples
from rexrag.recipes.common import SHORT_TEMPLATE, SampledEvalConfig, WorldDataConfig
from rexrag.recipes.evaluate import EvalConfig, run
from rexrag.recipes.train import QAConfig, RetrieverConfig, write_template
from rlcore.generation.testing import build_tiny_qwen2, build_tiny_tokenizer
from rlcore.rollout import RolloutConfig
from rlcore.tracking_store import MLflowConfig, mlflow_client


def _scores(em_by_source: dict[str, float]) -> dict:
    by_source = {s: {"em": em, "f1": em, "n": 10} for s, em in em_by_source.items()}
    average = sum(em_by_source.values()) / len(em_by_source)
    return {"average_em": average, "average_f1": average, "n": 10 * len(by_source), "by_source": by_source}


def test_summarize_samples_golden_values():
    passes = [
        _scores({"nq": 0.5, "hotpotqa": 0.1}),
        _scores({"nq": 0.7, "hotpotqa": 0.1}),
        _scores({"nq": 0.6, "hotpotqa": 0.4}),
    ]
    summary = summarize_samples(passes, temperature=1.0)
    # nq: mean (0.5 + 0.7 + 0.6) / 3 = 0.6; sample std sqrt((0.01 + 0.01 + 0) / 2) = 0.1
    assert summary["by_source"]["nq"]["em"]["mean"] == pytest.approx(0.6)
    assert summary["by_source"]["nq"]["em"]["std"] == pytest.approx(0.1)
    # Avg. per pass: 0.3, 0.4, 0.5 -> mean 0.4, std 0.1; min / max kept
    assert summary["average_em"]["mean"] == pytest.approx(0.4) and summary["average_em"][
        "std"
    ] == pytest.approx(0.1)
    assert (summary["average_em"]["min"], summary["average_em"]["max"]) == pytest.approx((0.3, 0.5))
    assert (summary["samples"], summary["temperature"], summary["by_source"]["nq"]["n"]) == (3, 1.0, 10)
    table = format_markdown({"REX-RAG": {**_scores({"nq": 0.65, "hotpotqa": 0.2}), "sampled": summary}})
    lines = table.splitlines()
    assert lines[2] == "| REX-RAG | 65.0 | 20.0 | 42.5 |"
    # hotpotqa: 0.1, 0.1, 0.4 -> mean 0.2, std sqrt((0.01 + 0.01 + 0.04) / 2) = 0.1732
    assert lines[3] == "| REX-RAG (sampled T=1, n=3) | 60.0 ± 10.0 | 20.0 ± 17.3 | 40.0 ± 10.0 |"
    with pytest.raises(ValueError, match="at least one"):
        summarize_samples([], 1.0)
    with pytest.raises(ValueError, match="pass 1 scored sources"):
        summarize_samples([_scores({"nq": 0.5}), _scores({"popqa": 0.5})], 1.0)


@pytest.fixture(scope="module")
def world_model(tmp_path_factory, small_world):
    root = tmp_path_factory.mktemp("evaluate")
    tok = build_tiny_tokenizer()
    model = build_tiny_qwen2(tok, seed=0)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return root, WorldDataConfig(world=small_world, dir=str(root / "world"))


def _config(root, world, out: str, **changes) -> EvalConfig:
    cfg = EvalConfig(
        model=str(root / "model"),
        name="tiny",
        qa=QAConfig(world=world),
        retriever=RetrieverConfig(kind="world-bm25"),
        rollout=RolloutConfig(max_turns=1, max_new_tokens_per_turn=6, max_response_tokens=32),
        output_dir=str(root / out),
        tracking=MLflowConfig(experiment="rexrag-eval-test"),
        batch_size=8,
    )
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def test_sampled_passes_beside_greedy(world_model, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    root, world = world_model
    greedy_only = run(_config(root, world, "greedy"))
    sampled_cfg = _config(root, world, "sampled", eval=SampledEvalConfig(samples=2, temperature=1.0, seed=3))
    scores = run(sampled_cfg)
    # the greedy numbers do not move when sampled passes are added
    assert scores["by_source"] == greedy_only["by_source"]
    sampled = scores["sampled"]
    assert (sampled["samples"], sampled["temperature"]) == (2, 1.0)
    assert set(sampled["by_source"]) == set(scores["by_source"])
    for stats in sampled["by_source"].values():
        assert len(stats["em"]["values"]) == 2 and math.isfinite(stats["em"]["std"])
    out = root / "sampled"
    passes = [(out / f"predictions_sample{k}.jsonl").read_text().splitlines() for k in (0, 1)]
    assert len(passes[0]) == len(passes[1]) == 6  # the small world's test questions
    assert passes[0] != passes[1]  # two seeds, two different samples at T = 1
    saved = json.loads((out / "eval.json").read_text())
    assert saved["sampled"]["average_em"]["values"] == sampled["average_em"]["values"]
    table = (out / "table.md").read_text().splitlines()
    assert table[2].startswith("| tiny |") and table[3].startswith("| tiny (sampled T=1, n=2) |")
    # seeded: the same config samples the same predictions again
    run(_config(root, world, "again", eval=SampledEvalConfig(samples=2, temperature=1.0, seed=3)))
    assert (root / "again" / "predictions_sample1.jsonl").read_text().splitlines() == passes[1]
    # no stored template beside the model: the configured one is used and recorded
    assert (out / "prompt_template.txt").read_text() == SHORT_TEMPLATE


def test_evaluation_uses_the_template_stored_with_the_model(world_model, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    root, world = world_model
    trained = "Trained wording. Q: {question}\n"
    model_dir = root / "model"
    write_template(trained, model_dir)
    try:
        run(_config(root, world, "stored"))
        assert (root / "stored" / "prompt_template.txt").read_text() == trained
        record = json.loads((root / "stored" / "predictions.jsonl").read_text().splitlines()[0])
        assert record["data_source"]
    finally:
        (model_dir / "prompt_template.txt").unlink()


def test_sampled_config_is_validated():
    with pytest.raises(ValueError, match="eval.samples must be >= 0"):
        EvalConfig(eval=SampledEvalConfig(samples=-1)).validate()
    with pytest.raises(ValueError, match="temperature > 0"):
        EvalConfig(eval=SampledEvalConfig(samples=2, temperature=0.0)).validate()


def test_tracking_disabled_logs_no_run_and_writes_the_same_scores(world_model, tmp_path, monkeypatch):
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    root, world = world_model
    quiet = run(
        _config(root, world, "untracked", tracking=MLflowConfig(enabled=False, experiment="never-made"))
    )
    assert not store.exists()  # no run, not even a store, when tracking is off
    assert json.loads((root / "untracked" / "eval.json").read_text())["by_source"] == quiet["by_source"]
    tracked = run(_config(root, world, "tracked", tracking=MLflowConfig(experiment="rexrag-eval-tracked")))
    assert tracked["by_source"] == quiet["by_source"]
    client = mlflow_client(f"sqlite:///{store}")
    assert client.get_experiment_by_name("never-made") is None
    (logged,) = client.search_runs([client.get_experiment_by_name("rexrag-eval-tracked").experiment_id])
    assert logged.data.metrics["eval/average_em"] == pytest.approx(tracked["average_em"])
