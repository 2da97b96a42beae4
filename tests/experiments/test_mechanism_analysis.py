"""The pre-registered analysis of experiments/rexrag-cpu-mechanism (analyze.py): the t distribution, the paired test
and the whole analysis on hand-built run folders, against hand-computed values."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from config_harness import REPO, load_script


def _module():
    return load_script("rexrag-cpu-mechanism", "analyze.py", "mechanism_analyze")


analyze = _module()


@pytest.mark.parametrize(
    ("t", "df", "expected"),
    [
        (1.0, 1, 0.5),  # Cauchy: theta = pi/4 -> 2 theta / pi
        (2.0, 2, 2 / math.sqrt(6)),  # df 2: t / sqrt(2 + t^2)
        (math.sqrt(3), 3, 2 / math.pi * (math.pi / 4 + 0.5)),  # theta = pi/4: 2/pi (theta + sin cos) = 0.8183
        (2.132, 4, 0.9000),  # the one-sided 5% critical value of t with 4 df
        (2.015, 5, 0.9000),  # ... and with 5 df
    ],
)
def test_t_distribution_golden(t, df, expected):
    assert analyze.t_abs_cdf(t, df) == pytest.approx(expected, abs=2e-4)
    assert analyze.t_abs_cdf(-t, df) == analyze.t_abs_cdf(t, df)


def test_paired_test_golden():
    result = analyze.paired_test([0.02, 0.04, 0.06, 0.03, 0.05])
    # mean 0.04; sd sqrt((4 + 0 + 4 + 1 + 1) e-4 / 4) = 0.0158114; t = 0.04 / (0.0158114 / sqrt 5) = 5.6569
    assert result["mean"] == pytest.approx(0.04) and result["sd"] == pytest.approx(0.0158114, abs=1e-6)
    assert result["t"] == pytest.approx(5.6569, abs=1e-4)
    # theta = atan(5.6569 / 2) = 1.2310, sin 0.9428, cos^2 0.1111: P(|T| < t) = 0.9428 (1 + 0.0556) = 0.99521
    assert result["p_greater"] == pytest.approx((1 - 0.99521) / 2, abs=2e-5)
    low, high = result["ci95"]
    assert 0.02 <= low < 0.04 < high <= 0.06
    assert analyze.paired_test([0.02, 0.04, 0.06, 0.03, 0.05]) == result  # seeded bootstrap
    with pytest.raises(ValueError, match="2 seeds"):
        analyze.paired_test([0.1])


QUESTIONS = [
    {
        "question": "Guess: Where was Lou Brun born?",
        "golden_answers": ["Teford"],
    },  # prone (prefixed, revision 5)
    {"question": "Guess: Who founded Kor Works?", "golden_answers": ["Lou Brun"]},  # prone
    {"question": "Which country is Teford in?", "golden_answers": ["Valia"]},  # other (unprefixed)
    {
        "question": "Where was Kai Dorn born?",
        "golden_answers": ["Teford"],
    },  # a revision 1-4 prone type, unprefixed
]
# per arm and seed: which of the four questions are answered right, and the recorded test EM
CORRECT = {
    "grpo": {0: [0, 0, 1, 0], 1: [0, 0, 1, 0], 2: [0, 0, 1, 0]},
    "rexrag": {0: [1, 0, 1, 0], 1: [1, 1, 1, 0], 2: [1, 0, 1, 0]},
    "rexrag_no_correction": {0: [0, 0, 0, 0], 1: [0, 0, 0, 0], 2: [0, 0, 0, 0]},
}


def _runs(root: Path) -> tuple[Path, Path]:
    questions = root / "test.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    for arm, seeds in CORRECT.items():
        for seed, flags in seeds.items():
            folder = root / "runs" / f"{arm}-seed{seed}"
            folder.mkdir(parents=True)
            records = [
                {
                    "golden_answers": q["golden_answers"],
                    "prediction": f"<answer> {q['golden_answers'][0] if ok else 'Nowhere'} </answer>",
                }
                for q, ok in zip(QUESTIONS, flags)
            ]
            (folder / "eval_predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            (folder / "results.json").write_text(json.dumps({"eval": {"average_em": sum(flags) / 4}}))
    (root / "runs" / "grpo-seed3").mkdir()  # unfinished: no results.json, ignored
    return root / "runs", questions


def test_analysis_of_hand_built_runs(tmp_path):
    runs, questions = _runs(tmp_path)
    result = analyze.analyze(runs, questions)
    assert result["seeds"] == [0, 1, 2]
    assert result["arms"]["rexrag"]["1"] == {"em": 0.75, "prone": 1.0, "other": 0.5}
    h1 = result["H1_rexrag_minus_grpo"]
    # d = 0.25, 0.5, 0.25: mean 1/3, sd sqrt((2 / 144 + 4 / 144) / 2) = 0.144338, t = (1/3) / (0.144338 / sqrt 3) = 4
    assert h1["mean"] == pytest.approx(1 / 3) and h1["t"] == pytest.approx(4.0)
    # df 2: P(|T| < 4) = 4 / sqrt(18) = 0.942809 -> p = 0.028595
    assert h1["p_greater"] == pytest.approx((1 - 4 / math.sqrt(18)) / 2)
    # pooled seed sd: grpo 0, rexrag 0.144338 -> sqrt(0.0208333 / 2) = 0.102062 < 1/3: H1 holds
    assert h1["pooled_seed_sd"] == pytest.approx(0.102062, abs=1e-6) and h1["holds"] and not h1["harm"]
    # H2: prone gains 0.5, 1, 0.5 minus other gains 0, 0, 0 ; H3: 0.5, 0.75, 0.5 minus 0
    assert result["H2_prone_gain_minus_other_gain"]["mean"] == pytest.approx(2 / 3)
    assert result["H3_rexrag_minus_no_correction"]["mean"] == pytest.approx(7 / 12)
    table = analyze.render(result)
    assert "| H1: REX-RAG - GRPO | +33.3 |" in table and "| holds |" in table
    assert analyze.main(["--runs", str(runs), "--questions", str(questions), "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "analysis.json").read_text())["seeds"] == [0, 1, 2]


def test_misaligned_predictions_and_too_few_seeds_are_errors(tmp_path):
    runs, questions = _runs(tmp_path)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("".join(json.dumps(q) + "\n" for q in reversed(QUESTIONS)))
    with pytest.raises(ValueError, match="misaligned"):
        analyze.analyze(runs, shuffled)
    for seed in (1, 2):
        (runs / f"rexrag-seed{seed}" / "results.json").unlink()
    with pytest.raises(ValueError, match="fewer than 2 seeds"):
        analyze.analyze(runs, questions)


def test_lookback_counts_the_tokens_a_memory_probe_looks_back_over(tmp_path):
    """lookback.py on a small world: thought + sentence and the question tail, in the tokenizer the warm-up trains."""
    path = REPO / "experiments" / "rexrag-cpu-mechanism" / "lookback.py"
    spec = importlib.util.spec_from_file_location("mechanism_lookback", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from rexrag.data.world import WorldConfig
    from rexrag.recipes.common import WorldDataConfig
    from rexrag.recipes.evaluate import EvalConfig
    from rexrag.recipes.sft import SFTConfig
    from rexrag.recipes.train import QAConfig

    small = WorldConfig(
        seed=5,
        num_cities=8,
        num_orgs=10,
        num_people=30,
        num_surnames=20,
        num_train_questions=16,
        num_dev_questions=4,
        num_test_questions=6,
    )
    sft = SFTConfig(data=WorldDataConfig(world=small), pool="search_first_5")
    sft.model.vocab_size = 600
    sft.train.extra_worlds = 1
    result = module.lookback(
        sft, EvalConfig(qa=QAConfig(world=WorldDataConfig(world=small))), num_questions=4
    )
    # every sentence has 15-17 words after "<think>", the thought 5 more: at least one token per word
    assert 20 <= result["thought_and_sentence_min"] <= result["thought_and_sentence"]
    assert result["thought_and_sentence"] <= result["thought_and_sentence_max"]
    # the subject is followed by at most " born?\n" (or "?\n", " in?\n", ...): a few tokens
    assert 1 <= result["question_tail"] <= 8
    assert result["lookback"] == pytest.approx(result["thought_and_sentence"] + result["question_tail"])
