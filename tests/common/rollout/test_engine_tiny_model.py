"""Multi-turn rollouts with a real (tiny, random) Qwen2 through HFBackend: token-exact end to end."""

from __future__ import annotations

import torch

from rlcore.generation import HFBackend
from rlcore.generation.testing import build_tiny_qwen2
from rlcore.rollout import (
    FEEDBACK,
    MODEL,
    RolloutConfig,
    RolloutEngine,
    encode_chat_prompt,
    verify_trajectory,
)
from rlcore.rollout.testing import FakeRetriever


def test_multi_turn_rollout_is_token_exact(tok):
    model = build_tiny_qwen2(tok, seed=0)
    backend = HFBackend(model, tok, batch_size=4)
    config = RolloutConfig(
        max_turns=2,
        max_new_tokens_per_turn=12,
        max_response_tokens=400,
        seed=11,
        end_on_eos=False,
        debug_keep_contexts=True,
    )
    retriever = FakeRetriever()
    engine = RolloutEngine(backend, tok, config, retriever)
    questions = ["who wrote the novel?", "capital of France?", "which river?"]
    prompts = [encode_chat_prompt(tok, [{"role": "user", "content": q}]) for q in questions]
    out = engine.run(prompts * 2, [f"q{i}" for i in range(3)] * 2)

    assert len(out) == 6 and [t.trajectory_id for t in out[:4]] == ["q0#0", "q1#0", "q2#0", "q0#1"]
    for traj in out:
        verify_trajectory(traj)
        # A random policy never closes a tag: every round but the last gets feedback, then max_turns ends it.
        assert traj.num_turns == 3 and traj.termination == "max_turns"
        assert FEEDBACK in traj.components
        # Each turn's stored context is exactly the ids before it, and each turn's ids are the sampled ids.
        for record in traj.turns:
            assert record.context_ids == traj.prompt_ids + traj.response_ids[: record.start]
            assert record.sampled_ids == traj.response_ids[record.start : record.start + record.num_tokens]
        # One forward pass over prompt + response reproduces every sampled token's log-prob (T = 1, no filter):
        # the trainer will score exactly what the sampler saw.
        ids = torch.tensor([traj.prompt_ids + traj.response_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(traj.prompt_ids) - 1 : -1]
        recomputed = (
            torch.log_softmax(logits, -1).gather(-1, ids[0, len(traj.prompt_ids) :, None]).squeeze(-1)
        )
        model_positions = torch.tensor([code == MODEL for code in traj.components])
        assert torch.allclose(
            recomputed[model_positions], torch.tensor(traj.sample_logprobs)[model_positions], atol=1e-4
        )
    assert retriever.calls == []
    assert engine.last_stats["generate_calls"] == 3
