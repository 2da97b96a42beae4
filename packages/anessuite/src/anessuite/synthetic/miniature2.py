"""Revision 2 of the miniature's world: SFT data that cannot be fitted without copying the question's drug.

Design 1 (``miniature.py``) trained SFT and GRPO on 24 drugs, each named in about forty SFT records; a 1M-parameter
model fitted that data by memorising sentences about those 24 drugs and answered every benchmark question with one
of them. Here the split is the same in kind but not in size:

* **benchmark drugs** (4 per class, 24) - as before, every fact about them is only in the CPT corpus; their names
  never occur in the SFT data nor in the GRPO prompts;
* **training drugs** (30 per class by default, 180) - the SFT and GRPO questions are about these, each drug named
  in a few SFT records only, and **every training drug's facts are in the CPT corpus too**. The SFT target "The X
  of <drug> is <fact>" can then only be written by copying <drug> from the question and recalling <fact> from
  what CPT stored: there are too many drugs, each seen too rarely, for a fixed sentence to pay.

Names are built from shared syllables (head + middle + tail, distinct triples), and the from-scratch model's
tokenizer is fitted with a vocabulary small enough (:data:`SCRATCH_VOCAB_SIZE`) that a name is two to four pieces
rather than one token of its own: the pieces a benchmark drug's name is made of also occur in training drugs'
names, so copying them is trained by SFT even though the benchmark names never appear there. (Design 1's
2,048-token vocabulary gave every drug name a token of its own, so a benchmark name's token was never copied in
SFT.) The training MCQs' reasoning names the chosen option's text before its
letter ("bradycardia is option D."), so the letter is itself read off the prompt, not guessed.

The CPT corpus states, per pass, every drug's class, clearance organ and adverse effect once (documents of two
drugs each, mostly in the corpus wording the probe uses), plus the procedures' and conditions' rules. The
benchmark, its levels and the probe file are built by design 1's code over the benchmark drugs.

    python -m anessuite synth --design miniature2 --out data/miniature2 --seed 0
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from anessuite.mcq import LEVELS, MCQItem
from anessuite.synthetic.generate import _write_parquet, corpus_statements
from anessuite.synthetic.miniature import (
    PROBE,
    MiniatureWorld,
    _items,
    miniature_paths,
    write_r1_benchmark_probe_world,
)
from anessuite.synthetic.questions import _label
from anessuite.synthetic.world import (
    _EN_HEAD,
    _EN_MID,
    _EN_TAIL,
    _ZH_HEAD,
    _ZH_MID,
    _ZH_TAIL,
    CLASSES,
    EFFECTS,
    ONSETS,
    ORGANS,
    Drug,
    World,
    build_world,
)

__all__ = [
    "SCRATCH_VOCAB_SIZE",
    "Miniature2Config",
    "build_miniature2_world",
    "generate_miniature2_data",
    "option_sentence",
]

logger = logging.getLogger(__name__)

MINIATURE2_VERSION = 1
# Vocabulary of the from-scratch model's tokenizer for this design: at 1,024 every drug name is 2-4 tokens and every
# token of a benchmark name also occurs in the SFT data (at 2,048 every name is one token; README, revision 2).
SCRATCH_VOCAB_SIZE = 1024

# A second wording per fact (the corpus's first wording is the probe's "corpus" wording, PROBE[...][0]).
_ALTERNATIVE = {
    ("class", "en"): "{n} belongs to the {value} group.",
    ("organ", "en"): "{n} is eliminated mainly by {value}.",
    ("effect", "en"): "{n} can cause {value}.",
    ("class", "zh"): "{n}是一种{value}。",
    ("organ", "zh"): "{n}主要由{value}消除。",
    ("effect", "zh"): "使用{n}时需警惕{value}。",
}
_FIELD = {"class": ("drug_class", CLASSES), "organ": ("organ", ORGANS), "effect": ("effect", EFFECTS)}


@dataclass
class Miniature2Config:
    """Sizes of revision 2's data (README.md, "Revisions", revision 2)."""

    seed: int = 0  # world and sampling seed
    training_drugs_per_class: int = 30  # SFT/GRPO drugs per class (6 classes: 180), each in few SFT records
    benchmark_drugs_per_class: int = 4  # CPT-only drugs per class (24, as in design 1)
    cpt_passes_en: int = 40  # English corpus: each pass states every drug's three facts once
    cpt_passes_zh: int = 40  # Chinese corpus, the same
    corpus_wording_share: float = 0.75  # share of fact statements in the probe's wording (else the second)
    rlvr_per_language: int = 400  # SFT/GRPO MCQs per language (training drugs only)
    bench_en: tuple[int, int, int] = (150, 90, 60)  # EN System 1 / 1.x / 2
    bench_zh: tuple[int, int, int] = (150, 90, 60)  # ZH System 1 / 1.x / 2


def _syllable_names(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """Distinct (head, middle, tail) names in EN and in ZH, aligned by position."""
    en = [(h, m, t) for h in _EN_HEAD for m in _EN_MID for t in _EN_TAIL]
    zh = [(h, m, t) for h in _ZH_HEAD for m in _ZH_MID for t in _ZH_TAIL]
    if count > min(len(en), len(zh)):
        raise ValueError(f"at most {min(len(en), len(zh))} drugs can get distinct names")
    return [("".join(a), "".join(b)) for a, b in zip(rng.sample(en, k=count), rng.sample(zh, k=count))]


def build_miniature2_world(cfg: Miniature2Config) -> MiniatureWorld:
    """Per class, ``training + benchmark`` drugs with balanced organs and effects; a seeded choice of
    ``benchmark_drugs_per_class`` of them are the benchmark's. Procedures and conditions are the default world's."""
    if cfg.benchmark_drugs_per_class < 2 or cfg.training_drugs_per_class < 2:
        raise ValueError("benchmark_drugs_per_class and training_drugs_per_class must be at least 2")
    per_class = cfg.training_drugs_per_class + cfg.benchmark_drugs_per_class
    rng = random.Random(f"anessuite-miniature2-{cfg.seed}")
    base = build_world(cfg.seed)
    names = _syllable_names(rng, per_class * len(CLASSES))
    drugs, bench_keys = [], set()
    for class_index, class_key in enumerate(CLASSES):
        organs = (list(ORGANS) * per_class)[:per_class]
        effects = (list(EFFECTS) * per_class)[:per_class]
        rng.shuffle(organs)
        rng.shuffle(effects)
        benchmark_slots = set(rng.sample(range(per_class), k=cfg.benchmark_drugs_per_class))
        for slot in range(per_class):
            en, zh = names[class_index * per_class + slot]
            drug = Drug(
                f"drug{len(drugs)}", en, zh, class_key, organs[slot], effects[slot], rng.choice(list(ONSETS))
            )
            drugs.append(drug)
            if slot in benchmark_slots:
                bench_keys.add(drug.key)
    procs, conds = base.procedures, base.conditions
    return MiniatureWorld(
        full=World(cfg.seed, drugs, procs, conds),
        benchmark=World(cfg.seed, [d for d in drugs if d.key in bench_keys], procs, conds),
        training=World(cfg.seed, [d for d in drugs if d.key not in bench_keys], procs, conds),
    )


def _fact(drug: Drug, attribute: str, lang: str, wording: int) -> str:
    field_name, table = _FIELD[attribute]
    pattern = PROBE[(attribute, lang)][0] if wording == 0 else _ALTERNATIVE[(attribute, lang)]
    return pattern.format(n=drug.name(lang), value=_label(table, getattr(drug, field_name), lang))


def cpt_documents(world: World, lang: str, passes: int, corpus_share: float, rng: random.Random) -> list[str]:
    """``passes`` x (every drug once): documents of two drugs' three facts each (shuffled order, the corpus
    wording with probability ``corpus_share``), every other document followed by one rule statement."""
    rules = corpus_statements(world, lang)[-(len(world.procedures) + len(world.conditions)) :]
    sep = "" if lang == "zh" else " "
    docs = []
    for _ in range(passes):
        order = list(world.drugs)
        rng.shuffle(order)
        for start in range(0, len(order), 2):
            facts = [
                _fact(drug, attribute, lang, 0 if rng.random() < corpus_share else 1)
                for drug in order[start : start + 2]
                for attribute in rng.sample(list(_FIELD), k=len(_FIELD))
            ]
            if start % 4 == 0:
                facts.append(rng.choice(rng.choice(rules)))
            docs.append(sep.join(facts))
    return docs


def training_qa_pairs(world: World, lang: str) -> list[tuple[str, str]]:
    """AnesQA-style pairs: the three facts of every training drug (answers in the corpus wording), and each
    condition's rule. No pair lists a class's drugs (a class has 36 of them here)."""
    questions = {
        ("class", "en"): "What kind of drug is {n}?",
        ("organ", "en"): "How is {n} eliminated?",
        ("effect", "en"): "What adverse effect is {n} known for?",
        ("class", "zh"): "{n}是哪一类药物？",
        ("organ", "zh"): "{n}如何清除？",
        ("effect", "zh"): "{n}有什么特征性不良反应？",
    }
    pairs = [
        (questions[(attribute, lang)].format(n=drug.name(lang)), _fact(drug, attribute, lang, 0))
        for drug in world.drugs
        for attribute in _FIELD
    ]
    for condition in world.conditions:
        rule_en, rule_zh = condition.name_en, condition.name_zh
        target = _label(ORGANS if condition.rule_kind == "organ" else EFFECTS, condition.rule_target, lang)
        if lang == "zh":
            rule = f"经{target}清除的药物" if condition.rule_kind == "organ" else f"可引起{target}的药物"
            pairs.append((f"{rule_zh}患者麻醉时需要避免什么？", f"{rule_zh}患者须避免{rule}。"))
        else:
            rule = (
                f"drugs cleared by {target}"
                if condition.rule_kind == "organ"
                else f"drugs that can cause {target}"
            )
            pairs.append(
                (
                    f"What must be avoided when anesthetizing a patient with {rule_en}?",
                    f"In patients with {rule_en}, {rule} must be avoided.",
                )
            )
    return pairs


def option_sentence(item: MCQItem) -> str:
    """The sentence naming the chosen option's text before its letter: "<text> is option D." / "<text>是选项D。"."""
    text = item.option_text(item.answer)
    return f"{text}是选项{item.answer}。" if item.language == "zh" else f"{text} is option {item.answer}."


def _with_option_sentence(item: MCQItem) -> MCQItem:
    """The item with :func:`option_sentence` inserted before the reasoning's answer line."""
    why, answer = item.metadata["reasoning"].rsplit("\n", 1)
    sep = "" if item.language == "zh" else " "
    item.metadata["reasoning"] = f"{why}{sep}{option_sentence(item)}\n{answer}"
    return item


def write_corpus_and_anesqa(
    world: MiniatureWorld, cfg: Miniature2Config, paths: dict[str, Path]
) -> tuple[random.Random, int]:
    """Revision 2's CPT corpus (per language) and AnesQA pairs into ``paths``; returns the data stream, drawn up to
    that point, for the files that follow (revision 3 writes the same corpus and pairs, byte for byte) and the
    number of pairs."""
    rng = random.Random(f"anessuite-miniature2-data-{cfg.seed}")
    for lang, passes in (("en", cfg.cpt_passes_en), ("zh", cfg.cpt_passes_zh)):
        docs = cpt_documents(world.full, lang, passes, cfg.corpus_wording_share, rng)
        _write_parquet(paths["corpus"] / f"AnesCorpus_{lang}-00000-of-00001.parquet", {"text": docs})
    pairs = [pair for lang in ("en", "zh") for pair in training_qa_pairs(world.training, lang)]
    rng.shuffle(pairs)
    _write_parquet(paths["anesqa"], {"question": [q for q, _ in pairs], "answer": [a for _, a in pairs]})
    return rng, len(pairs)


def generate_miniature2_data(out: str | Path, cfg: Miniature2Config | None = None) -> dict[str, Path]:
    """Every file of revision 2 under ``out`` (design 1's layout: corpus, anesqa, anesr1, benchmark, probe)."""
    cfg = cfg or Miniature2Config()
    out = Path(out)
    world = build_miniature2_world(cfg)
    paths = miniature_paths(out)
    rng, num_pairs = write_corpus_and_anesqa(world, cfg, paths)
    share = {"system1": 0.5, "system1.x": 0.25, "system2": 0.25}
    r1: list[MCQItem] = []
    for lang in ("en", "zh"):
        per_level = {lvl: round(cfg.rlvr_per_language * share[lvl]) for lvl in LEVELS}
        items = _items(world.training, rng, lang, "train", per_level, "mini2-r1")
        r1 += [_with_option_sentence(item) for item in items]
    counts = write_r1_benchmark_probe_world(world, cfg, rng, r1, paths, out, "mini2-bench")
    manifest = {
        "design": "miniature2",
        "miniature2_version": MINIATURE2_VERSION,
        "config": asdict(cfg),
        "benchmark_counts": counts,
        "cpt_documents": {
            "en": cfg.cpt_passes_en * -(-len(world.full.drugs) // 2),
            "zh": cfg.cpt_passes_zh * -(-len(world.full.drugs) // 2),
        },
        "anesqa_pairs": num_pairs,
        "anesr1_items": len(r1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    logger.info("miniature revision-2 world (seed %d) written to %s: %s", cfg.seed, out, counts)
    return paths
