"""The synthetic world: determinism, the AnesBench layout, held-out templates, and answers re-derived
independently from world.json."""

from __future__ import annotations

import json
import random
import uuid

import pyarrow.parquet as pq
import pytest

from anessuite.benchmark import load_anesbench
from anessuite.mcq import LEVELS
from anessuite.records import file_sha256, read_records
from anessuite.synthetic.generate import WorldDataConfig, ensure_default_world, generate_world_data
from anessuite.synthetic.questions import TEMPLATES, make_question
from anessuite.synthetic.world import CLASSES, EFFECTS, ORGANS, build_world

SMALL = WorldDataConfig(
    seed=3, cpt_docs_en=30, cpt_docs_zh=10, rlvr_per_language=40, bench_en=(10, 6, 4), bench_zh=(8, 4, 2)
)


@pytest.fixture(scope="module")
def world_files(tmp_path_factory):
    return generate_world_data(tmp_path_factory.mktemp("world"), SMALL)


def test_deterministic_for_a_seed(world_files, tmp_path):
    again = generate_world_data(tmp_path / "again", SMALL)
    for name in ("anesr1", "anesqa"):
        assert file_sha256(world_files[name]) == file_sha256(again[name])
    for lang in ("en", "zh"):
        assert file_sha256(world_files["benchmark"] / f"anesbench_{lang}.json") == file_sha256(
            again["benchmark"] / f"anesbench_{lang}.json"
        )
    other = build_world(seed=4)
    assert [d.name_en for d in other.drugs] != [d.name_en for d in build_world(seed=3).drugs]


def test_benchmark_layout_counts_and_languages(world_files):
    items = load_anesbench(world_files["benchmark"])
    for lang, sizes in (("en", SMALL.bench_en), ("zh", SMALL.bench_zh)):
        counts = tuple(sum(i.language == lang and i.level == level for i in items) for level in LEVELS)
        assert counts == sizes
    assert all(i.num_choices == 4 for i in items)
    # gold letters are spread over the positions (a model cannot win by always answering "A")
    assert len({i.answer for i in items}) == 4
    # the files use the exact 2026 release schema, so the embedded default takes the real data path
    record = json.loads((world_files["benchmark"] / "anesbench_zh.json").read_text(encoding="utf-8"))[0]
    assert set(record) == {"id", "question", "A", "B", "C", "D", "choice_num", "target", "category"}
    assert str(uuid.UUID(record["id"])) == record["id"] and type(record["category"]) is int


def test_heldout_templates_never_used_for_training(world_files):
    records = read_records(world_files["anesr1"])
    heldout_prefixes = [
        t.split("{")[0]
        for kind in TEMPLATES.values()
        for lang in kind.values()
        for t in lang["heldout"]
        if t.split("{")[0]
    ]
    assert heldout_prefixes
    for record in records:
        assert not any(record["question"].startswith(prefix) for prefix in heldout_prefixes), record[
            "question"
        ]
    bench_stems = {i.question for i in load_anesbench(world_files["benchmark"])}
    assert not bench_stems & {r["question"] for r in records}


def _drug_by_name(world, name):
    return next(d for d in world.drugs if name in (d.name_en, d.name_zh))


def test_answers_rederived_from_world_facts():
    """Re-derive each gold answer from the entity table, independently of the generator's own reasoning."""
    world = build_world(seed=5)
    rng = random.Random(0)
    for index in range(120):
        kind = ("class", "organ", "effect", "procedure", "avoid", "decide")[index % 6]
        lang = "zh" if index % 2 else "en"
        item = make_question(world, rng, kind, lang, "train", f"q{index}")
        gold_text = item.option_text(item.answer)
        texts = [text for _, text in item.options]
        assert len(set(texts)) == 4, texts
        if kind in ("class", "organ", "effect"):
            drug = next(d for d in world.drugs if d.name(lang) in item.question)
            table, key = {
                "class": (CLASSES, drug.drug_class),
                "organ": (ORGANS, drug.organ),
                "effect": (EFFECTS, drug.effect),
            }[kind]
            assert gold_text == table[key][1 if lang == "zh" else 0]
        elif kind == "procedure":
            procedure = next(p for p in world.procedures if p.name(lang) in item.question)
            assert gold_text == CLASSES[procedure.drug_class][1 if lang == "zh" else 0]
        elif kind == "avoid":
            condition = next(c for c in world.conditions if c.name(lang) in item.question)
            excluded = [t for t in texts if condition.excludes(_drug_by_name(world, t))]
            assert excluded == [gold_text]  # exactly one option breaks the condition's rule
        else:
            procedure = next(p for p in world.procedures if p.name(lang) in item.question)
            condition = next(c for c in world.conditions if c.name(lang) in item.question)
            fits = [
                t
                for t in texts
                if _drug_by_name(world, t).drug_class == procedure.drug_class
                and not condition.excludes(_drug_by_name(world, t))
            ]
            assert fits == [gold_text]  # right class AND allowed: a unique answer needing both steps
            assert item.level == "system2"
        assert item.metadata["reasoning"].endswith(("Answer: " if lang == "en" else "答案：") + item.answer)


def test_training_files_in_release_formats(world_files):
    en = pq.read_table(world_files["corpus"] / "AnesCorpus_en-00000-of-00001.parquet")
    assert en.column_names == ["text"] and en.num_rows == SMALL.cpt_docs_en
    qa = pq.read_table(world_files["anesqa"])
    assert qa.column_names == ["question", "answer"]
    r1 = read_records(world_files["anesr1"])
    assert len(r1) == 2 * SMALL.rlvr_per_language
    assert set(r1[0]) == {"id", "question", "options", "answer", "reasoning", "language", "level"}
    manifest = json.loads((world_files["root"] / "manifest.json").read_text())
    assert manifest["benchmark_counts"]["zh"] == {"system1": 8, "system1.x": 4, "system2": 2}


def test_ensure_default_world_generates_once(tmp_path):
    first = ensure_default_world(seed=0, root=tmp_path)
    stamp = (first["root"] / "manifest.json").stat().st_mtime_ns
    second = ensure_default_world(seed=0, root=tmp_path)
    assert second["benchmark"] == first["benchmark"]
    assert (second["root"] / "manifest.json").stat().st_mtime_ns == stamp
