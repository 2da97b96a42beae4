"""Revision 2 of the miniature's world (``--design miniature2``): benchmark drugs stay CPT-only, every SFT/GRPO drug's
facts are in the CPT corpus too, each SFT drug is named in a bounded number of SFT records, names are made of pieces
the SFT data also contains, and the training reasoning names the chosen option's text before its letter."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from anessuite.benchmark import load_anesbench
from anessuite.knowledge_probe import load_statements
from anessuite.mcq import LEVELS
from anessuite.records import file_sha256, read_records
from anessuite.synthetic.miniature import PROBE
from anessuite.synthetic.miniature2 import (
    Miniature2Config,
    build_miniature2_world,
    generate_miniature2_data,
)
from anessuite.synthetic.world import CLASSES, EFFECTS, ORGANS, Drug

CFG = Miniature2Config(seed=0)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world2(tmp_path_factory):
    return generate_miniature2_data(tmp_path_factory.mktemp("mini2"), CFG)


def _drugs(paths) -> tuple[list[Drug], list[Drug]]:
    dump = json.loads((paths["root"] / "world.json").read_text(encoding="utf-8"))
    drugs = [Drug(**d) for d in dump["drugs"]]
    bench = set(dump["benchmark_drugs"])
    return [d for d in drugs if d.key in bench], [d for d in drugs if d.key not in bench]


def _sft_records(paths) -> list[str]:
    """One text per SFT/GRPO record: AnesQA question + answer, AnesR1 question + options + reasoning."""
    table = pq.read_table(paths["anesqa"]).to_pydict()
    records = [f"{q}\n{a}" for q, a in zip(table["question"], table["answer"])]
    for r in read_records(paths["anesr1"]):
        options = "\n".join(f"{k}. {v}" for k, v in r["options"].items())
        records.append(f"{r['question']}\n{options}\n{r['reasoning']}")
    return records


def _corpus(paths) -> str:
    return "\n".join(
        text
        for f in sorted(paths["corpus"].glob("*.parquet"))
        for text in pq.read_table(f).to_pydict()["text"]
    )


def _corpus_wording(drug: Drug, lang: str) -> list[str]:
    col = 1 if lang == "zh" else 0
    values = {
        "class": CLASSES[drug.drug_class][col],
        "organ": ORGANS[drug.organ][col],
        "effect": EFFECTS[drug.effect][col],
    }
    return [PROBE[(a, lang)][0].format(n=drug.name(lang), value=v) for a, v in values.items()]


def test_split_sizes_and_distinct_names():
    world = build_miniature2_world(CFG)
    assert len(world.training.drugs) == 180 and len(world.benchmark.drugs) == 24
    assert all(len(world.benchmark.by_class[c]) == 4 for c in CLASSES)
    for lang in ("en", "zh"):
        names = [d.name(lang) for d in world.full.drugs]
        assert len(set(names)) == len(names)
        # no name inside another, so "a name occurs in a text" means that drug
        assert not any(a != b and a in b for a in names for b in names)
    with pytest.raises(ValueError, match="at least 2"):
        build_miniature2_world(Miniature2Config(benchmark_drugs_per_class=1))


def test_benchmark_drugs_never_reach_sft_or_grpo_data(world2):
    bench, training = _drugs(world2)
    blob = "\n".join(_sft_records(world2))
    for drug in bench:
        assert drug.name_en not in blob and drug.name_zh not in blob, drug
    assert all(d.name_en in blob and d.name_zh in blob for d in training)


def test_every_drug_fact_is_in_the_cpt_corpus_in_the_probe_wording(world2):
    """Benchmark drugs (what the benchmark asks) and training drugs (what SFT asks): CPT stores both."""
    corpus = _corpus(world2)
    bench, training = _drugs(world2)
    missing = [s for d in [*bench, *training] for lang in ("en", "zh") for s in _corpus_wording(d, lang)]
    missing = [s for s in missing if s not in corpus]
    assert not missing, missing[:5]
    unseen = [st for st in load_statements(world2["probe"]) if st.phrasing == "heldout"]
    assert unseen and not any(st.fill(st.true_value) in corpus for st in unseen)


def test_each_sft_drug_is_named_in_few_sft_records(world2):
    """Measured at seed 0: 11-24 records per drug, mean 17.1, out of 1,896 (design 1: 24 drugs in 972 records)."""
    _, training = _drugs(world2)
    records = _sft_records(world2)
    counts = [sum(d.name_en in r or d.name_zh in r for r in records) for d in training]
    assert min(counts) >= 5 and max(counts) <= 30 and sum(counts) / len(counts) <= 20, Counter(counts)
    # no fact sentence can stand for the answers: the most frequent SFT answer line is rare
    answers = Counter(pq.read_table(world2["anesqa"]).to_pydict()["answer"])
    answers.update(r["reasoning"].split("\n")[0] for r in read_records(world2["anesr1"]) if r["level"] == 1)
    assert answers.most_common(1)[0][1] <= 3


def test_training_reasoning_names_the_option_text_before_its_letter(world2):
    records = list(read_records(world2["anesr1"]))
    assert len(records) == 2 * CFG.rlvr_per_language
    for r in records:
        text, letter = r["options"][r["answer"]], r["answer"]
        body, answer_line = r["reasoning"].rsplit("\n", 1)
        sentence = f"{text}是选项{letter}。" if r["language"] == "zh" else f"{text} is option {letter}."
        assert body.endswith(sentence), r["reasoning"]
        assert answer_line == (f"答案：{letter}" if r["language"] == "zh" else f"Answer: {letter}")


def test_benchmark_size_layout_and_system1_gold(world2):
    items = load_anesbench(world2["benchmark"], languages=["en", "zh"])
    assert len(items) == 600
    for lang, sizes in (("en", CFG.bench_en), ("zh", CFG.bench_zh)):
        assert tuple(sum(i.language == lang and i.level == lvl for i in items) for lvl in LEVELS) == sizes
    bench, _ = _drugs(world2)
    col = {"en": 0, "zh": 1}
    for item in (i for i in items if i.level == "system1"):
        (drug,) = [d for d in bench if d.name(item.language) in item.question]
        texts = {t for _, t in item.options}
        for table, key in ((CLASSES, drug.drug_class), (ORGANS, drug.organ), (EFFECTS, drug.effect)):
            if texts <= {v[col[item.language]] for v in table.values()}:
                assert item.option_text(item.answer) == table[key][col[item.language]]
                break
        else:
            pytest.fail(f"{item.id}: options are not one attribute's values")
    probe = load_statements(world2["probe"])
    assert len(probe) == 24 * 3 * 2 * 2


def test_benchmark_name_pieces_occur_in_sft_data(world2):
    """At the design's 1,024-token vocabulary a name is 2-5 pieces, and (measured: 47 of 48 at seed 0) a benchmark
    name's pieces also occur in SFT records, so SFT trains copying them; design 1's 2,048 gave each name one token."""
    from anessuite.synthetic.miniature2 import SCRATCH_VOCAB_SIZE
    from anessuite.synthetic.scratch import world_training_texts
    from rlcore.models import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(world_training_texts(world2["root"]), vocab_size=SCRATCH_VOCAB_SIZE)
    sft_tokens = {i for r in _sft_records(world2) for i in tokenizer(r)["input_ids"]}
    bench, training = _drugs(world2)
    pieces = {
        (d.key, lang): tokenizer((" " if lang == "en" else "") + d.name(lang))["input_ids"]
        for d in [*bench, *training]
        for lang in ("en", "zh")
    }
    assert all(2 <= len(ids) <= 5 for ids in pieces.values()), Counter(len(ids) for ids in pieces.values())
    covered = sum(all(i in sft_tokens for i in pieces[(d.key, lang)]) for d in bench for lang in ("en", "zh"))
    assert covered >= 45, covered


def test_reproducible_by_seed(world2, tmp_path):
    again = generate_miniature2_data(tmp_path / "again", CFG)
    for role in ("anesr1", "probe"):
        assert file_sha256(world2[role]) == file_sha256(again[role])
    for name in ("anesbench_en.json", "anesbench_zh.json"):
        assert file_sha256(world2["benchmark"] / name) == file_sha256(again["benchmark"] / name)
    assert _corpus(world2) == _corpus(again)
    other = build_miniature2_world(Miniature2Config(seed=1))
    assert [d.name_en for d in other.full.drugs] != [
        d.name_en for d in build_miniature2_world(CFG).full.drugs
    ]


def test_revision2_pipeline_data_keeps_benchmark_drugs_out_of_sft_and_grpo(world2, tmp_path):
    """Revision 2's pipeline (pipeline.yaml on the revision-2 world: the retired pipeline_r2.yaml changed only the paths
    given here) through the pipeline's data preparation: its SFT chats and GRPO prompts never name a benchmark drug;
    its CPT text holds every benchmark fact in the probe's corpus wording."""
    from anessuite.pipeline.config import PipelineConfig
    from anessuite.pipeline.data import plan_data, prepare_data
    from rlcore.config import load_config

    root = world2["root"]
    cfg = load_config(
        PipelineConfig,
        REPO / "experiments" / "anessuite-cpu-miniature" / "pipeline.yaml",
        [
            f"data.corpus={root / 'corpus'}",
            f"data.anesqa={world2['anesqa']}",
            f"data.anesr1={world2['anesr1']}",
            f"data.benchmark={world2['benchmark']}",
        ],
    )
    prepared = prepare_data(
        cfg.data, tmp_path / "data", seed=cfg.seed, prompt=cfg.prompt, plan=plan_data(cfg)
    )
    sft, rl = prepared["sft"].read_text("utf-8"), prepared["rl"].read_text("utf-8")
    assert sft.count("\n") > 1500 and rl.count("\n") == 800
    bench, _ = _drugs(world2)
    for drug in bench:
        for name in (drug.name_en, drug.name_zh):
            assert name not in sft and name not in rl, name
    cpt = "\n".join(json.loads(line)["text"] for line in prepared["cpt"].read_text("utf-8").splitlines())
    corpus_wording = [st for st in load_statements(world2["probe"]) if st.phrasing == "corpus"]
    assert all(st.fill(st.true_value) in cpt for st in corpus_wording)
