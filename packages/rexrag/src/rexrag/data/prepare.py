"""The paper's data from FlashRAG dataset files: the Search-R1 training parquet and the seven test sets.

    python -m rexrag prepare-data --flashrag <FlashRAG_datasets folder> --out <folder>

Input: the published ``FlashRAG_datasets`` layout, one folder per benchmark holding ``train.jsonl`` /
``dev.jsonl`` / ``test.jsonl`` (records ``id``, ``question``, ``golden_answers``, optional ``metadata``); other
files (``README.md``, ``.gitattributes``, download caches) are ignored.

Output, in the layout Search-R1's merge scripts write (``data_source``, ``prompt`` as a one-message chat list,
``ability``, ``reward_model.ground_truth.target``, ``extra_info`` with ``split`` and ``index``; the FlashRAG
``id``, ``question`` and ``golden_answers`` columns kept beside them):

- ``train.parquet``: NQ train then HotpotQA train, ``extra_info.index`` restarting per source as in the official
  merged file (our loader groups by source + index);
- ``test.parquet``: the seven benchmarks merged, each from its ``test`` split, else ``dev``, else ``train`` (the
  official rule: NQ, TriviaQA, PopQA and Bamboogle test; HotpotQA, 2Wiki and MuSiQue dev);
- ``test/<benchmark>.parquet``: the same records, one file per benchmark;
- ``prompt_template.txt``: the template every prompt was rendered from.

Questions are stripped and end in ``?``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rexrag.data.qa import BENCHMARKS, TRAIN_MIX, DataFormatError, QAExample, load_flashrag_jsonl
from rexrag.data.template import TEMPLATE_FILE, normalize_question, render_prompt

logger = logging.getLogger(__name__)

SPLIT_PREFERENCE = ("test", "dev", "train")  # for evaluation: the first split a benchmark has
ABILITY = "fact-reasoning"


def benchmark_file(root: Path, name: str, splits: Sequence[str]) -> Path:
    """``<root>/<name>/<split>.jsonl`` for the first split present; a clear error naming what is there."""
    folder = root / name
    for split in splits:
        path = folder / f"{split}.jsonl"
        if path.is_file():
            return path
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise DataFormatError(
        f"{folder}: no {' / '.join(f'{s}.jsonl' for s in splits)} found "
        f"({'folder holds ' + ', '.join(present) if present else 'folder missing'}); expected the "
        "FlashRAG_datasets layout <root>/<benchmark>/<split>.jsonl"
    )


def _checked(examples: list[QAExample], path: Path) -> list[QAExample]:
    """Every record has a non-empty question and at least one golden answer (file, row and field named)."""
    for row, ex in enumerate(examples):
        if not ex.question.strip():
            raise DataFormatError(f"{path} row {row} (id {ex.index}): field 'question' is empty")
        if not ex.golden_answers:
            raise DataFormatError(f"{path} row {row} (id {ex.index}): field 'golden_answers' is empty")
    return examples


def searchr1_rows(
    examples: list[QAExample], data_source: str, split: str, template: str
) -> list[dict[str, Any]]:
    """One Search-R1 record per question; ``extra_info.index`` is the position within this source's file."""
    rows = []
    for index, ex in enumerate(examples):
        question = normalize_question(ex.question)
        rows.append(
            {
                "id": ex.index,
                "question": question,
                "golden_answers": list(ex.golden_answers),
                "data_source": data_source,
                "prompt": [{"role": "user", "content": render_prompt(question, template)}],
                "ability": ABILITY,
                "reward_model": {"style": "rule", "ground_truth": {"target": list(ex.golden_answers)}},
                "extra_info": {"split": split, "index": index},
            }
        )
    return rows


def _write(rows: list[dict[str, Any]], path: Path) -> Path:
    # pyarrow costs ~0.12 s to import and only parquet files need it
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    logger.info("wrote %d records to %s", len(rows), path)
    return path


def prepare_data(
    flashrag_root: str | Path,
    out: str | Path,
    template: str,
    train_sources: Sequence[str] = TRAIN_MIX,
    test_sources: Sequence[str] = BENCHMARKS,
) -> dict[str, Any]:
    """Write the training and test parquet files; returns ``{"files": {...}, "counts": {...}}``."""
    root, out = Path(flashrag_root), Path(out)
    if not root.is_dir():
        raise DataFormatError(f"FlashRAG folder not found: {root}")
    files: dict[str, Path] = {}
    counts: dict[str, int] = {}
    train_rows: list[dict[str, Any]] = []
    for source in train_sources:
        path = benchmark_file(root, source, ("train",))
        examples = _checked(load_flashrag_jsonl(path, source), path)
        train_rows += searchr1_rows(examples, source, "train", template)
        counts[f"train/{source}"] = len(examples)
    if train_sources:
        files["train"] = _write(train_rows, out / "train.parquet")
    test_rows: list[dict[str, Any]] = []
    for source in test_sources:
        path = benchmark_file(root, source, SPLIT_PREFERENCE)
        examples = _checked(load_flashrag_jsonl(path, source), path)
        rows = searchr1_rows(examples, source, "test", template)
        files[f"test/{source}"] = _write(rows, out / "test" / f"{source}.parquet")
        counts[f"test/{source}"] = len(rows)
        logger.info("%s: evaluation split %s (%d questions)", source, path.stem, len(rows))
        test_rows += rows
    if test_sources:
        files["test"] = _write(test_rows, out / "test.parquet")
    out.mkdir(parents=True, exist_ok=True)
    (out / TEMPLATE_FILE).write_text(template, encoding="utf-8")
    files["template"] = out / TEMPLATE_FILE
    return {"files": files, "counts": counts}
