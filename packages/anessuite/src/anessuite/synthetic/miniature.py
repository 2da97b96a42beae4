"""The miniature's world: knowledge that only continued pre-training can supply.

The default world (``generate.py``) shares its facts between every file: the benchmark differs from the training
data only in wording. Here the drugs are split in two disjoint sets:

* **benchmark drugs** - every fact about them (class, clearance organ, adverse effect, onset) is written only in
  the CPT corpus; their names never occur in the SFT data (AnesQA, AnesR1) nor in the GRPO prompts;
* **training drugs** - the SFT and GRPO questions are about these, with the same kinds of questions and
  reasoning chains, so SFT and GRPO can teach the answer format and the reasoning, not the benchmark's facts.

Rules (which drug class a procedure needs, which drugs a condition excludes) are textbook rules shared by every
file. Levels: System 1 asks one fact of a benchmark drug; System 1.x combines two (a condition's rule with a drug's
clearance or adverse effect, or a drug's class with its clearance); System 2 needs a chain (procedure -> class ->
the class's drugs -> the condition's exclusion -> the one drug left). ``probe/facts.jsonl`` holds each benchmark
fact as a statement with same-attribute distractors, in the corpus's wording and in a wording CPT never saw,
for :mod:`anessuite.knowledge_probe`.

    python -m anessuite synth --design miniature --out data/miniature --seed 0
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from anessuite.mcq import LEVELS, MCQItem
from anessuite.synthetic.generate import _documents, _r1_record, _write_parquet, anesbench_record, qa_pairs
from anessuite.synthetic.questions import TEMPLATES, _label, _shuffle, answer_line, make_question
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

__all__ = ["MiniatureConfig", "build_miniature_world", "generate_miniature_data", "probe_statements_for"]

logger = logging.getLogger(__name__)

MINIATURE_VERSION = 1

# Benchmark wordings: the default world's held-out template plus two more per kind; none is a training template.
HELDOUT = {
    "class": {
        "en": TEMPLATES["class"]["en"]["heldout"]
        + [
            "In the formulary, {drug} is listed under which class?",
            "Pharmacologically, {drug} is best described as which of the following?",
        ],
        "zh": TEMPLATES["class"]["zh"]["heldout"]
        + ["在药品目录中，{drug}被列为哪一类？", "从药理学角度看，{drug}最符合以下哪一项？"],
    },
    "organ": {
        "en": TEMPLATES["organ"]["en"]["heldout"]
        + [
            "Which of the following is mainly responsible for eliminating {drug}?",
            "{drug} relies mostly on which of these for its clearance?",
        ],
        "zh": TEMPLATES["organ"]["zh"]["heldout"]
        + ["体内消除{drug}主要靠以下哪一项？", "以下哪一项负责清除{drug}？"],
    },
    "effect": {
        "en": TEMPLATES["effect"]["en"]["heldout"]
        + [
            "Which adverse effect is {drug} best known for?",
            "A patient received {drug}. Which side effect is most characteristic?",
        ],
        "zh": TEMPLATES["effect"]["zh"]["heldout"]
        + ["{drug}最具特征的副作用是以下哪一项？", "患者使用了{drug}，最典型的副作用是什么？"],
    },
    "avoid": {
        "en": TEMPLATES["avoid"]["en"]["heldout"]
        + ["For a patient with {condition}, which of these agents is contraindicated?"],
        "zh": TEMPLATES["avoid"]["zh"]["heldout"] + ["对于{condition}患者，下列哪种药物属于禁忌？"],
    },
    "decide": {"en": TEMPLATES["decide"]["en"]["heldout"], "zh": TEMPLATES["decide"]["zh"]["heldout"]},
    "pair": {
        "en": ["Which of the following is a {klass} cleared by {organ}?"],
        "zh": ["下列哪种药物是经{organ}清除的{klass}？"],
    },
}
TRAIN_PAIR = {
    "en": ["Among these drugs, which {klass} is eliminated by {organ}?"],
    "zh": ["以下药物中，哪一种{klass}由{organ}消除？"],
}
MINI_TEMPLATES = {
    kind: {
        lang: {"heldout": HELDOUT[kind][lang], "train": TEMPLATES[kind][lang]["train"]}
        for lang in ("en", "zh")
    }
    for kind in ("class", "organ", "effect", "avoid", "decide")
}
LEVEL_KINDS = {"system1": ["class", "organ", "effect"], "system1.x": ["avoid", "pair"], "system2": ["decide"]}

# Probe statements: the corpus's first wording, and a wording that occurs in no file.
PROBE = {
    ("class", "en"): ("{n} is a {value}.", "{n} is pharmacologically classed as a {value}."),
    ("organ", "en"): ("{n} is cleared by {value}.", "The elimination of {n} relies on {value}."),
    ("effect", "en"): (
        "The characteristic adverse effect of {n} is {value}.",
        "Patients given {n} may develop {value}.",
    ),
    ("class", "zh"): ("{n}属于{value}。", "按药理分类，{n}归入{value}。"),
    ("organ", "zh"): ("{n}经{value}清除。", "{n}的消除依赖于{value}。"),
    ("effect", "zh"): ("{n}的特征性不良反应是{value}。", "用药后，{n}可能导致{value}。"),
}
_ATTR = {"class": ("drug_class", CLASSES), "organ": ("organ", ORGANS), "effect": ("effect", EFFECTS)}


@dataclass
class MiniatureConfig:
    """Sizes of the miniature's data (the benchmark: >= 600 items over EN/ZH x three levels)."""

    seed: int = 0  # world and sampling seed
    drugs_per_class: int = 8  # drugs per class (6 classes)
    benchmark_drugs_per_class: int = 4  # of which CPT-only (the rest are SFT/GRPO's)
    cpt_docs_en: int = 2400  # CPT documents in English
    cpt_docs_zh: int = 1200  # CPT documents in Chinese (2:1, so ZH facts are seen often enough to learn)
    rlvr_per_language: int = 400  # SFT/GRPO MCQs per language (training drugs only)
    bench_en: tuple[int, int, int] = (150, 90, 60)  # EN System 1 / 1.x / 2
    bench_zh: tuple[int, int, int] = (150, 90, 60)  # ZH System 1 / 1.x / 2


@dataclass
class MiniatureWorld:
    full: World  # every drug: what the CPT corpus describes
    benchmark: World  # benchmark drugs only (CPT-only facts)
    training: World  # training drugs only (SFT / GRPO)


def _names(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """Distinct EN and ZH names: no two share both their first and last syllable."""
    en_pairs = [(h, t) for h in _EN_HEAD for t in _EN_TAIL]
    zh_pairs = [(h, t) for h in _ZH_HEAD for t in _ZH_TAIL]
    if count > min(len(en_pairs), len(zh_pairs)):
        raise ValueError(f"at most {min(len(en_pairs), len(zh_pairs))} drugs can get distinct names")
    en = rng.sample(en_pairs, k=count)
    zh = rng.sample(zh_pairs, k=count)
    return [(h + rng.choice(_EN_MID) + t, hz + rng.choice(_ZH_MID) + tz) for (h, t), (hz, tz) in zip(en, zh)]


def build_miniature_world(cfg: MiniatureConfig) -> MiniatureWorld:
    """Drugs with balanced attributes per class; the first ``benchmark_drugs_per_class`` of each class (after a
    seeded shuffle) are the benchmark's. Procedures and conditions are the default world's."""
    if not 0 < cfg.benchmark_drugs_per_class < cfg.drugs_per_class:
        raise ValueError("benchmark_drugs_per_class must be between 1 and drugs_per_class - 1")
    rng = random.Random(f"anessuite-miniature-{cfg.seed}")
    base = build_world(cfg.seed)
    names = _names(rng, cfg.drugs_per_class * len(CLASSES))
    drugs, bench_keys = [], set()
    for class_index, class_key in enumerate(CLASSES):
        organs = (list(ORGANS) * cfg.drugs_per_class)[: cfg.drugs_per_class]
        effects = (list(EFFECTS) * cfg.drugs_per_class)[: cfg.drugs_per_class]
        rng.shuffle(organs)
        rng.shuffle(effects)
        slots = list(range(cfg.drugs_per_class))
        rng.shuffle(slots)
        for slot in range(cfg.drugs_per_class):
            en, zh = names[class_index * cfg.drugs_per_class + slot]
            drug = Drug(
                f"drug{len(drugs)}", en, zh, class_key, organs[slot], effects[slot], rng.choice(list(ONSETS))
            )
            drugs.append(drug)
            if slots[slot] < cfg.benchmark_drugs_per_class:
                bench_keys.add(drug.key)
    procs, conds = base.procedures, base.conditions
    return MiniatureWorld(
        full=World(cfg.seed, drugs, procs, conds),
        benchmark=World(cfg.seed, [d for d in drugs if d.key in bench_keys], procs, conds),
        training=World(cfg.seed, [d for d in drugs if d.key not in bench_keys], procs, conds),
    )


def _pair(world: World, rng: random.Random, lang: str, split: str, qid: str) -> MCQItem:
    """System 1.x from two facts of one drug: its class and its clearance organ."""
    while True:
        target = rng.choice(world.drugs)
        same_class = [d for d in world.drugs if d.drug_class == target.drug_class and d.organ != target.organ]
        same_organ = [d for d in world.drugs if d.organ == target.organ and d.drug_class != target.drug_class]
        neither = [d for d in world.drugs if d.organ != target.organ and d.drug_class != target.drug_class]
        if same_class and same_organ and neither:
            break
    others = [rng.choice(same_class), rng.choice(same_organ), rng.choice(neither)]
    klass, organ = _label(CLASSES, target.drug_class, lang), _label(ORGANS, target.organ, lang)
    template = rng.choice((HELDOUT["pair"] if split == "heldout" else TRAIN_PAIR)[lang])
    options, letter = _shuffle(rng, target.name(lang), [d.name(lang) for d in others])
    if lang == "zh":
        facts = "；".join(
            f"{d.name_zh}属于{_label(CLASSES, d.drug_class, lang)}，经{_label(ORGANS, d.organ, lang)}清除"
            for d in [*others, target]
        )
        why = f"{facts}。同时满足两个条件的只有{target.name_zh}。"
    else:
        facts = "; ".join(
            f"{d.name_en} is a {_label(CLASSES, d.drug_class, lang)} cleared by {_label(ORGANS, d.organ, lang)}"
            for d in [*others, target]
        )
        why = f"{facts}. Only {target.name_en} satisfies both conditions."
    return MCQItem(
        id=qid,
        question=template.format(klass=klass, organ=organ),
        options=options,
        answer=letter,
        language=lang,
        level="system1.x",
        source=f"synthetic-{split}",
        metadata={"reasoning": f"{why}\n{answer_line(letter, lang)}", "kind": "pair", "split": split},
    )


def _items(
    world: World,
    rng: random.Random,
    lang: str,
    split: str,
    per_level: dict[str, int],
    prefix: str,
    templates: dict[str, dict[str, dict[str, list[str]]]] | None = None,
):
    """Questions over ``world``'s drugs, distinct by (stem, answer) for the benchmark, ``per_level`` counts;
    ``templates`` (default :data:`MINI_TEMPLATES`) gives the wordings of every kind but ``pair``."""
    items: list[MCQItem] = []
    for level in LEVELS:
        seen: set[tuple[str, str]] = set()
        made, attempts = 0, 0
        while made < per_level[level]:
            attempts += 1
            if attempts > 200 * max(1, per_level[level]):
                raise ValueError(
                    f"cannot draw {per_level[level]} distinct {level} questions ({lang}, {split})"
                )
            kind = rng.choice(LEVEL_KINDS[level])
            qid = f"{prefix}-{lang}-{len(items):05d}"
            if kind == "pair":
                item = _pair(world, rng, lang, split, qid)
            else:
                item = make_question(
                    world, rng, kind, lang, split, qid, templates=templates or MINI_TEMPLATES
                )
            signature = (item.question, item.option_text(item.answer))
            if split == "heldout" and signature in seen:
                continue
            seen.add(signature)
            items.append(item)
            made += 1
    return items


def probe_statements_for(world: World) -> list[dict[str, Any]]:
    """Every fact of ``world``'s drugs as probe records (both languages, corpus and unseen wording)."""
    records = []
    for drug in world.drugs:
        for attribute, (field_name, table) in _ATTR.items():
            key = getattr(drug, field_name)
            for lang in ("en", "zh"):
                for phrasing, pattern in zip(("corpus", "heldout"), PROBE[(attribute, lang)]):
                    records.append(
                        {
                            "id": f"{drug.key}-{attribute}-{lang}-{phrasing}",
                            "language": lang,
                            "attribute": attribute,
                            "phrasing": phrasing,
                            "template": pattern.replace("{n}", drug.name(lang)),
                            "true_value": _label(table, key, lang),
                            "distractors": [_label(table, k, lang) for k in table if k != key],
                        }
                    )
    return records


def miniature_paths(out: Path) -> dict[str, Path]:
    """The files of a miniature world under ``out`` (the default world's layout plus ``probe/``)."""
    return {
        "root": out,
        "corpus": out / "corpus",
        "anesqa": out / "anesqa" / "AnesQA.parquet",
        "anesr1": out / "anesr1" / "anesr1.jsonl",
        "benchmark": out / "benchmark",
        "probe": out / "probe" / "facts.jsonl",
    }


def system1_r1_items(world: Path, per_language: int) -> list[MCQItem]:
    """The first ``per_language`` System 1 AnesR1 records of each language in a miniature world, in file order, as
    MCQ items (the SFT items the diagnostics check the model on)."""
    return r1_items(world, per_language, 1)


_LEVEL_NAMES = {1: "system1", 2: "system1.x", 3: "system2"}


def r1_items(world: Path, per_language: int, level: int) -> list[MCQItem]:
    """The first ``per_language`` AnesR1 records of ``level`` (1, 2 = System 1.x, 3 = System 2) of each language
    in a miniature world, in file order, as MCQ items."""
    items: list[MCQItem] = []
    taken: Counter[str] = Counter()
    text = miniature_paths(Path(world))["anesr1"].read_text(encoding="utf-8")
    for line in text.splitlines():
        r = json.loads(line)
        if r["level"] == level and taken[r["language"]] < per_language:
            taken[r["language"]] += 1
            options = tuple(r["options"].items())
            items.append(
                MCQItem(r["id"], r["question"], options, r["answer"], r["language"], _LEVEL_NAMES[level])
            )
    return items


def write_r1_benchmark_probe_world(
    world: MiniatureWorld,
    cfg,
    rng: random.Random,
    r1: list[MCQItem],
    paths: dict[str, Path],
    out: Path,
    tag: str,
) -> dict[str, dict[str, int]]:
    """What both miniature designs write after their training data, in this order (the draws of ``rng`` included):
    the shuffled AnesR1 items, the EN/ZH benchmark files (``cfg.bench_en`` / ``cfg.bench_zh`` items per level, ids
    ``<tag>-...``), the knowledge-probe statements and ``world.json``. Returns the benchmark counts per level."""
    rng.shuffle(r1)
    paths["anesr1"].parent.mkdir(parents=True, exist_ok=True)
    paths["anesr1"].write_text(
        "".join(json.dumps(_r1_record(i), ensure_ascii=False) + "\n" for i in r1), encoding="utf-8"
    )
    paths["benchmark"].mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    for lang, sizes in (("en", cfg.bench_en), ("zh", cfg.bench_zh)):
        items = _items(world.benchmark, rng, lang, "heldout", dict(zip(LEVELS, sizes)), tag)
        (paths["benchmark"] / f"anesbench_{lang}.json").write_text(
            json.dumps([anesbench_record(i) for i in items], ensure_ascii=False, indent=1), encoding="utf-8"
        )
        counts[lang] = {lvl: sum(i.level == lvl for i in items) for lvl in LEVELS}
    paths["probe"].parent.mkdir(parents=True, exist_ok=True)
    paths["probe"].write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in probe_statements_for(world.benchmark)),
        encoding="utf-8",
    )
    dump = {
        "seed": cfg.seed,
        "benchmark_drugs": [d.key for d in world.benchmark.drugs],
        "drugs": [asdict(d) for d in world.full.drugs],
        "procedures": [asdict(p) for p in world.full.procedures],
        "conditions": [asdict(c) for c in world.full.conditions],
    }
    (out / "world.json").write_text(json.dumps(dump, ensure_ascii=False, indent=1), encoding="utf-8")
    return counts


def generate_miniature_data(out: str | Path, cfg: MiniatureConfig | None = None) -> dict[str, Path]:
    """Every file of the miniature under ``out`` (the same layout as the default world, plus ``probe/``)."""
    cfg = cfg or MiniatureConfig()
    out = Path(out)
    world = build_miniature_world(cfg)
    rng = random.Random(f"anessuite-miniature-data-{cfg.seed}")
    paths = miniature_paths(out)
    for lang, count in (("en", cfg.cpt_docs_en), ("zh", cfg.cpt_docs_zh)):
        docs = _documents(world.full, lang, count, rng)
        _write_parquet(paths["corpus"] / f"AnesCorpus_{lang}-00000-of-00001.parquet", {"text": docs})
    pairs = [pair for lang in ("en", "zh") for pair in qa_pairs(world.training, lang)]
    rng.shuffle(pairs)
    _write_parquet(paths["anesqa"], {"question": [q for q, _ in pairs], "answer": [a for _, a in pairs]})
    share = {"system1": 0.5, "system1.x": 0.25, "system2": 0.25}
    r1: list[MCQItem] = []
    for lang in ("en", "zh"):
        per_level = {lvl: round(cfg.rlvr_per_language * share[lvl]) for lvl in LEVELS}
        r1 += _items(world.training, rng, lang, "train", per_level, "mini-r1")
    counts = write_r1_benchmark_probe_world(world, cfg, rng, r1, paths, out, "mini-bench")
    manifest = {
        "design": "miniature",
        "miniature_version": MINIATURE_VERSION,
        "config": asdict(cfg),
        "benchmark_counts": counts,
        "anesqa_pairs": len(pairs),
        "anesr1_items": len(r1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    logger.info("miniature world (seed %d) written to %s: %s", cfg.seed, out, counts)
    return paths
