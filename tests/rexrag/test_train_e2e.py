"""A few end-to-end REX-RAG steps on the shared trainer: tiny model, synthetic world, in-process BM25 retriever.

The rollout policy is scripted (a random tiny model never answers, so it would never spawn a probe); the trainer
still scores, filters and updates the real tiny model on those rollouts.
"""

import json
import math
import re
from dataclasses import replace

import pytest
import torch

from rexrag.data.qa import load_flashrag_jsonl
from rexrag.data.template import DEFAULT_TEMPLATE
from rexrag.method import RexRag, RexRagConfig
from rexrag.recipes.common import WorldDataConfig, ensure_world, load_world_retriever
from rexrag.recipes.train import (
    FinalEvalConfig,
    HeldoutCurveConfig,
    QAConfig,
    RexRagTrainConfig,
    run,
    to_records,
)
from rlcore.generation.testing import ScriptedBackend, build_tiny_qwen2, build_tiny_tokenizer
from rlcore.rollout import RolloutConfig
from rlcore.trainer.config import ObjectiveConfig, TrackingConfig, TrainLoopConfig
from rlcore.trainer.grpo import train


@pytest.fixture(scope="module")
def setup(tmp_path_factory, small_world):
    root = tmp_path_factory.mktemp("e2e")
    world_cfg = WorldDataConfig(world=small_world, dir=str(root / "world"), template=DEFAULT_TEMPLATE)
    paths = ensure_world(world_cfg)
    tok = build_tiny_tokenizer()
    model = build_tiny_qwen2(tok, seed=0)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return root, world_cfg, paths, tok


def _scripted_policy(examples):
    """Wrong answer first; after an inserted self-doubt prompt: search the first hop, then the gold answer."""
    gold = {ex.question: ex.golden_answers[0] for ex in examples}
    first_hop = {ex.question: ex.metadata["chain"][0] for ex in examples}

    def respond(context_ids, text):
        question = re.findall(r"Question: (.*?\?)", text)[-1]
        response = text.split("assistant")[-1]  # the template itself mentions <information> and <think>
        if "</information>" in response:
            return f"<answer> {gold[question]} </answer>"
        if "<think> I" in response:
            return f" </think>\n<search> {first_hop[question]} </search>"
        return "<think> I know this. </think>\n<answer> Nobody </answer>"

    return respond


@pytest.mark.slow
def test_rexrag_steps_with_the_shared_trainer(setup, tmp_path):
    root, world_cfg, paths, tok = setup
    examples = load_flashrag_jsonl(paths["train"])
    records = to_records(examples, DEFAULT_TEMPLATE)
    rollout = RolloutConfig(max_turns=3, max_new_tokens_per_turn=48, max_response_tokens=600)
    cfg = RexRagTrainConfig(
        rollout=rollout,
        objective=ObjectiveConfig(num_generations=2, prompts_per_step=2, micro_batch_size=4, kl_coef=0.001),
        train=TrainLoopConfig(total_steps=2, output_dir=str(tmp_path / "out"), seed=1),
        tracking=TrackingConfig(enabled=True, experiment="rexrag-test"),
        qa=QAConfig(world=world_cfg),
        # every wrong original probes; keep ratio 1 keeps every probe; the self-doubt pool starts with "<think> I"
        rexrag=RexRagConfig(probe_prob=1.0, keep_ratio_init=1.0, pool="paraphrase_30"),
    )
    cfg.model.path = str(root / "model")
    cfg.optim.lr = 1e-2
    method = RexRag(cfg.rexrag, tok, cfg.rollout, records, metrics_path=tmp_path / "rexrag.jsonl")
    backend = ScriptedBackend(tok, _scripted_policy(examples))
    before = {k: v.clone() for k, v in build_tiny_qwen2(tok, seed=0).state_dict().items()}
    result = train(
        cfg,
        records=records,
        retriever=load_world_retriever(paths),
        after_rollout=method.after_rollout,
        behaviour_logprobs=method.behaviour_logprobs,
        on_answer=method.on_answer,
        stateful={"rexrag": method},
        backend=backend,
    )
    assert result.last_step == 2 and len(method.history) == 2
    for record in method.history:
        # 4 originals, all wrong -> 4 probes, all kept (keep ratio 1 -> K = 4): alpha = 4 / 8
        assert record["rexrag/probes_spawned"] == 4 and record["rexrag/probes_kept"] == 4
        assert record["rexrag/alpha"] == pytest.approx(0.5)
        assert record["rexrag/error_rate"] == pytest.approx(1.0)
        assert record["rexrag/dead_end_rate"] == pytest.approx(1.0)
        assert record["rexrag/probe_accuracy_kept"] == pytest.approx(
            1.0
        )  # every probe searched and recovered
        assert math.isfinite(record["rexrag/is_weight_mean"]) and record["rexrag/is_weight_max"] > 0
        # original tokens start at ratio 1 / (1 - alpha) = 2 -> outside the trust region
        assert record["rexrag/is_weight_mean_orig"] == pytest.approx(2.0, rel=1e-5)
        assert record["rexrag/clip_frac_orig"] == pytest.approx(1.0)
    # the EMA moved towards the kept probes' accuracy: 0.9 * 1 + 0.1 * 1 = 1 (stays), saved for resume
    assert method.ema.value == pytest.approx(1.0)
    for metrics in result.metrics:
        assert math.isfinite(metrics["loss/total"])
        assert metrics["rollout/num_trajectories"] == 8  # 4 originals + 4 probes reach the update
    from rlcore.models import load_causal_lm

    trained = load_causal_lm(result.output_dir / "final").state_dict()
    changed = [name for name, value in trained.items() if not torch.equal(value, before[name])]
    assert len(changed) == len(before)  # every trainable tensor moved
    lines = (tmp_path / "rexrag.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["step"] == 1.0


@pytest.mark.slow
def test_train_recipe_end_to_end_with_a_real_tiny_policy(setup, tmp_path):
    root, world_cfg, paths, tok = setup
    cfg = RexRagTrainConfig(
        rollout=RolloutConfig(max_turns=1, max_new_tokens_per_turn=8, max_response_tokens=64),
        objective=ObjectiveConfig(num_generations=2, prompts_per_step=2, micro_batch_size=4),
        train=TrainLoopConfig(total_steps=2, output_dir=str(tmp_path / "run"), seed=0),
        tracking=TrackingConfig(enabled=True, experiment="rexrag-test"),
        qa=QAConfig(world=world_cfg, max_eval_examples=3),
        heldout_curve=HeldoutCurveConfig(every=1, split="test", max_examples=3),
        final_eval=FinalEvalConfig(samples=2),
    )
    cfg.model.path = str(root / "model")
    summary = run(replace(cfg))
    assert summary["last_step"] == 2 and len(summary["rexrag_metrics"]) == 2
    # the held-out curve: the start policy (step 0) and every step, in the summary, the file and the step log
    curve = summary["heldout_curve"]
    assert [p["step"] for p in curve] == [0.0, 1.0, 2.0]
    lines = (tmp_path / "run" / "heldout_curve.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == curve
    step_log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for point, logged in zip(curve[1:], step_log):
        assert logged["heldout/em"] == pytest.approx(point["heldout/em"])
        assert "rexrag/alpha" in logged and "rexrag/dead_end_rate" in logged  # the method's own statistics
    # the last curve point is the in-memory policy on the test questions: the saved final model scores the same
    final = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert curve[-1]["heldout/em"] == pytest.approx(final["average_em"])
    assert curve[-1]["heldout/f1"] == pytest.approx(final["average_f1"])
    import mlflow

    client = mlflow.tracking.MlflowClient()
    history = client.get_metric_history(summary["run_id"], "heldout/em")
    assert sorted(h.step for h in history) == [0, 1, 2]
    # runs carry a method tag (arms group in the MLflow UI and `make compare`)
    assert client.get_run(summary["run_id"]).data.tags["method"] == "rexrag-paper-per_wrong_rollout"
    scores = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert (
        set(scores) >= {"average_em", "by_source"} and sum(v["n"] for v in scores["by_source"].values()) == 3
    )
    assert (tmp_path / "run" / "eval_table.md").read_text().startswith("| Method |")
    # two sampled passes at T = 1 beside the greedy row
    assert scores["sampled"]["samples"] == 2 and len(scores["sampled"]["average_em"]["values"]) == 2
    assert "| REX-RAG (sampled T=1, n=2) |" in (tmp_path / "run" / "eval_table.md").read_text()
    assert "eval/sampled/average_em_mean" in client.get_run(summary["run_id"]).data.metrics
    assert (tmp_path / "run" / "run.png").stat().st_size > 10_000  # the single-run plot (rexrag.plots)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["provenance"]["git.sha"] and results["config"]["rexrag"]["enabled"] is True
    # one prompt per run: the resolved config, the results, the run folder and the final model name the template
    assert results["config"]["qa"]["template"] == DEFAULT_TEMPLATE == results["prompt_template"]
    for folder in (tmp_path / "run", tmp_path / "run" / "final"):
        assert (folder / "prompt_template.txt").read_text() == DEFAULT_TEMPLATE


@pytest.mark.slow
def test_heldout_curve_does_not_change_the_training_run(setup, tmp_path):
    root, world_cfg, paths, tok = setup

    def config(every, out):
        cfg = RexRagTrainConfig(
            rollout=RolloutConfig(max_turns=1, max_new_tokens_per_turn=8, max_response_tokens=64),
            objective=ObjectiveConfig(num_generations=2, prompts_per_step=2, micro_batch_size=4),
            train=TrainLoopConfig(
                total_steps=2, output_dir=str(tmp_path / out), seed=0, save_final_model=False
            ),
            tracking=TrackingConfig(enabled=False),
            qa=QAConfig(world=world_cfg),
            heldout_curve=HeldoutCurveConfig(every=every, max_examples=3),
        )
        cfg.model.path = str(root / "model")
        return cfg

    with_curve, without = run(config(1, "curve")), run(config(0, "plain"))
    assert [p["step"] for p in with_curve["heldout_curve"]] == [0.0, 1.0, 2.0] and not without[
        "heldout_curve"
    ]

    def comparable(metrics):
        return [
            {k: v for k, v in m.items() if not k.startswith(("time/", "throughput/", "heldout/"))}
            for m in metrics
        ]

    assert comparable(with_curve["train_metrics"]) == comparable(without["train_metrics"])


@pytest.mark.parametrize("rank", ["0", "1"])
def test_only_the_main_rank_evaluates_and_writes_the_run_files(setup, tmp_path, monkeypatch, rank):
    """Under torchrun every rank runs the recipe: the final evaluation, eval.json, results.json and the plot come
    from rank 0 alone (every rank writing them raced on the same files). The trainer is replaced by a stand-in
    that leaves a saved final model, so only the recipe's tail runs."""
    import rlcore.trainer.grpo as grpo

    root, world_cfg, _, _ = setup
    out = tmp_path / "run"

    def fake_train(cfg, **_):
        build_tiny_qwen2(build_tiny_tokenizer(), seed=0).save_pretrained(out / "final")
        build_tiny_tokenizer().save_pretrained(out / "final")
        return grpo.TrainResult(output_dir=out, last_step=1, metrics=[], stopped_early=False, run_id=None)

    monkeypatch.setattr(grpo, "train", fake_train)
    monkeypatch.setenv("RANK", rank)
    cfg = RexRagTrainConfig(
        rollout=RolloutConfig(max_turns=1, max_new_tokens_per_turn=4, max_response_tokens=16),
        train=TrainLoopConfig(total_steps=1, output_dir=str(out), seed=0),
        tracking=TrackingConfig(enabled=False),
        qa=QAConfig(world=world_cfg, max_eval_examples=2),
    )
    cfg.model.path = str(root / "model")
    summary = run(cfg)
    written = {name: (out / name).exists() for name in ("eval.json", "eval_table.md", "results.json")}
    if rank == "0":
        assert written == dict.fromkeys(written, True) and "eval" in summary
    else:
        assert written == dict.fromkeys(written, False) and "eval" not in summary
