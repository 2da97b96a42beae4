"""Revision 2's diagnostic (README.md, "Revision 2: pre-check result"; not pre-registered): does a model name the
drug a System 1 question asks about, on the benchmark (CPT-only drugs) and on System 1 items SFT trained on
(training drugs)? Greedy, the evaluation's prompt (no system message) and its 128-token cap.

    python experiments/anessuite-cpu-miniature/copy_check_r2.py --world runs/anessuite-miniature-r2/world \
        --model runs/anessuite-miniature-r2/pipeline-seed0/sft/final --out copy.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    from anessuite.answers import extract_prediction
    from anessuite.backends.hf import HFChatBackend
    from anessuite.benchmark import load_anesbench
    from anessuite.mcq import MCQItem
    from anessuite.prompts import PromptConfig, build_messages

    parser = argparse.ArgumentParser(description="Does the model name the question's drug? (diagnostic)")
    parser.add_argument(
        "--world", required=True, help="folder written by `anessuite synth --design miniature2`"
    )
    parser.add_argument("--model", required=True, help="model or checkpoint folder")
    parser.add_argument("--training-items", type=int, default=150, help="SFT System 1 items per language")
    parser.add_argument(
        "--sets",
        nargs="+",
        default=["benchmark", "training"],
        choices=["benchmark", "training"],
        help="item sets",
    )
    parser.add_argument("--out", required=True, help="report (JSON)")
    args = parser.parse_args(argv)
    world = Path(args.world)
    dump = json.loads((world / "world.json").read_text(encoding="utf-8"))
    bench_keys = set(dump["benchmark_drugs"])
    drugs = {"benchmark": [], "training": []}
    for drug in dump["drugs"]:
        drugs["benchmark" if drug["key"] in bench_keys else "training"].append(drug)
    sets: dict[str, list[MCQItem]] = {
        "benchmark": [
            i for i in load_anesbench(world / "benchmark", languages=["en", "zh"]) if i.level == "system1"
        ]
    }
    training = []
    for line in (world / "anesr1" / "anesr1.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r["level"] == 1 and sum(t.language == r["language"] for t in training) < args.training_items:
            training.append(
                MCQItem(
                    r["id"], r["question"], tuple(r["options"].items()), r["answer"], r["language"], "system1"
                )
            )
    sets["training"] = training
    backend = HFChatBackend(args.model, batch_size=64, dtype="float32")
    prompt = PromptConfig(use_system_prompt=False)
    report: dict[str, Any] = {"model": args.model}
    for name, items in sets.items():
        if name not in args.sets:
            continue
        done = dict(backend.complete([build_messages(i, prompt) for i in items], 128))
        for lang in ("en", "zh"):
            rows = [(i, done[k].text) for k, i in enumerate(items) if i.language == lang]
            named = sum(
                any(d[f"name_{lang}"] in i.question and d[f"name_{lang}"] in text for d in drugs[name])
                for i, text in rows
            )
            other = sum(
                any(
                    d[f"name_{lang}"] in text and d[f"name_{lang}"] not in i.question
                    for d in drugs["training"]
                )
                for i, text in rows
            )
            correct = sum(extract_prediction(text, i) == i.answer for i, text in rows)
            report[f"{name}/{lang}"] = {
                "n": len(rows),
                "names_question_drug": named / len(rows),
                "names_another_training_drug": other / len(rows),
                "accuracy": correct / len(rows),
                "examples": [{"question": i.question, "response": text} for i, text in rows[:3]],
            }
            print(
                f"{name}/{lang}: n {len(rows)}, names the question's drug {named / len(rows):.2f}, another "
                f"training drug {other / len(rows):.2f}, accuracy {correct / len(rows):.3f}"
            )
    Path(args.out).write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
