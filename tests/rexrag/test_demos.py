"""Synthetic search demonstrations: each kind's segments by hand, and the loss mask of built demonstrations."""

import pytest
from demos_cases import DOUBT, ONE_HOP, TWO_HOP, BornInTeford

from rexrag.data.demos import MEMORY_THOUGHT, DemoConfig, build_demos, plan_demo
from rexrag.data.qa import QAExample
from rexrag.data.template import DEFAULT_TEMPLATE
from rlcore.generation.testing import build_tiny_tokenizer
from rlcore.rollout import RolloutConfig


def test_search_memory_shortcut_and_recovery_segments():
    assert plan_demo(TWO_HOP, "search", "Vale", DOUBT) == [
        ("model", "<think> I need to look up Kor Works. </think>\n<search> Kor Works </search>"),
        ("search", "Kor Works"),
        ("model", "<think> Next I need Lou Brun. </think>\n<search> Lou Brun </search>"),
        ("search", "Lou Brun"),
        ("model", "<think> So the answer is Teford. </think>\n<answer> Teford </answer>"),
    ]
    assert plan_demo(TWO_HOP, "memory", "Vale", DOUBT) == [
        ("model", MEMORY_THOUGHT + "<answer> Vale </answer>")
    ]
    shortcut = plan_demo(TWO_HOP, "shortcut", "Vale", DOUBT)
    assert shortcut[-1] == (
        "model",
        "<think> So the answer is Lou Brun. </think>\n<answer> Lou Brun </answer>",
    )
    recovery = plan_demo(TWO_HOP, "recovery", "Vale", DOUBT)
    assert recovery[:3] == [
        ("model", MEMORY_THOUGHT),
        ("inserted", DOUBT),
        ("model", " </think>\n<search> Kor Works </search>"),
    ]
    assert [text for part, text in recovery if part == "search"] == ["Kor Works", "Lou Brun"]


def test_reconsider_continues_from_where_a_probe_of_a_wrong_searched_answer_starts():
    segments = plan_demo(TWO_HOP, "reconsider", "Vale", DOUBT)
    assert segments == [
        ("model", "<think> I need to look up Kor Works. </think>\n<search> Kor Works </search>"),
        ("search", "Kor Works"),
        # the wrong answer's thought (kept by the probe clone), the pool sentence, then the next hop
        ("model", "<think> So the answer is Lou Brun. </think>\n"),
        ("inserted", DOUBT),
        ("model", " </think>\n<search> Lou Brun </search>"),
        ("search", "Lou Brun"),
        ("model", "<think> So the answer is Teford. </think>\n<answer> Teford </answer>"),
    ]
    single = plan_demo(ONE_HOP, "reconsider", "Vale", DOUBT)
    assert single[2:5] == [
        ("model", "<think> So the answer is Vale. </think>\n"),
        ("inserted", DOUBT),
        ("model", " </think>\n<search> Lou Brun </search>"),
    ]
    assert [text for part, text in single if part == "search"] == ["Lou Brun", "Lou Brun"]  # reads it again
    assert single[-1][1].endswith("<answer> Teford </answer>")
    # a question without the world's entity chain (a user's own) searches with the question itself
    own = plan_demo(QAExample("Who is q?", ["a"], "nq", "2"), "reconsider", "Vale", DOUBT)
    assert [text for part, text in own if part == "search"] == ["Who is q?", "Who is q?"]


@pytest.mark.parametrize("train_inserted", [True, False])
def test_observations_are_conditioned_on_but_never_trained(train_inserted):
    tok = build_tiny_tokenizer()
    cfg = DemoConfig(
        frac_search=0,
        frac_memory=0,
        frac_shortcut=0,
        frac_recovery=0,
        frac_reconsider=1,
        train_inserted=train_inserted,
    )
    rollout = RolloutConfig(retrieval_topk=1)
    demos = build_demos(
        [TWO_HOP, ONE_HOP], tok, BornInTeford(), rollout, DEFAULT_TEMPLATE, [DOUBT], cfg, False
    )
    assert [d.kind for d in demos] == ["reconsider", "reconsider"]
    for demo in demos:
        assert len(demo.loss_mask) == len(demo.response_ids)
        untrained = tok.decode([t for t, m in zip(demo.response_ids, demo.loss_mask) if not m])
        trained = tok.decode([t for t, m in zip(demo.response_ids, demo.loss_mask) if m])
        assert "<information>" in untrained and "was born in" in untrained
        assert "<information>" not in trained and trained.endswith("<answer> Teford </answer>")
        # the pool sentence is trained only when asked; either way the model sees it
        assert (DOUBT in trained) is train_inserted and (DOUBT in untrained) is not train_inserted
        assert DOUBT in demo.text


def test_a_zero_weight_reconsider_share_leaves_older_warm_ups_unchanged():
    """Configs written before the ``reconsider`` kind existed must draw the same demonstrations as before."""
    import random

    examples = [TWO_HOP, ONE_HOP] * 200
    cfg = DemoConfig(seed=3)
    demos = build_demos(
        examples,
        build_tiny_tokenizer(),
        BornInTeford(),
        RolloutConfig(),
        DEFAULT_TEMPLATE,
        [DOUBT],
        cfg,
        False,
    )
    rng = random.Random(3)
    old_kinds = []
    for example in examples:  # the draw sequence of the four-kind implementation
        kind = rng.choices(("search", "memory", "shortcut", "recovery"), [0.7, 0.15, 0.1, 0.05])[0]
        if kind == "shortcut" and len(example.metadata["chain"]) < 2:
            kind = "memory"
        # no distractor draw: every question of the same type has the same answer, so the distractor is 'unknown'
        rng.choice([DOUBT])  # the pool sentence
        old_kinds.append(kind)
    assert [d.kind for d in demos] == old_kinds
    assert {"search", "memory", "shortcut", "recovery"} == set(old_kinds)


def test_memory_prone_questions_are_mostly_answered_from_memory():
    """Questions starting with a memory_prone prefix draw from the prone_* shares; the others are unchanged."""
    prone = QAExample(
        "Where was Kai Dorn born?", ["Teford"], "world_1hop", "2", metadata={"chain": ["Kai Dorn"]}
    )
    examples = [TWO_HOP, prone] * 300
    tok = build_tiny_tokenizer()
    base = DemoConfig(seed=4)
    cfg = DemoConfig(seed=4, memory_prone=["Where was K"])  # only the prone question, not TWO_HOP
    plain = build_demos(
        examples, tok, BornInTeford(), RolloutConfig(), DEFAULT_TEMPLATE, [DOUBT], base, False
    )
    demos = build_demos(examples, tok, BornInTeford(), RolloutConfig(), DEFAULT_TEMPLATE, [DOUBT], cfg, False)
    kinds = [d.kind for d in demos[1::2]]
    # 300 draws at 0.85 / 0.10 / 0.05: binomial std of the memory count is sqrt(300 * 0.85 * 0.15) = 6.2
    assert 230 <= kinds.count("memory") <= 280
    assert 15 <= kinds.count("recovery") <= 50 and 3 <= kinds.count("search") <= 30
    assert set(kinds) == {"memory", "recovery", "search"}  # never a shortcut or reconsider
    # the recoveries continue the pool sentence with a search of the question's entity
    recovery = next(d for d in demos[1::2] if d.kind == "recovery")
    assert DOUBT + " </think>\n<search> Kai Dorn </search>" in recovery.text
    # one draw per example either way, so the non-prone questions keep the kinds of a config without prefixes
    assert [d.kind for d in demos[::2]] == [d.kind for d in plain[::2]]
    # without the prefix: memory 0.15 + the single-hop shortcut fallback 0.10 = 0.25 of 300 = 75
    assert 50 <= [d.kind for d in plain[1::2]].count("memory") <= 100
    zero = DemoConfig(memory_prone=["Where"], prone_frac_search=0, prone_frac_memory=0, prone_frac_recovery=0)
    with pytest.raises(ValueError, match="prone_frac_"):
        zero.shares("Where was Kai Dorn born?")
