"""Revision 6 of the miniature: revision 3's AnesR1 items whose reasoning no longer ends by reading a letter off
the option lines.

Revisions 3-5 ended every training answer with the chosen option's text, then its letter ("... is pruritus.
pruritus is option D.\\nAnswer: D"); the from-scratch model never learned to find the letter beside a text in
the option lines, so its letters stayed at chance even when the fact it wrote was right. Here the option
sentence is dropped ("... is pruritus."), and the pipeline's ``data.sft_answer: text`` ends the chat with the
option's text instead of its letter ("Answer: pruritus"), which the evaluation's extractor reads as that option.
Everything else (world, corpus, benchmark, probe, questions, options, the rest of each reasoning) is revision
3's, byte for byte.

Design trials of this revision are read on a *dev set* instead of the benchmark (:func:`dev_items`): System 1
questions about the benchmark drugs (CPT-only names and facts) in the training wordings, never in the benchmark's
held-out wordings, with their own seed, so no benchmark item is read before the registered pre-check.

    python -m anessuite.synthetic.miniature6 --world runs/anessuite-miniature-r3/world --out runs/.../anesr1.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path

from anessuite.mcq import MCQItem
from anessuite.synthetic.miniature2 import build_miniature2_world
from anessuite.synthetic.miniature3 import LOOKUP_WORDINGS, Miniature3Config, fact_items
from anessuite.synthetic.questions import answer_line
from anessuite.synthetic.world import _EN_HEAD, _EN_MID, _EN_TAIL, _ZH_HEAD, _ZH_MID, _ZH_TAIL

__all__ = [
    "dev_items",
    "made_up_names",
    "name_copy_records",
    "option_sentence",
    "with_lead_in",
    "without_option_sentence",
    "write_text_answer_r1",
    "main",
]

logger = logging.getLogger(__name__)


def option_sentence(text: str, letter: str, language: str) -> str:
    """Revision 3's sentence that restates the chosen option before the answer line."""
    return f"{text}是选项{letter}。" if language == "zh" else f"{text} is option {letter}."


def without_option_sentence(record: dict, where: str = "record") -> dict:
    """``record`` with its reasoning's closing option sentence and letter line removed (what is left may be empty,
    for the option-lookup items). Raises ``ValueError`` naming ``where`` when the reasoning does not end with them."""
    letter, language = record["answer"], record["language"]
    text = record["options"][letter]
    tail = f"{option_sentence(text, letter, language)}\n{answer_line(letter, language)}"
    reasoning = record["reasoning"]
    if not reasoning.endswith(tail):
        raise ValueError(f"{where}: reasoning does not end with {tail!r}: {reasoning[-80:]!r}")
    return {**record, "reasoning": reasoning[: -len(tail)].rstrip()}


def dev_items(world_seed: int = 0, seed: int = 6) -> list[MCQItem]:
    """Every benchmark drug's class, organ and effect as one System 1 MCQ per language in a *training* wording
    (72 per language at the default sizes), drawn with ``seed``: the drugs and facts the benchmark asks about,
    none of its items or wordings."""
    world = build_miniature2_world(Miniature3Config(seed=world_seed).world_config())
    rng = random.Random(f"dev-{seed}")
    return [item for lang in ("en", "zh") for item in fact_items(world.benchmark, rng, lang, "mini6-dev")]


def with_lead_in(record: dict, lead_in: dict[str, str], names: Sequence[str]) -> dict:
    """A System 1 answer that opens with the name of the drug its question asks about (one of ``names``:
    "Quelodexol is a vasopressor." / "凯拉酮属于...") gets ``lead_in[language]`` before it, so the response does
    not have to produce the name as its very first token (and, in English, the name follows a space as it does
    in the question: the byte-level tokenizer writes a response's first word without the space token it has
    everywhere else); other records unchanged."""
    reasoning, language = record["reasoning"], record["language"]
    opens_with_asked = any(reasoning.startswith(n) and n in record["question"] for n in names)
    if not lead_in.get(language) or record["level"] != 1 or not opens_with_asked:
        return record
    return {**record, "reasoning": lead_in[language] + reasoning}


def made_up_names(world_names: set[str], seed: int) -> dict[str, list[str]]:
    """Every name the world's syllables can build (head + middle + tail, revision 2's scheme) that no drug of the
    world has, per language, in a seeded order: names that look like the drugs' but were never read anywhere."""
    parts = {"en": (_EN_HEAD, _EN_MID, _EN_TAIL), "zh": (_ZH_HEAD, _ZH_MID, _ZH_TAIL)}
    rng = random.Random(f"made-up-{seed}")
    out = {}
    for lang, (heads, mids, tails) in parts.items():
        names = sorted({h + m + t for h in heads for m in mids for t in tails} - world_names)
        rng.shuffle(names)
        out[lang] = names
    return out


def name_copy_records(world_names: set[str], per_language: int, seed: int = 6) -> list[dict]:
    """Option-lookup items (revision 3's wordings) over made-up drug names, in the AnesR1 layout with an empty
    reasoning: the answer line ("Answer: Zelaquor") can only be written by copying a name no training text holds,
    which is what naming a CPT-only drug in an answer takes. They state no fact."""
    pools = made_up_names(world_names, seed)
    rng = random.Random(f"name-copy-{seed}")
    records = []
    for lang in ("en", "zh"):
        for index in range(per_language):
            names = rng.sample(pools[lang], k=4)
            letter = "ABCD"[rng.randrange(4)]
            asked = names[0]
            names[0], names["ABCD".index(letter)] = names["ABCD".index(letter)], names[0]
            records.append(
                {
                    "id": f"mini6-r1-{lang}-n{index:05d}",
                    "question": rng.choice(LOOKUP_WORDINGS[lang]).format(text=asked),
                    "options": dict(zip("ABCD", names, strict=True)),
                    "answer": letter,
                    "reasoning": "",
                    "language": lang,
                    "level": 1,
                }
            )
    return records


def write_text_answer_r1(
    world_dir: str | Path, out: str | Path, lead_in: dict[str, str] | None = None, name_copies: int = 0
) -> Path:
    """Rewrite ``world_dir/anesr1/anesr1.jsonl`` (revision 3's layout) into ``out`` with
    :func:`without_option_sentence` and :func:`with_lead_in` (the world's drug names, ``lead_in`` per language;
    none when not given) applied to every record, in the same order, then ``name_copies`` name-copy items per
    language (:func:`name_copy_records`)."""
    world_dir = Path(world_dir)
    source = world_dir / "anesr1" / "anesr1.jsonl"
    dump = json.loads((world_dir / "world.json").read_text(encoding="utf-8"))
    names = [drug[f"name_{lang}"] for drug in dump["drugs"] for lang in ("en", "zh")]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with source.open(encoding="utf-8") as lines, out.open("w", encoding="utf-8") as handle:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record = without_option_sentence(json.loads(line), f"{source}:{number}")
            record = with_lead_in(record, lead_in or {}, names)
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
        for record in name_copy_records(set(names), name_copies) if name_copies else []:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    logger.info("%d AnesR1 records without option sentences written to %s", count, out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="anessuite.synthetic.miniature6", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--world", required=True, help="folder written by `anessuite synth --design miniature3`"
    )
    parser.add_argument("--out", required=True, help="the rewritten AnesR1 JSONL")
    parser.add_argument(
        "--lead-in-en", default="", help="words before an English answer that opens with the drug"
    )
    parser.add_argument("--lead-in-zh", default="", help="the same for Chinese answers")
    parser.add_argument("--name-copies", type=int, default=0, help="name-copy items per language")
    args = parser.parse_args(argv)
    lead_in = {"en": args.lead_in_en, "zh": args.lead_in_zh}
    print(write_text_answer_r1(args.world, args.out, lead_in, args.name_copies))
    return 0


if __name__ == "__main__":
    from rlcore.logging_utils import setup_logging

    setup_logging()
    raise SystemExit(main())
