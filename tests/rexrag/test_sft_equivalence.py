"""The warm-up's numbers do not move when its training engine changes.

``fixtures/sft_warmup_reference.json`` holds the per-step loss, gradient norm and learning rate, and a summary of
the final weights, of a 20-step warm-up recorded with the hand-written loop that trained every earlier REX-RAG
warm-up (its commit is in the file's ``recorded_with``). The same configuration, trained now through
``python -m rexrag sft``'s ``run``, must give the same losses (1e-5 relative) and final weights: same demonstration
order (batches of 5 over 16 demonstrations, so batches straddle epochs), same AdamW groups, warm-up + cosine
schedule, gradient clipping, per-token loss normalisation over model-written tokens only, and the same init.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rexrag.data.template import DEFAULT_TEMPLATE
from rexrag.data.world import WorldConfig
from rexrag.recipes.common import TinyModelConfig, WorldDataConfig
from rexrag.recipes.sft import SFTConfig, SFTEvalConfig, SFTLoopConfig, SFTOptimConfig, run
from rlcore.rollout import RolloutConfig
from rlcore.tracking_store import MLflowConfig

FIXTURE = Path(__file__).parent / "fixtures" / "sft_warmup_reference.json"
# the world of the small_world fixture, written out so the recording never depends on another file
WORLD = {
    "seed": 5,
    "num_countries": 3,
    "num_cities": 8,
    "num_orgs": 10,
    "num_people": 30,
    "num_surnames": 20,
    "num_train_questions": 16,
    "num_dev_questions": 4,
    "num_test_questions": 6,
}
SAMPLED = 16  # evenly spaced elements of each weight tensor kept in the fixture


def reference_config(folder: Path) -> SFTConfig:
    return SFTConfig(
        data=WorldDataConfig(
            world=WorldConfig(**WORLD), dir=str(folder / "world"), template=DEFAULT_TEMPLATE
        ),
        model=TinyModelConfig(vocab_size=400, hidden_size=32, num_layers=1, intermediate_size=64),
        use_chat_template=False,
        rollout=RolloutConfig(max_turns=3, max_new_tokens_per_turn=24, max_response_tokens=256),
        optim=SFTOptimConfig(lr=3e-3, warmup_steps=5, weight_decay=0.01, max_grad_norm=1.0),
        train=SFTLoopConfig(total_steps=20, batch_size=5, seed=3, output_dir=str(folder / "sft")),
        eval=SFTEvalConfig(num_questions=0),
        tracking=MLflowConfig(experiment="rexrag-sft-equivalence"),
        num_threads=1,
    )


def weight_summary(weights: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Per tensor: sum, L2 norm and ``SAMPLED`` evenly spaced elements (enough to tell two trainings apart)."""
    out = {}
    for name in sorted(weights):
        flat = weights[name].double().flatten()
        picks = torch.linspace(0, flat.numel() - 1, min(SAMPLED, flat.numel())).round().long()
        out[name] = {
            "sum": float(flat.sum()),
            "norm": float(flat.norm()),
            "sampled": [float(v) for v in flat[picks]],
        }
    return out


def train_reference(folder: Path) -> dict:
    cfg = reference_config(folder)
    results = run(cfg)
    out = Path(cfg.train.output_dir)
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        "steps": [{k: r[k] for k in ("step", "loss", "grad_norm", "lr")} for r in steps],
        "weights": weight_summary(load_file(out / "model" / "model.safetensors")),
        "demos": results["demos"],
    }


@pytest.mark.slow
def test_warm_up_reproduces_the_recorded_losses_and_weights(tmp_path):
    expected = json.loads(FIXTURE.read_text())
    got = train_reference(tmp_path)
    # search chains carry retrieved passages, which are masked from the loss: the masking is exercised
    assert got["demos"]["search"] > 0
    assert [r["step"] for r in got["steps"]] == [r["step"] for r in expected["steps"]] == list(range(1, 21))
    for mine, recorded in zip(got["steps"], expected["steps"], strict=True):
        step = recorded["step"]
        assert mine["loss"] == pytest.approx(recorded["loss"], rel=1e-5), f"loss at step {step}"
        assert mine["grad_norm"] == pytest.approx(recorded["grad_norm"], rel=1e-4), (
            f"grad norm at step {step}"
        )
        assert mine["lr"] == pytest.approx(recorded["lr"], rel=1e-9), f"lr at step {step}"
    # clipping was active (the first steps' norms exceed max_grad_norm=1.0), so a wrong clip would show
    assert max(r["grad_norm"] for r in expected["steps"]) > 1.0
    # the schedule: linear warm-up over 5 steps, then cosine to 10% of the peak at step 20
    assert expected["steps"][0]["lr"] == pytest.approx(3e-3 * 2 / 5)
    assert expected["steps"][-1]["lr"] == pytest.approx(3e-4)
    assert got["weights"].keys() == expected["weights"].keys()
    for name, recorded in expected["weights"].items():
        mine = got["weights"][name]
        scale = max(recorded["norm"], 1e-6)
        assert abs(mine["norm"] - recorded["norm"]) <= 1e-4 * scale, name
        assert abs(mine["sum"] - recorded["sum"]) <= 1e-4 * scale * math.sqrt(len(recorded["sampled"])), name
        assert mine["sampled"] == pytest.approx(recorded["sampled"], rel=1e-3, abs=1e-5), name
