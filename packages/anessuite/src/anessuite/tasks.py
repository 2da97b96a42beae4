"""A small declarative registry of multiple-choice task formats.

A :class:`TaskSpec` says where a record keeps its stem, options, gold answer, id, level and language; one
generic parser turns records into :class:`MCQItem`. AnesBench layouts (detected per file, see
``benchmark.py``) are specs too, as are MedQA, MedMCQA and MMLU-medical style files. Users can add a format
with :func:`register_task` or a YAML file holding the same fields (``--task-spec``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from anessuite.mcq import LETTERS, MCQItem, SchemaError, detect_language, normalize_letter, normalize_level
from anessuite.records import iter_records

__all__ = [
    "TaskSpec",
    "TASKS",
    "register_task",
    "get_task",
    "load_task_spec",
    "parse_records",
    "load_mcq_file",
]

logger = logging.getLogger(__name__)

ANSWER_FORMATS = ("letter", "index0", "index1", "text")

# MMLU subjects usually grouped as "MMLU-medical" in medical LLM papers.
MMLU_MEDICAL_SUBJECTS = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)


@dataclass(frozen=True)
class TaskSpec:
    """Where one record format keeps each part of a single-answer MCQ."""

    name: str  # registry name
    question_field: str  # field with the question stem
    description: str = ""  # one line shown by `python -m anessuite tasks`
    option_prefix: str | None = None  # options live in f"{prefix}{letter}" fields ("" -> "A", "B", ...)
    option_fields: tuple[str, ...] = ()  # or: explicit per-option fields in letter order ("opa", "opb", ...)
    options_field: str | None = None  # or: one field holding a list of texts or a letter -> text mapping
    choice_num_field: str | None = None  # optional field giving the number of options (checked against them)
    answer_field: str = "answer"  # field with the gold answer
    answer_format: str = "letter"  # letter | index0 (0 = A) | index1 (1 = A) | text (the option's text)
    id_field: str | None = "id"  # field with a record id; None or missing -> "<file stem>-<index>"
    # field with the AnesBench level (1/2/3 or "System 1.x"); None -> no levels
    level_field: str | None = None
    language: str = "en"  # "en", "zh", or "auto" (read language_field, else detect from the stem's script)
    language_field: str | None = None  # field holding "en"/"zh" when language is "auto"
    filter_field: str | None = None  # keep only records whose filter_field value is in filter_values
    filter_values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        ways = sum([self.option_prefix is not None, bool(self.option_fields), self.options_field is not None])
        if ways != 1:
            raise ValueError(
                f"task '{self.name}': set exactly one of option_prefix, option_fields, options_field"
            )
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"task '{self.name}': answer_format must be one of {ANSWER_FORMATS}")
        if self.language not in ("en", "zh", "auto"):
            raise ValueError(f"task '{self.name}': language must be en, zh or auto, got {self.language!r}")


TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    if spec.name in TASKS and TASKS[spec.name] != spec:
        raise ValueError(f"task '{spec.name}' is already registered with a different spec")
    TASKS[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise KeyError(
            f"unknown task '{name}'; registered: {', '.join(sorted(TASKS))} (or pass --task-spec FILE)"
        )
    return TASKS[name]


def load_task_spec(path: str | Path) -> TaskSpec:
    """A TaskSpec from a YAML mapping with the dataclass's field names (lists become tuples)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a task spec must be a YAML mapping")
    valid = {f.name for f in dataclasses.fields(TaskSpec)}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise ValueError(f"{path}: unknown task-spec keys {unknown}; valid keys: {sorted(valid)}")
    for key in ("option_fields", "filter_values"):
        if key in data:
            data[key] = tuple(data[key])
    return TaskSpec(**data)


register_task(
    TaskSpec(
        name="mcq",
        description="flat MCQ: question, A/B/C/... option fields, answer letter, optional level/language",
        question_field="question",
        option_prefix="",
        choice_num_field="choice_num",
        level_field="level",
        language="auto",
        language_field="language",
    )
)
register_task(
    TaskSpec(
        name="medqa",
        description="MedQA (USMLE) style: question, options {letter: text}, answer_idx letter",
        question_field="question",
        options_field="options",
        answer_field="answer_idx",
    )
)
register_task(
    TaskSpec(
        name="medmcqa",
        description="MedMCQA style: question, opa..opd, cop = index of the correct option (0 = A)",
        question_field="question",
        option_fields=("opa", "opb", "opc", "opd"),
        answer_field="cop",
        answer_format="index0",
    )
)
register_task(
    TaskSpec(
        name="mmlu-medical",
        description="MMLU style (question, choices list, answer index 0 = A), medical subjects only",
        question_field="question",
        options_field="choices",
        answer_format="index0",
        id_field=None,
        filter_field="subject",
        filter_values=MMLU_MEDICAL_SUBJECTS,
    )
)


def _fail(path: Path, record_id: str, field: str, problem: str) -> SchemaError:
    return SchemaError(f"{path}: record '{record_id}': field '{field}': {problem}")


def _options(spec: TaskSpec, record: dict[str, Any], path: Path, rid: str) -> list[tuple[str, str]]:
    if spec.options_field is not None:
        if spec.options_field not in record:
            raise _fail(path, rid, spec.options_field, "missing")
        raw = record[spec.options_field]
        if isinstance(raw, dict):
            pairs = [(str(k).strip().upper(), v) for k, v in raw.items()]
            expected = list(LETTERS[: len(pairs)])
            if sorted(k for k, _ in pairs) != expected:
                raise _fail(path, rid, spec.options_field, f"option keys must be {expected}, got {list(raw)}")
            pairs.sort()
        elif isinstance(raw, list | tuple):
            pairs = list(zip(LETTERS, raw))
            if len(raw) > len(LETTERS):
                raise _fail(
                    path, rid, spec.options_field, f"{len(raw)} options; at most {len(LETTERS)} supported"
                )
        else:
            raise _fail(
                path, rid, spec.options_field, f"expected a list or mapping, got {type(raw).__name__}"
            )
        named = [(letter, f"{spec.options_field}.{letter}", text) for letter, text in pairs]
    elif spec.option_fields:
        named = []
        for letter, name in zip(LETTERS, spec.option_fields):
            if name not in record:
                raise _fail(path, rid, name, "missing")
            named.append((letter, name, record[name]))
    else:
        prefix = spec.option_prefix or ""
        count: int | None = None
        if spec.choice_num_field and spec.choice_num_field in record:
            count = record[spec.choice_num_field]
            if isinstance(count, bool) or not isinstance(count, int) or not 2 <= count <= len(LETTERS):
                raise _fail(
                    path, rid, spec.choice_num_field, f"must be an integer 2..{len(LETTERS)}, got {count!r}"
                )
        if count is None:
            count = 0
            while count < len(LETTERS) and f"{prefix}{LETTERS[count]}" in record:
                count += 1
        named = []
        for letter in LETTERS[:count]:
            name = f"{prefix}{letter}"
            if record.get(name) in (None, ""):
                if spec.choice_num_field in record:
                    raise _fail(
                        path,
                        rid,
                        spec.choice_num_field,
                        f"{count} disagrees with the options: option field '{name}' is missing or empty",
                    )
                raise _fail(path, rid, name, "missing")
            named.append((letter, name, record[name]))
        extra = next(
            (
                f"{prefix}{letter}"
                for letter in LETTERS[count:]
                if record.get(f"{prefix}{letter}") not in (None, "")
            ),
            None,
        )
        if extra is not None and spec.choice_num_field in record:
            raise _fail(
                path,
                rid,
                spec.choice_num_field,
                f"{count} disagrees with the options: option field '{extra}' is present",
            )
        if extra is not None:
            raise _fail(
                path, rid, extra, f"present after a gap: options must run A..{extra[-1]} without holes"
            )
    options = []
    for letter, name, text in named:
        if not isinstance(text, str) or not text.strip():
            raise _fail(path, rid, name, f"option text must be a non-empty string, got {text!r}")
        options.append((letter, text.strip()))
    if len(options) < 2:
        raise _fail(path, rid, spec.options_field or spec.option_prefix or "options", "fewer than 2 options")
    return options


def _answer(
    spec: TaskSpec, record: dict[str, Any], options: list[tuple[str, str]], path: Path, rid: str
) -> str:
    field = spec.answer_field
    if field not in record or record[field] is None:
        raise _fail(path, rid, field, "missing")
    raw = record[field]
    letters = [letter for letter, _ in options]
    try:
        if spec.answer_format == "letter":
            letter = normalize_letter(raw)
        elif spec.answer_format in ("index0", "index1"):
            if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).strip().isdigit():
                raise ValueError(f"expected an integer index, got {raw!r}")
            index = int(raw) - (1 if spec.answer_format == "index1" else 0)
            if not 0 <= index < len(letters):
                raise ValueError(f"index {raw!r} outside the {len(letters)} options")
            letter = letters[index]
        else:
            matches = [letter for letter, text in options if text.strip().lower() == str(raw).strip().lower()]
            if len(matches) != 1:
                raise ValueError(f"answer text {raw!r} matches {len(matches)} options, expected exactly 1")
            letter = matches[0]
    except ValueError as err:
        raise _fail(path, rid, field, str(err)) from err
    if letter not in letters:
        raise _fail(path, rid, field, f"answer '{letter}' is not one of the options {letters}")
    return letter


def _language(spec: TaskSpec, record: dict[str, Any], question: str, path: Path, rid: str) -> str:
    if spec.language != "auto":
        return spec.language
    if spec.language_field and record.get(spec.language_field) not in (None, ""):
        value = str(record[spec.language_field]).strip().lower()
        mapped = {"en": "en", "english": "en", "zh": "zh", "cn": "zh", "chinese": "zh", "zh-cn": "zh"}.get(
            value
        )
        if mapped is None:
            raise _fail(path, rid, spec.language_field, f"unknown language {value!r} (expected en or zh)")
        return mapped
    return detect_language(question)


def parse_records(
    spec: TaskSpec, records: Iterable[dict[str, Any]], path: str | Path, source: str | None = None
) -> list[MCQItem]:
    """Turn raw records into items, validating every field; the first bad record raises SchemaError."""
    path = Path(path)
    items: list[MCQItem] = []
    seen: set[str] = set()
    for index, record in enumerate(records):
        if spec.filter_field is not None and str(record.get(spec.filter_field)) not in spec.filter_values:
            continue
        raw_id = record.get(spec.id_field) if spec.id_field else None
        rid = str(raw_id) if raw_id not in (None, "") else f"{path.stem}-{index}"
        if spec.question_field not in record:
            raise _fail(path, rid, spec.question_field, "missing")
        question = record[spec.question_field]
        if not isinstance(question, str) or not question.strip():
            raise _fail(
                path, rid, spec.question_field, f"question must be a non-empty string, got {question!r}"
            )
        options = _options(spec, record, path, rid)
        answer = _answer(spec, record, options, path, rid)
        level = None
        if spec.level_field is not None:
            if spec.level_field not in record:
                raise _fail(path, rid, spec.level_field, "missing")
            try:
                level = normalize_level(record[spec.level_field])
            except ValueError as err:
                raise _fail(path, rid, spec.level_field, str(err)) from err
        item = MCQItem(
            id=rid,
            question=question.strip(),
            options=tuple(options),
            answer=answer,
            language=_language(spec, record, question, path, rid),
            level=level,
            source=source or path.name,
        )
        if item.key in seen:
            raise _fail(path, rid, spec.id_field or "id", f"duplicate id for language '{item.language}'")
        seen.add(item.key)
        items.append(item)
    return items


def load_mcq_file(
    path: str | Path, task: str | TaskSpec, languages: Sequence[str] | None = None
) -> list[MCQItem]:
    """Load one file with a registered task name or a spec; keep only ``languages`` if given."""
    spec = get_task(task) if isinstance(task, str) else task
    items = parse_records(spec, iter_records(path), path)
    if languages:
        items = [item for item in items if item.language in languages]
    logger.info("loaded %d items from %s (task %s)", len(items), path, spec.name)
    return items
