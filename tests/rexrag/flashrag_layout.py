"""Fixtures in the published FlashRAG_datasets and Search-R1 layouts, written by us (a plain module: conftest
files are not importable).

FlashRAG_datasets: ``<root>/<benchmark>/{train,dev,test}.jsonl`` with records ``id``, ``question``,
``golden_answers`` (a list) and, for some benchmarks, ``metadata``; at the root the dataset card ``README.md`` and
``.gitattributes``; a download through huggingface_hub also leaves ``.cache/huggingface/...`` beside the data.
Which splits each benchmark publishes follows the hub listing (PopQA and Bamboogle: test only; HotpotQA, 2Wiki
and MuSiQue: train and dev).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SPLITS = {
    "nq": ("train", "dev", "test"),
    "triviaqa": ("train", "dev", "test"),
    "popqa": ("test",),
    "hotpotqa": ("train", "dev"),
    "2wikimultihopqa": ("train", "dev"),
    "musique": ("train", "dev"),
    "bamboogle": ("test",),
}

# A template in the shape of Search-R1's (instructions, then "Question: <q>" and a newline); our own wording.
OFFICIAL_SHAPE_TEMPLATE = (
    "Work out the answer. Think inside <think> </think>, search with <search> query </search>, read results in "
    "<information> </information>, and answer inside <answer> and </answer>, e.g. <answer> Oslo </answer>. "
    "Question: {question}\n"
)


def record(benchmark: str, split: str, row: int) -> dict:
    """One record; questions come with stray spaces and without "?" as FlashRAG stores many of them."""
    rec = {
        "id": f"{split}_{row}",
        "question": f"  {benchmark} {split} question number {row} ",
        "golden_answers": [f"{benchmark} answer {row}", f"alias {row}"],
    }
    if benchmark in ("hotpotqa", "2wikimultihopqa", "musique", "popqa"):
        rec["metadata"] = {
            "type": "bridge",
            "level": "hard",
            "supporting_facts": {"title": ["A"], "sent_id": [0]},
        }
    return rec


def write_flashrag(root: Path, rows: int = 3) -> Path:
    """A FlashRAG_datasets folder with ``rows`` records per split and the stray non-data files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text("---\nlicense: cc-by-sa-4.0\n---\n# FlashRAG datasets\n")
    (root / ".gitattributes").write_text("*.jsonl filter=lfs diff=lfs merge=lfs -text\n")
    cache = root / ".cache" / "huggingface" / "download" / "nq"
    cache.mkdir(parents=True)
    (cache / "train.jsonl.metadata").write_text("0123abcd\n2025-01-01T00:00:00\n")
    for benchmark, splits in SPLITS.items():
        folder = root / benchmark
        folder.mkdir()
        for split in splits:
            lines = [json.dumps(record(benchmark, split, row)) for row in range(rows)]
            (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def official_rows(
    source: str, questions: list[str], split: str = "train", template: str = OFFICIAL_SHAPE_TEMPLATE
):
    """Rows as Search-R1's merge scripts leave them: FlashRAG columns (question already stripped and "?"-ended
    by the mapping function), then data_source, prompt, ability, reward_model, extra_info."""
    rows = []
    for index, question in enumerate(questions):
        rows.append(
            {
                "id": f"{split}_{index}",
                "question": question,
                "golden_answers": [f"gold {source} {index}"],
                "metadata": {"type": "bridge", "level": "easy"} if source == "hotpotqa" else None,
                "data_source": source,
                "prompt": [{"role": "user", "content": template.replace("{question}", question)}],
                "ability": "fact-reasoning",
                "reward_model": {"style": "rule", "ground_truth": {"target": [f"gold {source} {index}"]}},
                "extra_info": {"split": split, "index": index},
            }
        )
    return rows


def write_parquet(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path
