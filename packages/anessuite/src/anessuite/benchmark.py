"""AnesBench loading for both known releases, with layout detection.

* Original (May 2025) bilingual records: ``id, choice_num, answer, level (1/2/3), en_question, en_A.., and
  zh_question/zh_A.. (or cn_*)``. One record yields an English and a Chinese item; which ones are kept is the
  caller's choice (English by default, like the paper's EN table).
* 2026 release, two files ``anesbench_en.json`` / ``anesbench_zh.json``. Their exact keys are not documented,
  so the loader accepts prefixed monolingual records (``en_question``/``zh_question``/``cn_question`` with
  matching option keys) and flat records (``question``, ``A``.. or ``options``, ``answer``, ``level``).
  The language comes from a ``zh_``/``cn_`` prefix or a ``language`` field, else from the stem's script,
  never from the file name (a Chinese file that reuses ``en_*`` keys is still Chinese).

Anything else fails with the list of fields found.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anessuite.mcq import LANGUAGES, MCQItem, SchemaError
from anessuite.records import iter_records, read_records
from anessuite.tasks import TaskSpec, parse_records

__all__ = ["detect_layout", "load_anesbench", "benchmark_files", "layout_specs"]

logger = logging.getLogger(__name__)

_LEVEL_FIELDS = ("level", "system", "cognitive_level")
_ID_FIELDS = ("id", "uuid", "qid", "question_id")


def _pick(keys: set[str], candidates: Sequence[str]) -> str | None:
    return next((name for name in candidates if name in keys), None)


def detect_layout(keys: set[str], path: str | Path = "<records>") -> str:
    """'bilingual', 'prefixed' or 'flat'; SchemaError listing the fields otherwise."""
    prefixes = [p for p in ("en", "zh", "cn") if f"{p}_question" in keys]
    if "en_question" in keys and ("zh_question" in keys or "cn_question" in keys):
        return "bilingual"
    if len(prefixes) == 1:
        return "prefixed"
    if "question" in keys and ({"A", "B"} <= keys or "options" in keys):
        return "flat"
    raise SchemaError(
        f"{path}: unknown AnesBench layout; fields found: {sorted(keys)}. Expected the original bilingual "
        "layout (en_question, en_A.., zh_question/cn_question, answer, level, choice_num), prefixed monolingual "
        "records (en_question or zh_question with en_A../zh_A..), or flat records (question, A/B/.. or options, "
        "answer, level)."
    )


def layout_specs(keys: set[str], path: str | Path = "<records>") -> dict[str, TaskSpec]:
    """The TaskSpec per language that reads this layout (one entry per language the layout carries)."""
    layout = detect_layout(keys, path)
    common: dict[str, Any] = {
        "answer_field": "answer",
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
    """A benchmark file, or every .json/.jsonl file in a folder (sorted)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
        if not files:
            raise FileNotFoundError(f"{path}: no .json or .jsonl benchmark files in this folder")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"benchmark not found: {path}")
    return [path]


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
    from anessuite.tasks import load_mcq_file, load_task_spec

    if task_spec is not None:
        spec = load_task_spec(task_spec)
        return [item for file in benchmark_files(path) for item in load_mcq_file(file, spec, languages)]
    if task == "anesbench":
        return load_anesbench(path, languages)
    return [item for file in benchmark_files(path) for item in load_mcq_file(file, task, languages)]
