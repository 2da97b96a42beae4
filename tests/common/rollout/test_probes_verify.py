"""Clones cut before the answer block (REX-RAG probes), and the token-exactness check catching tampering."""

from __future__ import annotations

import pytest
from scripted_turns import scripted

from rlcore.generation.testing import ScriptedBackend
from rlcore.rollout import (
    INSERTED,
    MODEL,
    OBSERVATION,
    RolloutConfig,
    RolloutEngine,
    TrajectoryMismatchError,
    clone_before_answer,
    make_probe_hook,
    token_index_at_char,
    verify_trajectory,
)
from rlcore.rollout.testing import FakeRetriever

PROBE = "<think> Maybe I missed a clue, let me search again."


def enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def test_probe_clone_is_cut_at_the_answer_token_and_continues(tok):
    # The answering turn is built from two separately encoded pieces, so the answer block starts exactly at
    # token len(think_ids): the clone keeps the think tokens and nothing of "<answer> Berlin </answer>".
    think_ids, answer_ids = enc(tok, "<think> sure </think>\n"), enc(tok, "<answer> Berlin </answer>")
    search_ids = enc(tok, "<search> capital of France </search>")
    script = {
        "Q": [
            search_ids,
            think_ids + answer_ids,
            lambda text: "<answer> Paris </answer>" if "Maybe I missed" in text else "unused",
        ]
    }
    backend = ScriptedBackend(tok, scripted(script))
    engine = RolloutEngine(backend, tok, RolloutConfig(max_turns=3), FakeRetriever())
    probe_ids = enc(tok, PROBE)
    hook = make_probe_hook(tok, lambda traj, round_index: probe_ids, engine.config)
    out = engine.run([enc(tok, "Q: capital?")], ["g"], on_answer=hook)

    original, clone = out
    assert (original.is_original, original.final_answer, original.termination) == (True, "Berlin", "answer")
    observation_len = original.components.count(OBSERVATION)
    before_answer = len(search_ids) + observation_len
    assert (
        original.response_ids
        == search_ids + original.response_ids[len(search_ids) : before_answer] + think_ids + answer_ids
    )
    # Clone = everything before the answer turn + the think tokens + PROBE (INSERTED) + the clone's own turn.
    paris = enc(tok, "<answer> Paris </answer>")
    assert clone.response_ids == original.response_ids[:before_answer] + think_ids + probe_ids + paris
    assert clone.components == (
        original.components[:before_answer]
        + [MODEL] * len(think_ids)
        + [INSERTED] * len(probe_ids)
        + [MODEL] * len(paris)
    )
    assert clone.loss_mask()[before_answer + len(think_ids) :][: len(probe_ids)] == [True] * len(probe_ids)
    assert clone.sample_logprobs[before_answer + len(think_ids) :][: len(probe_ids)] == [0.0] * len(probe_ids)
    assert (
        clone.sample_logprobs[: before_answer + len(think_ids)]
        == original.sample_logprobs[: before_answer + len(think_ids)]
    )
    assert (clone.is_original, clone.group_id, clone.final_answer, clone.termination) == (
        False,
        "g",
        "Paris",
        "answer",
    )
    assert (clone.trajectory_id, clone.metadata["parent_id"]) == ("g#0/clone0", "g#0")
    assert [t.action for t in clone.turns] == ["search", "cut", "answer"]
    # Round 2 generated only for the clone, conditioned on exactly its ids.
    assert backend.calls[2].prompts == [clone.prompt_ids + clone.response_ids[: -len(paris)]]
    verify_trajectory(clone)


def test_probes_only_in_search_rounds_and_only_from_originals(tok):
    answer = "<think> ok </think>\n<answer> wrong </answer>"
    calls = []

    def choose(traj, round_index):
        calls.append((traj.trajectory_id, round_index))
        return enc(tok, PROBE)

    # max_turns=1: round 0 allows search (probe), round 1 is the search-free final turn (no probe there).
    backend = ScriptedBackend(tok, scripted({"Q": [answer]}))
    engine = RolloutEngine(backend, tok, RolloutConfig(max_turns=1), FakeRetriever())
    out = engine.run([enc(tok, "Q")], ["g"], on_answer=make_probe_hook(tok, choose))
    assert calls == [("g#0", 0)]
    assert len(out) == 2 and out[1].turns[-1].search_enabled is False
    assert out[1].final_answer == "wrong"  # answered in the final round: no probe of the probe

    # With more rounds the clone answers in a search round, but originals_only stops a second generation.
    calls.clear()
    engine = RolloutEngine(
        ScriptedBackend(tok, scripted({"Q": [answer]})), tok, RolloutConfig(max_turns=3), FakeRetriever()
    )
    out = engine.run([enc(tok, "Q")], ["g"], on_answer=make_probe_hook(tok, choose))
    assert calls == [("g#0", 0)] and len(out) == 2


def test_clone_before_answer_rejects_trajectories_that_did_not_answer(tok):
    backend = ScriptedBackend(tok, scripted({"Q": ["<search> France </search>", "<answer> a </answer>"]}))
    engine = RolloutEngine(
        backend, tok, RolloutConfig(max_turns=1, final_turn_without_search=False), FakeRetriever()
    )
    [traj] = engine.run([enc(tok, "Q")], ["g"])
    with pytest.raises(ValueError, match="did not just answer"):
        clone_before_answer(traj, tok, [1, 2])


def test_on_answer_must_return_active_clones(tok):
    backend = ScriptedBackend(tok, scripted({"Q": ["<answer> a </answer>"]}))
    engine = RolloutEngine(backend, tok, RolloutConfig(), FakeRetriever())
    with pytest.raises(ValueError, match="answering trajectory itself"):
        engine.run([enc(tok, "Q")], ["g"], on_answer=lambda traj, r: [traj])
    with pytest.raises(ValueError, match="finished trajectory"):
        engine.run([enc(tok, "Q")], ["g"], on_answer=lambda traj, r: [traj.clone()])
    with pytest.raises(TypeError, match="list of Trajectory"):
        engine.run([enc(tok, "Q")], ["g"], on_answer=lambda traj, r: ["nope"])


def test_token_index_at_char(tok):
    ids = enc(tok, "<think> sure </think>\n") + enc(tok, "<answer> B </answer>")
    text = tok.decode(ids)
    index = token_index_at_char(tok, ids, text.index("<answer>"))
    assert index == len(enc(tok, "<think> sure </think>\n"))
    assert token_index_at_char(tok, ids, 0) == 0
    assert token_index_at_char(tok, ids, len(text)) == len(ids)


@pytest.fixture
def finished_traj(tok):
    backend = ScriptedBackend(tok, scripted({"Q": ["<search> France </search>", "<answer> Paris </answer>"]}))
    engine = RolloutEngine(backend, tok, RolloutConfig(debug_keep_contexts=True), FakeRetriever())
    [traj] = engine.run([enc(tok, "Q")], ["g"])
    verify_trajectory(traj)
    return traj


def test_verify_catches_a_retokenized_turn(tok):
    # The policy spelled its search one character per token; the naive pipeline would store
    # encode(decode(turn)) instead, which has fewer ids. verify_trajectory must reject that trajectory.
    text = "<search> France </search>"
    char_ids = [
        tok.convert_tokens_to_ids(tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(ch)[0][0])
        for ch in text
    ]
    backend = ScriptedBackend(tok, scripted({"Q": [char_ids, "<answer> Paris </answer>"]}))
    [traj] = RolloutEngine(backend, tok, RolloutConfig(), FakeRetriever()).run([enc(tok, "Q")], ["g"])
    verify_trajectory(traj)
    retokenized = enc(tok, tok.decode(char_ids))
    assert len(retokenized) < len(char_ids)
    shift = len(char_ids) - len(retokenized)
    traj.response_ids[: len(char_ids)] = retokenized
    del traj.components[:shift], traj.sample_logprobs[:shift]
    with pytest.raises(TrajectoryMismatchError):
        verify_trajectory(traj)


def test_verify_catches_a_changed_observation(finished_traj):
    traj = finished_traj.clone()
    position = traj.components.index(OBSERVATION) + 3
    traj.response_ids[position] += 1
    with pytest.raises(TrajectoryMismatchError, match="context differs from what the policy saw"):
        verify_trajectory(traj)


def test_verify_catches_unsampled_model_tokens_and_bad_logprobs(finished_traj):
    traj = finished_traj.clone()
    traj.components[traj.components.index(OBSERVATION)] = MODEL
    with pytest.raises(TrajectoryMismatchError, match="no generation call produced it"):
        verify_trajectory(traj)
    traj = finished_traj.clone()
    traj.sample_logprobs[traj.components.index(OBSERVATION)] = -0.5
    with pytest.raises(TrajectoryMismatchError, match="non-model token"):
        verify_trajectory(traj)
    traj = finished_traj.clone()
    traj.append([5, 6], INSERTED)
    verify_trajectory(traj)  # appended inserted text is legitimate
    traj.sample_logprobs.pop()
    with pytest.raises(TrajectoryMismatchError, match="lengths"):
        verify_trajectory(traj)


def test_append_validates(finished_traj):
    traj = finished_traj.clone()
    with pytest.raises(ValueError, match="component must be one of"):
        traj.append([1], 0)
    with pytest.raises(ValueError, match="1 ids but 2 logprobs"):
        traj.append([1], INSERTED, [0.0, 0.0])
    with pytest.raises(ValueError, match="0.0 on non-model tokens"):
        traj.append([1], INSERTED, [-0.7])
