"""The Search-R1 / REX-RAG turn semantics the paper configs switch on, checked token by token with scripted policies.

- A turn with neither a search nor an answer gets the feedback message and the trajectory goes on, up to the turn
  limit (``end_on_eos=False``); the EOS that ended such a turn is not kept (``drop_eos_before_feedback``), as the
  official loop decodes it away before appending the feedback.
- An observation longer than ``max_obs_tokens`` keeps its first tokens (``obs_truncation=cut``).
- A prompt longer than ``max_start_tokens`` keeps its last tokens (``max_start_length``).
"""

from __future__ import annotations

import pytest
from scripted_turns import scripted

from rlcore.generation.testing import ScriptedBackend, scripted_logprob
from rlcore.rollout import FEEDBACK, MODEL, OBSERVATION, RolloutConfig, RolloutEngine, verify_trajectory
from rlcore.rollout.testing import FakeRetriever

OFFICIAL = dict(end_on_eos=False, drop_eos_before_feedback=True, obs_truncation="cut")


def enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def test_invalid_turn_gets_feedback_without_its_eos_then_continues(tok):
    eos = tok.eos_token_id
    musing, search, answer = "I wonder", "<search> Danube </search>", "<answer> Vienna </answer>"
    backend = ScriptedBackend(tok, scripted({"Q": [enc(tok, musing) + [eos], search, answer]}))
    retriever = FakeRetriever()
    config = RolloutConfig(max_turns=3, max_new_tokens_per_turn=64, **OFFICIAL)
    engine = RolloutEngine(backend, tok, config, retriever)
    prompt = enc(tok, "Q: where does the Danube flow?")
    [traj] = engine.run([prompt], ["g"])

    feedback = enc(tok, config.invalid_action_feedback)
    musing_ids, search_ids, answer_ids = enc(tok, musing), enc(tok, search), enc(tok, answer)
    # top-1 by word overlap is the Danube document; then the first two zero-overlap documents in corpus order
    # ("Danube" overlaps nothing else), so the observation is built from documents 3, 0, 1.
    obs = enc(
        tok,
        "\n\n<information>Doc 1(Title: Danube) The Danube flows through Vienna, Budapest and Belgrade.\n"
        "Doc 2(Title: France) Paris is the capital and largest city of France.\n"
        "Doc 3(Title: Germany) Berlin is the capital of Germany.</information>\n\n",
    )
    assert traj.response_ids == musing_ids + feedback + search_ids + obs + answer_ids
    assert eos not in traj.response_ids
    assert traj.components == (
        [MODEL] * len(musing_ids)
        + [FEEDBACK] * len(feedback)
        + [MODEL] * len(search_ids)
        + [OBSERVATION] * len(obs)
        + [MODEL] * len(answer_ids)
    )
    assert traj.loss_mask() == [c == MODEL for c in traj.components]
    # the log-probs of the kept model tokens are those sampled (the dropped EOS takes its own with it)
    assert traj.sample_logprobs[: len(musing_ids)] == [
        scripted_logprob(i, t) for i, t in enumerate(musing_ids)
    ]
    # the next turn was conditioned on the musing and the feedback, without the EOS
    assert backend.calls[1].prompts == [prompt + musing_ids + feedback]
    assert (traj.num_turns, traj.num_invalid_actions, traj.num_searches) == (3, 1, 1)
    assert (traj.termination, traj.final_answer) == ("answer", "Vienna")
    assert [t.action for t in traj.turns] == ["invalid", "search", "answer"]
    verify_trajectory(traj)


def test_a_policy_that_never_acts_runs_to_the_turn_limit(tok):
    eos = tok.eos_token_id
    nothing = enc(tok, "still nothing")
    backend = ScriptedBackend(tok, scripted({"Q": [nothing + [eos]]}))
    config = RolloutConfig(max_turns=3, **OFFICIAL)
    engine = RolloutEngine(backend, tok, config, FakeRetriever())
    [traj] = engine.run([enc(tok, "Q")], ["g"])
    feedback = enc(tok, config.invalid_action_feedback)
    # 3 search-enabled rounds with feedback, then the search-free final round, which ends the trajectory:
    # no feedback follows it, so its EOS stays.
    assert [len(call.prompts) for call in backend.calls] == [1, 1, 1, 1]
    assert traj.response_ids == (nothing + feedback) * 3 + nothing + [eos]
    assert (traj.num_turns, traj.num_invalid_actions, traj.termination, traj.finished) == (
        4,
        3,
        "max_turns",
        False,
    )
    verify_trajectory(traj)


def test_eos_is_kept_before_feedback_unless_asked(tok):
    eos = tok.eos_token_id
    backend = ScriptedBackend(tok, scripted({"Q": [enc(tok, "hm") + [eos], "<answer> x </answer>"]}))
    config = RolloutConfig(max_turns=2, end_on_eos=False)
    [traj] = RolloutEngine(backend, tok, config, FakeRetriever()).run([enc(tok, "Q")], ["g"])
    assert traj.response_ids[: len(enc(tok, "hm")) + 1] == enc(tok, "hm") + [eos]


def test_turn_cut_by_the_token_limit_keeps_its_last_token(tok):
    # A turn that ran out of new tokens without an action was not ended by EOS: nothing is dropped.
    words = enc(tok, "a b c d e f g h")
    backend = ScriptedBackend(tok, scripted({"Q": [words, "<answer> x </answer>"]}))
    config = RolloutConfig(max_turns=2, max_new_tokens_per_turn=4, **OFFICIAL)
    engine = RolloutEngine(backend, tok, config, FakeRetriever())
    [traj] = engine.run([enc(tok, "Q")], ["g"])
    feedback = enc(tok, config.invalid_action_feedback)
    assert traj.response_ids[: 4 + len(feedback)] == words[:4] + feedback


@pytest.mark.parametrize("mode", ["cut", "keep_wrapper"])
def test_long_observation_is_cut_as_configured(tok, mode):
    def policy(context: str) -> str:  # a cut observation has no closing tag to count turns by
        return (
            "<answer> P </answer>" if "<information>" in context else "<search> capital of France </search>"
        )

    backend = ScriptedBackend(tok, scripted({"Q": [policy]}))
    config = RolloutConfig(max_turns=2, max_obs_tokens=20, obs_truncation=mode)
    [traj] = RolloutEngine(backend, tok, config, FakeRetriever()).run([enc(tok, "Q")], ["g"])
    obs = [t for t, c in zip(traj.response_ids, traj.components) if c == OBSERVATION]
    full = enc(
        tok,
        "\n\n<information>Doc 1(Title: France) Paris is the capital and largest city of France.\n"
        "Doc 2(Title: Germany) Berlin is the capital of Germany.\n"
        "Doc 3(Title: Jane Austen) Jane Austen wrote Pride and Prejudice, published in 1813.</information>\n\n",
    )
    assert len(full) > 20 and len(obs) == 20
    tail = enc(tok, "</information>\n\n")
    if mode == "cut":  # the official cut: the first 20 tokens, closing tag lost
        assert obs == full[:20]
        assert obs[-len(tail) :] != tail
    else:
        assert obs[-len(tail) :] == tail
    assert traj.metadata["obs_truncations"] == 1


def test_prompt_keeps_its_last_max_start_tokens(tok):
    long_prompt = enc(tok, "Q " + "padding words " * 20 + "where is Paris?")
    short_prompt = enc(tok, "Q short?")
    backend = ScriptedBackend(
        tok, scripted({"Paris": ["<answer> France </answer>"], "short": ["<answer> y </answer>"]})
    )
    config = RolloutConfig(max_turns=1, max_start_tokens=12)
    engine = RolloutEngine(backend, tok, config, FakeRetriever())
    assert len(long_prompt) > 12 >= len(short_prompt)
    long_traj, short_traj = engine.run([long_prompt, short_prompt], ["a", "b"])
    assert long_traj.prompt_ids == long_prompt[-12:]
    assert short_traj.prompt_ids == short_prompt
    assert backend.calls[0].prompts == [long_prompt[-12:], short_prompt]
    assert engine.last_stats["truncated_prompts"] == 1.0


def test_max_start_tokens_must_be_non_negative():
    with pytest.raises(ValueError, match="max_start_tokens"):
        RolloutConfig(max_start_tokens=-1)


def test_eos_reported_without_its_id_is_still_dropped(tok):
    # vLLM reports an EOS stop with stop_reason None; the backend's EOS ids (here a second one) identify it.
    from dataclasses import replace as dc_replace

    second_eos = tok.convert_tokens_to_ids("<pad>")
    inner = ScriptedBackend(
        tok,
        scripted({"Q": [enc(tok, "hm") + [second_eos], "<answer> x </answer>"]}),
        eos_token_ids={tok.eos_token_id, second_eos},
    )

    class NoStopIdBackend:
        eos_token_ids = inner.eos_token_ids

        def generate(self, prompts, params):
            return [dc_replace(g, stop_reason=None) for g in inner.generate(prompts, params)]

    config = RolloutConfig(max_turns=2, **OFFICIAL)
    engine = RolloutEngine(NoStopIdBackend(), tok, config, FakeRetriever())
    [traj] = engine.run([enc(tok, "Q")], ["g"])
    feedback = enc(tok, config.invalid_action_feedback)
    assert traj.response_ids == enc(tok, "hm") + feedback + enc(tok, "<answer> x </answer>")
