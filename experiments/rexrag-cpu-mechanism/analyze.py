"""The pre-registered analysis of rexrag-cpu-mechanism (README.md, "Pre-registration"), from finished run folders.

    python experiments/rexrag-cpu-mechanism/analyze.py --runs runs/rexrag-cpu-mechanism \
        --questions runs/rexrag-cpu-mechanism/world/test.jsonl --out experiments/rexrag-cpu-mechanism

For every seed present in all three arms: test EM (``eval.average_em`` of ``<arm>-seed<k>/results.json``) and EM on
the memory-prone (revision 5: prefixed with the cue) / other test questions (``eval_predictions.jsonl``, in the order of the test questions). Then
H1: d_s = EM_rexrag - EM_grpo, one-sided paired t-test and a 95% percentile bootstrap CI of mean(d), pass iff
mean(d) > 0, p < 0.05 and mean(d) > the pooled seed std; H2: d_s(prone) - d_s(other); H3: EM_rexrag -
EM_rexrag_no_correction. Writes ``analysis.json`` and ``analysis.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from collections.abc import Sequence
from pathlib import Path

# the dead end's questions: revision 5 ties it to the cue "Guess:" (world.cue, demos.memory_prone of sft_stage4.yaml,
# prone_prefixes of precheck.yaml), so "prone" = prefixed and "other" = unprefixed; revisions 1-4 used the question
# types ("Where was", "In which year was", "Who founded")
PRONE_PREFIXES = ("Guess:",)
ARMS = ("grpo", "rexrag", "rexrag_no_correction")
ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def t_abs_cdf(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with an integer ``df`` >= 1 (closed-form series in theta = atan(t / sqrt(df)))."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    t = abs(t)
    if math.isinf(t):
        return 1.0
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2 == 1:
        if df == 1:
            return 2 * theta / math.pi
        term, total = 1.0, 1.0
        for k in range(1, (df - 3) // 2 + 1):  # 1 + (2/3) c^2 + (2*4)/(3*5) c^4 + ...
            term *= (2 * k) / (2 * k + 1) * cos2
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    term, total = 1.0, 1.0
    for k in range(1, (df - 2) // 2 + 1):  # 1 + (1/2) c^2 + (1*3)/(2*4) c^4 + ...
        term *= (2 * k - 1) / (2 * k) * cos2
        total += term
    return math.sin(theta) * total


def paired_test(differences: Sequence[float], seed: int = BOOTSTRAP_SEED) -> dict[str, float | int | None]:
    """Mean of ``differences`` (one per seed), one-sided paired t-test of mean > 0, 95% percentile bootstrap CI."""
    n = len(differences)
    if n < 2:
        raise ValueError(f"a paired test needs at least 2 seeds, got {n}")
    mean = statistics.fmean(differences)
    sd = statistics.stdev(differences)
    if sd == 0:
        t = math.inf if mean > 0 else (-math.inf if mean < 0 else 0.0)
    else:
        t = mean / (sd / math.sqrt(n))
    within = t_abs_cdf(t, n - 1)
    p_greater = (1 - within) / 2 if t >= 0 else (1 + within) / 2
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(differences, k=n)) for _ in range(BOOTSTRAP_RESAMPLES))
    low = means[int(0.025 * BOOTSTRAP_RESAMPLES)]
    high = means[int(0.975 * BOOTSTRAP_RESAMPLES) - 1]
    return {
        "n": n,
        "mean": mean,
        "sd": sd,
        "t": t,
        "p_greater": p_greater,
        "p_less": 1 - p_greater,
        "ci95": [low, high],
    }


def subset_em(predictions: Sequence[dict], questions: Sequence[dict]) -> dict[str, float | None]:
    """EM on the prone and the other questions; ``predictions[i]`` answers ``questions[i]``."""
    from rexrag.evaluation import answer_from_prediction
    from rlcore.rewards.qa import exact_match

    if len(predictions) > len(questions):
        raise ValueError(f"{len(predictions)} predictions for {len(questions)} test questions")
    hits: dict[str, list[float]] = {"prone": [], "other": []}
    for record, question in zip(predictions, questions):
        if record["golden_answers"] != question["golden_answers"]:
            raise ValueError(
                f"prediction for {question['question']!r} carries other gold answers: misaligned"
            )
        part = "prone" if question["question"].startswith(PRONE_PREFIXES) else "other"
        hits[part].append(
            exact_match(answer_from_prediction(record["prediction"]), question["golden_answers"])
        )
    return {part: statistics.fmean(values) if values else None for part, values in hits.items()}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def analyze(runs_dir: Path, questions_path: Path) -> dict:
    """The pre-registered tests over the seeds finished in every arm."""
    questions = _jsonl(questions_path)
    per_arm: dict[str, dict[int, dict]] = {arm: {} for arm in ARMS}
    for arm in ARMS:
        for folder in sorted(runs_dir.glob(f"{arm}-seed*")):
            if not (folder / "results.json").is_file() or not folder.name[len(arm) + 5 :].isdigit():
                continue
            seed = int(folder.name[len(arm) + 5 :])
            data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
            per_arm[arm][seed] = {
                "em": data["eval"]["average_em"],
                **subset_em(_jsonl(folder / "eval_predictions.jsonl"), questions),
            }
    seeds = sorted(set.intersection(*(set(runs) for runs in per_arm.values())))
    if len(seeds) < 2:
        raise ValueError(f"{runs_dir}: fewer than 2 seeds finished in all of {ARMS} (found {seeds})")

    def values(arm: str, key: str) -> list[float]:
        return [per_arm[arm][s][key] for s in seeds]

    grpo, rexrag, uncorrected = (
        values("grpo", "em"),
        values("rexrag", "em"),
        values("rexrag_no_correction", "em"),
    )
    h1 = paired_test([r - g for r, g in zip(rexrag, grpo)])
    pooled_sd = math.sqrt((statistics.stdev(grpo) ** 2 + statistics.stdev(rexrag) ** 2) / 2)
    h1["pooled_seed_sd"] = pooled_sd
    h1["holds"] = h1["mean"] > 0 and h1["p_greater"] < ALPHA and h1["mean"] > pooled_sd
    h1["harm"] = h1["mean"] < 0 and 2 * h1["p_less"] < ALPHA
    prone_gap = [
        (r_p - g_p) - (r_o - g_o)
        for r_p, g_p, r_o, g_o in zip(
            values("rexrag", "prone"),
            values("grpo", "prone"),
            values("rexrag", "other"),
            values("grpo", "other"),
        )
    ]
    h2 = paired_test(prone_gap)
    h3 = paired_test([r - u for r, u in zip(rexrag, uncorrected)])
    return {
        "seeds": seeds,
        "arms": {arm: {str(s): per_arm[arm][s] for s in seeds} for arm in ARMS},
        "H1_rexrag_minus_grpo": h1,
        "H2_prone_gain_minus_other_gain": h2,
        "H3_rexrag_minus_no_correction": h3,
    }


def render(result: dict) -> str:
    h1 = result["H1_rexrag_minus_grpo"]
    lines = [
        f"Seeds: {', '.join(map(str, result['seeds']))}",
        "",
        "| test | mean difference (EM points) | 95% bootstrap CI | one-sided p | verdict |",
        "|---|---|---|---|---|",
    ]
    rows = (
        ("H1: REX-RAG - GRPO", h1, "holds" if h1["holds"] else ("harm" if h1["harm"] else "does not hold")),
        ("H2: prone gain - other gain", result["H2_prone_gain_minus_other_gain"], None),
        ("H3: REX-RAG - no correction", result["H3_rexrag_minus_no_correction"], None),
    )
    for name, test, verdict in rows:
        low, high = test["ci95"]
        verdict = verdict or ("p < 0.05" if test["p_greater"] < ALPHA else "not significant")
        lines.append(
            f"| {name} | {100 * test['mean']:+.1f} | [{100 * low:+.1f}, {100 * high:+.1f}] | "
            f"{test['p_greater']:.3f} | {verdict} |"
        )
    lines.append("")
    lines.append(
        f"H1 also needs the mean above the pooled seed std ({100 * h1['pooled_seed_sd']:.1f} points)."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/rexrag-cpu-mechanism", help="the experiment's runs_dir")
    parser.add_argument(
        "--questions", default="runs/rexrag-cpu-mechanism/world/test.jsonl", help="test questions"
    )
    parser.add_argument(
        "--out", default="experiments/rexrag-cpu-mechanism", help="where analysis.json/.md go"
    )
    args = parser.parse_args(argv)
    result = analyze(Path(args.runs), Path(args.questions))
    out = Path(args.out)
    (out / "analysis.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "analysis.md").write_text(render(result), encoding="utf-8")
    print(render(result), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
