"""The pre-check (dead-end rate, direct probe check) on the real rollout engine with a scripted policy."""

import pytest

from rexrag.data.qa import QAExample
from rexrag.precheck import (
    PrecheckConfig,
    PrecheckFailed,
    PrecheckThresholds,
    direct_check,
    format_summary,
    probe_lookback,
    run,
    summarize_precheck,
)
from rlcore.generation.testing import ScriptedBackend, build_tiny_tokenizer
from rlcore.rollout import INSERTED, RolloutConfig, RolloutEngine
from rlcore.rollout.testing import FakeRetriever

SEARCH_AGAIN = "<think> I should search first."  # the sentence that opens the dead end
STAY = "<think> I am sure about it."  # a sentence after which the policy answers from memory again
POOL = [SEARCH_AGAIN, STAY]
MEMORY = "<think> I recall it. </think>\n<answer> Berlin </answer>"


def respond(context_ids, text):
    """Prone questions (QP...) are answered from memory, others are searched; a probe follows its sentence."""
    if "</information>" in text:
        return "<think> The documents say Paris. </think>\n<answer> Paris </answer>"
    if SEARCH_AGAIN in text:
        return " </think>\n<search> capital of France </search>"
    if STAY in text:
        return " </think>\n<answer> Berlin </answer>"
    if "QP" in text:
        return MEMORY
    return "<think> I should look this up. </think>\n<search> capital of France </search>"


@pytest.fixture(scope="module")
def checked():
    tok = build_tiny_tokenizer()
    cfg = PrecheckConfig(
        model="scripted",
        num_generations=2,
        rollout=RolloutConfig(max_turns=3, max_new_tokens_per_turn=64),
        prone_prefixes=["QP"],
    )
    engine = RolloutEngine(ScriptedBackend(tok, respond), tok, cfg.rollout, FakeRetriever())
    examples = [
        QAExample("QP one capital?", ["Paris"], "world_1hop", "0", metadata={"chain": ["France"]}),
        QAExample("QN two capital?", ["Paris"], "world_1hop", "1", metadata={"chain": ["France"]}),
        QAExample("QP three capital?", ["Paris"], "world_2hop", "2", metadata={"chain": ["France"]}),
    ]
    return direct_check(engine, tok, examples, "{question}\n", cfg, POOL)


def test_every_wrong_original_gets_one_probe_per_sentence(checked):
    originals = [t for t in checked if t.is_original]
    probes = [t for t in checked if not t.is_original]
    assert len(originals) == 6  # 3 questions x 2 originals
    # the 4 originals of the two QP questions are wrong: 4 x 2 sentences
    assert len(probes) == 8
    assert sorted(p.metadata["probe_prompt_index"] for p in probes) == [0, 0, 0, 0, 1, 1, 1, 1]
    for probe in probes:
        assert INSERTED in probe.components and probe.metadata["question"].startswith("QP")
        expected = "Paris" if probe.metadata["probe_prompt_index"] == 0 else "Berlin"
        assert probe.final_answer == expected


def test_summary_golden_values(checked):
    probes = [t for t in checked if not t.is_original]
    # the filter score favours the sentence that searches: the kept half are the 4 correct probes
    scores = [0.0 if p.metadata["probe_prompt_index"] == 0 else -5.0 for p in probes]
    summary = summarize_precheck(checked, POOL, ["QP"], scores, filter_keep_fraction=0.5)
    # 2 of 3 questions have both originals wrong
    assert summary["dead_end_rate"] == pytest.approx(2 / 3)
    # 2 of 6 originals correct (the QN question's); 0 of 4 on the probed (QP) questions
    assert summary["orig_accuracy"] == pytest.approx(1 / 3)
    assert summary["orig_accuracy_probed"] == 0.0
    # 4 of 8 probes correct; filtered: 4 of the top 4
    assert summary["probe_accuracy"] == pytest.approx(0.5)
    assert summary["probes_filtered"] == 4 and summary["probe_accuracy_filtered"] == 1.0
    assert summary["rescue_rate"] == 1.0  # both dead-end questions have a correct probe
    assert summary["by_sentence"] == {SEARCH_AGAIN: 1.0, STAY: 0.0}
    # look-back: the memory thought kept before the answer block, plus the sentence; the two sentences differ
    tok = build_tiny_tokenizer()
    thought = len(tok.encode("<think> I recall it. </think>\n", add_special_tokens=False))
    lengths = {s: len(tok.encode(s, add_special_tokens=False)) for s in POOL}
    assert {probe_lookback(p) for p in probes} == {thought + n for n in lengths.values()}
    lookback = summary["probe_lookback_tokens"]
    assert (
        lookback["correct"] == thought + lengths[SEARCH_AGAIN]
        and lookback["wrong"] == thought + lengths[STAY]
    )
    assert lookback["mean"] == pytest.approx(thought + (lengths[SEARCH_AGAIN] + lengths[STAY]) / 2)
    prone, other = summary["by_prone"]["prone"], summary["by_prone"]["other"]
    assert (prone["questions"], prone["dead_end_rate"], prone["probes"]) == (2, 1.0, 8)
    assert (other["questions"], other["dead_end_rate"], other["probes"]) == (1, 0.0, 0)
    assert other["probe_accuracy"] is None and other["orig_accuracy"] == 1.0
    assert summary["by_source"]["world_2hop"]["questions"] == 1
    assert summary["checks"]["dead_end_rate"] == {"value": pytest.approx(2 / 3), "min": 0.4, "passed": True}
    assert summary["passed"]
    assert "PASS probe_accuracy 50.0% (min 25.0%)" in format_summary(summary)


def test_a_missed_threshold_fails_the_check(checked):
    summary = summarize_precheck(checked, POOL, thresholds=PrecheckThresholds(probe_accuracy_min=0.6))
    assert not summary["checks"]["probe_accuracy"]["passed"] and not summary["passed"]
    assert "probe_accuracy_filtered" not in summary and "by_prone" not in summary
    assert "FAIL probe_accuracy" in format_summary(summary)
    with pytest.raises(ValueError, match="inserted scores"):
        summarize_precheck(checked, POOL, inserted_scores=[0.0])


def test_config_errors_are_named(tmp_path):
    with pytest.raises(ValueError, match="model"):
        PrecheckConfig().validate()
    with pytest.raises(ValueError, match="greedy"):
        PrecheckConfig(model="m", rollout=RolloutConfig(greedy=True)).validate()
    with pytest.raises(FileNotFoundError, match="warm-up"):
        run(PrecheckConfig(model=str(tmp_path / "missing")))


def test_the_command_end_to_end_with_a_tiny_random_model(tmp_path, small_world):
    """``run`` on the synthetic world with a tiny random Qwen2: the files, and counts that follow the config."""
    import json

    from rexrag.recipes.common import WorldDataConfig
    from rexrag.recipes.train import QAConfig, RetrieverConfig
    from rlcore.generation.testing import build_tiny_qwen2

    tok = build_tiny_tokenizer()
    build_tiny_qwen2(tok, seed=0).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    cfg = PrecheckConfig(
        model=str(tmp_path / "model"),
        qa=QAConfig(world=WorldDataConfig(world=small_world, dir=str(tmp_path / "world")), eval_split="dev"),
        retriever=RetrieverConfig(kind="world-bm25"),
        rollout=RolloutConfig(max_turns=1, max_new_tokens_per_turn=6, max_response_tokens=32),
        pool="self_doubt_5",
        num_generations=3,
        output_dir=str(tmp_path / "out"),
        batch_size=8,
    )
    summary = run(cfg)
    saved = json.loads((tmp_path / "out" / "precheck.json").read_text())
    assert saved["questions"] == 4 and saved["originals"] == 12  # 4 dev questions x 3
    assert (
        saved["probes"]
        == summary["probes"]
        == len((tmp_path / "out" / "probes.jsonl").read_text().splitlines())
    )
    assert set(saved["checks"]) == {"dead_end_rate", "probe_accuracy"}
    assert 0.0 <= saved["dead_end_rate"] <= 1.0 and len(saved["by_sentence"]) == 5
    assert (tmp_path / "out" / "results.json").is_file()
    # PASSED exists exactly when every check passed; require_pass turns a miss into an error
    assert (tmp_path / "out" / "PASSED").is_file() is saved["passed"]
    cfg.thresholds = PrecheckThresholds(dead_end_rate_min=1.1)  # cannot be met
    cfg.require_pass = True
    with pytest.raises(PrecheckFailed, match="dead_end_rate"):
        run(cfg)
    assert not (tmp_path / "out" / "PASSED").exists()
