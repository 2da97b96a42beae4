"""Lookup drills: world-agnostic pretraining text that can only be fitted by finding a text among option lines
and copying the letter written beside it (miniature revision 5).

Each drill is an option list of made-up strings and a line that restates one of them with its letter, in the
layout the miniature's prompts use ("- {text} is option {letter}." / "{text}是选项{letter}。"). The strings are
random sequences of short units taken from the base model's own tokenizer (lowercase pieces of 2-4 letters for
EN, single characters of its CJK pieces for ZH), so the drills exercise the token pieces option texts are made
of while stating nothing: no drug, no fact, no sentence of the world. Every arm of the experiment starts from
the same drilled base, so what CPT alone supplies stays CPT's.

    python -m anessuite.synthetic.drills --tokenizer runs/.../base-scratch --out runs/.../drills
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "LookupDrillConfig",
    "drill_units",
    "lookup_drill",
    "drill_documents",
    "drill_chats",
    "write_lookup_drills",
    "main",
]

logger = logging.getLogger(__name__)

LETTERS = "ABCDEFGH"
_EN_UNIT = re.compile(r"[a-z]{2,4}")
_ZH_CHAR = re.compile(r"[\u4e00-\u9fff]")


@dataclass
class LookupDrillConfig:
    """How many drills, of what shape, in which layout."""

    documents: int = 6000  # corpus documents
    drills_per_document: int = 2  # drills in one document (a 256-token block holds about two)
    options: int = 4  # option lines per drill (letters A, B, ...)
    restatements: int = 4  # lines restating an option with its letter after the list (distinct options; the first answers the question)
    zh_share: float = 0.5  # share of ZH documents
    min_units: int = 1  # units per made-up string (EN units are 2-4 letters, ZH units one character)
    max_units: int = 4
    seed: int = 0  # drill seed
    question_en: str = 'Which option is "{text}"?'
    question_zh: str = "“{text}”是哪个选项？"
    option_line_en: str = "- {text} is option {letter}."
    option_line_zh: str = "{text}是选项{letter}。"
    answer_en: str = "{text} is option {letter}."
    answer_zh: str = "{text}是选项{letter}。"
    # drills also written as SFT chats (sft/drills.jsonl), one restatement each, half per language
    chats: int = 3000
    user_en: str = "Question: {question}\n{options}"  # the chats' user turn (revision 4's prompt)
    user_zh: str = "题目：{question}\n{options}"
    answer_line_en: str = "Answer: {letter}"  # the chats' last line
    answer_line_zh: str = "答案：{letter}"


def drill_units(vocabulary: Sequence[str]) -> dict[str, list[str]]:
    """Units made-up strings are built from, from a tokenizer's decoded pieces: EN lowercase pieces of 2-4
    letters (a leading space stripped), ZH every CJK character that occurs in a piece. Sorted, so the drills
    depend only on the vocabulary and the seed."""
    en = {piece.strip() for piece in vocabulary if _EN_UNIT.fullmatch(piece.strip())}
    zh = {char for piece in vocabulary for char in _ZH_CHAR.findall(piece)}
    if len(en) < 20 or len(zh) < 20:
        raise ValueError(
            f"the tokenizer has {len(en)} EN units and {len(zh)} ZH units; lookup drills need at least 20 of each"
        )
    return {"en": sorted(en), "zh": sorted(zh)}


def _made_up(rng: random.Random, units: list[str], lang: str, cfg: LookupDrillConfig) -> str:
    pieces = [rng.choice(units) for _ in range(rng.randint(cfg.min_units, cfg.max_units))]
    if lang == "zh":
        return "".join(pieces)
    if len(pieces) >= 4 and rng.random() < 0.5:  # two words, like "plasma esterases"
        cut = rng.randint(2, len(pieces) - 2)
        return "".join(pieces[:cut]) + " " + "".join(pieces[cut:])
    return "".join(pieces)


def lookup_drill(rng: random.Random, units: list[str], lang: str, cfg: LookupDrillConfig) -> tuple[str, str]:
    """One drill: (text, letter of the last restated option). The options are distinct strings."""
    texts: list[str] = []
    while len(texts) < cfg.options:
        text = _made_up(rng, units, lang, cfg)
        if text not in texts:
            texts.append(text)
    picks = rng.sample(range(cfg.options), min(cfg.restatements, cfg.options))
    pick = picks[0]
    line = cfg.option_line_zh if lang == "zh" else cfg.option_line_en
    question = cfg.question_zh if lang == "zh" else cfg.question_en
    answer = cfg.answer_zh if lang == "zh" else cfg.answer_en
    body = [question.format(text=texts[pick])]
    body += [line.format(text=text, letter=LETTERS[i]) for i, text in enumerate(texts)]
    body += [answer.format(text=texts[k], letter=LETTERS[k]) for k in picks]
    return "\n".join(body), LETTERS[picks[-1]]


def drill_documents(units: dict[str, list[str]], cfg: LookupDrillConfig) -> list[dict]:
    """``cfg.documents`` documents of ``cfg.drills_per_document`` drills each, drills separated by a blank line."""
    if not 2 <= cfg.options <= len(LETTERS):
        raise ValueError(f"options must be 2-{len(LETTERS)}, got {cfg.options}")
    if not 1 <= cfg.min_units <= cfg.max_units:
        raise ValueError(f"need 1 <= min_units <= max_units, got {cfg.min_units} and {cfg.max_units}")
    rng = random.Random(cfg.seed)
    documents = []
    for index in range(cfg.documents):
        lang = "zh" if rng.random() < cfg.zh_share else "en"
        drills = [lookup_drill(rng, units[lang], lang, cfg)[0] for _ in range(cfg.drills_per_document)]
        documents.append({"id": f"drill-{index:05d}", "text": "\n\n".join(drills), "language": lang})
    return documents


def drill_chats(units: dict[str, list[str]], cfg: LookupDrillConfig) -> list[dict]:
    """``cfg.chats`` drills as SFT chats in the miniature's prompt layout: the user turn asks which option a text
    is, the assistant restates its line and gives the answer line. Drawn from their own random stream, so the
    corpus does not change with ``cfg.chats``."""
    rng = random.Random(f"chats-{cfg.seed}")
    one = LookupDrillConfig(**{**asdict(cfg), "restatements": 1})
    chats = []
    for index in range(cfg.chats):
        lang = ("en", "zh")[index % 2]
        drill, letter = lookup_drill(rng, units[lang], lang, one)
        rows = drill.split("\n")
        user = (one.user_zh if lang == "zh" else one.user_en).format(
            question=rows[0], options="\n".join(rows[1:-1])
        )
        answer = (one.answer_line_zh if lang == "zh" else one.answer_line_en).format(letter=letter)
        messages = [
            {"role": "user", "content": user},
            {"role": "assistant", "content": f"{rows[-1]}\n{answer}"},
        ]
        chats.append({"messages": messages, "language": lang, "level": "system1"})
    return chats


def write_lookup_drills(
    tokenizer_dir: str | Path, out: str | Path, cfg: LookupDrillConfig | None = None
) -> Path:
    """Write ``out/corpus/drills.parquet`` (``text`` column, the CPT corpus layout), ``out/sft/drills.jsonl`` (the
    chats of :func:`drill_chats`) and ``out/manifest.json``."""
    # pyarrow and transformers are heavy imports and only this path needs them
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    cfg = cfg or LookupDrillConfig()
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    vocabulary = [tokenizer.decode([token_id]) for token_id in range(len(tokenizer))]
    units = drill_units(vocabulary)
    documents = drill_documents(units, cfg)
    out = Path(out)
    (out / "corpus").mkdir(parents=True, exist_ok=True)
    table = pa.table({key: [doc[key] for doc in documents] for key in ("id", "text", "language")})
    pq.write_table(table, out / "corpus" / "drills.parquet")
    (out / "sft").mkdir(exist_ok=True)
    chats = drill_chats(units, cfg)
    with (out / "sft" / "drills.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(chat, ensure_ascii=False) + "\n" for chat in chats)
    manifest = {
        "config": asdict(cfg),
        "tokenizer": str(tokenizer_dir),
        "units": {lang: len(values) for lang, values in units.items()},
        "documents": len(documents),
        "chats": len(chats),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    logger.info("%d lookup-drill documents written to %s", len(documents), out / "corpus")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anessuite.synthetic.drills", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tokenizer", required=True, help="model or tokenizer folder whose pieces the drills use"
    )
    parser.add_argument("--out", required=True, help="output folder (corpus/drills.parquet, manifest.json)")
    parser.add_argument("--documents", type=int, default=LookupDrillConfig.documents, help="corpus documents")
    parser.add_argument("--seed", type=int, default=0, help="drill seed")
    args = parser.parse_args(argv)
    write_lookup_drills(args.tokenizer, args.out, LookupDrillConfig(documents=args.documents, seed=args.seed))
    print(f"corpus     {Path(args.out) / 'corpus'}")
    return 0


if __name__ == "__main__":
    from rlcore.logging_utils import setup_logging

    setup_logging()
    raise SystemExit(main())
