"""Revision 7's chain diagnostic (README.md, "Revisions", 7; not pre-registered, it judges nothing): where do a
model's System 1.x and System 2 answers go wrong, step by step? On the chains SFT trains on (``--anesr1``: the
first ``--trained`` records per level and language of revision 7's AnesR1 file) and on the dev chains
(``anessuite.synthetic.miniature7.dev_chain_items``: the benchmark drugs, CPT-only facts, in training wordings;
none of the benchmark's items or wordings), greedy with the pipeline config's prompt and response cap, each
response is read against the item's reference chain (revision 7's layout: the rule line, one line per option,
the answer line):

* ``rule``: the first line is the reference rule line;
* ``names``: option line k starts with letter k and the k-th option's name (all four lines);
* ``facts``: the facts after each name are the reference's (all four lines);
* ``verdicts``: every option line ends with a verdict, and every line whose facts are the reference's carries
  the reference's verdict (lines with wrong facts are not judged here);
* ``answer_follows``: the answer names the option whose written line says "Yes." (when exactly one does);
* ``answer_line``: the last line is an answer line; ``correct``: the extracted answer is the gold option.

Works for any model (a model trained on another layout scores 0 on the step checks, but ``correct`` and
``answer_line`` still count).

    python experiments/anessuite-cpu-miniature/chain_check_r7.py --model <sft>/final \
        --config experiments/anessuite-cpu-miniature/pipeline_r4.yaml --anesr1 anesr1.jsonl --out chains.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

YES = {"en": "Yes.", "zh": "是。"}
NO = {"en": "No.", "zh": "否。"}


def _split_line(line: str, lang: str) -> tuple[str, str]:
    """An option line's facts and its verdict ("" when it has none)."""
    for verdict in (YES[lang], NO[lang]):
        if line.endswith(verdict):
            return line[: -len(verdict)].rstrip(), verdict
    return line, ""


def step_checks(response: str, reference: str, options: Sequence[str], lang: str) -> dict[str, bool]:
    """The step checks of the module docstring for one response against its reference chain (both without the
    answer line: ``reference`` is the AnesR1 reasoning, ``options`` the four option texts in order)."""
    lines = [line.strip() for line in response.strip().splitlines()]
    body = [line for line in lines if not line.startswith(("Answer:", "答案："))]
    ref = reference.strip().splitlines()
    out = {"rule": bool(body) and body[0] == ref[0]}
    option_lines = body[1:5]
    names_ok = len(option_lines) == 4 and all(
        line.startswith(f"{letter}. {name}") for letter, name, line in zip("ABCD", options, option_lines)
    )
    out["names"] = names_ok
    written = [_split_line(line, lang) for line in option_lines]
    gold = [_split_line(line, lang) for line in ref[1:5]]
    out["facts"] = names_ok and all(w[0] == g[0] for w, g in zip(written, gold))
    # verdict that follows from the written facts: the written facts equal some reference line's facts -> its verdict
    by_facts = {g[0]: g[1] for g in gold}
    out["verdicts"] = (
        names_ok
        and all(by_facts.get(w[0], None) in (None, w[1]) for w in written)
        and all(w[1] for w in written)
    )
    yes = [k for k, w in enumerate(written) if w[1] == YES[lang]]
    answer = lines[-1] if lines and lines[-1].startswith(("Answer:", "答案：")) else ""
    out["answer_line"] = bool(answer)
    out["answer_follows"] = len(yes) == 1 and names_ok and answer.endswith(options[yes[0]])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from anessuite.answers import extract_prediction
    from anessuite.backends.hf import HFChatBackend
    from anessuite.mcq import MCQItem
    from anessuite.pipeline.config import PipelineConfig
    from anessuite.prompts import build_messages
    from anessuite.synthetic.miniature7 import dev_chain_items
    from rlcore.config import load_config

    parser = argparse.ArgumentParser(description="Step-by-step reading of System 1.x / 2 chains (diagnostic)")
    parser.add_argument("--model", required=True, help="model or checkpoint folder")
    parser.add_argument(
        "--config", required=True, help="pipeline YAML whose prompt and eval.max_new_tokens are used"
    )
    parser.add_argument(
        "--anesr1", help="revision 7's AnesR1 file: its first --trained chains per level and language"
    )
    parser.add_argument("--trained", type=int, default=50, help="trained chains per level and language")
    parser.add_argument("--dev", type=int, default=30, help="dev chains per level and language (0: none)")
    parser.add_argument("--world-seed", type=int, default=0, help="the revision-3 world's seed")
    parser.add_argument("--out", required=True, help="report (JSON)")
    args = parser.parse_args(argv)
    pipeline = load_config(PipelineConfig, args.config)
    levels = {2: "system1.x", 3: "system2"}
    sets: dict[str, list[tuple[MCQItem, str]]] = {}
    if args.anesr1:
        taken: dict[tuple[str, int], int] = {}
        rows = []
        for line in Path(args.anesr1).read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            key = (r["language"], r["level"])
            if r["level"] in levels and taken.get(key, 0) < args.trained:
                taken[key] = taken.get(key, 0) + 1
                item = MCQItem(
                    r["id"],
                    r["question"],
                    tuple(r["options"].items()),
                    r["answer"],
                    r["language"],
                    levels[r["level"]],
                )
                rows.append((item, r["reasoning"]))
        sets["trained"] = rows
    if args.dev:
        sets["dev"] = [(i, i.metadata["reasoning"]) for i in dev_chain_items(args.world_seed, args.dev)]
    backend = HFChatBackend(args.model, batch_size=64, dtype="float32")
    report: dict[str, Any] = {
        "model": args.model,
        "config": args.config,
        "max_new_tokens": pipeline.eval.max_new_tokens,
    }
    for name, rows in sets.items():
        done = dict(
            backend.complete(
                [build_messages(i, pipeline.prompt) for i, _ in rows], pipeline.eval.max_new_tokens
            )
        )
        for lang in ("en", "zh"):
            for level in ("system1.x", "system2"):
                picked = [
                    (k, i, ref) for k, (i, ref) in enumerate(rows) if i.language == lang and i.level == level
                ]
                if not picked:
                    continue
                counts: dict[str, int] = {"n": len(picked), "correct": 0, "abstained": 0}
                for k, item, ref in picked:
                    text = done[k].text
                    prediction = extract_prediction(text, item)
                    counts["correct"] += prediction == item.answer
                    counts["abstained"] += prediction is None
                    for check, ok in step_checks(text, ref, [t for _, t in item.options], lang).items():
                        counts[check] = counts.get(check, 0) + ok
                examples = [{"question": i.question, "response": done[k].text} for k, i, _ in picked[:2]]
                report[f"{name}/{lang}/{level}"] = {**counts, "examples": examples}
                print(f"{name}/{lang}/{level}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    Path(args.out).write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
