"""Multi-turn training with a fake retriever, the two REX-RAG seams, non-finite step skipping, and LoRA.

Run: .venv/bin/python -m pytest tests/common/trainer/test_trainer_seams.py -q
"""

import math

import pytest
import torch
from trainer_helpers import RECORDS, letter_reward, make_cfg, read_metrics

from rlcore.generation import HFBackend
from rlcore.generation.types import FINISH_STOP, Generation
from rlcore.models import load_causal_lm
from rlcore.retrieval.types import Passage
from rlcore.rollout import MODEL, OBSERVATION
from rlcore.trainer import train

FAST = [
    "objective.ppo_epochs=1",
    "objective.minibatch_size=0",
    "objective.micro_batch_size=4",
    "objective.kl_coef=0",
]


class FakeRetriever:
    """Returns the same passage for every query and counts the batched calls."""

    def __init__(self):
        self.calls = []

    def search(self, queries, topk):
        self.calls.append(list(queries))
        return [
            [Passage(id="7", contents="Paris\nParis is the capital of France.", score=1.0)] for _ in queries
        ]


class SearchFirstBackend:
    """First round: a scripted `<search>` call (a random model never emits one); later rounds: real sampling.

    The first round is recognised by its context: the bare prompt, which ends with the open assistant turn.
    """

    def __init__(self, inner: HFBackend, tokenizer, generation_prompt: list[int]):
        self.inner, self.tokenizer, self.generation_prompt = inner, tokenizer, generation_prompt
        self.search_ids = tokenizer.encode("<search>capital of France</search>", add_special_tokens=False)

    def update_weights(self, model):
        self.inner.update_weights(model)  # from the first update on, sample with the trainer's policy

    def generate(self, prompts, params):
        first = [p[-len(self.generation_prompt) :] == self.generation_prompt for p in prompts]
        sampled = iter(
            self.inner.generate([p for p, f in zip(prompts, first) if not f], params)
            if not all(first)
            else []
        )
        out = []
        for is_first in first:
            if is_first:
                out.append(
                    Generation(
                        token_ids=list(self.search_ids),
                        logprobs=[-1.0] * len(self.search_ids),
                        finish_reason=FINISH_STOP,
                        text="<search>capital of France</search>",
                        stop_reason="</search>",
                    )
                )
            else:
                out.append(next(sampled))
        return out


def test_multi_turn_with_fake_retriever_masks_observations_and_scores_sampled_tokens(tmp_path):
    cfg = make_cfg(
        tmp_path,
        *FAST,
        "train.total_steps=2",
        "rollout.tools_enabled=true",
        "rollout.max_turns=1",
        "rollout.max_new_tokens_per_turn=8",
    )
    from rlcore.models import load_tokenizer

    tokenizer = load_tokenizer("tiny-qwen2")
    generation_prompt = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    # before the first update the trainer's policy equals a fresh load; update_weights hands over its own
    backend = SearchFirstBackend(
        HFBackend(load_causal_lm("tiny-qwen2"), tokenizer), tokenizer, generation_prompt
    )
    retriever = FakeRetriever()
    seen = {}

    def after_rollout(trajectories, step):
        for traj in trajectories:
            components = traj.components
            assert components.count(OBSERVATION) > 0  # the retrieved block is in the response ...
            assert not any(
                traj.loss_mask()[i] for i, c in enumerate(components) if c == OBSERVATION
            )  # ... untrained
            old = traj.metadata["old_logprobs"]
            assert len(old) == len(traj.response_ids)
            # tokens really sampled by the policy (after the observation) score the same under the trainer's
            # forward as under the sampler: the trained ids are exactly the sampled ids, nothing re-tokenized
            first_obs = components.index(OBSERVATION)
            sampled = [i for i, c in enumerate(components) if c == MODEL and i > first_obs]
            assert sampled
            for i in sampled:
                assert abs(old[i] - traj.sample_logprobs[i]) < 1e-3, (i, old[i], traj.sample_logprobs[i])
        seen.setdefault("steps", []).append(step)
        return trajectories

    def behaviour(trajectories, old_logprobs, step):
        # (B, T) aligned with response positions, identical to what after_rollout saw
        assert old_logprobs.shape == (len(trajectories), max(len(t.response_ids) for t in trajectories))
        for row, traj in enumerate(trajectories):
            expected = torch.tensor(traj.metadata["old_logprobs"])
            torch.testing.assert_close(old_logprobs[row, : len(expected)], expected)
        return None

    result = train(
        cfg,
        records=RECORDS,
        reward_fn=letter_reward,
        retriever=retriever,
        backend=backend,
        after_rollout=after_rollout,
        behaviour_logprobs=behaviour,
    )
    assert seen["steps"] == [1, 2]
    assert len(retriever.calls) == 2 and len(retriever.calls[0]) == 8  # one batched search per round
    metrics = read_metrics(result.output_dir)
    for m in metrics:
        assert m["rollout/searches"] == 1.0 and m["rollout/turns"] == 2.0
        assert math.isfinite(m["loss/total"]) and m["optim/skipped_steps"] == 0


def test_after_rollout_filters_and_behaviour_logprobs_enter_the_ratio(tmp_path):
    cfg = make_cfg(tmp_path, *FAST, "train.total_steps=1")

    def drop_last_of_each_group(trajectories, step):
        kept, seen = [], {}
        for traj in trajectories:
            seen[traj.group_id] = seen.get(traj.group_id, 0) + 1
            if seen[traj.group_id] < 4:
                kept.append(traj)
        return kept

    def half_probability_behaviour(trajectories, old_logprobs, step):
        # b = pi_old * 2  ->  ratio = pi_theta / b = 1/2 on the first (and only) pass
        return old_logprobs + math.log(2.0)

    result = train(
        cfg,
        records=RECORDS,
        reward_fn=letter_reward,
        after_rollout=drop_last_of_each_group,
        behaviour_logprobs=half_probability_behaviour,
    )
    (m,) = read_metrics(result.output_dir)
    assert m["rollout/num_trajectories"] == 6  # 2 groups x 3 kept
    assert m["policy/ratio_mean"] == pytest.approx(0.5, abs=1e-4)
    # ratio 0.5 < 1 - eps_low: every negative-advantage token is clipped, no positive one is
    assert m["policy/clip_frac_low"] > 0 and m["policy/clip_frac_high"] == 0


def test_non_finite_gradient_step_is_skipped_and_counted(tmp_path):
    cfg = make_cfg(tmp_path, *FAST, "train.total_steps=1")

    def poisoned(trajectories, old_logprobs, step):
        return torch.full_like(old_logprobs, float("nan"))

    before = {n: p.detach().clone() for n, p in load_causal_lm("tiny-qwen2").named_parameters()}
    result = train(cfg, records=RECORDS, reward_fn=letter_reward, behaviour_logprobs=poisoned)
    (m,) = read_metrics(result.output_dir)
    assert m["optim/skipped_steps"] == 1 and m["optim/skipped_steps_total"] == 1
    for name, param in result.model.named_parameters():
        assert torch.equal(param.detach(), before[name]), f"{name} changed despite the skipped step"


def test_lora_with_gradient_checkpointing_and_adapter_free_reference(tmp_path):
    cfg = make_cfg(
        tmp_path,
        *FAST,
        "objective.kl_coef=0.05",
        "train.total_steps=2",
        "model.lora.enabled=true",
        "model.lora.rank=4",
        "model.gradient_checkpointing=true",
        "optim.lr=0.05",
    )
    base = {n: p.detach().clone() for n, p in load_causal_lm("tiny-qwen2").named_parameters()}
    result = train(cfg, records=RECORDS, reward_fn=letter_reward)
    trainable = {n: p for n, p in result.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # every adapter moved (lora_B starts at zero); every base weight is untouched
    for name, param in result.model.named_parameters():
        base_name = name.replace("base_model.model.", "").replace(".base_layer", "")
        if "lora_" in name:
            assert param.detach().abs().sum() > 0 if "lora_B" in name else True
        else:
            assert torch.equal(param.detach(), base[base_name]), name
    metrics = read_metrics(result.output_dir)
    assert metrics[-1]["kl"] >= 0 and math.isfinite(metrics[-1]["kl"])
    assert metrics[-1]["kl"] > 0  # after one update the adapters make the policy differ from the base model


def test_after_step_sees_the_updated_policy_and_its_metrics_join_the_step_log(tmp_path):
    cfg = make_cfg(tmp_path, *FAST, "train.total_steps=3", "tracking.enabled=true")
    initial = {n: p.detach().clone() for n, p in load_causal_lm("tiny-qwen2").named_parameters()}
    calls = []

    def after_step(policy, step):
        # the policy handed over is the trained one, already updated by this step
        moved = max(float((p.detach() - initial[n]).abs().max()) for n, p in policy.named_parameters())
        calls.append((step, moved))
        if step % 2 == 0:
            return None  # nothing to add on even steps
        return {"heldout/em": 0.1 * step, "method/probes": step}

    result = train(cfg, records=RECORDS, reward_fn=letter_reward, after_step=after_step)
    assert [s for s, _ in calls] == [1, 2, 3]
    assert all(moved > 0 for _, moved in calls)
    metrics = read_metrics(result.output_dir)
    assert [m.get("heldout/em") for m in metrics] == [pytest.approx(0.1), None, pytest.approx(0.3)]
    assert metrics[2]["method/probes"] == 3.0 and "method/probes" not in metrics[1]
    assert all(m["time/after_step"] >= 0 for m in metrics)
    assert result.metrics[0]["heldout/em"] == pytest.approx(0.1)
    # the same values reach MLflow under the step they belong to
    import mlflow

    client = mlflow.tracking.MlflowClient()
    history = client.get_metric_history(result.run_id, "heldout/em")
    assert sorted((h.step, round(h.value, 6)) for h in history) == [(1, 0.1), (3, 0.3)]
