"""Per benchmark wording, how often a row's System 1 answers name the asked drug, are right, and are written in
revision 7's chain layout (an option line "A. ..." to "D. ..." on a line of its own), a diagnostic read after a
pre-check's judgement (README.md, "Revision 7: pre-check result"): the wording is the question with the asked
benchmark drug's name replaced by ``{drug}``.

    python experiments/anessuite-cpu-miniature/wording_check.py --world runs/anessuite-miniature-r3/world \
        --eval runs/anessuite-miniature-r7/precheck-seed1/eval/base+SFT-generate --out wordings.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def by_wording(world: Path, eval_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Per language, one row per System 1 wording: items, answers naming the asked drug, correct answers."""
    dump = json.loads((world / "world.json").read_text(encoding="utf-8"))
    bench = set(dump["benchmark_drugs"])
    lines = lambda name: (eval_dir / name).read_text(encoding="utf-8").splitlines()  # noqa: E731
    responses = {r["key"]: r["response"] or "" for r in map(json.loads, lines("responses.jsonl"))}
    scored = {r["key"]: r for r in map(json.loads, lines("scored.jsonl"))}
    out: dict[str, list[dict[str, Any]]] = {}
    for lang in ("en", "zh"):
        names = [d[f"name_{lang}"] for d in dump["drugs"] if d["key"] in bench]
        rows: dict[str, dict[str, Any]] = {}
        for record in json.loads(
            (world / "benchmark" / f"anesbench_{lang}.json").read_text(encoding="utf-8")
        ):
            key = f"{lang}/{record['id']}"
            if scored[key]["level"] != "system1":
                continue
            asked = [n for n in names if n in record["question"]]
            if not asked:
                raise ValueError(f"{key}: a System 1 question must name a benchmark drug")
            drug = max(asked, key=len)
            wording = record["question"].replace(drug, "{drug}")
            row = rows.setdefault(
                wording, {"wording": wording, "n": 0, "names_asked_drug": 0, "correct": 0, "chain_layout": 0}
            )
            row["n"] += 1
            row["names_asked_drug"] += drug in responses[key]
            row["correct"] += bool(scored[key]["correct"])
            row["chain_layout"] += any(f"\n{letter}. " in responses[key] for letter in "ABCD")
        out[lang] = sorted(rows.values(), key=lambda r: r["names_asked_drug"] / r["n"])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="System 1 naming and accuracy per benchmark wording (diagnostic)"
    )
    parser.add_argument(
        "--world", required=True, help="folder written by `anessuite synth --design miniature3`"
    )
    parser.add_argument(
        "--eval", required=True, help="<run>/eval/<row>-generate (responses.jsonl, scored.jsonl)"
    )
    parser.add_argument("--out", required=True, help="report (JSON)")
    args = parser.parse_args(argv)
    report = by_wording(Path(args.world), Path(args.eval))
    Path(args.out).write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    for lang, rows in report.items():
        for row in rows:
            print(
                f"{lang} named {row['names_asked_drug']}/{row['n']} correct {row['correct']}/{row['n']} "
                f"chain layout {row['chain_layout']}/{row['n']}  {row['wording']}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
