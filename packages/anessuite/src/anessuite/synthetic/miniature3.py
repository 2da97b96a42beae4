"""Revision 3 of the miniature's world: SFT data that teaches copying and option lookup as plentiful skills.

Revision 2 (``miniature2.py``) made the SFT data impossible to fit without copying the question's drug, but after
its registered 300 SFT steps the model copied nothing, and a longer SFT showed three further obstacles (README,
"Revision 2: pre-check result"): an English name tokenized differently at a sentence's start and inside it, the
option-text-to-letter lookup never learned, and the benchmark's held-out wordings answered about the wrong
attribute. This design keeps revision 2's world (the same drugs, names, facts, CPT corpus and AnesQA pairs, by
seed) and changes what SFT sees and how text is cut into tokens:

* **every training fact as a multiple-choice question**: each training drug's class, clearance organ and adverse
  effect is asked once per language in the evaluation's MCQ layout (540 System 1 items per language instead of
  200), each in one of eight training wordings per kind (revision 2: two), none of them a benchmark wording;
* **option lookup as its own skill**: every training answer restates the chosen option's text right before its
  letter and the answer line ("... is bradycardia. bradycardia is option D.\\nAnswer: D"), and separate short
  *lookup* items ask which option holds a given text (the same restatement, nothing else to recall);
* **the same pieces for a name everywhere**: the from-scratch tokenizer (:data:`SCRATCH_VOCAB_SIZE`,
  :data:`SPACE_BEFORE_CAPITAL`) splits the space before a capital letter off as its own token, so "Koradrol" is
  the same pieces at a sentence's start, after "of " and after a line break.

System 1.x and System 2 training items, the benchmark (its generator, sizes, levels and held-out wordings) and the
probe statements are revision 2's.

    python -m anessuite synth --design miniature3 --out data/miniature3 --seed 0
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from anessuite.mcq import MCQItem
from anessuite.synthetic.miniature import (
    HELDOUT,
    MINI_TEMPLATES,
    _items,
    miniature_paths,
    write_r1_benchmark_probe_world,
)
from anessuite.synthetic.miniature2 import (
    Miniature2Config,
    _with_option_sentence,
    build_miniature2_world,
    write_corpus_and_anesqa,
)
from anessuite.synthetic.questions import _label, _shuffle, answer_line, make_question
from anessuite.synthetic.world import CLASSES, EFFECTS, ORGANS, World

__all__ = [
    "SCRATCH_VOCAB_SIZE",
    "SPACE_BEFORE_CAPITAL",
    "TRAIN_WORDINGS",
    "Miniature3Config",
    "generate_miniature3_data",
    "lookup_item",
]

logger = logging.getLogger(__name__)

MINIATURE3_VERSION = 1
SCRATCH_VOCAB_SIZE = 1024  # revision 2's vocabulary: a name stays 2-4 pieces shared with training names
# the tokenizer isolates the space before a capital letter, so a name's pieces never change
SPACE_BEFORE_CAPITAL = True

# Training wordings per kind and language: revision 2's two (questions.TEMPLATES "train") plus six (class, organ,
# effect) or two (avoid, decide) more. None is a benchmark wording (miniature.HELDOUT; tested).
_MORE = {
    "class": {
        "en": [
            "What class of drug is {drug}?",
            "To which group of agents does {drug} belong?",
            "{drug} is a member of which drug class?",
            "Name the class of {drug}.",
            "Which of these classes includes {drug}?",
            "What type of agent is {drug}?",
        ],
        "zh": [
            "{drug}是什么类别的药物？",
            "{drug}归属于哪个药物类别？",
            "请问{drug}属于哪类药？",
            "下列哪一类包含{drug}？",
            "{drug}的药物类别是什么？",
            "{drug}是哪种类型的药物？",
        ],
    },
    "organ": {
        "en": [
            "How is {drug} cleared from the body?",
            "What removes {drug} from the body?",
            "Which organ or pathway eliminates {drug}?",
            "{drug} is cleared by which of these?",
            "By what route is {drug} eliminated?",
            "Where is {drug} mainly cleared?",
        ],
        "zh": [
            "{drug}是如何从体内清除的？",
            "{drug}经什么途径消除？",
            "请问{drug}主要由哪里清除？",
            "{drug}的消除途径是哪一项？",
            "哪一途径负责{drug}的清除？",
            "{drug}靠什么排出体外？",
        ],
    },
    "effect": {
        "en": [
            "What side effect does {drug} cause?",
            "Which complication is {drug} known to cause?",
            "{drug} is associated with which adverse effect?",
            "What is the typical side effect of {drug}?",
            "Which unwanted effect is linked to {drug}?",
            "{drug} typically causes which of these?",
        ],
        "zh": [
            "{drug}会引起什么副作用？",
            "使用{drug}最常见的不良反应是什么？",
            "{drug}与哪种不良反应相关？",
            "请问{drug}的典型副作用是哪一项？",
            "{drug}可能导致以下哪种并发症？",
            "{drug}的主要不良反应是什么？",
        ],
    },
    "avoid": {
        "en": [
            "In a patient with {condition}, which of these drugs should not be given?",
            "Which of these drugs should be withheld from a patient with {condition}?",
        ],
        "zh": ["{condition}患者不宜使用以下哪种药物？", "对于患有{condition}的人，哪种药物应避免？"],
    },
    "decide": {
        "en": [
            "For the {procedure} in a patient with {condition}, which agent fits best?",
            "A patient with {condition} needs the {procedure}. Which drug do you give?",
        ],
        "zh": [
            "{condition}患者需要{procedure}，应使用哪种药物？",
            "为{condition}患者实施{procedure}时，哪种药物最合适？",
        ],
    },
}
TRAIN_WORDINGS = {
    kind: {
        lang: {
            "heldout": HELDOUT[kind][lang],
            "train": MINI_TEMPLATES[kind][lang]["train"] + _MORE[kind][lang],
        }
        for lang in ("en", "zh")
    }
    for kind in MINI_TEMPLATES
}
# Lookup items: which option holds a given text (no fact to recall; the answer restates the text, then the letter).
LOOKUP_WORDINGS = {
    "en": ['Which option is "{text}"?', 'Find the option "{text}".', 'Which letter does "{text}" have?'],
    "zh": ["哪个选项是“{text}”？", "找出选项“{text}”。", "“{text}”是哪个选项？"],
}


@dataclass
class Miniature3Config:
    """Sizes of revision 3's data (README.md, "Revisions", revision 3); the world is revision 2's by seed."""

    seed: int = 0  # world and sampling seed (the same world as revision 2's at this seed)
    facts_as_mcq: bool = True  # every training drug's three facts as one System 1 MCQ per language
    system1x_per_language: int = 100  # System 1.x MCQs per language (revision 2: 100)
    system2_per_language: int = 100  # System 2 MCQs per language (revision 2: 100)
    lookup_per_language: int = 150  # option-lookup items per language
    bench_en: tuple[int, int, int] = (150, 90, 60)  # EN System 1 / 1.x / 2 (unchanged)
    bench_zh: tuple[int, int, int] = (150, 90, 60)  # ZH System 1 / 1.x / 2 (unchanged)

    def world_config(self) -> Miniature2Config:
        return Miniature2Config(seed=self.seed, bench_en=self.bench_en, bench_zh=self.bench_zh)


def lookup_item(world: World, rng: random.Random, lang: str, qid: str) -> MCQItem:
    """One option-lookup item: four values of one attribute (or four of ``world``'s drug names), the question
    quotes one of them, the reasoning restates it with its letter."""
    table = rng.choice(["class", "organ", "effect", "drug"])
    if table == "drug":
        texts = [d.name(lang) for d in rng.sample(world.drugs, k=4)]
    else:
        values = {"class": CLASSES, "organ": ORGANS, "effect": EFFECTS}[table]
        texts = [_label(values, k, lang) for k in rng.sample(list(values), k=4)]
    options, letter = _shuffle(rng, texts[0], texts[1:])
    text = texts[0]
    restated = f"{text}是选项{letter}。" if lang == "zh" else f"{text} is option {letter}."
    return MCQItem(
        id=qid,
        question=rng.choice(LOOKUP_WORDINGS[lang]).format(text=text),
        options=options,
        answer=letter,
        language=lang,
        level="system1",
        source="synthetic-train",
        metadata={
            "reasoning": f"{restated}\n{answer_line(letter, lang)}",
            "kind": "lookup",
            "split": "train",
        },
    )


def fact_items(world: World, rng: random.Random, lang: str, prefix: str) -> list[MCQItem]:
    """Every drug's class, organ and effect as one System 1 MCQ in a training wording (drug order shuffled)."""
    items = []
    for drug in world.drugs:
        one = World(world.seed, [drug], world.procedures, world.conditions)
        for kind in ("class", "organ", "effect"):
            qid = f"{prefix}-{lang}-f{len(items):05d}"
            items.append(make_question(one, rng, kind, lang, "train", qid, templates=TRAIN_WORDINGS))
    return items


def generate_miniature3_data(out: str | Path, cfg: Miniature3Config | None = None) -> dict[str, Path]:
    """Every file of revision 3 under ``out`` (the miniature layout: corpus, anesqa, anesr1, benchmark, probe)."""
    cfg = cfg or Miniature3Config()
    out = Path(out)
    world_cfg = cfg.world_config()
    world = build_miniature2_world(world_cfg)
    paths = miniature_paths(out)
    # the same stream as revision 2 up to the AnesR1 items: its CPT corpus and AnesQA pairs, byte for byte
    rng, num_pairs = write_corpus_and_anesqa(world, world_cfg, paths)
    r1: list[MCQItem] = []
    for lang in ("en", "zh"):
        per_level = {
            "system1": 0,
            "system1.x": cfg.system1x_per_language,
            "system2": cfg.system2_per_language,
        }
        items = _items(world.training, rng, lang, "train", per_level, "mini3-r1", templates=TRAIN_WORDINGS)
        if cfg.facts_as_mcq:
            items += fact_items(world.training, rng, lang, "mini3-r1")
        items += [
            lookup_item(world.training, rng, lang, f"mini3-r1-{lang}-l{i:05d}")
            for i in range(cfg.lookup_per_language)
        ]
        r1 += [_with_option_sentence(item) if item.metadata["kind"] != "lookup" else item for item in items]
    counts = write_r1_benchmark_probe_world(world, world_cfg, rng, r1, paths, out, "mini3-bench")
    kinds: dict[str, int] = {}
    for item in r1:
        kinds[item.metadata["kind"]] = kinds.get(item.metadata["kind"], 0) + 1
    manifest = {
        "design": "miniature3",
        "miniature3_version": MINIATURE3_VERSION,
        "config": asdict(cfg),
        "world_config": asdict(world_cfg),
        "benchmark_counts": counts,
        "anesqa_pairs": num_pairs,
        "anesr1_items": len(r1),
        "anesr1_kinds": dict(sorted(kinds.items())),
        "tokenizer": {"vocab_size": SCRATCH_VOCAB_SIZE, "space_before_capital": SPACE_BEFORE_CAPITAL},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    logger.info("miniature revision-3 world (seed %d) written to %s: %s", cfg.seed, out, counts)
    return paths
