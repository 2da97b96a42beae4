"""AnesBench loading for every published layout, detected per file.

* 2026 release (dataset card since March 2026): one JSON list per language, ``anesbench_en.json`` and
  ``anesbench_zh.json``; records ``id`` (UUID), ``question``, options ``A``..``I`` (as many as ``choice_num``),
  ``choice_num`` (int), ``target`` (the letter), ``category`` (int: 1 = System 1, 2 = System 1.x, 3 = System 2).
  No language field: a file's language is the majority script of its stems (a file is monolingual by
  construction), never its name.
* Original (May 2025) bilingual records: ``id, choice_num, answer, level (1/2/3), en_question, en_A.., and
  zh_question/zh_A.. (or cn_*)``. One record yields an English and a Chinese item; which ones are kept is the
  caller's choice (English by default, like the paper's EN table).
* Variants seen in conversions of either: prefixed monolingual records (``en_question`` or ``zh_question`` with
  matching option keys) and flat records (``question``, ``A``.. or ``options``, ``answer``/``target``,
  ``level``/``category``, optional ``language``).

Files may be JSON (a list), JSONL or Parquet. In a folder, non-data files (the dataset card, ``meta.json``,
a Croissant description) are skipped (``anessuite.records.data_files``). Anything else fails with the list of
fields found; a bad record fails with ``file: record '<id>': field '<name>': problem``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from anessuite.mcq import LANGUAGES, MCQItem, SchemaError
from anessuite.records import data_files, iter_records, read_records
from anessuite.tasks import TaskSpec, load_mcq_file, load_task_spec, parse_records

__all__ = ["detect_layout", "load_anesbench", "benchmark_files", "layout_specs", "LAYOUT_2026_FIELDS"]

logger = logging.getLogger(__name__)

_LEVEL_FIELDS = ("level", "category", "system", "cognitive_level")
_ANSWER_FIELDS = ("answer", "target")
_ID_FIELDS = ("id", "uuid", "qid", "question_id")
# The record fields of the 2026 release besides the options A..I.
LAYOUT_2026_FIELDS = ("id", "question", "choice_num", "target", "category")


def _pick(keys: set[str], candidates: Sequence[str]) -> str | None:
    return next((name for name in candidates if name in keys), None)


def detect_layout(keys: set[str], path: str | Path = "<records>") -> str:
    """'bilingual', 'prefixed', '2026' or 'flat'; SchemaError listing the fields otherwise."""
    prefixes = [p for p in ("en", "zh", "cn") if f"{p}_question" in keys]
    if "en_question" in keys and ("zh_question" in keys or "cn_question" in keys):
        return "bilingual"
    if len(prefixes) == 1:
        return "prefixed"
    if "question" in keys and ({"A", "B"} <= keys or "options" in keys):
        return "2026" if {"target", "category"} <= keys else "flat"
    raise SchemaError(
        f"{path}: unknown AnesBench layout; fields found: {sorted(keys)}. Expected the 2026 release "
        "(id, question, A..I, choice_num, target, category), the original bilingual layout (en_question, en_A.., "
        "zh_question/cn_question, answer, level, choice_num), prefixed monolingual records (en_question or "
        "zh_question with en_A../zh_A..), or flat records (question, A/B/.. or options, answer, level)."
    )


def layout_specs(keys: set[str], path: str | Path = "<records>") -> dict[str, TaskSpec]:
    """The TaskSpec per language that reads this layout (one entry per language the layout carries)."""
    layout = detect_layout(keys, path)
    common: dict[str, Any] = {
        "answer_field": _pick(keys, _ANSWER_FIELDS) or "answer",
        "choice_num_field": "choice_num",
        "id_field": _pick(keys, _ID_FIELDS),
        "level_field": _pick(keys, _LEVEL_FIELDS),
    }
    if layout == "bilingual":
        zh_prefix = "zh" if "zh_question" in keys else "cn"
        return {
            "en": TaskSpec(
                name="anesbench-en",
                question_field="en_question",
                option_prefix="en_",
                language="en",
                **common,
            ),
            "zh": TaskSpec(
                name="anesbench-zh",
                question_field=f"{zh_prefix}_question",
                option_prefix=f"{zh_prefix}_",
                language="zh",
                **common,
            ),
        }
    if layout == "prefixed":
        prefix = next(p for p in ("en", "zh", "cn") if f"{p}_question" in keys)
        language = "auto" if prefix == "en" else "zh"
        spec = TaskSpec(
            name=f"anesbench-{prefix}",
            question_field=f"{prefix}_question",
            option_prefix=f"{prefix}_",
            language=language,
            language_field=_pick(keys, ("language", "lang")),
            **common,
        )
        return {"auto": spec}
    options = {"options_field": "options"} if "options" in keys and "A" not in keys else {"option_prefix": ""}
    spec = TaskSpec(
        name="anesbench",
        question_field="question",
        language="auto",
        language_field=_pick(keys, ("language", "lang")),
        **options,
        **common,
    )
    return {"auto": spec}


def benchmark_files(path: str | Path) -> list[Path]:
    """A benchmark file, or every data file (.json/.jsonl/.parquet) in a folder, sorted; a dataset card,
    ``meta.json`` or Croissant file next to the data is skipped."""
    return data_files(path, what="benchmark")


def load_anesbench(path: str | Path, languages: Sequence[str] | None = None) -> list[MCQItem]:
    """Load AnesBench items from a file or a folder of files.

    Args:
        path: a JSON/JSONL file, or a folder holding ``anesbench_en.json`` / ``anesbench_zh.json`` (any names).
        languages: languages to keep. For the bilingual layout the default is ``("en",)``; for monolingual
            files the default keeps every language found.
    Raises:
        SchemaError: unknown layout (lists the fields found) or a bad record (names its id and field).
    """
    if languages is not None:
        bad = [lang for lang in languages if lang not in LANGUAGES]
        if bad:
            raise ValueError(f"unknown language(s) {bad}; expected a subset of {list(LANGUAGES)}")
    items: list[MCQItem] = []
    for file in benchmark_files(path):
        records = read_records(file)
        if not records:
            raise SchemaError(f"{file}: no records")
        keys: set[str] = set(records[0])
        specs = layout_specs(keys, file)
        if "auto" in specs:
            loaded = parse_records(specs["auto"], records, file)
            if specs["auto"].language_field is None and detect_layout(keys, file) in ("2026", "prefixed"):
                loaded = _one_language_per_file(loaded, file)
            if languages is not None:
                loaded = [item for item in loaded if item.language in languages]
        else:
            wanted = list(languages) if languages is not None else ["en"]
            loaded = [item for lang in wanted for item in parse_records(specs[lang], records, file)]
        logger.info("loaded %d items from %s (%s layout)", len(loaded), file, detect_layout(keys, file))
        items.extend(loaded)
    keys_seen: set[str] = set()
    for item in items:
        if item.key in keys_seen:
            raise SchemaError(
                f"{item.source}: record '{item.id}': field 'id': duplicate across files for '{item.language}'"
            )
        keys_seen.add(item.key)
    return items


def _one_language_per_file(items: list[MCQItem], file: Path) -> list[MCQItem]:
    """A monolingual file without a language field: every item gets the language most of its stems are in, so a
    Chinese stem that is mostly an English drug name cannot split the file."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.language] = counts.get(item.language, 0) + 1
    if len(counts) <= 1:
        return items
    language = max(counts, key=lambda lang: (counts[lang], lang == "en"))
    logger.warning(
        "%s: stems look like %s; the file is read as '%s' (its majority language)", file, counts, language
    )
    return [replace(item, language=language) for item in items]


def peek_fields(path: str | Path) -> list[str]:
    """Field names of the first record of a file, for diagnostics."""
    for record in iter_records(path):
        return sorted(record)
    return []


def load_items(
    path: str | Path,
    task: str = "anesbench",
    languages: Sequence[str] | None = None,
    task_spec: str | Path | None = None,
) -> list[MCQItem]:
    """Load any supported benchmark: AnesBench (layout detected) or a registered/YAML-declared MCQ task."""

    if task_spec is not None:
        spec = load_task_spec(task_spec)
        return [item for file in benchmark_files(path) for item in load_mcq_file(file, spec, languages)]
    if task == "anesbench":
        return load_anesbench(path, languages)
    return [item for file in benchmark_files(path) for item in load_mcq_file(file, task, languages)]
