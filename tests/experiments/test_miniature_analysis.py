"""The pre-registered analysis of experiments/anessuite-cpu-miniature (analyze.py): the paired seed x item bootstrap
on hand-computed cases, and the whole judgement on hand-built run folders where each hypothesis's outcome is known."""

from __future__ import annotations

import json
import random

import pytest
from config_harness import REPO, load_script


def _module():
    return load_script("anessuite-cpu-miniature", "analyze.py", "miniature_analyze")


analyze = _module()
LEVELS = ("system1", "system1.x", "system2")


def _scores(accuracy_by_level: dict[str, float], n: int = 40, seed: int = 0):
    """key -> (lang, level, correct) with exactly round(acc * n) correct items per language x level."""
    rng = random.Random(seed)
    out = {}
    for lang in ("en", "zh"):
        for level in LEVELS:
            correct = round(accuracy_by_level[level] * n)
            flags = [1.0] * correct + [0.0] * (n - correct)
            rng.shuffle(flags)
            for i, flag in enumerate(flags):
                out[f"{lang}-{level}-{i}"] = (lang, level, flag)
    return out


def test_paired_bootstrap_estimate_and_interval():
    keep = lambda lang, level: lang == "en" and level == "system1"  # noqa: E731
    a = [_scores({"system1": 0.8, "system1.x": 0.5, "system2": 0.5}, seed=s) for s in range(3)]
    b = [_scores({"system1": 0.3, "system1.x": 0.5, "system2": 0.5}, seed=s + 10) for s in range(3)]
    result = analyze.paired_bootstrap(a, b, keep, iters=500)
    assert result["estimate"] == pytest.approx(0.5)
    assert 0.3 < result["ci95"][0] < 0.5 < result["ci95"][1] < 0.7
    same = analyze.paired_bootstrap(a, a, keep, iters=200)
    assert same["estimate"] == 0.0 and same["ci95"] == [0.0, 0.0]
    chance = analyze.paired_bootstrap(b, 0.25, keep, iters=500)
    assert chance["estimate"] == pytest.approx(0.05) and chance["ci95"][0] < 0 < chance["ci95"][1]
    with pytest.raises(ValueError, match="no items"):
        analyze.paired_bootstrap(a, b, lambda lang, level: False, iters=10)


def _write_row(runs, prefix, label, acc, seed):
    folder = runs / f"{prefix}-seed{seed}" / "eval" / f"{label}-generate"
    folder.mkdir(parents=True)
    rows = [
        {"key": k, "language": lang, "level": level, "correct": bool(flag)}
        for k, (lang, level, flag) in _scores(acc, seed=seed).items()
    ]
    (folder / "scored.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_probe(path, margin, true_wins):
    per = []
    for lang in ("en", "zh"):
        for phrasing in ("corpus", "heldout"):
            for i in range(20):
                per.append(
                    {"id": f"{lang}-{phrasing}-{i}", "language": lang, "phrasing": phrasing,
                     "margin": margin + (i % 5) * 0.1, "rank": 1 if i < true_wins else 3}
                )  # fmt: skip
    path.mkdir(parents=True)
    (path / "probe.json").write_text(json.dumps({"per_statement": per}))


def test_judge_on_hand_built_runs(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    flat = {level: 0.25 for level in LEVELS}
    stages = {
        ("pipeline", "base"): {level: 0.0 for level in LEVELS},
        ("pipeline", "base+CPT"): {level: 0.0 for level in LEVELS},
        ("pipeline", "base+CPT+SFT"): {"system1": 0.7, "system1.x": 0.5, "system2": 0.3},
        ("pipeline", "base+CPT+SFT+GRPO"): {
            "system1": 0.7,
            "system1.x": 0.5,
            "system2": 0.3,
        },  # GRPO: no gain
        ("no-cpt", "base+SFT"): flat,
        ("no-cpt", "base+SFT+GRPO"): flat,
    }
    for seed in (0, 1, 2):
        for (prefix, label), acc in stages.items():
            _write_row(runs, prefix, label, acc, seed)
        _write_probe(results / f"probe-cpt-seed{seed}", margin=2.0, true_wins=15)
    _write_probe(results / "probe-base", margin=0.0, true_wins=4)
    verdicts = analyze.judge(runs, results, iters=300)
    held = {name: v["held"] for name, v in verdicts.items()}
    for lang in ("en", "zh"):
        assert held[f"H1 probe margin +CPT > base ({lang}, corpus wording)"]
        assert held[f"H2 +SFT on System 1 = chance ({lang})"]
        assert held[f"H3 +CPT+SFT > +SFT on System 1 ({lang})"]
        assert held[f"H4 +CPT+SFT > +CPT on Total ({lang})"]
    assert held["H1 probe accuracy after CPT >= 0.6 (en, corpus wording)"]  # 15/20
    assert not held["H5 +CPT+SFT+GRPO > +CPT+SFT on System 2"]  # identical rows: the interval is [0, 0]
    assert not held["H5 +CPT+SFT+GRPO > +CPT+SFT on Avg."]
    assert json.loads((results / "hypotheses.json").read_text()).keys() == verdicts.keys()


def test_missing_row_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pipeline-seed0/eval/base-generate/scored.jsonl: missing"):
        analyze.judge(tmp_path, tmp_path, iters=10)


def _precheck():
    return load_script("anessuite-cpu-miniature", "precheck.py", "miniature_precheck")


def test_precheck_estimate_from_budgets():
    precheck = _precheck()
    pipeline = {
        "cpt": {"total_steps": 10, "micro_batch_size": 2, "max_length": 60},  # 1,200 tokens
        "sft": {
            "total_steps": 10,
            "micro_batch_size": 2,
            "max_length": 120,
        },  # half of 2,400 tokens counted
        "grpo": {
            "total_steps": 1,
            "objective": {"num_generations": 2, "prompts_per_step": 3},
            "rollout": {"max_new_tokens_per_turn": 72},
        },
    }
    est = precheck.estimate_minutes(tokens_per_s=20.0, items_per_s=6.0, pipeline=pipeline)
    assert est["cpt_min"] == pytest.approx(1.0) and est["sft_min"] == pytest.approx(1.0)
    assert est["grpo_min"] == pytest.approx((6 / 6 + 6 * 200 / 20) / 60)
    assert est["eval_600_items_min"] == pytest.approx(100 / 60)
    cpt, sft, grpo, ev = 60, 60, 61, 100
    expected = 3 * (cpt + sft + grpo + 4 * ev) + 3 * (sft + grpo + 3 * ev) + 4 * (sft + ev)
    assert est["total_min"] == pytest.approx(expected / 60)


def test_precheck_measures_a_tiny_candidate(tmp_path):
    from anessuite.synthetic.miniature import MiniatureConfig, generate_miniature_data
    from anessuite.synthetic.scratch import ScratchModelConfig, write_scratch_model

    world = tmp_path / "world"
    generate_miniature_data(world, MiniatureConfig(cpt_docs_en=200, cpt_docs_zh=100, rlvr_per_language=40))
    small = ScratchModelConfig(vocab_size=400, hidden_size=32, num_layers=1, intermediate_size=64)
    model = write_scratch_model(world, tmp_path / "base", small)
    budgets = REPO / "experiments" / "anessuite-cpu-miniature" / "pipeline.yaml"
    # the budgets as resolved (pipeline.yaml leaves some to its base file), with a short response cap
    (tmp_path / "pipeline.yaml").write_text(f"base: {budgets}\neval:\n  max_new_tokens: 8\n")
    args = ["--world", str(world), "--candidates", str(model), "--out", str(tmp_path / "out"), "--steps", "2"]
    args += ["--warmup", "1", "--eval-items", "4", "--pipeline", str(tmp_path / "pipeline.yaml")]
    assert _precheck().main(args) == 0
    report = json.loads((tmp_path / "out" / "precheck.json").read_text())
    figures = report["candidates"][str(model)]
    assert figures["cpt_tokens_per_s"] > 0 and figures["eval_items_per_s"] > 0
    assert figures["estimate"]["total_min"] > 0 and report["machine"]["cpus"] >= 1
