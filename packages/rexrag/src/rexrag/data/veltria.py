"""An example of "your own data": a small invented corpus and question file in the layouts users bring.

40 passages about the made-up country of Veltria (towns, rivers, people) and questions whose answers are written
in one passage, so a policy must search to answer them: ``questions.jsonl`` (30 questions: river and founder of
every town, source of every river) and a train / held-out split of 60 questions, ``train.jsonl`` (42) and
``test.jsonl`` (18). The held-out questions ask about the last three towns, people and rivers, which no training
question mentions (the same kinds of question, other entities). Deterministic: the same files every call.
docs/rexrag.md ("Your own data") starts from them; the tests run that sequence on them.

    python -m rexrag example-data --out my_data     # my_data/corpus.jsonl, questions.jsonl, train.jsonl, test.jsonl
"""

from __future__ import annotations

import json
from pathlib import Path

# (town, river, founder, founding year, main trade)
TOWNS = [
    ("Orsk", "Tamsel", "Ilda Marrow", 1412, "glass"),
    ("Vennick", "Aubre", "Tomas Quell", 1288, "salt"),
    ("Carrow Bay", "Linnet", "Asha Pell", 1530, "whaling"),
    ("Hestholm", "Grey Oder", "Bram Solve", 1175, "timber"),
    ("Miravel", "Sorrow Brook", "Edda Kint", 1602, "silk"),
    ("Dunmere", "Pallis", "Oren Vask", 1341, "copper"),
    ("Tollan", "Wether", "Nia Brask", 1466, "wool"),
    ("Querrin", "Almsey", "Fen Hollis", 1219, "wine"),
    ("Brisk Ford", "Callow", "Marit Dane", 1584, "cheese"),
    ("Ostra", "Velm", "Corin Ashe", 1390, "paper"),
]
# (person, born in town, known for)
PEOPLE = [
    ("Ilda Marrow", "Orsk", "the first glass furnace of Veltria"),
    ("Tomas Quell", "Vennick", "the salt road to the coast"),
    ("Asha Pell", "Carrow Bay", "the lighthouse on Gannet Point"),
    ("Bram Solve", "Hestholm", "the timber charter of 1180"),
    ("Edda Kint", "Miravel", "the silk guild"),
    ("Oren Vask", "Dunmere", "the deep copper mine"),
    ("Nia Brask", "Tollan", "the wool market hall"),
    ("Fen Hollis", "Querrin", "the terraced vineyards"),
    ("Marit Dane", "Brisk Ford", "the ford bridge"),
    ("Corin Ashe", "Ostra", "the paper mill on the Velm"),
]
# (river, source mountain, length in km)
RIVERS = [
    ("Tamsel", "Mount Harrow", 212),
    ("Aubre", "the Keld Hills", 148),
    ("Linnet", "Mount Sorel", 96),
    ("Grey Oder", "the Pike Range", 305),
    ("Sorrow Brook", "Mount Ivel", 57),
    ("Pallis", "the Dunmere Fells", 181),
    ("Wether", "Mount Caddon", 133),
    ("Almsey", "the Querrin Downs", 88),
    ("Callow", "Mount Breck", 164),
    ("Velm", "the Ostra Heights", 240),
]
COUNTRY = [
    (
        "Veltria",
        "Veltria is a small inland country whose capital is Orsk. Its currency is the veltrian mark.",
    ),
    ("Veltrian mark", "The veltrian mark is the currency of Veltria, first minted in Vennick in 1501."),
    ("Gannet Point", "Gannet Point is a headland near Carrow Bay where Asha Pell built a lighthouse."),
    ("Keld Hills", "The Keld Hills rise north of Vennick; the river Aubre starts there."),
    ("Harvest Fair of Tollan", "The Harvest Fair of Tollan is held every October in the wool market hall."),
    ("Veltrian Assembly", "The Veltrian Assembly meets in Orsk and has 61 members."),
    (
        "Pike Range",
        "The Pike Range is the highest mountain range of Veltria; its tallest peak is Mount Iren.",
    ),
    ("Ostra Heights", "The Ostra Heights are wooded hills east of Ostra where the Velm begins."),
    ("Querrin Downs", "The Querrin Downs are chalk hills covered with vineyards south of Querrin."),
    ("Linnet Estuary", "The Linnet Estuary opens into the sea at Carrow Bay."),
]


def passages() -> list[dict[str, str]]:
    """40 passages: 10 towns, 10 people, 10 rivers, 10 about the country; `contents` is "Title\\ntext"."""
    rows = []
    for town, river, founder, year, trade in TOWNS:
        text = f"{town} is a town in Veltria on the river {river}. It was founded in {year} by {founder}. "
        text += f"The town is known for its {trade} trade."
        rows.append((town, text))
    for person, born, known in PEOPLE:
        rows.append((person, f"{person} was born in {born}, Veltria. {person} is remembered for {known}."))
    for river, source, length in RIVERS:
        rows.append(
            (river, f"The {river} is a river of Veltria. It rises on {source} and is {length} km long.")
        )
    rows += COUNTRY
    return [{"id": str(i), "contents": f"{title}\n{text}"} for i, (title, text) in enumerate(rows)]


def questions() -> list[dict]:
    """30 questions, each answered by one passage; `data_source` names the question set."""
    items = []
    for town, river, founder, _year, _trade in TOWNS:
        items.append((f"Which river flows through {town}?", [river]))
        items.append((f"Who founded {town}?", [founder]))
    for river, source, _ in RIVERS:
        items.append(
            (f"On which mountain or hills does the {river} rise?", [source, source.removeprefix("the ")])
        )
    return [
        {"id": f"v{i}", "question": question, "golden_answers": answers, "data_source": "veltria"}
        for i, (question, answers) in enumerate(items)
    ]


HELDOUT_FROM = 7  # towns, people and rivers 7, 8 and 9 are asked about only in the held-out questions


def split_questions() -> dict[str, list[dict]]:
    """60 questions, each answered by one passage, split into ``train`` (42) and ``test`` (18) by the entity they
    ask about; `data_source` names the question set."""
    items: dict[str, list[tuple[str, list[str]]]] = {"train": [], "test": []}
    for number, (town, river, founder, year, trade) in enumerate(TOWNS):
        split = items["test" if number >= HELDOUT_FROM else "train"]
        split.append((f"Which river flows through {town}?", [river]))
        split.append((f"Who founded {town}?", [founder]))
        split.append((f"In which year was {town} founded?", [str(year)]))
        split.append((f"Which trade is {town} known for?", [trade, f"{trade} trade"]))
    for number, (person, born, _known) in enumerate(PEOPLE):
        items["test" if number >= HELDOUT_FROM else "train"].append((f"Where was {person} born?", [born]))
    for number, (river, source, _) in enumerate(RIVERS):
        items["test" if number >= HELDOUT_FROM else "train"].append(
            (f"On which mountain or hills does the {river} rise?", [source, source.removeprefix("the ")])
        )
    return {
        split: [
            {"id": f"{split}{i}", "question": question, "golden_answers": answers, "data_source": "veltria"}
            for i, (question, answers) in enumerate(rows)
        ]
        for split, rows in items.items()
    }


def write(folder: str | Path) -> dict[str, Path]:
    """Write ``corpus.jsonl``, ``questions.jsonl``, ``train.jsonl`` and ``test.jsonl`` into ``folder``; returns
    their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.jsonl" for name in ("corpus", "questions", "train", "test")}
    for name, rows in (("corpus", passages()), ("questions", questions()), *split_questions().items()):
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return paths
