"""How well does a warm-up search and read, with and without the probe's look-back? A design measurement, before
any pre-check or RL run (README, revision 6).

    python experiments/rexrag-cpu-mechanism/searched_probe.py --model runs/rexrag-cpu-mechanism/sft/model

On a world's 1-3-hop questions (default: world 0's first 150 train questions of those families; never the test
questions), sampled at T = 1 like the pre-check:

- ``searched``: the question without the cue; the warm-up searches on its own. Its accuracy is what item 7 asks to
  raise before probes are built.
- ``probe``: the question with the cue, the memory thought and one ``search_first_5`` sentence (cycled over the
  questions) already written, as a probe of a memory answer starts; the warm-up continues from there.

For each: accuracy, first query exactly the question's subject, the golden answer in a retrieved passage, and the
read rate (correct among those whose passages held the answer), also split by relation (question beginning).
Prints one JSON object and writes it to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch

from rexrag.data.demos import MEMORY_THOUGHT
from rexrag.data.qa import load_flashrag_jsonl
from rexrag.data.template import TEMPLATE_FILE, render_prompt
from rexrag.pool import load_pool
from rexrag.recipes.common import SHORT_TEMPLATE, load_world_retriever
from rexrag.sampling import is_correct
from rlcore.generation import HFBackend
from rlcore.models import load_causal_lm, load_tokenizer
from rlcore.rollout import RolloutConfig, RolloutEngine

ROLLOUT = RolloutConfig(
    max_turns=4, max_new_tokens_per_turn=40, max_response_tokens=512, retrieval_topk=2, temperature=1.0
)


def relation(question: str) -> str:
    """The question's relation: its first three words, with a named subject replaced by "X"."""
    words = question.split()
    key = " ".join(words[:3])
    if key.startswith(("Where was", "Who founded")) and words[2] != "the":
        key = " ".join(words[:2]) + " X"
    return key


def summary(rows: list[dict]) -> dict:
    """Accuracy, first-query copy and retrieval shares of ``rows`` (``correct``, ``first_exact``, ``gold_seen``), and
    the read rate: correct among the rows whose passages held the answer (None when none did)."""
    seen = [r for r in rows if r["gold_seen"]]
    return {
        "n": len(rows),
        "accuracy": sum(r["correct"] for r in rows) / len(rows),
        "first_query_exact": sum(r["first_exact"] for r in rows) / len(rows),
        "gold_seen": len(seen) / len(rows),
        "read_rate": sum(r["correct"] for r in seen) / len(seen) if seen else None,
    }


def measure(
    model, tokenizer, retriever, examples, template: str, mode: str, pool: list[str], seed: int
) -> dict:
    prompts, groups, metadata = [], [], []
    for number, example in enumerate(examples):
        cue = example.metadata.get("cue") or "Guess:"
        bare = example.question[len(cue) :].strip() if example.question.startswith(cue) else example.question
        question = bare if mode == "searched" else f"{cue} {bare}"
        ids = tokenizer.encode(render_prompt(question, template), add_special_tokens=False)
        if mode == "probe":  # segments tokenized one by one, as the demonstrations and a probe clone are
            ids += tokenizer.encode(MEMORY_THOUGHT, add_special_tokens=False)
            ids += tokenizer.encode(pool[number % len(pool)], add_special_tokens=False)
        prompts.append(ids)
        groups.append(f"{mode}:{number}")
        metadata.append({"golden_answers": list(example.golden_answers), "data_source": example.data_source})
    engine = RolloutEngine(
        HFBackend(model, tokenizer, batch_size=64), tokenizer, replace(ROLLOUT, seed=seed), retriever
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        trajectories = engine.run(prompts, groups, metadata)
    rows: dict[str, list[dict]] = defaultdict(list)
    for example, traj in zip(examples, trajectories, strict=True):
        text = tokenizer.decode(traj.response_ids, skip_special_tokens=True)
        queries = [q.strip() for q in re.findall(r"<search>(.*?)</search>", text)]
        passages = " ".join(re.findall(r"<information>(.*?)</information>", text, re.S))
        row = {
            "correct": is_correct(traj),
            "first_exact": bool(queries) and queries[0] == example.metadata["chain"][0],
            "gold_seen": any(g in passages for g in example.golden_answers),
        }
        bare = example.question.removeprefix((example.metadata.get("cue") or "") + " ")
        for key in ("all", example.data_source, relation(bare)):
            rows[key].append(row)

    return {key: summary(items) for key, items in sorted(rows.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--world", default="runs/rexrag-cpu-mechanism/world")
    parser.add_argument("--split", default="train")
    parser.add_argument("--count", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = Path(args.world)
    examples = [
        e for e in load_flashrag_jsonl(world / f"{args.split}.jsonl") if e.data_source != "world_compare"
    ]
    examples = examples[: args.count]
    template_file = Path(args.model) / TEMPLATE_FILE
    template = template_file.read_text(encoding="utf-8") if template_file.is_file() else SHORT_TEMPLATE
    model = load_causal_lm(args.model, dtype=torch.float32).eval()
    tokenizer = load_tokenizer(args.model)
    retriever = load_world_retriever({"index": world / "index"})
    pool = load_pool("search_first_5")
    result = {"model": args.model, "world": str(world), "split": args.split, "questions": len(examples)}
    for mode in ("searched", "probe"):
        result[mode] = measure(model, tokenizer, retriever, examples, template, mode, pool, args.seed)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
