"""QA datasets: Search-R1 parquet files and FlashRAG JSONL benchmarks, from local paths (or the hub when online).

Every loader returns :class:`QAExample` records. ``group_key`` = ``"<data_source>:<index>"`` is unique across a
merged training file: Search-R1's merged NQ + HotpotQA file restarts ``extra_info.index`` per source, and using the
bare index as the GRPO group id pools unrelated questions (official bug 2).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rexrag.data.template import (
    TemplateError,
    describe_difference,
    normalize_question,
    question_in_message,
    render_prompt,
    template_from_message,
    template_mismatch_message,
)
from rlcore.io import iter_jsonl_records

logger = logging.getLogger(__name__)

BENCHMARKS = ("nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle")
# Split used for evaluation when a benchmark has no test labels (Search-R1's merge script).
EVAL_SPLIT = {
    "nq": "test",
    "triviaqa": "test",
    "popqa": "test",
    "hotpotqa": "dev",
    "2wikimultihopqa": "dev",
    "musique": "dev",
    "bamboogle": "test",
}
TRAIN_MIX = ("nq", "hotpotqa")  # the paper's training sources
HUB_DATASET = "RUC-NLPIR/FlashRAG_datasets"


class DataFormatError(ValueError):
    """A dataset file is missing fields or malformed; the message names file and row/line."""


@dataclass
class QAExample:
    """One question with its golden answers."""

    question: str  # the bare question text
    golden_answers: list[str]  # every acceptable answer (EM against any)
    data_source: str  # benchmark name, e.g. "nq", "hotpotqa"
    index: str  # id within the source (extra_info.index or the FlashRAG id)
    # chat messages stored in a Search-R1 parquet (None: render ours)
    prompt_messages: list[dict] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    template: str | None = None  # the template the stored user message was rendered from (checked per row)

    @property
    def group_key(self) -> str:
        return f"{self.data_source}:{self.index}"


def _as_list(value: Any, where: str, name: str) -> list:
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        value = value.tolist()
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple):
        raise DataFormatError(f"{where}: field '{name}' must be a list, got {type(value).__name__}")
    return list(value)


def _question_from_messages(messages: list[dict]) -> str:
    """The question line of a Search-R1 user message ("... Question: <q>"), else the whole content."""
    content = str(messages[-1].get("content", ""))
    marker = "Question:"
    return content.rsplit(marker, 1)[1].strip() if marker in content else content.strip()


def _user_message(row: dict, where: str) -> tuple[list[dict], str]:
    messages = _as_list(row["prompt"], where, "prompt")
    if not messages or not all(isinstance(m, dict) for m in messages):
        raise DataFormatError(f"{where}: field 'prompt' must be a non-empty list of chat messages")
    last = messages[-1]
    if last.get("role") != "user" or not isinstance(last.get("content"), str):
        raise DataFormatError(
            f"{where}: field 'prompt' must end with a user message with text content, got {last!r:.200}"
        )
    return messages, last["content"]


def load_searchr1_parquet(path: str | os.PathLike) -> list[QAExample]:
    """Load a Search-R1-format parquet (columns ``data_source``, ``prompt``, ``reward_model``, ``extra_info``).

    ``reward_model.ground_truth.target`` holds the golden answers and ``extra_info.index`` the per-source index.
    The stored chat messages are kept in ``prompt_messages``. The file's template is the first row's user
    message with its question replaced by the placeholder; every row must round-trip through it (its question,
    from the ``question`` column when present, rendered into the template gives its stored message exactly), so
    the one template a run stores is the exact prompt of every training row. Other columns (``id``,
    ``golden_answers``, ``ability``, ``metadata``, as the official scripts leave them) are ignored.
    """
    # pyarrow costs ~0.12 s to import and only parquet files need it
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"parquet file not found: {path}")
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a file that is not parquet
        raise DataFormatError(f"{path}: not a readable parquet file ({err})") from err
    required = {"data_source", "prompt", "reward_model", "extra_info"}
    missing = required - set(table.column_names)
    if missing:
        raise DataFormatError(f"{path}: missing columns {sorted(missing)} (has {table.column_names})")
    examples = []
    template = None
    head_messages: list[dict] = []
    for row_number, row in enumerate(table.to_pylist()):
        where = f"{path} row {row_number}"
        try:
            target = row["reward_model"]["ground_truth"]["target"]
        except (KeyError, TypeError) as err:
            raise DataFormatError(
                f"{where}: field 'reward_model.ground_truth.target' is missing ({err!r})"
            ) from err
        index = (row["extra_info"] or {}).get("index")
        if index is None:
            raise DataFormatError(f"{where}: field 'extra_info.index' is missing")
        if not row["data_source"]:
            raise DataFormatError(f"{where}: field 'data_source' is empty")
        messages, content = _user_message(row, where)
        stored_question = row.get("question")
        if template is None:
            try:
                template = template_from_message(
                    content, stored_question if stored_question else _question_from_messages(messages)
                )
            except TemplateError as err:
                raise DataFormatError(f"{where}: field 'prompt': cannot find the template ({err})") from err
            head_messages = messages[:-1]
        question = (
            normalize_question(stored_question) if stored_question else question_in_message(content, template)
        )
        expected = render_prompt(question, template) if question is not None else None
        if expected != content:
            detail = (
                describe_difference(expected, content) if expected is not None else "prefix/suffix differ"
            )
            raise DataFormatError(
                f"{where}: field 'prompt' does not round-trip through the template of row 0 ({detail}); "
                "a file must render every question with one template"
            )
        if messages[:-1] != head_messages:
            raise DataFormatError(f"{where}: field 'prompt': its earlier messages differ from row 0's")
        answers = [str(a) for a in _as_list(target, where, "reward_model.ground_truth.target")]
        if not answers:
            raise DataFormatError(f"{where}: field 'reward_model.ground_truth.target' is empty")
        examples.append(
            QAExample(
                question,
                answers,
                str(row["data_source"]),
                str(index),
                prompt_messages=messages,
                metadata={"split": row["extra_info"].get("split"), "source_file": str(path)},
                template=template,
            )
        )
    logger.info("loaded %d examples from %s", len(examples), path)
    return examples


def load_flashrag_jsonl(path: str | os.PathLike, data_source: str | None = None) -> list[QAExample]:
    """Load a FlashRAG JSONL file (``id``, ``question``, ``golden_answers``; other keys go to ``metadata``).

    ``data_source`` defaults to the record's own ``data_source`` field, else the parent folder name
    (FlashRAG layout ``<root>/<benchmark>/<split>.jsonl``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"JSONL file not found: {path}")
    default_source = data_source or path.parent.name
    examples = []
    unnamed = 0
    for line_number, record in iter_jsonl_records(path, DataFormatError):
        where = f"{path}:{line_number}"
        for key in ("id", "question", "golden_answers"):
            if key not in record:
                raise DataFormatError(f"{where}: missing field '{key}' (keys: {sorted(record)})")
        if not isinstance(record["question"], str):
            raise DataFormatError(
                f"{where}: field 'question' must be a string, got {type(record['question']).__name__}"
            )
        answers = _as_list(record["golden_answers"], where, "golden_answers")
        if not all(isinstance(a, str | int | float) and not isinstance(a, bool) for a in answers):
            raise DataFormatError(f"{where}: field 'golden_answers' must hold strings, got {answers!r:.200}")
        answers = [str(a) for a in answers]
        source = data_source or record.get("data_source") or default_source
        unnamed += not (data_source or record.get("data_source"))
        extra = {
            k: v for k, v in record.items() if k not in ("id", "question", "golden_answers", "data_source")
        }
        examples.append(
            QAExample(str(record["question"]), answers, str(source), str(record["id"]), metadata=extra)
        )
    if unnamed:  # the FlashRAG layout <root>/<benchmark>/<split>.jsonl names the source by its folder
        logger.warning(
            "%s: %d records have no 'data_source'; they are scored as source '%s' (the parent folder's name). "
            'Add "data_source" to each record to choose the name.',
            path,
            unnamed,
            default_source,
        )
    logger.info("loaded %d examples from %s", len(examples), path)
    return examples


def load_hub_benchmark(name: str, split: str) -> list[QAExample]:
    """One FlashRAG benchmark split from the Hugging Face hub; a clear error when offline."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise DataFormatError(
            f"benchmark {name!r} is not available locally and HF_HUB_OFFLINE is set; download "
            f"{HUB_DATASET} ({name}/{split}.jsonl) and pass its path, e.g. data.eval_files=[<root>/{name}/{split}.jsonl]"
        )
    # datasets is heavy (~0.7 s to import) and only this path needs it
    import datasets

    try:
        rows = datasets.load_dataset(HUB_DATASET, name, split=split)
    except Exception as err:  # network and hub errors come in many types
        raise DataFormatError(
            f"could not load {HUB_DATASET}/{name} split {split} from the hub: {err}"
        ) from err
    return [
        QAExample(str(r["question"]), [str(a) for a in r["golden_answers"]], name, str(r["id"])) for r in rows
    ]


def load_qa_file(spec: str, data_source: str | None = None) -> list[QAExample]:
    """Dispatch on a path's suffix (``.parquet`` -> Search-R1, ``.jsonl`` -> FlashRAG) or a ``hub:<name>[/<split>]``."""
    if spec.startswith("hub:"):
        name, _, split = spec[len("hub:") :].partition("/")
        return load_hub_benchmark(name, split or EVAL_SPLIT.get(name, "test"))
    if spec.endswith(".parquet"):
        return load_searchr1_parquet(spec)
    if spec.endswith((".jsonl", ".json")):
        return load_flashrag_jsonl(spec, data_source)
    raise DataFormatError(f"cannot tell the format of {spec!r}: expected .parquet, .jsonl or hub:<benchmark>")


def load_benchmark(name: str, root: str | os.PathLike | None, split: str | None = None) -> list[QAExample]:
    """``<root>/<name>/<split>.jsonl`` (split defaults to :data:`EVAL_SPLIT`), else the hub if reachable."""
    split = split or EVAL_SPLIT.get(name, "test")
    if root is not None:
        path = Path(root) / name / f"{split}.jsonl"
        if path.is_file():
            return load_flashrag_jsonl(path, name)
    return load_hub_benchmark(name, split)


def load_many(specs: Sequence[str]) -> list[QAExample]:
    """Concatenate several files; warns when two examples share a group key (they would pool in GRPO)."""
    examples = [ex for spec in specs for ex in load_qa_file(spec)]
    seen: set[str] = set()
    duplicates = 0
    for ex in examples:
        duplicates += ex.group_key in seen
        seen.add(ex.group_key)
    if duplicates:
        logger.warning("%d examples share a (data_source, index) key with an earlier one", duplicates)
    return examples


def stored_template(examples: Sequence[QAExample], what: str = "the data") -> str | None:
    """The one template the examples' stored prompts were rendered from (None when none carries a prompt).

    Two files rendered with different templates are an error naming both."""
    found: dict[str, str] = {}
    for ex in examples:
        if ex.template is not None and ex.template not in found:
            found[ex.template] = ex.metadata.get("source_file", ex.data_source)
    if len(found) > 1:
        (first, first_file), (second, second_file) = list(found.items())[:2]
        raise DataFormatError(f"{what}: " + template_mismatch_message(first, first_file, second, second_file))
    return next(iter(found), None)


def write_flashrag_jsonl(examples: Sequence[QAExample], path: str | os.PathLike) -> None:
    """Write examples in the FlashRAG layout (``data_source`` and metadata kept as extra keys)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for ex in examples:
            record = {
                "id": ex.index,
                "question": ex.question,
                "golden_answers": ex.golden_answers,
                "data_source": ex.data_source,
                **{k: v for k, v in ex.metadata.items() if k != "source_file"},
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_searchr1_parquet(
    examples: Sequence[QAExample], path: str | os.PathLike, template: str, split: str
) -> None:
    """Write examples in the Search-R1 parquet layout with the user message rendered from ``template``."""
    # pyarrow costs ~0.12 s to import and only parquet files need it
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "data_source": ex.data_source,
            "prompt": [{"role": "user", "content": render_prompt(ex.question, template)}],
            "ability": "fact-reasoning",
            "reward_model": {"style": "rule", "ground_truth": {"target": list(ex.golden_answers)}},
            "extra_info": {"split": split, "index": int(ex.index) if ex.index.isdigit() else ex.index},
        }
        for ex in examples
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
