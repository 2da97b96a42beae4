"""A sampler holding its own copy of the weights (as vLLM does) gets the resumed weights before the first
rollout after a resume, and ZeRO-3 parameters are gathered for a rollout only when the sampler reads the
policy module itself."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import torch
from trainer_helpers import RECORDS, letter_reward, make_cfg
from transformers import AutoModelForCausalLM

import rlcore.trainer.optim as optim
from rlcore.generation import HFBackend
from rlcore.models import resolve_model_path
from rlcore.trainer import train


class OwnWeightsBackend:
    """An HF sampler over a private copy of ``model.path``, changed only by ``update_weights``, like vLLM's
    engine; it records the weights each ``generate`` call sampled from."""

    def __init__(self, tokenizer):
        self.model = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny-qwen2"))
        self.sampler = HFBackend(self.model, tokenizer)
        self.weights_at_generate: list[dict[str, torch.Tensor]] = []

    def generate(self, prompts, params):
        self.weights_at_generate.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return self.sampler.generate(prompts, params)

    def update_weights(self, policy) -> None:
        self.model.load_state_dict(policy.state_dict())


def _same(a: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return all(torch.equal(a[name], tensor) for name, tensor in module.state_dict().items())


def test_first_rollout_after_resume_samples_from_the_resumed_weights(tmp_path):
    from rlcore.models import load_tokenizer

    tokenizer = load_tokenizer(resolve_model_path("tiny-qwen2"))
    run = tmp_path / "run"
    first = train(
        make_cfg(run, "train.total_steps=2", "train.stop_after_step=1"),
        records=RECORDS,
        reward_fn=letter_reward,
        backend=OwnWeightsBackend(tokenizer),
    )
    assert first.stopped_early and first.last_step == 1
    resumed_backend = OwnWeightsBackend(tokenizer)  # built from model.path: the base weights
    base = {k: v.clone() for k, v in resumed_backend.model.state_dict().items()}
    assert not _same(base, first.model), "step 1 changed the policy"
    train(
        make_cfg(run, "train.total_steps=2"),
        records=RECORDS,
        reward_fn=letter_reward,
        backend=resumed_backend,
    )
    first_rollout = resumed_backend.weights_at_generate[0]
    assert _same(first_rollout, first.model), (
        "the first rollout after resume must see the checkpoint's weights"
    )


def test_zero3_gather_only_when_the_sampler_reads_the_policy(monkeypatch):
    gathered = []

    @contextlib.contextmanager
    def fake_unwrap(model, accelerator, gather_deepspeed3_params):
        gathered.append(gather_deepspeed3_params)
        yield

    import trl.models.utils

    monkeypatch.setattr(trl.models.utils, "unwrap_model_for_generation", fake_unwrap)
    monkeypatch.setattr(optim, "zero_stage", lambda accelerator: 3)
    with optim.generation_context(SimpleNamespace(), torch.nn.Linear(1, 1), gather=False):
        pass
    assert gathered == []
    with optim.generation_context(SimpleNamespace(), torch.nn.Linear(1, 1)):
        pass
    assert gathered == [True]
