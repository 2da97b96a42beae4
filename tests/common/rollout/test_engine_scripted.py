"""A scripted policy drives the rollout state machine; turns, stops, masks and log-probs are checked token by token."""

from __future__ import annotations

import pytest
from scripted_turns import scripted

from rlcore.generation.testing import ScriptedBackend, scripted_logprob
from rlcore.rollout import (
    FEEDBACK,
    MODEL,
    OBSERVATION,
    RolloutConfig,
    RolloutEngine,
    rollout_metrics,
    verify_trajectory,
)
from rlcore.rollout.testing import FakeRetriever


def enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def turn_logprobs(ids: list[int]) -> list[float]:
    return [scripted_logprob(position, token) for position, token in enumerate(ids)]


# FakeRetriever on "capital of France", top-3 by word overlap: France doc (capital, of, france = 3),
# Germany doc (capital, of = 2), then the first zero-overlap doc in corpus order (Jane Austen).
FRANCE_OBSERVATION = (
    "\n\n<information>Doc 1(Title: France) Paris is the capital and largest city of France.\n"
    "Doc 2(Title: Germany) Berlin is the capital of Germany.\n"
    "Doc 3(Title: Jane Austen) Jane Austen wrote Pride and Prejudice, published in 1813.</information>\n\n"
)


def test_search_then_answer_token_by_token(tok):
    # The text after </search> must never reach the trajectory: generation stops at the token completing it.
    # " trailing" starts a new pre-token, so the kept ids are exactly the encoding of the text up to </search>.
    turn0_kept = "<think> need </think>\n<search> capital of France </search>"
    turn1 = "<answer> Paris </answer>"
    backend = ScriptedBackend(tok, scripted({"Q1": [turn0_kept + " trailing junk", turn1]}))
    retriever = FakeRetriever()
    engine = RolloutEngine(backend, tok, RolloutConfig(max_turns=3, max_new_tokens_per_turn=64), retriever)
    prompt = enc(tok, "Q1: what is the capital of France?")
    [traj] = engine.run([prompt], ["q1"])

    ids0, obs, ids1 = enc(tok, turn0_kept), enc(tok, FRANCE_OBSERVATION), enc(tok, turn1)
    assert traj.prompt_ids == prompt
    assert traj.response_ids == ids0 + obs + ids1
    assert traj.components == [MODEL] * len(ids0) + [OBSERVATION] * len(obs) + [MODEL] * len(ids1)
    assert traj.loss_mask() == [True] * len(ids0) + [False] * len(obs) + [True] * len(ids1)
    assert traj.sample_logprobs == turn_logprobs(ids0) + [0.0] * len(obs) + turn_logprobs(ids1)
    assert (traj.num_turns, traj.num_searches, traj.num_invalid_actions) == (2, 1, 0)
    assert (traj.finished, traj.termination, traj.final_answer) == (True, "answer", "Paris")
    assert [t.action for t in traj.turns] == ["search", "answer"]
    # The second call was conditioned on exactly prompt + turn-0 ids + observation ids.
    assert backend.calls[1].prompts == [prompt + ids0 + obs]
    assert backend.calls[0].params.stop == ["</search>", "</answer>"]
    assert retriever.calls == [(["capital of France"], 3)]
    assert traj.metadata["queries"] == ["capital of France"]
    verify_trajectory(traj)


def test_one_batched_generate_and_retrieve_call_per_round(tok):
    script = {
        "QA": ["<answer> a </answer>"],  # answers at once
        "QB": ["<search> capital of France </search>", "<search> Danube </search>", "<answer> b </answer>"],
        "QC": ["no tags here", "<search> Everest </search>", "<answer> c </answer>"],
        "QD": ["still nothing"],  # never acts: feedback every turn, then runs out of turns
    }
    backend = ScriptedBackend(tok, scripted(script))
    retriever = FakeRetriever()
    engine = RolloutEngine(backend, tok, RolloutConfig(max_turns=3, max_new_tokens_per_turn=32), retriever)
    out = engine.run([enc(tok, f"{key}?") for key in script], ["a", "b", "c", "d"])

    # Round 0: all 4; round 1: B, C, D (A answered); round 2: B, C, D; round 3 (search-free final): D only.
    assert [len(call.prompts) for call in backend.calls] == [4, 3, 3, 1]
    # One retrieval call per round that had searches, holding every query of the round.
    assert retriever.calls == [(["capital of France"], 3), (["Danube", "Everest"], 3)]
    a, b, c, d = out
    assert [t.termination for t in out] == ["answer", "answer", "answer", "max_turns"]
    assert [t.num_turns for t in out] == [1, 3, 3, 4]
    assert [t.num_searches for t in out] == [0, 2, 1, 0]
    assert [t.num_invalid_actions for t in out] == [0, 0, 1, 3]
    assert [t.final_answer for t in out] == ["a", "b", "c", None]
    assert [t.trajectory_id for t in out] == ["a#0", "b#0", "c#0", "d#0"]
    # D: (3 sampled + feedback) x 3 rounds, then 3 sampled tokens in the final round without feedback.
    nothing, feedback = enc(tok, "still nothing"), enc(tok, engine.config.invalid_action_feedback)
    assert d.response_ids == (nothing + feedback) * 3 + nothing
    assert d.components == ([MODEL] * len(nothing) + [FEEDBACK] * len(feedback)) * 3 + [MODEL] * len(nothing)
    assert engine.last_stats["generate_calls"] == 4 and engine.last_stats["retrieval_calls"] == 2

    metrics = rollout_metrics(out)
    assert metrics["rollout/num_turns"] == pytest.approx((1 + 3 + 3 + 4) / 4)  # 2.75
    assert metrics["rollout/num_searches"] == pytest.approx((0 + 2 + 1 + 0) / 4)  # 0.75
    assert metrics["rollout/finished"] == pytest.approx(3 / 4)
    assert metrics["rollout/termination/max_turns"] == pytest.approx(1 / 4)


def test_search_in_final_turn_ends_without_answer(tok):
    backend = ScriptedBackend(tok, scripted({"Q": ["<search> France </search>"]}))
    retriever = FakeRetriever()
    engine = RolloutEngine(backend, tok, RolloutConfig(max_turns=2), retriever)
    [traj] = engine.run([enc(tok, "Q")], ["g"])
    # Two search rounds get observations; the third (final, search disabled) search ends the trajectory.
    assert len(retriever.calls) == 2
    assert (traj.num_turns, traj.num_searches, traj.termination, traj.finished) == (
        3,
        2,
        "search_without_tools",
        False,
    )
    assert [t.search_enabled for t in traj.turns] == [True, True, False]
    assert traj.components[-1] == MODEL  # nothing appended after the final turn


def test_without_final_turn_the_last_search_is_not_retrieved(tok):
    backend = ScriptedBackend(tok, scripted({"Q": ["<search> France </search>"]}))
    retriever = FakeRetriever()
    config = RolloutConfig(max_turns=2, final_turn_without_search=False)
    [traj] = RolloutEngine(backend, tok, config, retriever).run([enc(tok, "Q")], ["g"])
    assert len(retriever.calls) == 1  # round 0 only: nobody would read round 1's results
    assert (traj.num_turns, traj.num_searches, traj.termination) == (2, 1, "max_turns")


def test_eos_without_action_ends_or_continues(tok):
    eos = tok.eos_token_id
    text_ids = enc(tok, "I give up")
    backend = ScriptedBackend(
        tok, scripted({"Q": [text_ids + [eos] + enc(tok, " ignored"), "<answer> x </answer>"]})
    )
    [traj] = RolloutEngine(backend, tok, RolloutConfig(max_turns=3), FakeRetriever()).run(
        [enc(tok, "Q")], ["g"]
    )
    # EOS is sampled, so it stays in the response (as MODEL); what follows it was never sampled.
    assert traj.response_ids == text_ids + [eos]
    assert (traj.termination, traj.finished, traj.final_answer) == ("eos", True, None)

    backend = ScriptedBackend(tok, scripted({"Q": [text_ids + [eos], "<answer> x </answer>"]}))
    engine = RolloutEngine(backend, tok, RolloutConfig(max_turns=3, end_on_eos=False), FakeRetriever())
    [traj] = engine.run([enc(tok, "Q")], ["g"])
    feedback = enc(tok, engine.config.invalid_action_feedback)
    assert traj.response_ids == text_ids + [eos] + feedback + enc(tok, "<answer> x </answer>")
    assert (traj.termination, traj.num_invalid_actions) == ("answer", 1)


def test_empty_query_is_invalid(tok):
    backend = ScriptedBackend(tok, scripted({"Q": ["<search>  </search>", "<answer> y </answer>"]}))
    retriever = FakeRetriever()
    [traj] = RolloutEngine(backend, tok, RolloutConfig(), retriever).run([enc(tok, "Q")], ["g"])
    assert retriever.calls == []
    assert (traj.num_invalid_actions, traj.num_searches, traj.final_answer) == (1, 0, "y")


def test_non_canonical_sampled_ids_are_kept_verbatim(tok):
    # The policy spells "<search> France </search>" one character per token: decoding and re-encoding would
    # merge them into fewer ids. The trajectory must hold the sampled ids, not the re-encoding.
    text = "<search> France </search>"
    char_ids = [
        tok.convert_tokens_to_ids(tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(ch)[0][0])
        for ch in text
    ]
    assert tok.decode(char_ids) == text and enc(tok, text) != char_ids
    backend = ScriptedBackend(tok, scripted({"Q": [char_ids, "<answer> z </answer>"]}))
    [traj] = RolloutEngine(backend, tok, RolloutConfig(), FakeRetriever()).run([enc(tok, "Q")], ["g"])
    assert traj.response_ids[: len(char_ids)] == char_ids
    assert traj.components[len(char_ids)] == OBSERVATION
    verify_trajectory(traj)


def test_response_token_cap(tok):
    long_turn = "<think> " + "very " * 40 + "</think>"
    backend = ScriptedBackend(tok, scripted({"Q": [long_turn]}))
    config = RolloutConfig(max_new_tokens_per_turn=200, max_response_tokens=20)
    engine = RolloutEngine(backend, tok, config, FakeRetriever())
    [traj] = engine.run([enc(tok, "Q")], ["g"])
    # The call asks for at most the 20 remaining tokens; no room is left for feedback, so the cap ends it.
    assert backend.calls[0].params.max_new_tokens == 20
    assert traj.response_ids == enc(tok, long_turn)[:20]
    assert (len(traj), traj.termination, traj.finished) == (20, "max_response_tokens", False)

    # An observation that overflows the cap is cut to the room left.
    backend = ScriptedBackend(tok, scripted({"Q": ["<search> France </search>"]}))
    config = RolloutConfig(max_response_tokens=30)
    [traj] = RolloutEngine(backend, tok, config, FakeRetriever()).run([enc(tok, "Q")], ["g"])
    turn = enc(tok, "<search> France </search>")
    assert (
        len(traj) == 30 and traj.response_ids[len(turn) :] == enc(tok, FRANCE_OBSERVATION)[: 30 - len(turn)]
    )
    assert traj.termination == "max_response_tokens"


def test_single_turn_without_tools(tok):
    answer = "<think> B fits </think> <answer> B </answer>"
    script = {"M1": [answer + " more text"], "M2": ["<search> x </search> The answer is C"]}
    backend = ScriptedBackend(tok, scripted(script))
    config = RolloutConfig(max_turns=1, tools_enabled=False, max_new_tokens_per_turn=64)
    out = RolloutEngine(backend, tok, config).run([enc(tok, "M1"), enc(tok, "M2")], ["m1", "m2"])
    assert backend.calls[0].params.stop == ["</answer>"]  # no search stop with tools off
    assert out[0].response_ids == enc(tok, answer)
    assert (out[0].final_answer, out[0].termination, out[0].num_turns) == ("B", "answer", 1)
    # A search block is just text here: no retrieval, the generation runs to its end.
    assert out[1].response_ids == enc(tok, "<search> x </search> The answer is C")
    assert (out[1].final_answer, out[1].termination, out[1].num_searches) == (None, "length", 0)
    assert all(code == MODEL for traj in out for code in traj.components)


def test_config_and_input_errors(tok):
    with pytest.raises(ValueError, match="max_turns must be 1"):
        RolloutConfig(tools_enabled=False, max_turns=5)
    with pytest.raises(ValueError, match="needs a retriever"):
        RolloutEngine(ScriptedBackend(tok, lambda ids, text: ""), tok, RolloutConfig())
    with pytest.raises(ValueError, match="observation_template"):
        RolloutConfig(observation_template="no placeholder")
    with pytest.raises(ValueError, match="search_tag"):
        RolloutConfig(search_tag="</s>")
    engine = RolloutEngine(ScriptedBackend(tok, lambda ids, text: ""), tok, RolloutConfig(), FakeRetriever())
    with pytest.raises(ValueError, match="2 prompts but 1 group ids"):
        engine.run([[1], [2]], ["a"])
    with pytest.raises(ValueError, match=r"prompt_ids\[1\] is empty"):
        engine.run([[1], []], ["a", "b"])


def test_seeds_differ_per_round_and_run(tok):
    engine = RolloutEngine(
        ScriptedBackend(tok, lambda ids, text: ""), tok, RolloutConfig(seed=7), FakeRetriever()
    )
    first = [engine.sampling_params(r, 10).seed for r in range(3)]
    engine.run_index += 1
    second = [engine.sampling_params(r, 10).seed for r in range(3)]
    assert len(set(first + second)) == 6
    unseeded = RolloutEngine(
        ScriptedBackend(tok, lambda ids, text: ""), tok, RolloutConfig(), FakeRetriever()
    )
    assert unseeded.sampling_params(0, 10).seed is None


def test_custom_tags_and_templates(tok):
    config = RolloutConfig(
        search_tag="query",
        answer_tag="final",
        information_tag="docs",
        passage_template="[{index}] {title}: {text}\n",
        observation_template="<{tag}>{passages}</{tag}>",
    )
    backend = ScriptedBackend(tok, scripted({"Q": ["<query> Germany </query>", "<final> Berlin </final>"]}))
    [traj] = RolloutEngine(backend, tok, config, FakeRetriever()).run([enc(tok, "Q")], ["g"])
    assert backend.calls[0].params.stop == ["</query>", "</final>"]
    observation = tok.decode([t for t, c in zip(traj.response_ids, traj.components) if c == OBSERVATION])
    # Top-1..3 for "Germany": Germany doc (overlap 1), then France and Jane Austen (overlap 0, corpus order).
    assert observation == (
        "<docs>[1] Germany: Berlin is the capital of Germany.\n[2] France: Paris is the capital and "
        "largest city of France.\n[3] Jane Austen: Jane Austen wrote Pride and Prejudice, "
        "published in 1813.</docs>"
    )
    assert traj.final_answer == "Berlin"
