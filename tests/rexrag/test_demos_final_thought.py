"""demos.final_thought: the thought before every answer block; the default keeps every earlier warm-up's demos."""

import pytest
from demos_cases import DOUBT, ONE_HOP, TWO_HOP, BornInTeford

from rexrag.data.demos import FINAL_THOUGHT, DemoConfig, build_demos, fixed_texts, plan_demo
from rexrag.data.template import DEFAULT_TEMPLATE
from rexrag.recipes.sft import SFTConfig
from rlcore.config import config_hash, identity_dict
from rlcore.generation.testing import build_tiny_tokenizer
from rlcore.rollout import RolloutConfig

HOP = "Next I need {answer}."


def test_every_answer_block_follows_the_configured_thought():
    # gold answers (search, recovery, reconsider) and wrong ones (shortcut, reconsider's first answer) alike
    search = plan_demo(TWO_HOP, "search", "Vale", DOUBT, HOP)
    assert search[-1] == ("model", "<think> Next I need Teford. </think>\n<answer> Teford </answer>")
    shortcut = plan_demo(TWO_HOP, "shortcut", "Vale", DOUBT, HOP)
    assert shortcut[-1] == ("model", "<think> Next I need Lou Brun. </think>\n<answer> Lou Brun </answer>")
    recovery = plan_demo(TWO_HOP, "recovery", "Vale", DOUBT, HOP)
    assert recovery[-1] == search[-1]
    reconsider = plan_demo(ONE_HOP, "reconsider", "Vale", DOUBT, HOP)
    assert reconsider[2] == ("model", "<think> Next I need Vale. </think>\n") and reconsider[-1] == search[-1]
    # the memory answer has no final thought, with either setting
    assert plan_demo(TWO_HOP, "memory", "Vale", DOUBT, HOP) == plan_demo(TWO_HOP, "memory", "Vale", DOUBT)
    # the default is the thought every earlier warm-up was trained with
    assert plan_demo(TWO_HOP, "search", "Vale", DOUBT)[-1][1].startswith(
        "<think> So the answer is Teford. </think>"
    )
    assert FINAL_THOUGHT.format(answer="Teford") == "So the answer is Teford."


def test_built_demonstrations_train_the_thought_and_keep_the_draws():
    mix = dict(
        frac_search=0.5, frac_memory=0.2, frac_shortcut=0.1, frac_recovery=0.1, frac_reconsider=0.1, seed=7
    )
    tok = build_tiny_tokenizer()
    examples = [TWO_HOP, ONE_HOP] * 40

    def build(cfg):
        return build_demos(
            examples, tok, BornInTeford(), RolloutConfig(), DEFAULT_TEMPLATE, [DOUBT], cfg, False
        )

    plain, hop = build(DemoConfig(**mix)), build(DemoConfig(**mix, final_thought=HOP))
    assert [d.kind for d in hop] == [d.kind for d in plain]  # the thought draws nothing
    assert {"search", "memory", "shortcut", "recovery", "reconsider"} == {d.kind for d in plain}
    for before, after in zip(plain, hop, strict=True):
        assert after.text == before.text.replace("So the answer is", "Next I need")
        if after.kind != "memory":
            trained = tok.decode([t for t, m in zip(after.response_ids, after.loss_mask, strict=True) if m])
            assert "Next I need Teford. </think>" in trained or "Next I need Lou Brun." in trained


def test_the_setting_is_reserved_from_fresh_names_and_left_out_of_old_identities():
    assert "So the answer is X." in " ".join(fixed_texts(DEFAULT_TEMPLATE, [DOUBT]))
    assert "Found X here." in " ".join(fixed_texts(DEFAULT_TEMPLATE, [DOUBT], "Found {answer} here."))
    off, on = DemoConfig(seed=3), DemoConfig(seed=3, final_thought=HOP)
    assert "final_thought" not in identity_dict(off)  # warm-ups stored before the setting keep their hash
    assert identity_dict(on)["final_thought"] == HOP and config_hash(on) != config_hash(off)


def test_a_thought_without_the_answer_is_refused():
    cfg = SFTConfig(demos=DemoConfig(final_thought="So the answer is."))
    with pytest.raises(ValueError, match=r"demos.final_thought must contain \{answer\}"):
        cfg.validate()
