"""The retrieval server is SIGKILLed and restarted while REX-RAG trains and while it evaluates: both ride through
the outage and their results equal the undisturbed run's.

The server is the project's (``python -m rlcore.retrieval.server`` over the world's BM25 index, a subprocess on
127.0.0.1). The trainer and the tiny Qwen2 policy are real; the rollout policy is scripted (as in
tests/rexrag/test_train_e2e.py), because a random tiny model never emits a search, and the outage must land
on searches.
"""

import json
import logging
import re
import threading
import time

import pytest
import torch
from faults_helpers import ServerProcess

from rexrag.data.qa import load_flashrag_jsonl
from rexrag.data.template import DEFAULT_TEMPLATE
from rexrag.data.world import WorldConfig
from rexrag.evaluation import score_records
from rexrag.method import RexRag, RexRagConfig
from rexrag.recipes.common import WorldDataConfig, ensure_world, rollout_inputs, trajectory_record
from rexrag.recipes.train import QAConfig, RetrieverConfig, RexRagTrainConfig, open_retriever, to_records
from rlcore.generation.testing import ScriptedBackend, build_tiny_qwen2, build_tiny_tokenizer
from rlcore.retrieval import RetrievalUnavailableError
from rlcore.rollout import RolloutConfig, RolloutEngine
from rlcore.trainer.checkpoint import list_checkpoints
from rlcore.trainer.config import ObjectiveConfig, TrackingConfig, TrainLoopConfig
from rlcore.trainer.grpo import train

DOWN_SECONDS = 3.0  # how long the server stays dead before it is started again


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("outage-world")
    small = WorldConfig(
        seed=5,
        num_countries=3,
        num_cities=8,
        num_orgs=10,
        num_people=30,
        num_surnames=20,
        num_train_questions=16,
        num_dev_questions=4,
        num_test_questions=6,
    )
    world_cfg = WorldDataConfig(world=small, dir=str(root / "world"), template=DEFAULT_TEMPLATE)
    paths = ensure_world(world_cfg)
    tok = build_tiny_tokenizer()
    model = build_tiny_qwen2(tok, seed=0)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return root, world_cfg, paths, tok


@pytest.fixture()
def server(world, tmp_path):
    root, _, paths, _ = world
    with ServerProcess(paths["index"], kind="bm25", log=tmp_path / "server.log") as running:
        yield running


def _client(server, max_outage_s: float = 600.0):
    """The recipe's own HTTP retriever (``retriever.kind=http``), by default with the default outage budget."""
    return open_retriever(RetrieverConfig(kind="http", url=server.url, max_outage_s=max_outage_s), None)


def _kill_and_restart(server, restart: bool = True) -> threading.Thread | None:
    server.kill()
    if not restart:
        return None
    thread = threading.Thread(
        target=lambda: (time.sleep(DOWN_SECONDS), server.start(wait=False)), name="restart", daemon=True
    )
    thread.start()
    return thread


def _outage_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rlcore.retrieval.client"]


def _scripted_trainer_policy(examples):
    """Wrong answer first; after an inserted self-doubt prompt: search the first hop, then the gold answer."""
    gold = {ex.question: ex.golden_answers[0] for ex in examples}
    first_hop = {ex.question: ex.metadata["chain"][0] for ex in examples}

    def respond(context_ids, text):
        question = re.findall(r"Question: (.*?\?)", text)[-1]
        response = text.split("assistant")[-1]
        if "</information>" in response:
            return f"<answer> {gold[question]} </answer>"
        if "<think> I" in response:
            return f" </think>\n<search> {first_hop[question]} </search>"
        return "<think> I know this. </think>\n<answer> Nobody </answer>"

    return respond


def _train(world, server, out, kill_after_step: int | None, total_steps=3, restart=True, max_outage_s=600.0):
    root, world_cfg, paths, tok = world
    examples = load_flashrag_jsonl(paths["train"])
    records = to_records(examples, DEFAULT_TEMPLATE)
    cfg = RexRagTrainConfig(
        rollout=RolloutConfig(max_turns=3, max_new_tokens_per_turn=48, max_response_tokens=600),
        objective=ObjectiveConfig(num_generations=2, prompts_per_step=2, micro_batch_size=4, kl_coef=0.001),
        train=TrainLoopConfig(total_steps=total_steps, output_dir=str(out), seed=1, save_final_model=False),
        tracking=TrackingConfig(enabled=False),
        qa=QAConfig(world=world_cfg),
        rexrag=RexRagConfig(probe_prob=1.0, keep_ratio_init=1.0, pool="paraphrase_30"),
    )
    cfg.model.path = str(root / "model")
    cfg.optim.lr = 1e-2
    method = RexRag(cfg.rexrag, tok, cfg.rollout, records)
    restarts = []

    def after_step(policy, step):
        if step == kill_after_step:  # the next step's searches find the server dead
            restarts.append(_kill_and_restart(server, restart))
        return {}

    result = train(
        cfg,
        records=records,
        retriever=_client(server, max_outage_s),
        after_rollout=method.after_rollout,
        behaviour_logprobs=method.behaviour_logprobs,
        on_answer=method.on_answer,
        after_step=after_step,
        stateful={"rexrag": method},
        backend=ScriptedBackend(tok, _scripted_trainer_policy(examples)),
    )
    for thread in restarts:
        if thread is not None:
            thread.join()
    return result


def _deterministic(metrics):
    return [{k: v for k, v in m.items() if not k.startswith(("time/", "throughput/"))} for m in metrics]


@pytest.mark.slow
def test_training_rides_through_a_server_restart_with_identical_results(world, server, tmp_path, caplog):
    reference = _train(world, server, tmp_path / "undisturbed", kill_after_step=None)
    caplog.set_level(logging.WARNING, logger="rlcore.retrieval.client")
    disturbed = _train(world, server, tmp_path / "disturbed", kill_after_step=1)
    assert disturbed.last_step == 3 and not disturbed.stopped_early
    # step 2's searches waited out the outage (the server was dead for DOWN_SECONDS plus its start-up)
    assert disturbed.metrics[1]["time/retrieve"] >= DOWN_SECONDS
    assert reference.metrics[1]["time/retrieve"] < DOWN_SECONDS
    assert min(m["rollout/searches"] for m in reference.metrics) > 0  # every step searched
    assert _deterministic(disturbed.metrics) == _deterministic(reference.metrics)
    for (name, a), (_, b) in zip(reference.model.named_parameters(), disturbed.model.named_parameters()):
        assert torch.equal(a, b), name
    lines = _outage_lines(caplog)
    assert sum("unavailable (" in line for line in lines) == 1, lines
    assert sum("answering again" in line for line in lines) == 1, lines


@pytest.mark.slow
def test_outage_past_the_budget_checkpoints_the_last_step_and_resume_is_exact(world, server, tmp_path):
    reference = _train(world, server, tmp_path / "undisturbed", kill_after_step=None, total_steps=4)
    out = tmp_path / "outage"
    started = time.monotonic()
    with pytest.raises(RetrievalUnavailableError, match="max_outage_s=2s") as info:
        _train(world, server, out, kill_after_step=2, total_steps=4, restart=False, max_outage_s=2.0)
    assert time.monotonic() - started >= 2.0
    # no periodic checkpoint was due (save_every=0): the one of step 2 was written because of the outage
    assert [step for step, _ in list_checkpoints(out)] == [2]
    assert "checkpoint of step 2 is in" in str(info.value) and "train.resume=auto" in str(info.value)
    assert [m["step"] for m in _read_metrics(out)] == [1, 2]
    server.start()
    resumed = _train(world, server, out, kill_after_step=None, total_steps=4)
    assert resumed.last_step == 4
    assert _deterministic(_read_metrics(out)) == _deterministic(reference.metrics)
    for (name, a), (_, b) in zip(reference.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(a, b), name


def _read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _scripted_evaluator(text_of_doc_1: dict):
    """Search the question; answer the title of the first passage retrieved (so EM depends on retrieval)."""

    def respond(context_ids, text):
        response = text.split("assistant")[-1]
        if "</information>" in response:
            title = re.findall(r"Doc 1\(Title: (.*?)\)", response)[-1]
            return f"<think> found it </think>\n<answer> {title} </answer>"
        question = re.findall(r"Question: (.*?\?)", text)[-1]
        if text_of_doc_1.pop("kill", None) is not None:
            text_of_doc_1["restart"] = _kill_and_restart(text_of_doc_1["server"])
        return f"<think> look it up </think>\n<search> {question} </search>"

    return respond


def _evaluate(world, server, kill: bool):
    _, _, paths, tok = world
    examples = load_flashrag_jsonl(paths["test"]) + load_flashrag_jsonl(paths["dev"])
    prompts, groups, metadata = rollout_inputs(examples, tok, DEFAULT_TEMPLATE, use_chat_template=True)
    control = {"server": server, **({"kill": True} if kill else {})}
    config = RolloutConfig(max_turns=2, max_new_tokens_per_turn=160, max_response_tokens=900, greedy=True)
    engine = RolloutEngine(ScriptedBackend(tok, _scripted_evaluator(control)), tok, config, _client(server))
    started = time.monotonic()
    records = [trajectory_record(t, tok) for t in engine.run(prompts, groups, metadata)]
    if "restart" in control:
        control["restart"].join()
    return records, score_records(records), time.monotonic() - started


@pytest.mark.slow
def test_evaluation_rides_through_a_server_restart_with_identical_results(world, server, caplog):
    reference_records, reference_scores, _ = _evaluate(world, server, kill=False)
    caplog.set_level(logging.WARNING, logger="rlcore.retrieval.client")
    records, scores, seconds = _evaluate(world, server, kill=True)
    assert seconds >= DOWN_SECONDS
    assert all(r["num_searches"] == 1 for r in records)  # every question searched once, during the outage
    assert records == reference_records and scores == reference_scores
    assert scores["average_em"] > 0  # some first passages name the answer: a lost search would change this
    lines = _outage_lines(caplog)
    assert sum("unavailable (" in line for line in lines) == 1, lines
    assert sum("answering again" in line for line in lines) == 1, lines
