"""Revision 2's pre-check (README.md, "Revisions", 2): on one seed, does +CPT+SFT read the question's drug and use
what CPT stored? Thresholds fixed in the README before the run, repeated here:

(a) the response to a System 1 item names the drug the question asks about in at least 60% of the items, in EN
    and in ZH (design 1: 0 of 900);
(b) System 1 accuracy is at least 0.40 in EN and in ZH (chance 0.25), with the lower end of its 95% interval
    (bootstrap over items) above 0.25.

Also reported, without a threshold: the same figures for every other evaluated row of the run, Total / System 1.x
/ System 2 accuracy, how often a System 1 response names a training drug instead (design 1's failure), how many
distinct responses a row gives, and the knowledge probes when given.

    python experiments/anessuite-cpu-miniature/precheck_r2.py --world runs/anessuite-miniature-r2/world \
        --run runs/anessuite-miniature-r2/pipeline-seed0 --out experiments/anessuite-cpu-miniature/precheck/revision2.json
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NAME_RATE_MIN = 0.60  # (a)
SYSTEM1_MIN = 0.40  # (b), with the interval's lower end above CHANCE
CHANCE = 0.25
ROW = "base+CPT+SFT"  # the row the thresholds judge
LANGS = ("en", "zh")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def bootstrap_interval(values: Sequence[float], iters: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean, resampling items."""
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=len(values))) / len(values) for _ in range(iters))
    return means[int(0.025 * iters)], means[int(0.975 * iters) - 1]


def row_figures(world: Path, eval_dir: Path) -> dict[str, Any]:
    """Per language: accuracy per level with intervals, and how System 1 responses name drugs."""
    dump = json.loads((world / "world.json").read_text(encoding="utf-8"))
    bench_keys = set(dump["benchmark_drugs"])
    bench = [d for d in dump["drugs"] if d["key"] in bench_keys]
    training = [d for d in dump["drugs"] if d["key"] not in bench_keys]
    questions = {}
    for lang in LANGS:
        for record in json.loads(
            (world / "benchmark" / f"anesbench_{lang}.json").read_text(encoding="utf-8")
        ):
            questions[f"{lang}/{record['id']}"] = record["question"]
    responses = {r["key"]: r["response"] or "" for r in _jsonl(eval_dir / "responses.jsonl")}
    scored = _jsonl(eval_dir / "scored.jsonl")
    out: dict[str, Any] = {}
    for lang in LANGS:
        rows = [s for s in scored if s["language"] == lang]
        figures: dict[str, Any] = {"n": len(rows)}
        for level in ("total", "system1", "system1.x", "system2"):
            values = [float(s["correct"]) for s in rows if level == "total" or s["level"] == level]
            figures[level] = {
                "accuracy": sum(values) / len(values),
                "ci95": bootstrap_interval(values),
                "n": len(values),
            }
        named = other = 0
        system1 = [s for s in rows if s["level"] == "system1"]
        for s in system1:
            question, response = questions[s["key"]], responses.get(s["key"], "")
            asked = [d[f"name_{lang}"] for d in bench if d[f"name_{lang}"] in question]
            if len(asked) != 1:
                raise ValueError(
                    f"{s['key']}: a System 1 question must name one benchmark drug, found {asked}"
                )
            named += asked[0] in response
            other += any(d[f"name_{lang}"] in response for d in training)
        figures["system1_names_question_drug"] = named / len(system1)
        figures["system1_names_a_training_drug"] = other / len(system1)
        figures["distinct_responses"] = len({responses.get(s["key"], "") for s in rows})
        out[lang] = figures
    return out


def verdict(figures: dict[str, Any]) -> dict[str, Any]:
    """(a) and (b) per language on the judged row; passed only if all four hold."""
    checks = {}
    for lang in LANGS:
        system1 = figures[lang]["system1"]
        checks[f"a_names_question_drug_{lang}"] = (
            figures[lang]["system1_names_question_drug"] >= NAME_RATE_MIN
        )
        checks[f"b_system1_above_chance_{lang}"] = (
            system1["accuracy"] >= SYSTEM1_MIN and system1["ci95"][0] > CHANCE
        )
    return {"checks": checks, "passed": all(checks.values())}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Revision 2's pre-check on one pipeline run.")
    parser.add_argument(
        "--world", required=True, help="folder written by `anessuite synth --design miniature2`"
    )
    parser.add_argument(
        "--run", required=True, help="the pipeline's output_dir (eval/<row>-generate/ inside)"
    )
    parser.add_argument(
        "--probes", nargs="*", default=[], help="label=probe.json pairs to copy into the report"
    )
    parser.add_argument("--out", required=True, help="the report (JSON)")
    parser.add_argument(
        "--row", default=ROW, help="the row (evaluation) the thresholds judge; another row is a diagnostic"
    )
    args = parser.parse_args(argv)
    world, run = Path(args.world), Path(args.run)
    rows = sorted(p.name.removesuffix("-generate") for p in (run / "eval").glob("*-generate"))
    if args.row not in rows:
        raise SystemExit(f"{run / 'eval'}: no {args.row}-generate evaluation (rows found: {rows})")
    figures = {row: row_figures(world, run / "eval" / f"{row}-generate") for row in rows}
    probes = {}
    for pair in args.probes:
        label, _, path = pair.partition("=")
        probes[label] = json.loads(Path(path).read_text(encoding="utf-8"))["summary"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    report = {
        "thresholds": {
            "row": args.row,
            "name_rate_min": NAME_RATE_MIN,
            "system1_min": SYSTEM1_MIN,
            "chance": CHANCE,
        },
        "verdict": verdict(figures[args.row]),
        "rows": figures,
        "probes": probes,
        "world_manifest": json.loads((world / "manifest.json").read_text(encoding="utf-8")),
        "git_commit": commit,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    for row in rows:
        for lang in LANGS:
            f = figures[row][lang]
            print(
                f"{row:>20} {lang}: System 1 {f['system1']['accuracy']:.3f} "
                f"[{f['system1']['ci95'][0]:.3f}, {f['system1']['ci95'][1]:.3f}], names the question's drug "
                f"{f['system1_names_question_drug']:.2f}, a training drug {f['system1_names_a_training_drug']:.2f}, "
                f"Total {f['total']['accuracy']:.3f}, {f['distinct_responses']} distinct responses"
            )
    print(f"pre-check {'PASSED' if report['verdict']['passed'] else 'FAILED'}: {report['verdict']['checks']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
