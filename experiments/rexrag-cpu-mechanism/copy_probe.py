"""Does a warm-up copy names it has never seen? Two measurements on a world's questions, before any RL.

    python experiments/rexrag-cpu-mechanism/copy_probe.py --model runs/rexrag-cpu-mechanism/sft/model
    python experiments/rexrag-cpu-mechanism/copy_probe.py --model M --world runs/rexrag-cpu-mechanism/sft-world --fresh

1. **Subject copy**: the prompt of a dev/test question followed by "<think> I need to look up", greedy, up to the
   first "."; the share of questions whose subject (the first entity of the chain) comes out exactly.
2. **Copyable-token loss**: search demonstrations of the world's train questions (built as the warm-up builds them,
   with ``--fresh`` renamed as revision 2/3 renames them), teacher-forced; the mean NLL of the trained tokens whose
   id occurred earlier in the sequence and is not among the 150 most frequent tokens (the pieces of names written
   again), beside the other trained tokens.

Prints one JSON object and writes it to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
from pathlib import Path

import torch

from rexrag.data.demos import DemoConfig, build_demos, fixed_texts
from rexrag.data.fresh_names import FreshNames, world_name_shapes
from rexrag.data.qa import load_flashrag_jsonl
from rexrag.data.template import TEMPLATE_FILE, render_prompt
from rexrag.pool import load_pool
from rexrag.recipes.common import SHORT_TEMPLATE, load_world_retriever
from rlcore.models import load_causal_lm, load_tokenizer
from rlcore.rollout import RolloutConfig

ROLLOUT = RolloutConfig(max_turns=4, max_new_tokens_per_turn=40, max_response_tokens=512, retrieval_topk=2)


def subject_copy(model, tokenizer, template: str, questions: list, batch: int = 50) -> dict:
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    hits, samples = 0, []
    for start in range(0, len(questions), batch):
        chunk = questions[start : start + batch]
        prompts = [render_prompt(q.question, template) + "<think> I need to look up" for q in chunk]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=14, do_sample=False, pad_token_id=pad)
        for q, row in zip(chunk, out[:, enc["input_ids"].shape[1] :], strict=True):
            written = tokenizer.decode(row, skip_special_tokens=True).split(".")[0].strip()
            subject = q.metadata["chain"][0]
            hits += written == subject
            if len(samples) < 8:
                samples.append({"subject": subject, "written": written})
    return {"questions": len(questions), "exact": hits, "rate": hits / len(questions), "samples": samples}


def copy_loss(model, tokenizer, world: Path, fresh: bool, count: int, frequent_tokens: int = 150) -> dict:
    pool = load_pool("search_first_5")
    examples = load_flashrag_jsonl(world / "train.jsonl")[:count]
    cfg = DemoConfig(
        frac_search=1, frac_memory=0, frac_shortcut=0, frac_recovery=0, fresh_names=fresh, seed=123
    )
    names = None
    if fresh:
        shapes = world_name_shapes(json.loads((world / "world.json").read_text(encoding="utf-8")))
        names = FreshNames(shapes, seed=99, reserved=fixed_texts(SHORT_TEMPLATE, pool))
    retriever = load_world_retriever({"index": world / "index"})
    demos = build_demos(examples, tokenizer, retriever, ROLLOUT, SHORT_TEMPLATE, pool, cfg, False, names)
    frequency = collections.Counter(t for d in demos for t in d.prompt_ids + d.response_ids)
    frequent = {t for t, _ in frequency.most_common(frequent_tokens)}
    nll: dict[str, list[float]] = {"copy": [], "other": []}
    with torch.no_grad():
        for demo in demos:
            ids = demo.prompt_ids + demo.response_ids
            logits = model(torch.tensor([ids])).logits[0]
            losses = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none")
            for j, (token, trained) in enumerate(zip(demo.response_ids, demo.loss_mask, strict=True)):
                position = len(demo.prompt_ids) + j
                if trained:
                    kind = "copy" if token not in frequent and token in ids[:position] else "other"
                    nll[kind].append(losses[position - 1].item())
    return {
        kind: {
            "tokens": len(values),
            "mean_nll": statistics.fmean(values),
            "share_below_0.1": sum(v < 0.1 for v in values) / len(values),
        }
        for kind, values in nll.items()
        if values
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a warm-up model folder (or checkpoint)")
    parser.add_argument(
        "--world", default="runs/rexrag-cpu-mechanism/world", help="world folder (index inside)"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="rename the demonstrations' names (revisions 2-3)"
    )
    parser.add_argument("--questions", type=int, default=200, help="dev+test questions for the subject copy")
    parser.add_argument("--demos", type=int, default=96, help="train questions for the copyable-token loss")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    world = Path(args.world)
    if not (Path(args.model) / "config.json").is_file():
        parser.error(f"--model {args.model}: no model folder (config.json) there; train the warm-up first")
    missing = [
        name
        for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "world.json", "index")
        if not (world / name).exists()
    ]
    if missing:
        parser.error(f"--world {world}: not a world folder (missing {', '.join(missing)})")
    torch.set_num_threads(1)
    model = load_causal_lm(args.model, dtype=torch.float32).eval()
    tokenizer = load_tokenizer(args.model)
    template_file = Path(args.model) / TEMPLATE_FILE
    template = template_file.read_text(encoding="utf-8") if template_file.is_file() else SHORT_TEMPLATE
    questions = [q for split in ("dev", "test") for q in load_flashrag_jsonl(world / f"{split}.jsonl")]
    result = {
        "model": args.model,
        "world": world.name,
        "fresh": args.fresh,
        "subject_copy": subject_copy(model, tokenizer, template, questions[: args.questions]),
        "copy_loss": copy_loss(model, tokenizer, world, args.fresh, args.demos),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
