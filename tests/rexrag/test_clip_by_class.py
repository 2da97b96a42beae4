"""Clipped probe tokens split by token class (prefix / inserted / continuation): hand-computed counts and ratios
on tiny hand-built batches, and the per-step statistics REX-RAG logs from them."""

import math

import pytest
import torch

from rexrag.correction import (
    ProbeLayout,
    behaviour_logprobs,
    clip_by_token_class,
    importance_diagnostics,
    probe_token_classes,
)
from rexrag.method import RexRag, RexRagConfig, advantage_signs
from rlcore.generation.testing import build_tiny_tokenizer
from rlcore.rollout import OBSERVATION, RolloutConfig, Trajectory, TurnRecord

PAD = 1.0  # weight on padding positions (outside the loss mask, never counted)


def _hand_batch():
    """Three rows, T = 7, ratios w = pi_old / b chosen by hand (old = 0, behaviour = -log w).

    row 0: original, 4 tokens, w = 2 everywhere (never counted in the probe classes)
    row 1: probe, prompt at j = 3 with L = 2; position 1 is a retrieved-text token (outside the loss mask)
           w = [0.5, 9.0 (observation), 1.0 | 0.1, 1.5 | 1.1, 0.7]
    row 2: probe, prompt at j = 1 with L = 2; position 6 is padding
           w = [1.3 | 0.9, 0.75 | 1.0, 1.25, 0.85, pad]
    """
    weights = torch.tensor(
        [
            [2.0, 2.0, 2.0, 2.0, PAD, PAD, PAD],
            [0.5, 9.0, 1.0, 0.1, 1.5, 1.1, 0.7],
            [1.3, 0.9, 0.75, 1.0, 1.25, 0.85, PAD],
        ],
        dtype=torch.float64,
    )
    old = torch.zeros_like(weights)
    behaviour = -weights.log()
    loss_mask = torch.tensor(
        [[1, 1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0]], dtype=torch.bool
    )
    layouts = [
        ProbeLayout(is_probe=False),
        ProbeLayout(True, insert_start=3, pool_logprobs=[0.0, math.log(0.5)]),
        ProbeLayout(True, insert_start=1, pool_logprobs=[0.0, math.log(0.5)]),
    ]
    return old, behaviour, loss_mask, layouts


def test_token_classes_follow_the_layout():
    _, _, _, layouts = _hand_batch()
    classes = probe_token_classes(layouts, 7)
    assert classes.tolist() == [
        [-1] * 7,
        [0, 0, 0, 1, 1, 2, 2],
        [0, 1, 1, 2, 2, 2, 2],
    ]


def test_clip_counts_and_fractions_by_class_golden():
    old, behaviour, loss_mask, layouts = _hand_batch()
    # row 1 has a negative advantage, row 2 a positive one (the original's sign does not matter here)
    signs = torch.tensor([1.0, -1.0, 1.0])
    stats = clip_by_token_class(old, behaviour, loss_mask, layouts, 0.2, 0.2, advantage_sign=signs)
    # trust region [0.8, 1.2]
    # prefix:       row 1 pos 0 (0.5, low), pos 2 (1.0, in); pos 1 is retrieved text; row 2 pos 0 (1.3, high)
    #               -> 3 tokens, 2 clipped (1 low) -> 2/3
    # inserted:     row 1 0.1 (low), 1.5 (high); row 2 0.9 (in), 0.75 (low) -> 4 tokens, 3 clipped (2 low) -> 3/4
    # continuation: row 1 1.1 (in), 0.7 (low); row 2 1.0, 1.25 (high), 0.85; pad excluded
    #               -> 5 tokens, 2 clipped (1 low) -> 2/5
    assert stats["probe_tokens_prefix"] == 3 and stats["clip_count_probe_prefix"] == 2
    assert stats["probe_tokens_inserted"] == 4 and stats["clip_count_probe_inserted"] == 3
    assert stats["probe_tokens_continuation"] == 5 and stats["clip_count_probe_continuation"] == 2
    assert stats["clip_low_count_probe_prefix"] == 1
    assert stats["clip_low_count_probe_inserted"] == 2
    assert stats["clip_low_count_probe_continuation"] == 1
    assert stats["clip_frac_probe_prefix"] == pytest.approx(2 / 3)
    assert stats["clip_frac_probe_inserted"] == pytest.approx(3 / 4)
    assert stats["clip_frac_probe_continuation"] == pytest.approx(2 / 5)
    # no gradient: low with A < 0 (row 1) or high with A > 0 (row 2)
    # prefix: row 1 0.5 (low, A<0) yes; row 2 1.3 (high, A>0) yes -> 2/3
    # inserted: row 1 0.1 (low, A<0) yes, 1.5 (high, A<0) no; row 2 0.75 (low, A>0) no -> 1/4
    # continuation: row 1 0.7 (low, A<0) yes; row 2 1.25 (high, A>0) yes -> 2/5
    assert stats["clip_nograd_frac_probe_prefix"] == pytest.approx(2 / 3)
    assert stats["clip_nograd_frac_probe_inserted"] == pytest.approx(1 / 4)
    assert stats["clip_nograd_frac_probe_continuation"] == pytest.approx(2 / 5)
    # the classes partition the probe tokens of the existing diagnostic: 7 of 12 clipped
    overall = importance_diagnostics(old, behaviour, loss_mask, torch.tensor([False, True, True]))
    assert overall["clip_frac_probe"] == pytest.approx(7 / 12)


def test_no_advantage_no_nograd_key_and_empty_class_has_no_fraction():
    old, behaviour, loss_mask, layouts = _hand_batch()
    loss_mask[1, 3:5] = False  # the inserted prompt as context only (train_inserted=false)
    loss_mask[2, 1:3] = False
    stats = clip_by_token_class(old, behaviour, loss_mask, layouts)
    assert stats["probe_tokens_inserted"] == 0 and stats["clip_count_probe_inserted"] == 0
    assert "clip_frac_probe_inserted" not in stats
    assert not any(key.startswith("clip_nograd") for key in stats)
    with pytest.raises(ValueError, match="same"):
        clip_by_token_class(old, behaviour[:, :5], loss_mask, layouts)


def test_paper_correction_clips_the_inserted_tokens_and_a_rare_failure_prefix():
    """The paper mixture from pi_old, hand-computed: alpha = 0.25, z = 0.1, prompt at j = 2, L = 2."""
    old = torch.tensor(
        [[-1.0, -2.0, -0.5, -3.0, 0.0, 0.0], [-0.5, -1.0, -4.0, -6.0, -0.2, -0.3]], dtype=torch.float64
    )
    valid = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    layouts = [ProbeLayout(False), ProbeLayout(True, insert_start=2, pool_logprobs=[0.0, math.log(1 / 3)])]
    behaviour = behaviour_logprobs(old, valid, layouts, alpha=0.25, error_rate=0.1, variant="paper")
    stats = clip_by_token_class(old, behaviour, valid, layouts)
    # prefix: mu = pi_old * 0.1^(-1/2) = 3.1623 pi_old -> b = pi_old (0.75 + 0.25 * 3.1623) = 1.5406 pi_old
    #         -> w = 0.6491 < 0.8: both prefix tokens clipped (low)
    # inserted: w = e^-4 / (0.75 e^-4 + 0.25) = 0.0183 / 0.2637 = 0.0694 ; e^-6 / (0.75 e^-6 + 0.25 / 3) = 0.0291
    #         -> both clipped (low)
    # continuation: mu = pi_old -> w = 1: never clipped at the start of the update
    assert stats["clip_frac_probe_prefix"] == pytest.approx(1.0)
    assert stats["clip_low_count_probe_prefix"] == 2
    assert stats["clip_frac_probe_inserted"] == pytest.approx(1.0)
    assert stats["clip_frac_probe_continuation"] == 0.0 and stats["probe_tokens_continuation"] == 2
    # with z = 0.5 the prefix weight is 1 / (0.75 + 0.25 * 1.4142) = 0.9062: inside the trust region
    behaviour = behaviour_logprobs(old, valid, layouts, alpha=0.25, error_rate=0.5, variant="paper")
    assert clip_by_token_class(old, behaviour, valid, layouts)["clip_frac_probe_prefix"] == 0.0


def _turn(start: int, num_tokens: int, round_index: int) -> TurnRecord:
    return TurnRecord(
        round_index, start, num_tokens, context_fingerprint=0, sampled_fingerprint=0, search_enabled=True
    )


def test_advantage_signs_follow_the_group_mean_probes_included():
    trajs = []
    for group, reward in (("a", 1.0), ("a", 0.0), ("a", 0.0), ("b", 0.3), ("b", 0.3), ("c", 1.0)):
        traj = Trajectory(prompt_ids=[1], group_id=group)
        traj.metadata["reward"] = reward
        trajs.append(traj)
    # group a: mean 1/3 -> +, -, - ; group b: equal rewards -> 0 (not a rounding sign) ; c alone -> 0
    assert advantage_signs(trajs).tolist() == [1.0, -1.0, -1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("train_inserted", [True, False])
def test_rexrag_logs_clip_by_class_each_step(train_inserted, tmp_path):
    tok = build_tiny_tokenizer()
    cfg = RexRagConfig(keep_ratio_init=1.0, pool="paraphrase_30", train_inserted=train_inserted)
    method = RexRag(cfg, tok, RolloutConfig(), [{"golden_answers": ["x"]}], metrics_path=tmp_path / "m.jsonl")
    inserted_ids = method.sampler.prompt_ids[0]
    original = Trajectory(prompt_ids=[1, 2], group_id="q#0", is_original=True)
    original.append_sampled([11, 12, 13], [-1.0] * 3, _turn(0, 3, 0))
    probe = Trajectory(prompt_ids=[1, 2], group_id="q#0", is_original=False)
    probe.append_sampled([11, 12, 13], [-1.0] * 3, _turn(0, 3, 0))
    probe.append([21, 22], OBSERVATION)
    probe.append(inserted_ids, 5)  # INSERTED
    probe.append_sampled([31, 32], [-1.0] * 2, _turn(len(probe.response_ids), 2, 1))
    original.metadata.update({"reward": 0.0, "record_index": 0, "old_logprobs": [-1.0] * 3})
    probe.metadata.update(
        {"reward": 1.0, "record_index": 0, "old_logprobs": [-1.0] * len(probe.response_ids)}
    )
    method.after_rollout([original, probe], step=1)
    width = len(probe.response_ids)
    old = torch.full((2, width), -1.0)
    method.behaviour_logprobs([original, probe], old, step=1)
    logged = method.history[-1]
    # z = 1 (the only original is wrong): the prefix weight is exactly 1, and so is the continuation's
    assert logged["rexrag/probe_tokens_prefix"] == 3 and logged["rexrag/clip_count_probe_prefix"] == 0
    assert logged["rexrag/probe_tokens_continuation"] == 2
    assert logged["rexrag/clip_count_probe_continuation"] == 0
    length = len(inserted_ids)
    assert logged["rexrag/probe_tokens_inserted"] == (length if train_inserted else 0)
    if train_inserted:
        # the first inserted token has mu = 1: w = e^-1 / (0.5 e^-1 + 0.5) = 0.538 -> clipped low; the probe's
        # advantage is positive, so a low clip keeps its gradient
        assert logged["rexrag/clip_low_count_probe_inserted"] >= 1
        total = sum(logged[f"rexrag/clip_count_probe_{c}"] for c in ("prefix", "inserted", "continuation"))
        assert total / (5 + length) == pytest.approx(logged["rexrag/clip_frac_probe"])
        high = logged["rexrag/clip_count_probe_inserted"] - logged["rexrag/clip_low_count_probe_inserted"]
        assert logged["rexrag/clip_nograd_frac_probe_inserted"] == pytest.approx(high / length)
    else:
        assert "rexrag/clip_frac_probe_inserted" not in logged
    assert '"rexrag/clip_count_probe_prefix"' in (tmp_path / "m.jsonl").read_text()


def test_experiment_summary_reads_the_clip_fractions_by_class(tmp_path):
    """The experiment driver's per-run summary averages each class's clip fraction over the steps that logged it."""
    import json

    from rexrag.experiment import SUMMARY_KEYS, summarize_run

    results = {
        "last_step": 2,
        "train_metrics": [{"step": 1, "accuracy": 0.5}, {"step": 2, "accuracy": 0.25}],
        "rexrag_metrics": [
            {"step": 1, "rexrag/clip_frac_probe_inserted": 0.5, "rexrag/probe_accuracy_kept": 0.0},
            {
                "step": 2,
                "rexrag/clip_frac_probe_inserted": 0.25,
                "rexrag/clip_frac_probe_prefix": 0.1,
                "rexrag/probe_accuracy_kept": 0.5,
            },
        ],
        "eval": {"average_em": 0.3, "by_source": {"world_1hop": {"em": 0.3}}},
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    run = summarize_run(tmp_path)
    # inserted: (0.5 + 0.25) / 2 ; prefix logged once ; continuation never (e.g. a GRPO run): None
    assert run["clip_frac_probe_inserted"] == pytest.approx(0.375)
    assert run["clip_frac_probe_prefix"] == pytest.approx(0.1)
    assert run["clip_frac_probe_continuation"] is None
    assert run["curves"]["probe_accuracy_kept"] == [0.0, 0.5]
    assert {f"clip_frac_probe_{c}" for c in ("prefix", "inserted", "continuation")} <= set(SUMMARY_KEYS)
