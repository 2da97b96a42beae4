"""Mixed sampling on the real rollout engine with a scripted policy: cloning, inserted prompt, masks per token."""

import math

import pytest

from rexrag.sampling import MixedSampler, probe_generated_tokens, probe_stats
from rexrag.trigger import ProbeTrigger
from rlcore.generation.testing import ScriptedBackend, build_tiny_tokenizer
from rlcore.rollout import INSERTED, MODEL, OBSERVATION, RolloutConfig, RolloutEngine
from rlcore.rollout.testing import FakeRetriever

POOL = [
    "<think> Wait, I may have answered too quickly without checking the documents I retrieved.",
    "<think> Perhaps my answer rests on a wrong assumption, so another search could help here.",
]
WRONG = "<think> I recall it. </think>\n<answer> Berlin </answer>"
RIGHT = "<answer> Paris </answer>"
AFTER_PROMPT = " Let me search. </think>\n<search> capital of France </search>"


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def respond_factory(probe_answer=RIGHT):
    def respond(context_ids, text):
        if "QB" in text and "</information>" not in text:
            return RIGHT if "QBright" in text else WRONG
        if "</information>" in text:
            return probe_answer
        if any(prompt in text for prompt in POOL):
            return AFTER_PROMPT
        return WRONG

    return respond


def run(tok, prompts, groups, golds, mode="per_wrong_rollout", probe_answer=RIGHT, max_turns=3):
    config = RolloutConfig(max_turns=max_turns, max_new_tokens_per_turn=64)
    sampler = MixedSampler(tok, POOL, ProbeTrigger(mode, probe_prob=1.0), config, seed=0)
    engine = RolloutEngine(ScriptedBackend(tok, respond_factory(probe_answer)), tok, config, FakeRetriever())
    ids = [tok.encode(p, add_special_tokens=False) for p in prompts]
    metadata = [{"golden_answers": g} for g in golds]
    trajectories = engine.run(ids, groups, metadata, on_answer=sampler.on_answer)
    return sampler, sampler.select_dead_end_probes(trajectories)


def test_probe_is_cloned_before_the_answer_with_the_prompt_inserted(tok):
    sampler, trajs = run(tok, ["QA capital?"], ["g0"], [["Paris"]])
    assert len(trajs) == 2
    original, probe = trajs
    assert original.is_original and original.final_answer == "Berlin" and original.finished
    assert not probe.is_original and probe.group_id == "g0" and probe.final_answer == "Paris"
    assert probe.metadata["parent_id"] == original.trajectory_id

    wrong_ids = tok.encode(WRONG, add_special_tokens=False)
    assert original.response_ids == wrong_ids and set(original.components) == {MODEL}
    layout = sampler.layout(probe)
    cut = layout.insert_start
    # the copied prefix is the original's own sampled tokens up to (not including) the answer block
    assert probe.response_ids[:cut] == wrong_ids[:cut]
    assert probe.components[:cut] == [MODEL] * cut
    prefix_text = tok.decode(wrong_ids[:cut])
    assert (
        "<answer>" not in prefix_text and WRONG.startswith(prefix_text) and prefix_text.startswith("<think>")
    )
    assert "<answer>" in tok.decode(wrong_ids[cut:])
    # then exactly one pool prompt, tokenized on its own, tagged INSERTED, log-prob 0 (not sampled)
    chosen = POOL[probe.metadata["probe_prompt_index"]]
    prompt_ids = tok.encode(chosen, add_special_tokens=False)
    end = cut + len(prompt_ids)
    assert probe.response_ids[cut:end] == prompt_ids
    assert probe.components[cut:end] == [INSERTED] * len(prompt_ids)
    assert probe.sample_logprobs[cut:end] == [0.0] * len(prompt_ids)
    # then the continuation under the policy: a search turn, the observation, the answer
    after = probe.components[end:]
    search_len = len(tok.encode(AFTER_PROMPT, add_special_tokens=False))
    assert after[:search_len] == [MODEL] * search_len
    assert tok.decode(probe.response_ids[end : end + search_len]) == AFTER_PROMPT
    obs = [i for i, c in enumerate(probe.components) if c == OBSERVATION]
    assert obs and obs[0] == end + search_len
    assert tok.decode(probe.response_ids[obs[-1] + 1 :]) == RIGHT
    # the probe's own generation cost: its search turn and its answer (not the copied prefix)
    right_len = len(tok.encode(RIGHT, add_special_tokens=False))
    assert probe_generated_tokens(probe) == search_len + right_len
    assert probe_generated_tokens(original) == len(wrong_ids)
    # loss mask: model + inserted tokens, never the observation
    mask = probe.loss_mask()
    assert all(mask[i] == (c in (MODEL, INSERTED)) for i, c in enumerate(probe.components))
    # trie: two distinct prompts -> the inserted tokens carry log(1/2) in total
    assert layout.insert_length == len(prompt_ids)
    assert sum(layout.pool_logprobs) == pytest.approx(math.log(0.5))
    assert layout.prefix_model_tokens == cut
    assert not sampler.layout(original).is_probe


def test_probes_never_spawn_probes_and_final_round_never_probes(tok):
    # the probe answers wrong again: no clone of the clone
    _, trajs = run(tok, ["QA capital?"], ["g0"], [["Paris"]], probe_answer=WRONG)
    assert len(trajs) == 2 and trajs[1].final_answer == "Berlin"
    # correct originals do not probe
    _, trajs = run(tok, ["QBright capital?"], ["g1"], [["Paris"]])
    assert len(trajs) == 1


def test_forced_final_round_does_not_probe(tok):
    # with max_turns=1 the probe's own answer comes in the forced final round; the original answered in round 0
    sampler, trajs = run(tok, ["QA capital?"], ["g0"], [["Paris"]], max_turns=1)
    probe = trajs[1]
    # round 0: original answers wrong -> probe; round 1 (no search): the probe searches -> ends without answer
    assert probe.final_answer is None and probe.termination == "search_without_tools"
    assert probe_stats(trajs)["probe/accuracy"] == 0.0


def test_dead_end_group_keeps_only_probes_of_all_wrong_groups(tok):
    prompts = ["QA one?", "QA one?", "QB two?", "QBright two?"]
    groups = ["g0", "g0", "g1", "g1"]
    sampler, trajs = run(tok, prompts, groups, [["Paris"]] * 4, mode="dead_end_group")
    probes = [t for t in trajs if not t.is_original]
    # g0: both originals wrong -> both probes kept; g1 has a right original -> its wrong original's probe dropped
    assert [p.group_id for p in probes] == ["g0", "g0"]
    assert sampler.discarded_probe_tokens > 0
    stats = probe_stats(trajs)
    assert stats["probe/dead_end_rate"] == pytest.approx(0.5)  # g0 of {g0, g1}
    assert stats["probe/orig_accuracy"] == pytest.approx(0.25)
