"""Revision 7 of the miniature (README.md, "Revisions", 7): System 1.x and System 2 chains that state the rule, then
go through the options in order (letter, copied name, the needed facts in the CPT corpus's wording, a verdict),
then the text answer; many of them over the training drugs; the option-lookup items dropped; a dev set of chains
over the benchmark drugs in training wordings (``anessuite.synthetic.miniature7``)."""

from __future__ import annotations

import json
import re

import pytest

from anessuite.convert import convert_r1
from anessuite.records import file_sha256
from anessuite.synthetic.miniature import TRAIN_PAIR
from anessuite.synthetic.miniature2 import build_miniature2_world
from anessuite.synthetic.miniature3 import TRAIN_WORDINGS, Miniature3Config, generate_miniature3_data
from anessuite.synthetic.miniature6 import with_lead_in, without_option_sentence
from anessuite.synthetic.miniature7 import (
    chain_item,
    chain_items,
    dev_chain_items,
    main,
    option_copy_records,
    write_chain_r1,
)
from anessuite.synthetic.world import CLASSES, EFFECTS, ORGANS, World
from rlcore.rewards import extract_choice

WORLD = build_miniature2_world(Miniature3Config(seed=0).world_config())


@pytest.fixture(scope="module")
def world3(tmp_path_factory):
    return generate_miniature3_data(tmp_path_factory.mktemp("w3"), Miniature3Config(seed=0))


FACT_PATTERNS = {  # the CPT corpus's wordings (English effects: its second)
    "en": [
        r"(?P<n>\S+) is a (?P<class>[a-z -]+)\.",
        r"(?P<n>\S+) is cleared by (?P<organ>[a-z ]+)\.",
        r"(?P<n>\S+) can cause (?P<effect>[a-z]+)\.",
    ],
    "zh": [
        r"(?P<n>[^属经的。]+)属于(?P<class>[^。]+)。",
        r"(?P<n>[^属经的。]+)经(?P<organ>[^。]+)清除。",
        r"(?P<n>[^属经的。]+)的特征性不良反应是(?P<effect>[^。]+)。",
    ],
}


def _label(table, key, lang):
    return table[key][1] if lang == "zh" else table[key][0]


def _by_name(world: World, lang: str):
    return {d.name(lang): d for d in world.drugs}


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("kind", ["avoid", "pair", "decide"])
def test_a_chain_states_the_rule_then_every_option_in_order_with_true_facts_and_one_yes(kind, lang):
    import random

    rng = random.Random(0)
    drugs = _by_name(WORLD.training, lang)
    for index in range(40):
        item = chain_item(WORLD.training, rng, kind, lang, f"q{index}")
        lines = item.metadata["reasoning"].split("\n")
        assert len(lines) == 5  # the rule, four option lines; no answer line (the pipeline writes it)
        assert item.level == ("system2" if kind == "decide" else "system1.x")
        yes = []
        for (letter, name), line in zip(item.options, lines[1:], strict=True):
            assert line.startswith(f"{letter}. {name}")  # letter and the copied name, in option order
            verdict = "Yes." if lang == "en" else "是。"
            body, is_yes = (line[: -len(verdict)].rstrip(), True) if line.endswith(verdict) else (line, False)
            if not is_yes:
                assert line.endswith("No." if lang == "en" else "否。")
                body = line[:-3].rstrip() if lang == "en" else line[:-2]
            else:
                yes.append(letter)
            facts = body[len(letter) + 2 :]
            drug = drugs[name]
            # every fact on the line is the drug's own, in the corpus wording
            found = 0
            for pattern in FACT_PATTERNS[lang]:
                for match in re.finditer(pattern, facts):
                    assert match["n"].strip() == name
                    key, table = next(
                        (k, t)
                        for k, t in (("class", CLASSES), ("organ", ORGANS), ("effect", EFFECTS))
                        if k in match.groupdict()
                    )
                    value = _label(
                        table,
                        {"class": drug.drug_class, "organ": drug.organ, "effect": drug.effect}[key],
                        lang,
                    )
                    assert match[key] == value
                    found += 1
            assert found == (1 if kind == "avoid" else 2)
        assert yes == [item.answer]  # exactly one verdict says yes: the gold option's
        # the rule line is the corpus's rule wording for the question's procedure / condition
        if kind == "decide":
            assert lines[0].startswith(("Rule: the ", "实施"))
        elif kind == "avoid":
            assert "must be avoided" in lines[0] or "患者须避免" in lines[0]


def test_chain_questions_use_training_wordings_and_training_drugs_only():
    items = chain_items(WORLD.training, per_level=150, seed=7, prefix="t")
    bench_names = {d.name(lang) for d in WORLD.benchmark.drugs for lang in ("en", "zh")}
    assert len(items) == 2 * 2 * 150
    signatures = set()
    for item in items:
        text = item.question + json.dumps(item.options, ensure_ascii=False) + item.metadata["reasoning"]
        assert not any(name in text for name in bench_names)
        signatures.add((item.language, item.level, item.question, item.options))
        wordings = {
            "avoid": TRAIN_WORDINGS["avoid"][item.language]["train"],
            "decide": TRAIN_WORDINGS["decide"][item.language]["train"],
            "pair": TRAIN_PAIR[item.language],
        }[item.metadata["kind"]]
        stems = [
            re.escape(w)
            .replace(r"\{condition\}", ".+")
            .replace(r"\{procedure\}", ".+")
            .replace(r"\{klass\}", ".+")
            .replace(r"\{organ\}", ".+")
            for w in wordings
        ]
        assert any(re.fullmatch(stem, item.question) for stem in stems), item.question
    assert len(signatures) == len(items)  # distinct by question and options
    assert {i.metadata["kind"] for i in items} == {"avoid", "pair", "decide"}
    assert {i.answer for i in items} == set("ABCD")
    assert chain_items(WORLD.training, per_level=150, seed=7, prefix="t")[-1] == items[-1]  # seeded
    assert chain_items(WORLD.training, per_level=150, seed=8, prefix="t")[0] != items[0]


def test_no_verdicts_drops_only_the_verdicts():
    import random

    with_v = chain_item(WORLD.training, random.Random(3), "decide", "en", "q")
    without = chain_item(WORLD.training, random.Random(3), "decide", "en", "q", verdicts=False)
    assert without.metadata["reasoning"] == re.sub(
        r" (Yes|No)\.$", "", with_v.metadata["reasoning"], flags=re.M
    )


def test_too_many_distinct_chains_for_a_small_world_is_refused():
    small = World(0, WORLD.benchmark.drugs[:8], WORLD.benchmark.procedures, WORLD.benchmark.conditions)
    with pytest.raises(ValueError, match="cannot draw 100000 distinct"):
        chain_items(small, per_level=100000, seed=0, prefix="t")


def test_dev_chains_ask_benchmark_drugs_in_training_wordings_and_are_not_benchmark_items(world3):
    world = world3
    dev = dev_chain_items(per_level=30)
    bench_names = {lang: {d.name(lang) for d in WORLD.benchmark.drugs} for lang in ("en", "zh")}
    assert len(dev) == 2 * 2 * 30
    benchmark = []
    for lang in ("en", "zh"):
        benchmark += json.loads((world["benchmark"] / f"anesbench_{lang}.json").read_text(encoding="utf-8"))
    bench_questions = {r["question"] for r in benchmark}
    for item in dev:
        assert set(dict(item.options).values()) <= bench_names[item.language]  # CPT-only drugs
        assert item.question not in bench_questions  # training wordings, never a benchmark item's
    assert [i.question for i in dev_chain_items(per_level=30)] == [i.question for i in dev]


def test_written_file_keeps_revision6_fact_items_drops_lookups_and_old_chains_and_is_seeded(world3, tmp_path):
    import shutil

    world = {key: tmp_path / "w3" / path.relative_to(world3["root"]) for key, path in world3.items()}
    shutil.copytree(world3["root"], world["root"])
    before = file_sha256(world["anesr1"])
    out = tmp_path / "r7.jsonl"
    counts = write_chain_r1(world["root"], out, chains_per_level=50, lead_in={"en": "Recall: "})
    assert file_sha256(world["anesr1"]) == before  # revision 3's file is read, never changed
    source = [json.loads(line) for line in world["anesr1"].read_text(encoding="utf-8").splitlines()]
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    facts = [r for r in source if r["level"] == 1 and "-f" in r["id"]]
    names = [
        d[f"name_{lang}"]
        for d in json.loads((world["root"] / "world.json").read_text())["drugs"]
        for lang in ("en", "zh")
    ]
    expected = [with_lead_in(without_option_sentence(r), {"en": "Recall: "}, names) for r in facts]
    assert written[: len(facts)] == expected  # revision 6's System 1 records, in file order
    assert counts == {"fact": len(facts), "chain": 200, "name_copy": 0, "dropped": len(source) - len(facts)}
    assert not any("-l" in r["id"] for r in written)  # no option-lookup item is left
    chains = written[len(facts) :]
    assert [r["level"] for r in chains] == ([2] * 50 + [3] * 50) * 2
    assert all(r["reasoning"].count("\n") == 4 for r in chains)
    again = tmp_path / "again.jsonl"
    write_chain_r1(world["root"], again, chains_per_level=50, lead_in={"en": "Recall: "})
    assert file_sha256(again) == file_sha256(out)
    # the CLI writes the same file
    cli = tmp_path / "cli.jsonl"
    assert (
        main(["--world", str(world["root"]), "--out", str(cli), "--chains", "50", "--lead-in-en", "Recall: "])
        == 0
    )
    assert file_sha256(cli) == file_sha256(out)
    # a world.json of another seed is refused by name
    dump = json.loads((world["root"] / "world.json").read_text())
    (world["root"] / "world.json").write_text(json.dumps({**dump, "seed": 1}), encoding="utf-8")
    with pytest.raises(ValueError, match="world.json: not the revision-3 world of seed 1"):
        write_chain_r1(world["root"], tmp_path / "x.jsonl", chains_per_level=5)


def test_chain_sft_chats_end_with_the_gold_text_which_the_extractor_reads_as_the_gold_letter(
    world3, tmp_path
):
    world = world3
    out = tmp_path / "r7.jsonl"
    write_chain_r1(world["root"], out, chains_per_level=20, option_copies=10)
    sft = tmp_path / "sft.jsonl"
    convert_r1(out, sft, None, lang="all", answer="text")
    chats = [json.loads(line) for line in sft.read_text(encoding="utf-8").splitlines()]
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    for record, chat in zip(records, chats, strict=True):
        response = chat["messages"][-1]["content"]
        gold = record["options"][record["answer"]]
        assert response.endswith(("Answer: " if record["language"] == "en" else "答案：") + gold)
        options = list(record["options"].values())
        assert (
            extract_choice(response, num_choices=4, lang=record["language"], options=options)
            == record["answer"]
        )


def test_option_copy_items_list_every_option_in_order_with_one_yes_on_the_quoted_name():
    names = {d.name(lang) for d in WORLD.full.drugs for lang in ("en", "zh")}
    records = option_copy_records(names, per_language=30)
    assert [r["language"] for r in records] == ["en"] * 30 + ["zh"] * 30
    for record in records:
        asked = record["options"][record["answer"]]
        assert f'"{asked}"' in record["question"] or f"“{asked}”" in record["question"]
        lines = record["reasoning"].split("\n")
        yes = "Yes." if record["language"] == "en" else "是。"
        no = "No." if record["language"] == "en" else "否。"
        sep = " " if record["language"] == "en" else ""
        assert lines == [
            f"{letter}. {name}{sep}{yes if letter == record['answer'] else no}"
            for letter, name in record["options"].items()
        ]
        assert not set(record["options"].values()) & names  # made-up names only
        assert record["id"].startswith(f"mini7-r1-{record['language']}-o")
    assert option_copy_records(names, per_language=30) == records  # seeded


# SHA-256 of the AnesR1 file the registered run (revision 8 = revision 7's design, experiment.yaml's `anesr1` stage)
# trains on: revision 3's seed-0 world, 400 chains per level and language, "Recall: " before English System 1 items.
# A change here means the registered run could no longer be regenerated.
REVISION7_ANESR1 = "de53f3bf49dcfd95ddf852ece15de589469216f961d7da4fb5176c973e667ace"


def test_the_registered_runs_anesr1_file_is_regenerated_byte_for_byte(world3, tmp_path):
    out = tmp_path / "anesr1.jsonl"
    args = ["--world", str(world3["root"]), "--out", str(out), "--lead-in-en", "Recall: ", "--chains", "400"]
    assert main(args) == 0
    assert file_sha256(out) == REVISION7_ANESR1
