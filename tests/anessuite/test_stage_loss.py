"""``cpt.loss`` / ``sft.loss``: the model's own cross-entropy ("model") trains a CPT or SFT stage to the same losses
and weights as TRL's fused log-prob head ("trl", the default) up to float summation order; at the default the stage
keys of earlier runs hold, and "model" changes them."""

from __future__ import annotations

import json
import random

import pytest

from anessuite.pipeline import stage_cache
from anessuite.pipeline.config import HFStageConfig, PipelineConfig
from anessuite.pipeline.hf_stages import run_hf_stage


def _write_data(kind: str, path) -> None:
    rng = random.Random(3)
    words = "propofol kidney liver bradycardia class option answer drug cleared by the of".split()
    with path.open("w", encoding="utf-8") as out:
        for i in range(24):
            text = " ".join(rng.choices(words, k=rng.choice([6, 30])))
            if kind == "cpt":
                row = {"text": f"Fact {i}: {text}.", "language": "en"}
            else:
                row = {
                    "messages": [
                        {"role": "user", "content": f"Question {i}: {text}?"},
                        {"role": "assistant", "content": f"{text}\nAnswer: {'ABCD'[i % 4]}"},
                    ]
                }
            out.write(json.dumps(row) + "\n")


def _train(tmp_path, kind: str, loss: str):
    import torch
    from safetensors.torch import load_file

    data = tmp_path / f"{kind}.jsonl"
    if not data.exists():
        _write_data(kind, data)
    cfg = HFStageConfig(
        max_length=64, micro_batch_size=4, gradient_accumulation_steps=1, total_steps=4, lr=1e-3,
        save_every=100, log_every=1, loss=loss,
    )  # fmt: skip
    final = run_hf_stage(kind, cfg, "tiny-qwen2", data, tmp_path / f"{kind}-{loss}", seed=0)
    lines = [json.loads(line) for line in (tmp_path / f"{kind}-{loss}" / "metrics.jsonl").open()]
    weights = load_file(str(final / "model.safetensors"))
    return [line["loss"] for line in lines if "loss" in line], {
        k: v.to(torch.float64) for k, v in weights.items()
    }


@pytest.mark.parametrize("kind", ["cpt", "sft"])
def test_model_loss_trains_like_the_fused_head(tmp_path, kind):
    import torch

    fused_losses, fused = _train(tmp_path, kind, "trl")
    model_losses, plain = _train(tmp_path, kind, "model")
    assert len(fused_losses) == len(model_losses) == 4
    assert fused_losses[0] > 1.0  # a real loss, not a zero from an empty batch
    assert model_losses == pytest.approx(fused_losses, rel=1e-4)
    assert fused.keys() == plain.keys()
    for name in fused:
        torch.testing.assert_close(plain[name], fused[name], rtol=1e-3, atol=1e-4, msg=name)
    # the steps did move the weights: the comparison is not between two untrained copies
    start = _start_weights()
    assert any(not torch.allclose(fused[name], start[name], atol=1e-5) for name in fused)


def _start_weights():
    import torch

    from rlcore.models import load_causal_lm

    model = load_causal_lm("tiny-qwen2", dtype=torch.float32)
    return {k: v.detach().to(torch.float64) for k, v in model.state_dict().items()}


def test_loss_at_its_default_keeps_stage_keys_and_model_changes_them():
    cfg = PipelineConfig(name="keys", base_model="tiny-qwen2")
    before = {stage: stage_cache.stage_key(cfg, stage, "m") for stage in ("cpt", "sft")}
    assert "loss" not in stage_cache._section(cfg, "cpt") and "loss" not in stage_cache._section(cfg, "sft")
    cfg.cpt.loss = cfg.sft.loss = "trl"
    assert {stage: stage_cache.stage_key(cfg, stage, "m") for stage in ("cpt", "sft")} == before
    cfg.sft.loss = "model"
    assert stage_cache.stage_key(cfg, "sft", "m") != before["sft"]
    assert stage_cache.stage_key(cfg, "cpt", "m") == before["cpt"]
