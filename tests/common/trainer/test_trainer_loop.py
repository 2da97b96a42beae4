"""The whole GRPO loop on a tiny random Qwen2 (Qwen vocabulary) on CPU, single-turn.

Run: .venv/bin/python -m pytest tests/common/trainer/test_trainer_loop.py -q
"""

import math
import os

import pytest
import torch
from trainer_helpers import RECORDS, letter_reward, make_cfg, read_metrics

from rlcore.models import load_causal_lm
from rlcore.trainer import train

# Per-step loss/total and grad norm of `make_cfg(tmp, "train.total_steps=3")` with letter_reward on RECORDS
# (seed 7).
# Obtained by running this test with RECORD_GOLDEN=1 (it prints the values) on torch 2.13.0+cpu,
# transformers 5.17.0, 2 CPU threads; re-record only when a deliberate change to the loop or the model moves
# them, and say why in the commit.
GOLDEN_LOSSES = [0.01068770486745052, -0.008200887590646744, -0.00887152156792581]
GOLDEN_GRAD_NORMS = [
    2.36897212266922,
    0.623454675078392,
    0.6343332575634122,
]  # mean over the 4 optimizer steps


def test_single_turn_runs_changes_every_parameter_and_matches_golden_losses(tmp_path):
    cfg = make_cfg(tmp_path, "train.total_steps=3")
    before = {name: p.detach().clone() for name, p in load_causal_lm("tiny-qwen2").named_parameters()}
    result = train(cfg, records=RECORDS, reward_fn=letter_reward)

    metrics = read_metrics(result.output_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        for key in ("loss/total", "loss/policy", "kl", "entropy", "optim/grad_norm", "reward/mean"):
            assert math.isfinite(m[key]), (key, m[key])
        assert m["optim/skipped_steps"] == 0
        assert m["rollout/num_trajectories"] == 8  # 2 prompts x 4 generations
    after = dict(result.model.named_parameters())
    assert set(after) == set(before)
    unchanged = [name for name, value in before.items() if torch.equal(value, after[name].detach())]
    assert not unchanged, f"parameters that did not change: {unchanged}"
    # once the policy has moved, later mini-batches see ratios != 1 and a positive KL to the reference
    assert metrics[-1]["kl"] > 0 and metrics[-1]["policy/approx_kl"] > 0
    losses = [m["loss/total"] for m in metrics]
    grad_norms = [m["optim/grad_norm"] for m in metrics]
    if os.environ.get("RECORD_GOLDEN"):
        print("GOLDEN_LOSSES =", losses, "\nGOLDEN_GRAD_NORMS =", grad_norms)
    assert losses == pytest.approx(GOLDEN_LOSSES, abs=1e-4)
    assert grad_norms == pytest.approx(GOLDEN_GRAD_NORMS, abs=1e-4)
