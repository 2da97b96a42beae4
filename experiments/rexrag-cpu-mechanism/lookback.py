"""How far back a memory probe must look to copy the question's entity, for a warm-up config, before training it.

    python experiments/rexrag-cpu-mechanism/lookback.py \
        --sft experiments/rexrag-cpu-multiworld/sft_stage1.yaml --eval experiments/rexrag-cpu-multiworld/eval_warmup.yaml
    python experiments/rexrag-cpu-mechanism/lookback.py   # this folder's warm-up and test world

Trains the tokenizer the warm-up would train (same worlds, template and pool; worlds written to a temporary folder) and counts, in its tokens: the memory thought plus each pool sentence (what a probe of a memory
answer keeps before it continues), and the rest of the prompt after the question's subject on the evaluated world's
dev questions. Their sum is the look-back of ``python -m rexrag precheck`` for such probes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from rexrag.data.demos import MEMORY_THOUGHT
from rexrag.data.qa import load_flashrag_jsonl
from rexrag.data.template import render_prompt
from rexrag.data.world import write_world
from rexrag.pool import load_pool
from rexrag.recipes.common import world_tokenizer_texts
from rexrag.recipes.evaluate import EvalConfig
from rexrag.recipes.sft import SFTConfig
from rlcore.config import load_config
from rlcore.models import train_bpe_tokenizer

HERE = Path(__file__).parent


def lookback(sft: SFTConfig, evaluated: EvalConfig, num_questions: int = 100) -> dict[str, float]:
    pool = load_pool(sft.pool)
    worlds = [sft.data.world] + [
        replace(sft.data.world, seed=sft.data.world.seed + k) for k in range(1, sft.train.extra_worlds + 1)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        texts = []
        for world in worlds:
            paths = write_world(world, Path(tmp) / f"seed{world.seed}", sft.data.template)
            texts += world_tokenizer_texts(paths, sft.data.template, pool)
        tokenizer = train_bpe_tokenizer(texts, sft.model.vocab_size)
        eval_paths = write_world(evaluated.qa.world.world, Path(tmp) / "evaluated", sft.data.template)
        questions = load_flashrag_jsonl(eval_paths["dev"])[:num_questions]

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    kept = [count(MEMORY_THOUGHT + sentence) for sentence in pool]
    tails = []
    for question in questions:
        prompt = render_prompt(question.question, sft.data.template)
        subject = question.metadata["chain"][0]
        tails.append(count(prompt[prompt.rindex(subject) + len(subject) :]))
    return {
        "thought_and_sentence": statistics.fmean(kept),
        "thought_and_sentence_min": min(kept),
        "thought_and_sentence_max": max(kept),
        "question_tail": statistics.fmean(tails),
        "lookback": statistics.fmean(kept) + statistics.fmean(tails),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft", default=str(HERE / "sft_stage1.yaml"), help="warm-up config (rexrag sft)")
    parser.add_argument("--eval", default=str(HERE / "eval_warmup.yaml"), help="config naming the test world")
    args = parser.parse_args(argv)
    sft = load_config(SFTConfig, args.sft)
    result = lookback(sft, load_config(EvalConfig, args.eval))
    print(
        f"{args.sft}: pool {sft.pool}: memory thought + sentence "
        f"{result['thought_and_sentence']:.1f} tokens ({result['thought_and_sentence_min']}-"
        f"{result['thought_and_sentence_max']}), question after its subject {result['question_tail']:.1f}, "
        f"look-back {result['lookback']:.1f} tokens"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
