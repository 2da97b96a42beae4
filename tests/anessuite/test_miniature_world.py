"""The miniature's world: benchmark facts live only in the CPT corpus, SFT/GRPO data are about other drugs, the
benchmark has >= 600 items in the 2026 AnesBench layout, gold answers re-derive from world.json, and the probe
file covers every benchmark fact."""

from __future__ import annotations

import json
import uuid

import pyarrow.parquet as pq
import pytest

from anessuite.benchmark import load_anesbench
from anessuite.knowledge_probe import load_statements
from anessuite.mcq import LEVELS
from anessuite.records import file_sha256, read_records
from anessuite.synthetic.miniature import (
    MiniatureConfig,
    build_miniature_world,
    generate_miniature_data,
    system1_r1_items,
)
from anessuite.synthetic.world import CLASSES, EFFECTS, ORGANS, Condition, Drug

CFG = MiniatureConfig(seed=0)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return generate_miniature_data(tmp_path_factory.mktemp("mini"), CFG)


def _world(paths):
    dump = json.loads((paths["root"] / "world.json").read_text(encoding="utf-8"))
    drugs = [Drug(**d) for d in dump["drugs"]]
    bench = [d for d in drugs if d.key in set(dump["benchmark_drugs"])]
    conditions = [Condition(**c) for c in dump["conditions"]]
    return drugs, bench, dump["procedures"], conditions


def _sft_grpo_texts(paths) -> list[str]:
    table = pq.read_table(paths["anesqa"]).to_pydict()
    texts = table["question"] + table["answer"]
    for record in read_records(paths["anesr1"]):
        texts += [record["question"], record["reasoning"], *record["options"].values()]
    return texts


def _corpus(paths) -> str:
    return "\n".join(
        text
        for f in sorted(paths["corpus"].glob("*.parquet"))
        for text in pq.read_table(f).to_pydict()["text"]
    )


def test_benchmark_size_levels_and_2026_layout(mini):
    items = load_anesbench(mini["benchmark"], languages=["en", "zh"])
    assert len(items) >= 600
    for lang, sizes in (("en", CFG.bench_en), ("zh", CFG.bench_zh)):
        assert tuple(sum(i.language == lang and i.level == lvl for i in items) for lvl in LEVELS) == sizes
    assert len({i.answer for i in items}) == 4
    for lang in ("en", "zh"):
        records = json.loads((mini["benchmark"] / f"anesbench_{lang}.json").read_text(encoding="utf-8"))
        assert all(
            set(r) == {"id", "question", "A", "B", "C", "D", "choice_num", "target", "category"}
            for r in records
        )
        assert all(str(uuid.UUID(r["id"])) == r["id"] and type(r["category"]) is int for r in records)
        assert len({(r["question"], r[r["target"]]) for r in records}) == len(records)  # no repeated item


def test_benchmark_drugs_never_reach_sft_or_grpo_data(mini):
    drugs, bench, _, _ = _world(mini)
    train = [d for d in drugs if d not in bench]
    texts = _sft_grpo_texts(mini)
    blob = "\n".join(texts)
    for drug in bench:  # neither the name nor, a fortiori, any statement of its facts
        assert drug.name_en not in blob and drug.name_zh not in blob, drug
    # the SFT/GRPO data do teach the same kinds of facts about the other drugs, in both languages
    assert sum(d.name_en in blob for d in train) == len(train)
    assert sum(d.name_zh in blob for d in train) == len(train)
    statements = load_statements(mini["probe"])
    assert not any(st.fill(st.true_value) in blob for st in statements)


def test_every_benchmark_fact_is_in_the_cpt_corpus(mini):
    corpus = _corpus(mini)
    statements = [st for st in load_statements(mini["probe"]) if st.phrasing == "corpus"]
    missing = [st.fill(st.true_value) for st in statements if st.fill(st.true_value) not in corpus]
    assert not missing, missing[:5]
    # the probe's other wording occurs nowhere: it measures knowledge, not a memorised sentence
    unseen = [st for st in load_statements(mini["probe"]) if st.phrasing == "heldout"]
    assert not any(st.fill(st.true_value) in corpus for st in unseen)


def test_probe_file_covers_every_benchmark_fact(mini):
    _, bench, _, _ = _world(mini)
    statements = load_statements(mini["probe"])
    assert len(statements) == len(bench) * 3 * 2 * 2  # attribute x language x wording
    assert {st.language for st in statements} == {"en", "zh"}
    for st in statements:
        assert st.true_value not in st.distractors and len(st.distractors) >= 3


def _by_name(drugs, name):
    return next(d for d in drugs if name in (d.name_en, d.name_zh))


def test_gold_answers_rederived_from_world_json(mini):
    drugs, bench, procedures, conditions = _world(mini)
    items = load_anesbench(mini["benchmark"], languages=["en", "zh"])
    col = {"en": 0, "zh": 1}
    for item in items:
        lang, gold = item.language, item.option_text(item.answer)
        texts = [t for _, t in item.options]
        assert len(set(texts)) == 4
        if item.level == "system1":
            drug = next(d for d in bench if d.name(lang) in item.question)
            for table, key in ((CLASSES, drug.drug_class), (ORGANS, drug.organ), (EFFECTS, drug.effect)):
                labels = {v[col[lang]] for v in table.values()}
                if set(texts) <= labels:
                    assert gold == table[key][col[lang]]
                    break
            else:
                pytest.fail(f"options of {item.id} are not one attribute's values")
            continue
        options = [_by_name(bench, t) for t in texts]  # every option is a benchmark drug
        condition = next((c for c in conditions if c.name(lang) in item.question), None)
        if item.level == "system1.x" and condition is not None:
            assert [t for t, d in zip(texts, options) if condition.excludes(d)] == [gold]
        elif item.level == "system1.x":
            klass = next(k for k, v in CLASSES.items() if v[col[lang]] in item.question)
            organ = next(k for k, v in ORGANS.items() if v[col[lang]] in item.question)
            fits = [t for t, d in zip(texts, options) if d.drug_class == klass and d.organ == organ]
            assert fits == [gold]
        else:
            procedure = next(p for p in procedures if p[f"name_{lang}"] in item.question)
            fits = [
                t
                for t, d in zip(texts, options)
                if d.drug_class == procedure["drug_class"] and not condition.excludes(d)
            ]
            assert fits == [gold]


def test_reproducible_by_seed(mini, tmp_path):
    again = generate_miniature_data(tmp_path / "again", CFG)
    for role in ("anesr1", "anesqa", "probe"):
        assert file_sha256(mini[role]) == file_sha256(again[role])
    for lang in ("en", "zh"):
        name = f"anesbench_{lang}.json"
        assert file_sha256(mini["benchmark"] / name) == file_sha256(again["benchmark"] / name)
    other = build_miniature_world(MiniatureConfig(seed=1))
    assert [d.name_en for d in other.full.drugs] != [d.name_en for d in build_miniature_world(CFG).full.drugs]


def test_split_and_names():
    world = build_miniature_world(CFG)
    assert len(world.full.drugs) == 48 and len(world.benchmark.drugs) == 24
    assert {d.key for d in world.benchmark.drugs}.isdisjoint({d.key for d in world.training.drugs})
    assert all(len(world.benchmark.by_class[c]) == CFG.benchmark_drugs_per_class for c in CLASSES)
    for lang in ("en", "zh"):
        assert len({d.name(lang) for d in world.full.drugs}) == 48
    with pytest.raises(ValueError, match="benchmark_drugs_per_class"):
        build_miniature_world(MiniatureConfig(benchmark_drugs_per_class=8))


def test_scratch_base_model_from_the_world(mini, tmp_path):
    """The from-scratch candidate: its tokenizer never saw the benchmark; the probe runs on it at chance level."""
    from anessuite.knowledge_probe import run_probe
    from anessuite.synthetic.scratch import ScratchModelConfig, world_training_texts, write_scratch_model

    texts = world_training_texts(mini["root"])
    stems = [r["question"] for r in json.loads((mini["benchmark"] / "anesbench_en.json").read_text("utf-8"))]
    assert not set(stems) & set(texts)
    small = ScratchModelConfig(vocab_size=400, hidden_size=32, num_layers=1, intermediate_size=64)
    folder = write_scratch_model(mini["root"], tmp_path / "base", small)
    report = run_probe(str(folder), mini["probe"])
    summary = report["summary"]["by_language"]
    assert summary["en"]["n"] == summary["zh"]["n"] == 24 * 3 * 2
    assert abs(summary["en"]["mean_margin"]) < 2.0  # an untrained model has no preference worth the name
    with pytest.raises(FileNotFoundError, match="no CPT parquet"):
        world_training_texts(tmp_path)


def test_pipeline_data_of_the_experiment_keeps_benchmark_facts_out_of_sft_and_grpo(mini, tmp_path):
    """The experiment's own pipeline config, through the pipeline's data preparation: the SFT chats and the GRPO
    prompts it renders never name a benchmark drug; the CPT text holds every benchmark fact."""
    from pathlib import Path

    from anessuite.pipeline.config import PipelineConfig
    from anessuite.pipeline.data import plan_data, prepare_data
    from rlcore.config import load_config

    repo = Path(__file__).resolve().parents[2]
    root = mini["root"]
    cfg = load_config(
        PipelineConfig,
        repo / "experiments" / "anessuite-cpu-miniature" / "pipeline.yaml",
        [
            f"data.corpus={root / 'corpus'}",
            f"data.anesqa={mini['anesqa']}",
            f"data.anesr1={mini['anesr1']}",
            f"data.benchmark={mini['benchmark']}",
        ],
    )
    prepared = prepare_data(
        cfg.data, tmp_path / "data", seed=cfg.seed, prompt=cfg.prompt, plan=plan_data(cfg)
    )
    sft, rl = prepared["sft"].read_text("utf-8"), prepared["rl"].read_text("utf-8")
    assert sft.count("\n") > 500 and rl.count("\n") == 800
    _, bench, _, _ = _world(mini)
    for drug in bench:
        for name in (drug.name_en, drug.name_zh):
            assert name not in sft and name not in rl, name
    cpt = "\n".join(json.loads(line)["text"] for line in prepared["cpt"].read_text("utf-8").splitlines())
    corpus_wording = [st for st in load_statements(mini["probe"]) if st.phrasing == "corpus"]
    assert all(st.fill(st.true_value) in cpt for st in corpus_wording)


# SHA-256 of design 1's seed-0 files as the registered run used them (experiments/anessuite-cpu-miniature,
# runs/anessuite-miniature/world): the JSON files byte for byte, the parquet files by their columns (the parquet
# bytes carry the writer's version). A change here means the registered run could no longer be regenerated.
DESIGN1_SEED0 = {
    "anesr1/anesr1.jsonl": "348eca390f12c08fb94ebbf8ccf44c9a9570fff53b28e3706a200995dc2af625",
    "benchmark/anesbench_en.json": "70e24477fecd09db5b949ea96a1ef9da4fe90e9eb230c5dffbd68290b94d9a7a",
    "benchmark/anesbench_zh.json": "8468f306c2fbe6cad86eaec668dff62dc74afb2e24ec9a5e7c3cc8844bc80d06",
    "probe/facts.jsonl": "0e71a7ee6345975424fc45a953e8fd1984ac8debdd1cdf234f9e50f5573fa2c1",
    "world.json": "aa4ccf9ef679886c6f9554d541b890f43c072b0f980060a194edcd5ededfd258",
    "manifest.json": "3ee6bee3f3ea1b3bc6e9838721fb9da77e6876087453817fdc3da2d38a27e84e",
    "corpus/AnesCorpus_en-00000-of-00001.parquet": "082b5bacc0976d3a2824a09c7879b9622a135cdd4125c47947a21f0534247663",
    "corpus/AnesCorpus_zh-00000-of-00001.parquet": "9d88fd529a01c7aef9864f3e12c4d9fec5b60663d56e8342e751d0d46c90ae5f",
    "anesqa/AnesQA.parquet": "aadcff4f95dd1f83fe493eb9c829a88ac48810abbf36c11c5461012bc6dd6180",
}


def test_design1_seed0_is_the_registered_runs_world(mini):
    import hashlib

    for name, expected in DESIGN1_SEED0.items():
        path = mini["root"] / name
        if path.suffix == ".parquet":
            columns = json.dumps(pq.read_table(path).to_pydict(), ensure_ascii=False, sort_keys=True)
            digest = hashlib.sha256(columns.encode("utf-8")).hexdigest()
        else:
            digest = file_sha256(path)
        assert digest == expected, f"{name}: design 1's seed-0 output changed"


def test_system1_r1_items_are_the_first_of_each_language_in_file_order(mini):
    records = [r for r in read_records(mini["anesr1"]) if r["level"] == 1]
    items = system1_r1_items(mini["root"], 3)
    assert [i.language for i in items].count("en") == 3 and [i.language for i in items].count("zh") == 3
    expected = [r["id"] for r in records if r["language"] == "en"][:3] + [
        r["id"] for r in records if r["language"] == "zh"
    ][:3]
    assert sorted(i.id for i in items) == sorted(expected)
    assert [i.id for i in items] == [r["id"] for r in records if r["id"] in set(expected)]
    first = next(r for r in records if r["id"] == items[0].id)
    assert items[0].answer == first["answer"] and dict(items[0].options) == first["options"]
    assert {i.level for i in items} == {"system1"}
