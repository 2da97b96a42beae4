"""Write the synthetic world's datasets in the formats of the real releases, so the embedded default runs
through exactly the code paths real data takes:

* ``corpus/AnesCorpus_{en,zh}-00000-of-00001.parquet`` - CPT documents, one ``text`` column (AnesCorpus);
* ``anesqa/AnesQA.parquet`` - free-text ``question`` / ``answer`` pairs, both languages (AnesQA);
* ``anesr1/anesr1.jsonl`` - MCQs with ``options``, gold ``answer`` letter and a ``reasoning`` chain (AnesR1-style);
* ``benchmark/anesbench_{en,zh}.json`` - the held-out benchmark in the exact 2026 AnesBench schema (``id`` UUID,
  ``question``, ``A``.., ``choice_num``, ``target``, ``category`` 1/2/3), built from question templates that never
  appear in the training files;
* ``world.json`` (every entity and rule) and ``manifest.json`` (counts, seed, version).

    python -m anessuite synth --out data/world --seed 0
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from anessuite.mcq import LEVELS, MCQItem
from anessuite.synthetic.questions import LEVEL_OF, make_question
from anessuite.synthetic.world import CLASSES, EFFECTS, ONSETS, ORGANS, World, build_world
from rlcore.runs import runs_root

__all__ = ["WorldDataConfig", "generate_world_data", "ensure_default_world", "corpus_statements", "qa_pairs"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: benchmark files in the exact 2026 release schema (target/category, UUID ids)


@dataclass
class WorldDataConfig:
    """Sizes of the synthetic datasets (defaults are sized for a CPU pipeline under an hour)."""

    seed: int = 0  # world and sampling seed
    cpt_docs_en: int = 1200  # CPT documents in English (AnesCorpus is about 3:1 EN:ZH)
    cpt_docs_zh: int = 400  # CPT documents in Chinese
    qa_repeats: int = 1  # copies of each QA pair (more copies = more SFT exposure per epoch)
    rlvr_per_language: int = 400  # AnesR1-style MCQs per language
    bench_en: tuple[int, int, int] = (32, 12, 8)  # held-out EN items for System 1 / 1.x / 2
    bench_zh: tuple[int, int, int] = (22, 6, 4)  # held-out ZH items for System 1 / 1.x / 2


def _lbl(table: dict[str, tuple[str, str]], key: str, lang: str) -> str:
    return table[key][1] if lang == "zh" else table[key][0]


def _join(names: list[str], lang: str) -> str:
    if lang == "zh":
        return "、".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def corpus_statements(world: World, lang: str) -> list[list[str]]:
    """Groups of alternative phrasings, one group per fact; a document samples one phrasing per fact."""
    groups: list[list[str]] = []
    for d in world.drugs:
        n, c, o = d.name(lang), _lbl(CLASSES, d.drug_class, lang), _lbl(ORGANS, d.organ, lang)
        e, s = _lbl(EFFECTS, d.effect, lang), _lbl(ONSETS, d.onset, lang)
        if lang == "zh":
            groups += [
                [f"{n}属于{c}。", f"{n}是一种{c}。"],
                [f"{n}经{o}清除。", f"{n}主要由{o}消除。"],
                [f"{n}的特征性不良反应是{e}。", f"使用{n}时需警惕{e}。"],
                [f"{n}{s}。"],
                [f"药物简介：{n}。类别：{c}。清除途径：{o}。主要不良反应：{e}。"],
            ]
        else:
            groups += [
                [f"{n} is a {c}.", f"{n} belongs to the {c} group."],
                [f"{n} is cleared by {o}.", f"{n} is eliminated mainly by {o}."],
                [f"The characteristic adverse effect of {n} is {e}.", f"{n} can cause {e}."],
                [f"The onset of {n} is {s}."],
                [f"Drug profile: {n}. Class: {c}. Clearance: {o}. Typical adverse effect: {e}."],
            ]
    for key, drugs in world.by_class.items():
        names = [d.name(lang) for d in drugs]
        c = _lbl(CLASSES, key, lang)
        groups.append(
            [f"常用的{c}包括{_join(names, lang)}。"]
            if lang == "zh"
            else [f"The {c}s in this formulary are {_join(names, lang)}."]
        )
    for p in world.procedures:
        c = _lbl(CLASSES, p.drug_class, lang)
        groups.append(
            [f"{p.name_zh}在{c}下进行。", f"实施{p.name_zh}需要使用{c}。"]
            if lang == "zh"
            else [f"The {p.name_en} is performed under a {c}.", f"The {p.name_en} requires a {c}."]
        )
    for cond in world.conditions:
        if cond.rule_kind == "organ":
            o = _lbl(ORGANS, cond.rule_target, lang)
            groups.append(
                [f"{cond.name_zh}患者须避免经{o}清除的药物。"]
                if lang == "zh"
                else [f"In patients with {cond.name_en}, drugs cleared by {o} must be avoided."]
            )
        else:
            e = _lbl(EFFECTS, cond.rule_target, lang)
            groups.append(
                [f"{cond.name_zh}患者须避免可引起{e}的药物。"]
                if lang == "zh"
                else [f"In patients with {cond.name_en}, drugs that can cause {e} must be avoided."]
            )
    return groups


def qa_pairs(world: World, lang: str) -> list[tuple[str, str]]:
    """Free-text question/answer pairs (AnesQA-style), one per fact and phrasing."""
    pairs: list[tuple[str, str]] = []
    for d in world.drugs:
        n, c, o, e = (
            d.name(lang),
            _lbl(CLASSES, d.drug_class, lang),
            _lbl(ORGANS, d.organ, lang),
            _lbl(EFFECTS, d.effect, lang),
        )
        if lang == "zh":
            pairs += [
                (f"{n}是哪一类药物？", f"{n}属于{c}。"),
                (f"{n}如何清除？", f"{n}经{o}清除。"),
                (f"{n}有什么特征性不良反应？", f"{n}的特征性不良反应是{e}。"),
            ]
        else:
            pairs += [
                (f"What kind of drug is {n}?", f"{n} is a {c}."),
                (f"How is {n} eliminated?", f"{n} is cleared by {o}."),
                (
                    f"What adverse effect is {n} known for?",
                    f"The characteristic adverse effect of {n} is {e}.",
                ),
            ]
    for p in world.procedures:
        c = _lbl(CLASSES, p.drug_class, lang)
        names = _join([d.name(lang) for d in world.by_class[p.drug_class]], lang)
        pairs.append(
            (f"{p.name_zh}使用什么药物？", f"{p.name_zh}在{c}下进行，例如{names}。")
            if lang == "zh"
            else (
                f"What is used for the {p.name_en}?",
                f"The {p.name_en} is performed under a {c}, for example {names}.",
            )
        )
    for cond in world.conditions:
        target = _lbl(ORGANS if cond.rule_kind == "organ" else EFFECTS, cond.rule_target, lang)
        if lang == "zh":
            rule = f"经{target}清除的药物" if cond.rule_kind == "organ" else f"可引起{target}的药物"
            pairs.append((f"{cond.name_zh}患者麻醉时需要避免什么？", f"{cond.name_zh}患者须避免{rule}。"))
        else:
            rule = (
                f"drugs cleared by {target}"
                if cond.rule_kind == "organ"
                else f"drugs that can cause {target}"
            )
            pairs.append(
                (
                    f"What must be avoided when anesthetizing a patient with {cond.name_en}?",
                    f"In patients with {cond.name_en}, {rule} must be avoided.",
                )
            )
    return pairs


def _documents(world: World, lang: str, count: int, rng: random.Random) -> list[str]:
    groups = corpus_statements(world, lang)
    docs = []
    for _ in range(count):
        picked = rng.sample(groups, k=min(len(groups), rng.randint(3, 6)))
        docs.append(("" if lang == "zh" else " ").join(rng.choice(group) for group in picked))
    return docs


def _level_kinds(level: str) -> list[str]:
    return [kind for kind, lvl in LEVEL_OF.items() if lvl == level]


def _questions(
    world: World, rng: random.Random, lang: str, split: str, per_level: dict[str, int], prefix: str
) -> list[MCQItem]:
    """Distinct questions (by stem + answer text) with the requested count per level."""
    items: list[MCQItem] = []
    for level in LEVELS:
        seen: set[tuple[str, str]] = set()
        attempts = 0
        while sum(i.level == level for i in items) < per_level[level]:
            attempts += 1
            if attempts > 200 * max(1, per_level[level]):
                raise ValueError(
                    f"cannot draw {per_level[level]} distinct {level} questions ({lang}, {split})"
                )
            item = make_question(
                world, rng, rng.choice(_level_kinds(level)), lang, split, f"{prefix}-{lang}-{len(items):05d}"
            )
            signature = (item.question, item.option_text(item.answer))
            if split == "heldout" and signature in seen:
                continue
            seen.add(signature)
            items.append(item)
    return items


def anesbench_record(item: MCQItem) -> dict[str, Any]:
    """The item in the exact AnesBench 2026 release schema: ``id`` (a UUID), ``question``, options ``A``..,
    ``choice_num`` (int), ``target`` (letter), ``category`` (int 1/2/3); no language field."""
    record: dict[str, Any] = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"anessuite-synthetic/{item.key}"))}
    record["question"] = item.question
    record.update(dict(item.options))
    record.update(
        {"choice_num": item.num_choices, "target": item.answer, "category": LEVELS.index(item.level) + 1}
    )
    return record


def _r1_record(item: MCQItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "question": item.question,
        "options": dict(item.options),
        "answer": item.answer,
        "reasoning": item.metadata["reasoning"],
        "language": item.language,
        "level": LEVELS.index(item.level) + 1,
    }


def _write_parquet(path: Path, columns: dict[str, list[str]]) -> None:
    # pyarrow costs ~0.12 s to import and only parquet files need it
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def generate_world_data(out: str | Path, cfg: WorldDataConfig | None = None) -> dict[str, Path]:
    """Generate every file under ``out``; returns the paths by role."""
    cfg = cfg or WorldDataConfig()
    out = Path(out)
    world = build_world(cfg.seed)
    rng = random.Random(f"anessuite-world-data-{cfg.seed}")
    paths = {
        "root": out,
        "corpus": out / "corpus",
        "anesqa": out / "anesqa" / "AnesQA.parquet",
        "anesr1": out / "anesr1" / "anesr1.jsonl",
        "benchmark": out / "benchmark",
    }
    for lang, count in (("en", cfg.cpt_docs_en), ("zh", cfg.cpt_docs_zh)):
        _write_parquet(
            paths["corpus"] / f"AnesCorpus_{lang}-00000-of-00001.parquet",
            {"text": _documents(world, lang, count, rng)},
        )
    questions, answers = [], []
    for lang in ("en", "zh"):
        for _ in range(cfg.qa_repeats):
            for question, answer in qa_pairs(world, lang):
                questions.append(question)
                answers.append(answer)
    order = list(range(len(questions)))
    rng.shuffle(order)
    _write_parquet(
        paths["anesqa"], {"question": [questions[i] for i in order], "answer": [answers[i] for i in order]}
    )
    # Level mix of the RLVR set follows the benchmark's (AnesR1 is level-aligned with AnesBench).
    share = {"system1": 0.5, "system1.x": 0.25, "system2": 0.25}
    r1: list[MCQItem] = []
    for lang in ("en", "zh"):
        per_level = {lvl: round(cfg.rlvr_per_language * share[lvl]) for lvl in LEVELS}
        r1 += _questions(world, rng, lang, "train", per_level, "r1")
    rng.shuffle(r1)
    paths["anesr1"].parent.mkdir(parents=True, exist_ok=True)
    paths["anesr1"].write_text(
        "".join(json.dumps(_r1_record(i), ensure_ascii=False) + "\n" for i in r1), encoding="utf-8"
    )
    paths["benchmark"].mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    for lang, sizes in (("en", cfg.bench_en), ("zh", cfg.bench_zh)):
        items = _questions(world, rng, lang, "heldout", dict(zip(LEVELS, sizes)), "bench")
        (paths["benchmark"] / f"anesbench_{lang}.json").write_text(
            json.dumps([anesbench_record(i) for i in items], ensure_ascii=False, indent=1), encoding="utf-8"
        )
        counts[lang] = {lvl: sum(i.level == lvl for i in items) for lvl in LEVELS}
    world_dump = {
        "seed": cfg.seed,
        "drugs": [asdict(d) for d in world.drugs],
        "procedures": [asdict(p) for p in world.procedures],
        "conditions": [asdict(c) for c in world.conditions],
    }
    (out / "world.json").write_text(json.dumps(world_dump, ensure_ascii=False, indent=1), encoding="utf-8")
    manifest = {
        "format_version": FORMAT_VERSION,
        "config": asdict(cfg),
        "benchmark_counts": counts,
        "cpt_docs": {"en": cfg.cpt_docs_en, "zh": cfg.cpt_docs_zh},
        "anesqa_pairs": len(questions),
        "anesr1_items": len(r1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    logger.info("synthetic world (seed %d) written to %s: %s", cfg.seed, out, counts)
    return paths


def ensure_default_world(seed: int = 0, root: str | Path | None = None) -> dict[str, Path]:
    """The default world's files under ``<runs root>/anessuite-world/v<version>-seed<seed>``, generated once
    (a file lock makes concurrent callers wait instead of writing twice)."""
    base = Path(root) if root is not None else runs_root() / "anessuite-world"
    out = base / f"v{FORMAT_VERSION}-seed{seed}"
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        manifest = out / "manifest.json"
        wanted = json.loads(json.dumps(asdict(WorldDataConfig(seed=seed))))  # tuples -> lists, as stored
        if not manifest.exists() or json.loads(manifest.read_text())["config"] != wanted:
            generate_world_data(out, WorldDataConfig(seed=seed))
    return {
        "root": out,
        "corpus": out / "corpus",
        "anesqa": out / "anesqa" / "AnesQA.parquet",
        "anesr1": out / "anesr1" / "anesr1.jsonl",
        "benchmark": out / "benchmark",
    }
