"""Judge the miniature's pre-registered hypotheses (README.md, H1-H5) from the per-item scores of every seed.

Reads ``<runs>/pipeline-seed<k>/eval/<label>-generate/scored.jsonl`` (Table 3 rows), ``<runs>/no-cpt-seed<k>/...``
(Table 4 rows) and the probe reports ``<results>/probe-base/probe.json`` and ``<results>/probe-cpt-seed<k>/probe.json``;
writes ``<results>/hypotheses.json``. "A > B" holds when the 95% interval of mean(A - B) from a paired bootstrap
(resample seeds, then items within each seed; the same items for A and B) lies above 0.

    python experiments/anessuite-cpu-miniature/analyze.py --runs runs/anessuite-miniature \
        --results experiments/anessuite-cpu-miniature/results
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SEEDS = (0, 1, 2)
CHANCE = 0.25
LANGS = ("en", "zh")
# row label -> (run folder prefix, pipeline label)
ROWS = {
    "base": ("pipeline", "base"),
    "+CPT": ("pipeline", "base+CPT"),
    "+CPT+SFT": ("pipeline", "base+CPT+SFT"),
    "+CPT+SFT+GRPO": ("pipeline", "base+CPT+SFT+GRPO"),
    "+SFT": ("no-cpt", "base+SFT"),
    "+SFT+GRPO": ("no-cpt", "base+SFT+GRPO"),
}

Scores = dict[str, tuple[str, str, float]]  # key -> (language, level, value)


def load_scored(path: Path) -> Scores:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (has this row been evaluated?)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["key"]: (r["language"], r["level"], float(r["correct"])) for r in rows}


def load_row(runs: Path, row: str, seeds: Sequence[int] = SEEDS) -> list[Scores]:
    prefix, label = ROWS[row]
    return [
        load_scored(runs / f"{prefix}-seed{k}" / "eval" / f"{label}-generate" / "scored.jsonl") for k in seeds
    ]


def load_probe(path: Path) -> Scores:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (run `python -m anessuite probe`)")
    report = json.loads(path.read_text(encoding="utf-8"))
    return {r["id"]: (r["language"], r["phrasing"], float(r["margin"])) for r in report["per_statement"]}


def paired_bootstrap(
    a: Sequence[Scores],
    b: Sequence[Scores] | float,
    keep: Callable[[str, str], bool],
    iters: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """mean over seeds of mean(a - b) on the kept items, with a seeds-then-items percentile bootstrap.
    ``b`` may be a constant (e.g. chance). Seed lists are paired by position; items by key."""
    per_seed = []
    for index, scores in enumerate(a):
        other = b if isinstance(b, float) else b[index]
        keys = sorted(k for k, (lang, level, _) in scores.items() if keep(lang, level))
        if not keys:
            raise ValueError("no items pass the filter")
        diffs = [scores[k][2] - (other if isinstance(other, float) else other[k][2]) for k in keys]
        per_seed.append(diffs)
    estimate = sum(sum(d) / len(d) for d in per_seed) / len(per_seed)
    rng = random.Random(seed)
    stats = []
    for _ in range(iters):
        chosen = [per_seed[rng.randrange(len(per_seed))] for _ in per_seed]
        means = []
        for diffs in chosen:
            sample = [diffs[rng.randrange(len(diffs))] for _ in diffs]
            means.append(sum(sample) / len(sample))
        stats.append(sum(means) / len(means))
    stats.sort()
    low, high = stats[int(0.025 * iters)], stats[min(iters - 1, int(0.975 * iters))]
    return {"estimate": estimate, "ci95": [low, high], "seeds": len(per_seed)}


def _greater(result: dict[str, Any]) -> dict[str, Any]:
    return {**result, "held": result["ci95"][0] > 0}


def _contains_zero(result: dict[str, Any]) -> dict[str, Any]:
    return {**result, "held": result["ci95"][0] <= 0 <= result["ci95"][1]}


def judge(runs: Path, results: Path, seeds: Sequence[int] = SEEDS, iters: int = 2000) -> dict[str, Any]:
    rows = {row: load_row(runs, row, seeds) for row in ROWS}
    base_probe = load_probe(results / "probe-base" / "probe.json")
    cpt_probe = [load_probe(results / f"probe-cpt-seed{k}" / "probe.json") for k in seeds]
    out: dict[str, Any] = {}
    for lang in LANGS:

        def level(name: str, lang: str = lang) -> Callable[[str, str], bool]:
            return lambda item_lang, item_level: item_lang == lang and item_level == name

        def total(item_lang: str, _level: str, lang: str = lang) -> bool:
            return item_lang == lang

        def corpus(item_lang: str, phrasing: str, lang: str = lang) -> bool:
            return item_lang == lang and phrasing == "corpus"

        def unseen(item_lang: str, phrasing: str, lang: str = lang) -> bool:
            return item_lang == lang and phrasing == "heldout"

        out[f"H1 probe margin +CPT > base ({lang}, corpus wording)"] = _greater(
            paired_bootstrap(cpt_probe, [base_probe] * len(cpt_probe), corpus, iters)
        )
        out[f"H1 probe margin +CPT > base ({lang}, unseen wording)"] = _greater(
            paired_bootstrap(cpt_probe, [base_probe] * len(cpt_probe), unseen, iters)
        )
        out[f"H2 +SFT on System 1 = chance ({lang})"] = _contains_zero(
            paired_bootstrap(rows["+SFT"], CHANCE, level("system1"), iters)
        )
        out[f"H3 +CPT+SFT > +SFT on System 1 ({lang})"] = _greater(
            paired_bootstrap(rows["+CPT+SFT"], rows["+SFT"], level("system1"), iters)
        )
        out[f"H4 +CPT+SFT > +CPT on Total ({lang})"] = _greater(
            paired_bootstrap(rows["+CPT+SFT"], rows["+CPT"], total, iters)
        )
        out[f"H4 +SFT > base on Total ({lang})"] = _greater(
            paired_bootstrap(rows["+SFT"], rows["base"], total, iters)
        )
    for lang in LANGS:
        ranks = [_probe_ranks(results / f"probe-cpt-seed{k}" / "probe.json", lang) for k in seeds]
        accuracies = [sum(r == 1 for r in seed_ranks) / len(seed_ranks) for seed_ranks in ranks]
        threshold = 0.6 if lang == "en" else 0.5
        mean = sum(accuracies) / len(accuracies)
        out[f"H1 probe accuracy after CPT >= {threshold} ({lang}, corpus wording)"] = {
            "estimate": mean,
            "per_seed": accuracies,
            "held": mean >= threshold,
        }
    every = lambda _lang, _level: True  # noqa: E731 - Avg. weighs the two languages by their item counts (equal here)
    system2 = lambda _lang, level: level == "system2"  # noqa: E731
    out["H5 +CPT+SFT+GRPO > +CPT+SFT on System 2"] = _greater(
        paired_bootstrap(rows["+CPT+SFT+GRPO"], rows["+CPT+SFT"], system2, iters)
    )
    out["H5 +CPT+SFT+GRPO > +CPT+SFT on Avg."] = _greater(
        paired_bootstrap(rows["+CPT+SFT+GRPO"], rows["+CPT+SFT"], every, iters)
    )
    results.mkdir(parents=True, exist_ok=True)
    (results / "hypotheses.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    return out


def _probe_ranks(path: Path, lang: str) -> list[int]:
    report = json.loads(path.read_text(encoding="utf-8"))
    return [r["rank"] for r in report["per_statement"] if r["language"] == lang and r["phrasing"] == "corpus"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Judge the miniature's pre-registered hypotheses.")
    parser.add_argument("--runs", required=True, help="folder holding pipeline-seed<k>/ and no-cpt-seed<k>/")
    parser.add_argument(
        "--results", required=True, help="folder holding probe-*/ (hypotheses.json goes here)"
    )
    parser.add_argument("--iters", type=int, default=2000, help="bootstrap replicates")
    args = parser.parse_args(argv)
    for name, verdict in judge(Path(args.runs), Path(args.results), iters=args.iters).items():
        interval = verdict.get("ci95")
        shown = f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else ""
        print(f"{'held' if verdict['held'] else 'NOT held':<9} {name}: {verdict['estimate']:+.3f}{shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
