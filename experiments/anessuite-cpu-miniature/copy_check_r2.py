"""Revision 2's diagnostic (README.md, "Revision 2: pre-check result"; not pre-registered): does a model name the
drug a System 1 question asks about, on the benchmark (CPT-only drugs) and on System 1 items SFT trained on
(training drugs), or on revision 6's dev set (``--sets dev``: the benchmark drugs in training wordings,
``anessuite.synthetic.miniature6.dev_items``, which that revision's design trials read instead of the benchmark)?
Greedy, the evaluation's prompt (no system message) and its 128-token cap; with ``--config`` the prompt and
response cap of that pipeline config (revision 4 on: the trained-items check of its pre-check). Per question kind
(class / organ / effect) the report counts named drugs and correct answers, per level correct answers, abstentions
and responses whose last line is an answer line (``--sets chains``: the first System 1.x and System 2 items SFT
trains on, revision 6's item 3).

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
    from anessuite.synthetic.miniature import r1_items, system1_r1_items

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
        choices=["benchmark", "training", "dev", "chains"],
        help="item sets",
    )
    parser.add_argument("--config", help="pipeline YAML whose prompt and eval.max_new_tokens are used")
    parser.add_argument("--out", required=True, help="report (JSON)")
    args = parser.parse_args(argv)
    world = Path(args.world)
    dump = json.loads((world / "world.json").read_text(encoding="utf-8"))
    bench_keys = set(dump["benchmark_drugs"])
    drugs = {"benchmark": [], "training": []}
    for drug in dump["drugs"]:
        drugs["benchmark" if drug["key"] in bench_keys else "training"].append(drug)
    sets: dict[str, list[MCQItem]] = {}
    if "benchmark" in args.sets:
        bench = load_anesbench(world / "benchmark", languages=["en", "zh"])
        sets["benchmark"] = [i for i in bench if i.level == "system1"]
    if "training" in args.sets:
        sets["training"] = system1_r1_items(world, args.training_items)
    if "chains" in args.sets:
        sets["chains"] = r1_items(world, args.training_items, 2) + r1_items(world, args.training_items, 3)
        drugs["chains"] = drugs["training"]
    if "dev" in args.sets:
        from anessuite.synthetic.miniature6 import dev_items

        sets["dev"] = dev_items(json.loads((world / "manifest.json").read_text())["config"]["seed"])
        drugs["dev"] = drugs["benchmark"]
    backend = HFChatBackend(args.model, batch_size=64, dtype="float32")
    prompt, max_new_tokens = PromptConfig(use_system_prompt=False), 128
    if args.config:
        from anessuite.pipeline.config import PipelineConfig
        from rlcore.config import load_config

        pipeline = load_config(PipelineConfig, args.config)
        prompt, max_new_tokens = pipeline.prompt, pipeline.eval.max_new_tokens
    report: dict[str, Any] = {"model": args.model, "config": args.config, "max_new_tokens": max_new_tokens}
    for name, items in sets.items():
        if name not in args.sets:
            continue
        done = dict(backend.complete([build_messages(i, prompt) for i in items], max_new_tokens))
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
            # items whose question names a drug of the set (training items include option lookups that name none)
            asking = [(i, t) for i, t in rows if any(d[f"name_{lang}"] in i.question for d in drugs[name])]
            named_of_asking = sum(
                any(d[f"name_{lang}"] in i.question and d[f"name_{lang}"] in t for d in drugs[name])
                for i, t in asking
            )
            kinds = sorted({i.metadata.get("kind") for i, _ in rows} - {None, "lookup"})
            by_kind = {
                kind: {
                    "n": sum(i.metadata.get("kind") == kind for i, _ in rows),
                    "names_question_drug": sum(
                        i.metadata.get("kind") == kind
                        and any(
                            d[f"name_{lang}"] in i.question and d[f"name_{lang}"] in t for d in drugs[name]
                        )
                        for i, t in rows
                    ),
                    "correct": sum(
                        i.metadata.get("kind") == kind and extract_prediction(t, i) == i.answer
                        for i, t in rows
                    ),
                }
                for kind in kinds
            }
            by_level = {
                level: {
                    "n": sum(i.level == level for i, _ in rows),
                    "correct": sum(
                        i.level == level and extract_prediction(t, i) == i.answer for i, t in rows
                    ),
                    "abstained": sum(i.level == level and extract_prediction(t, i) is None for i, t in rows),
                    "answer_line_last": sum(
                        i.level == level
                        and t.strip().splitlines()[-1:] != []
                        and t.strip().splitlines()[-1].startswith(("Answer:", "答案："))
                        for i, t in rows
                    ),
                }
                for level in sorted({i.level for i, _ in rows})
            }
            report[f"{name}/{lang}"] = {
                "by_kind": by_kind,
                "by_level": by_level,
                "n": len(rows),
                "names_question_drug": named / len(rows),
                "items_naming_a_drug": len(asking),
                "names_question_drug_of_those": named_of_asking / len(asking) if asking else None,
                "names_another_training_drug": other / len(rows),
                "accuracy": correct / len(rows),
                "examples": [{"question": i.question, "response": text} for i, text in rows[:3]],
            }
            print(
                f"{name}/{lang}: n {len(rows)}, names the question's drug {named / len(rows):.2f} (of the "
                f"{len(asking)} naming a drug: {named_of_asking / max(len(asking), 1):.2f}), another "
                f"training drug {other / len(rows):.2f}, accuracy {correct / len(rows):.3f}; by kind "
                + ", ".join(
                    f"{k} {v['names_question_drug']}/{v['correct']}/{v['n']}" for k, v in by_kind.items()
                )
                + "; by level "
                + ", ".join(
                    f"{k} correct {v['correct']}, abstained {v['abstained']}, answer line last "
                    f"{v['answer_line_last']} of {v['n']}"
                    for k, v in by_level.items()
                )
            )
    Path(args.out).write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
