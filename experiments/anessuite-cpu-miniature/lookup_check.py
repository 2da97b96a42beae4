"""Revision 5's lookup check (README.md, "Revisions", 5; it judges nothing): is the letter read off the option
lines once the option's text has been written? Teacher-forced, no sampling: the response is given up to the
letter ("<gold option text> is option " / "<gold option text>是选项"), and the check is whether the model's most
likely next token among the item's letters is the gold option's letter (chance 1/4).

Three item sets: lookup drills the model never saw (``anessuite.synthetic.drills`` with another seed, as plain
text), System 1 MCQs SFT trains on (the world's AnesR1 fact items, in the pipeline's chat prompt), and the
benchmark's System 1 items (same prompt).

    python experiments/anessuite-cpu-miniature/lookup_check.py --world runs/anessuite-miniature-r3/world \
        --model <model folder> --config experiments/anessuite-cpu-miniature/pipeline_r4.yaml --out lookup.json
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LETTERS = ("A", "B", "C", "D")


def answer_stub(text: str, language: str) -> str:
    """The response up to the letter, in the layout of revision 4's option lines."""
    return f"{text}是选项" if language == "zh" else f"{text} is option "


def letter_agreement(
    model, tokenizer, contexts: list[str], golds: list[str], batch_size: int = 32
) -> list[bool]:
    """For each context (ending where the letter is due), whether the gold letter is the likeliest of A-D."""
    import torch

    letter_ids = [tokenizer.convert_tokens_to_ids(letter) for letter in LETTERS]
    hits: list[bool] = []
    tokenizer.padding_side = "left"
    for start in range(0, len(contexts), batch_size):
        chunk = contexts[start : start + batch_size]
        batch = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            logits = model(**batch).logits[:, -1, letter_ids]
        for row, gold in zip(logits.argmax(-1).tolist(), golds[start : start + batch_size], strict=True):
            hits.append(LETTERS[row] == gold)
    return hits


def _drill_set(tokenizer, per_language: int, seed: int) -> dict[str, tuple[list[str], list[str]]]:
    from anessuite.synthetic.drills import LookupDrillConfig, drill_units, lookup_drill

    cfg = LookupDrillConfig(seed=seed, restatements=1)
    units = drill_units([tokenizer.decode([i]) for i in range(len(tokenizer))])
    rng = random.Random(seed)
    out = {}
    for lang in ("en", "zh"):
        contexts, golds = [], []
        for _ in range(per_language):
            text, letter = lookup_drill(rng, units[lang], lang, cfg)
            cut = text.rindex(letter)  # the restated line's letter is the drill's last capital letter
            contexts.append(text[:cut].rstrip(" ") + (" " if lang == "en" else ""))
            golds.append(letter)
        out[lang] = (contexts, golds)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from anessuite.benchmark import load_anesbench
    from anessuite.pipeline.config import PipelineConfig
    from anessuite.prompts import build_messages
    from anessuite.synthetic.miniature import system1_r1_items
    from rlcore.config import load_config

    parser = argparse.ArgumentParser(
        description="Teacher-forced letter lookup after the option text (diagnostic)"
    )
    parser.add_argument(
        "--world", required=True, help="folder written by `anessuite synth --design miniature3`"
    )
    parser.add_argument("--model", required=True, help="model or checkpoint folder")
    parser.add_argument("--config", required=True, help="pipeline YAML whose prompt renders the MCQs")
    parser.add_argument("--items", type=int, default=150, help="items per set and language")
    parser.add_argument("--drill-seed", type=int, default=1, help="seed of the unseen drills")
    parser.add_argument("--out", required=True, help="report (JSON)")
    args = parser.parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    prompt = load_config(PipelineConfig, args.config).prompt
    world = Path(args.world)
    training = system1_r1_items(world, args.items)
    benchmark = [
        i for i in load_anesbench(world / "benchmark", languages=["en", "zh"]) if i.level == "system1"
    ]
    report: dict[str, Any] = {"model": args.model, "config": args.config}
    for lang, (contexts, golds) in _drill_set(tokenizer, args.items, args.drill_seed).items():
        hits = letter_agreement(model, tokenizer, contexts, golds)
        report[f"drills/{lang}"] = {"n": len(hits), "letter_agreement": sum(hits) / len(hits)}
    for name, items in (("training", training), ("benchmark", benchmark)):
        for lang in ("en", "zh"):
            chosen = [i for i in items if i.language == lang][: args.items]
            contexts = [
                tokenizer.apply_chat_template(
                    build_messages(i, prompt), tokenize=False, add_generation_prompt=True
                )
                + answer_stub(dict(i.options)[i.answer], lang)
                for i in chosen
            ]
            hits = letter_agreement(model, tokenizer, contexts, [i.answer for i in chosen])
            report[f"{name}/{lang}"] = {"n": len(hits), "letter_agreement": sum(hits) / len(hits)}
    for key, value in report.items():
        if isinstance(value, dict):
            print(f"{key:<14} n {value['n']:>3}  letter agreement {value['letter_agreement']:.3f}")
    Path(args.out).write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
