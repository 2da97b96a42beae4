"""Revision 7 of the miniature: System 1.x and System 2 chains that go through the options one by one.

Revision 6's SFT never fitted its own chains: its 100 System 1.x and 100 System 2 records per language name the
options in an order of their own ("Among the options, Galomide and Lomequor are vasopressors; ...") and answer 1-3
of 50 trained chains correctly. Revision 7 writes every chain from steps the model already does well on System 1:

1. the rule, recalled from the question in the CPT corpus's wording ("Rule: the Ostrava laparotomy requires a
   vasopressor. In patients with severe pulmonary fibrosis, drugs cleared by the lungs must be avoided.");
2. one line per option, in option order: its letter and its name as the prompt's option line writes them
   ("C. Lomequor", the prompt's option lines being "{letter}. {text}"), then the fact(s) the rule needs, each in the corpus wording System 1 answers recall ("C. Lomequor is a vasopressor. Lomequor is cleared by
   the lungs."; English effects in the corpus's second wording, "Lomequor can cause seizures.", so that every line
   opens with the name), ending with a verdict ("No." / "Yes."; Chinese "否。" / "是。") unless ``verdicts`` is off;
3. the pipeline's text answer line (``data.sft_answer: text``): "Answer: Galomide".

Levels and kinds are revision 3's (System 1.x: ``avoid`` and ``pair``; System 2: ``decide``), over the training
drugs, in the training wordings, many more of them (``chains_per_level`` per level and language, distinct by
question and options). The System 1 records are revision 6's (text answers, the English lead-in); the option-lookup
items are dropped (a held-out English wording that opens with the drug's name was answered in their bare layout)
and name-copy items are optional. World, CPT corpus, AnesQA pairs, benchmark and probe are revision 3's.

Design trials read :func:`dev_chain_items`: System 1.x and System 2 questions over the *benchmark* drugs (CPT-only
facts) in the training wordings, with their own seed, never the benchmark's items or wordings.

    python -m anessuite.synthetic.miniature7 --world runs/anessuite-miniature-r3/world --out runs/.../anesr1.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path

from anessuite.mcq import LETTERS, MCQItem
from anessuite.synthetic.generate import _r1_record
from anessuite.synthetic.miniature import TRAIN_PAIR
from anessuite.synthetic.miniature2 import _fact, build_miniature2_world
from anessuite.synthetic.miniature3 import TRAIN_WORDINGS, Miniature3Config
from anessuite.synthetic.miniature6 import name_copy_records, with_lead_in, without_option_sentence
from anessuite.synthetic.questions import _label, draw_decision
from anessuite.synthetic.world import CLASSES, EFFECTS, ORGANS, Condition, Drug, World

__all__ = ["chain_item", "chain_items", "dev_chain_items", "option_copy_records", "write_chain_r1", "main"]

logger = logging.getLogger(__name__)

VERDICT = {("en", True): "Yes.", ("en", False): "No.", ("zh", True): "是。", ("zh", False): "否。"}
_LEVEL = {"avoid": "system1.x", "pair": "system1.x", "decide": "system2"}
KINDS = {"system1.x": ("avoid", "pair"), "system2": ("decide",)}


def _condition_rule(condition: Condition, lang: str) -> str:
    """The condition's rule in the CPT corpus's wording (``generate.corpus_statements``)."""
    table = ORGANS if condition.rule_kind == "organ" else EFFECTS
    value = _label(table, condition.rule_target, lang)
    if lang == "zh":
        what = f"经{value}清除的药物" if condition.rule_kind == "organ" else f"可引起{value}的药物"
        return f"{condition.name_zh}患者须避免{what}。"
    what = f"drugs cleared by {value}" if condition.rule_kind == "organ" else f"drugs that can cause {value}"
    return f"In patients with {condition.name_en}, {what} must be avoided."


def _option_line(
    letter: str, drug: Drug, attributes: Sequence[str], fits: bool, lang: str, verdicts: bool
) -> str:
    # English effects in the corpus's second wording ("X can cause Y."), so every line opens with the copied name
    facts = ("" if lang == "zh" else " ").join(
        _fact(drug, attribute, lang, int(lang == "en" and attribute == "effect")) for attribute in attributes
    )
    verdict = (" " if lang == "en" else "") + VERDICT[(lang, fits)] if verdicts else ""
    return f"{letter}. {facts}{verdict}"


def chain_item(
    world: World, rng: random.Random, kind: str, lang: str, qid: str, verdicts: bool = True
) -> MCQItem:
    """One System 1.x (``avoid``, ``pair``) or System 2 (``decide``) MCQ over ``world``'s drugs in a training
    wording, its reasoning the rule then one line per option in option order (module docstring); the reasoning
    has no answer line (the pipeline's ``data.sft_answer: text`` writes it)."""
    drugs = world.drugs
    if kind == "avoid":
        while True:
            condition = rng.choice(world.conditions)
            excluded = [d for d in drugs if condition.excludes(d)]
            allowed = [d for d in drugs if not condition.excludes(d)]
            if excluded and len(allowed) >= 3:
                break
        answer, others = rng.choice(excluded), rng.sample(allowed, k=3)
        rule = _condition_rule(condition, lang)
        attributes = ["organ" if condition.rule_kind == "organ" else "effect"]
        question = rng.choice(TRAIN_WORDINGS["avoid"][lang]["train"]).format(condition=condition.name(lang))
    elif kind == "pair":
        while True:
            answer = rng.choice(drugs)
            same_class = [d for d in drugs if d.drug_class == answer.drug_class and d.organ != answer.organ]
            same_organ = [d for d in drugs if d.organ == answer.organ and d.drug_class != answer.drug_class]
            neither = [d for d in drugs if d.organ != answer.organ and d.drug_class != answer.drug_class]
            if same_class and same_organ and neither:
                break
        others = [rng.choice(same_class), rng.choice(same_organ), rng.choice(neither)]
        klass, organ = _label(CLASSES, answer.drug_class, lang), _label(ORGANS, answer.organ, lang)
        rule = f"需要：经{organ}清除的{klass}。" if lang == "zh" else f"Wanted: a {klass} cleared by {organ}."
        attributes = ["class", "organ"]
        question = rng.choice(TRAIN_PAIR[lang]).format(klass=klass, organ=organ)
    elif kind == "decide":
        procedure, condition, answer, trap, outside = draw_decision(world, rng)
        others = [trap, *outside]
        klass = _label(CLASSES, procedure.drug_class, lang)
        # English: "the <procedure>" as every training and benchmark wording has it, so the name is copied after "the"
        needs = (
            f"实施{procedure.name_zh}需要使用{klass}。"
            if lang == "zh"
            else f"Rule: the {procedure.name_en} requires a {klass}."
        )
        rule = needs + ("" if lang == "zh" else " ") + _condition_rule(condition, lang)
        attributes = ["class", "organ" if condition.rule_kind == "organ" else "effect"]
        question = rng.choice(TRAIN_WORDINGS["decide"][lang]["train"]).format(
            procedure=procedure.name(lang), condition=condition.name(lang)
        )
    else:
        raise ValueError(f"chain_item: unknown kind {kind!r}; use avoid, pair or decide")
    order = [answer, *others]
    rng.shuffle(order)
    lines = [
        _option_line(letter, drug, attributes, drug is answer, lang, verdicts)
        for letter, drug in zip(LETTERS[:4], order, strict=True)
    ]
    return MCQItem(
        id=qid,
        question=question,
        options=tuple((letter, drug.name(lang)) for letter, drug in zip(LETTERS[:4], order, strict=True)),
        answer=LETTERS[order.index(answer)],
        language=lang,
        level=_LEVEL[kind],
        source="synthetic-train",
        metadata={"reasoning": "\n".join([rule, *lines]), "kind": kind, "split": "train"},
    )


# consecutive repeated draws after which chain_items gives up
STALE_DRAWS = 20_000


def chain_items(world: World, per_level: int, seed: int, prefix: str, verdicts: bool = True) -> list[MCQItem]:
    """``per_level`` System 1.x and ``per_level`` System 2 chains per language (System 1.x: ``avoid`` and
    ``pair`` drawn alike), distinct by question and options within a language and level."""
    rng = random.Random(f"{prefix}-{seed}")
    items: list[MCQItem] = []
    for lang in ("en", "zh"):
        for level, kinds in KINDS.items():
            seen: set[tuple] = set()
            attempts = stale = 0
            while len(seen) < per_level:
                attempts += 1
                # a world with too few drugs runs out of distinct chains: stop after 50 draws per chain asked for,
                # or after STALE_DRAWS draws in a row that find nothing new (the draws themselves are unchanged)
                if attempts > 50 * per_level or stale > STALE_DRAWS:
                    raise ValueError(
                        f"cannot draw {per_level} distinct {level} chains ({lang}): {len(seen)} found"
                    )
                item = chain_item(
                    world, rng, rng.choice(kinds), lang, f"{prefix}-{lang}-c{len(items):05d}", verdicts
                )
                signature = (item.question, item.options)
                if signature in seen:
                    stale += 1
                    continue
                stale = 0
                seen.add(signature)
                items.append(item)
    return items


def dev_chain_items(
    world_seed: int = 0, per_level: int = 30, seed: int = 7, verdicts: bool = True
) -> list[MCQItem]:
    """System 1.x and System 2 chains over the benchmark drugs (CPT-only facts) in training wordings, drawn with
    ``seed``: the dev set of revision 7's design trials, none of the benchmark's items or wordings."""
    world = build_miniature2_world(Miniature3Config(seed=world_seed).world_config())
    return chain_items(world.benchmark, per_level, seed, "mini7-dev", verdicts)


def option_copy_records(world_names: set[str], per_language: int, seed: int = 7) -> list[dict]:
    """Revision 6's name-copy items (made-up names no drug has; 'Which option is "Zelaquor"?') with the chains'
    per-option layout instead of a bare answer: each option's letter and name as the prompt writes them, then its
    verdict ("B. Zelaquor Yes."), so the items drill what every chain line starts with (copying the k-th option's
    name) and no System 1 answer can borrow their layout."""
    records = []
    for record in name_copy_records(world_names, per_language, seed):
        lang, asked = record["language"], record["options"][record["answer"]]
        sep = " " if lang == "en" else ""
        lines = [
            f"{letter}. {name}{sep}{VERDICT[(lang, name == asked)]}"
            for letter, name in record["options"].items()
        ]
        index = record["id"].rsplit("-n", 1)[-1]
        records.append({**record, "id": f"mini7-r1-{lang}-o{index}", "reasoning": "\n".join(lines)})
    return records


def write_chain_r1(
    world_dir: str | Path,
    out: str | Path,
    chains_per_level: int = 1000,
    lead_in: dict[str, str] | None = None,
    name_copies: int = 0,
    verdicts: bool = True,
    option_copies: int = 0,
    seed: int = 7,
) -> dict[str, int]:
    """Write revision 7's AnesR1 file: revision 3's System 1 fact items (``world_dir/anesr1/anesr1.jsonl``) as
    revision 6 rewrote them (no option sentence, ``lead_in``), its option-lookup items and its chains dropped,
    then ``chains_per_level`` new chains per level and language (:func:`chain_items` over the world's training
    drugs), ``name_copies`` name-copy items per language in revision 6's bare layout and ``option_copies`` in the
    chains' layout (:func:`option_copy_records`). Returns the record count per kind."""
    world_dir = Path(world_dir)
    source = world_dir / "anesr1" / "anesr1.jsonl"
    dump = json.loads((world_dir / "world.json").read_text(encoding="utf-8"))
    names = [drug[f"name_{lang}"] for drug in dump["drugs"] for lang in ("en", "zh")]
    world = build_miniature2_world(Miniature3Config(seed=dump["seed"]).world_config())
    if sorted(d.key for d in world.benchmark.drugs) != sorted(dump["benchmark_drugs"]):
        raise ValueError(f"{world_dir}/world.json: not the revision-3 world of seed {dump['seed']}")
    counts = {"fact": 0, "chain": 0, "name_copy": 0, "dropped": 0}
    records = []
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        if record["level"] != 1 or record["id"].rsplit("-", 1)[-1].startswith("l"):
            counts["dropped"] += 1
            continue
        record = without_option_sentence(record, f"{source}:{number}")
        records.append(with_lead_in(record, lead_in or {}, names))
        counts["fact"] += 1
    chains = [
        _r1_record(i) for i in chain_items(world.training, chains_per_level, seed, "mini7-r1", verdicts)
    ]
    copies = name_copy_records(set(names), name_copies) if name_copies else []
    copies += option_copy_records(set(names), option_copies, seed) if option_copies else []
    counts["chain"], counts["name_copy"] = len(chains), len(copies)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for record in [*records, *chains, *copies]:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    logger.info("revision-7 AnesR1 file written to %s: %s", out, counts)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="anessuite.synthetic.miniature7", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--world", required=True, help="folder written by `anessuite synth --design miniature3`"
    )
    parser.add_argument("--out", required=True, help="the AnesR1 JSONL to write")
    parser.add_argument("--chains", type=int, default=1000, help="chains per level (1.x, 2) and language")
    parser.add_argument(
        "--lead-in-en", default="", help="words before an English answer that opens with the drug"
    )
    parser.add_argument(
        "--name-copies", type=int, default=0, help="name-copy items per language (revision 6's)"
    )
    parser.add_argument(
        "--option-copies", type=int, default=0, help="name-copy items per language, chain layout"
    )
    parser.add_argument("--no-verdicts", action="store_true", help="option lines without Yes./No.")
    parser.add_argument("--seed", type=int, default=7, help="seed of the chains' draws")
    args = parser.parse_args(argv)
    counts = write_chain_r1(
        args.world,
        args.out,
        args.chains,
        {"en": args.lead_in_en},
        args.name_copies,
        not args.no_verdicts,
        args.option_copies,
        args.seed,
    )
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    from rlcore.logging_utils import setup_logging

    setup_logging()
    raise SystemExit(main())
