"""Converters from the AnesSuite releases to training files (streaming; JSONL out).

* ``corpus``: AnesCorpus parquet (``text``) -> CPT JSONL ``{"text", "language"}``;
* ``qa``: AnesQA (``question``, ``answer``) -> SFT chat JSONL ``{"messages", "language"}``;
* ``r1``: AnesR1-style MCQs with a reasoning chain -> SFT chat JSONL (the evaluation prompt, then the reasoning
  ending in the answer line) and RLVR prompt JSONL (``prompt`` messages, ``gold_letter``, ``num_choices``,
  ``options``: the columns rlcore's ``mcq`` reward reads).

Language selection (``en`` / ``zh`` / ``all``) reads a record's ``language`` field when it has one, else the
script of its text - never the file name (the official ``--split cn`` matched no ``AnesCorpus_zh-*`` file).
Inputs may be a file or a folder of ``.parquet`` / ``.jsonl`` / ``.json`` files; parquet is read in batches so
millions of rows never sit in memory.

    python -m anessuite convert corpus --input AnesCorpus/ --out cpt_en.jsonl --lang en
    python -m anessuite convert qa --input AnesQA/ --out sft_qa.jsonl
    python -m anessuite convert r1 --input anesr1.jsonl --sft-out sft_r1.jsonl --rl-out rl_r1.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from anessuite.mcq import SchemaError, detect_language
from anessuite.prompts import PromptConfig, build_messages
from anessuite.records import data_files, iter_records
from anessuite.synthetic.questions import answer_line
from anessuite.tasks import TaskSpec, parse_records

__all__ = ["convert_corpus", "convert_qa", "convert_r1", "input_files", "main"]

logger = logging.getLogger(__name__)

_REASONING_FIELDS = ("reasoning", "cot", "rationale", "thinking", "explanation", "response")
DEFAULT_QA_SYSTEM = ""
_ROW_ID = "_anessuite_row_id"  # the record's id, or "<file stem>-<row>" when it has none


def input_files(path: str | Path) -> list[Path]:
    """A file, or the data files of a dataset folder (parquet/JSONL/JSON, recursively). The dataset card,
    ``.gitattributes``, ``meta.json``, ``dataset_info.json`` and Croissant files of a Hub download are skipped."""
    return data_files(path, what="input")


def _records(path: str | Path) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    for file in input_files(path):
        for index, record in enumerate(iter_records(file)):
            yield file, index, record


def _language(record: dict[str, Any], text: str) -> str:
    value = str(record.get("language") or record.get("lang") or "").strip().lower()
    if value in ("en", "english"):
        return "en"
    if value in ("zh", "cn", "chinese", "zh-cn"):
        return "zh"
    return detect_language(text)


def _check_lang(lang: str) -> None:
    if lang not in ("en", "zh", "all"):
        raise ValueError(f"--lang must be en, zh or all, got {lang!r}")


def _require(record: dict[str, Any], field: str, file: Path, index: int) -> str:
    value = record.get(field)
    if not isinstance(value, str):
        raise SchemaError(
            f"{file}: row {index}: field '{field}': expected text, got {type(value).__name__} "
            f"(fields found: {sorted(record)})"
        )
    return value


class _Writer:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1

    def close(self) -> None:
        self.handle.close()


def convert_corpus(
    input_path: str | Path, out: str | Path, lang: str = "all", min_chars: int = 1
) -> dict[str, int]:
    """CPT documents: keep rows of ``lang`` whose stripped text has at least ``min_chars`` characters."""
    _check_lang(lang)
    writer = _Writer(out)
    stats = {"read": 0, "written": 0, "skipped_language": 0, "skipped_short": 0}
    for file, index, record in tqdm(_records(input_path), desc="corpus", unit="doc"):
        stats["read"] += 1
        text = _require(record, "text", file, index).strip()
        if len(text) < min_chars:
            stats["skipped_short"] += 1
            continue
        language = _language(record, text)
        if lang != "all" and language != lang:
            stats["skipped_language"] += 1
            continue
        writer.write({"text": text, "language": language})
    writer.close()
    stats["written"] = writer.count
    logger.info("corpus -> %s: %s", out, stats)
    return stats


def convert_qa(
    input_path: str | Path,
    out: str | Path,
    lang: str = "all",
    system_prompt: str = DEFAULT_QA_SYSTEM,
    question_field: str = "question",
    answer_field: str = "answer",
) -> dict[str, int]:
    """AnesQA pairs as single-turn chats (an optional system message first)."""
    _check_lang(lang)
    writer = _Writer(out)
    stats = {"read": 0, "written": 0, "skipped_language": 0, "skipped_empty": 0}
    for file, index, record in tqdm(_records(input_path), desc="qa", unit="pair"):
        stats["read"] += 1
        question = _require(record, question_field, file, index).strip()
        answer = _require(record, answer_field, file, index).strip()
        if not question or not answer:
            stats["skipped_empty"] += 1
            continue
        language = _language(record, question)
        if lang != "all" and language != lang:
            stats["skipped_language"] += 1
            continue
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        writer.write({"messages": messages, "language": language})
    writer.close()
    stats["written"] = writer.count
    logger.info("qa -> %s: %s", out, stats)
    return stats


def _r1_spec(record: dict[str, Any]) -> TaskSpec:
    keys = set(record)
    question = next((k for k in ("question", "stem", "en_question", "zh_question") if k in keys), None)
    if question is None:
        raise SchemaError(f"AnesR1-style record without a question field; fields found: {sorted(keys)}")
    options: dict[str, Any]
    if "options" in keys:
        options = {"options_field": "options"}
    elif "choices" in keys:
        options = {"options_field": "choices"}
    else:
        options = {"option_prefix": question[: -len("question")]}
    # AnesR1 is unreleased (no dataset card): accept the AnesBench 2026 field names (target, category) too.
    answer = next((k for k in ("answer", "target", "answer_idx", "gold", "label") if k in keys), "answer")
    level = next((k for k in ("level", "category") if k in keys), None)
    return TaskSpec(
        name="anesr1",
        question_field=question,
        answer_field=answer,
        choice_num_field="choice_num",
        id_field=_ROW_ID,
        level_field=level,
        language="auto",
        language_field="language" if "language" in keys else None,
        **options,
    )


def _with_answer_line(reasoning: str, letter: str, language: str, text: str | None = None) -> str:
    """The reasoning, ending in our answer line: "Answer: X" with the letter, or with the option's ``text`` when
    given ("Answer: bradycardia", which ``rlcore.rewards.extract_choice`` reads as that option). A chain that
    already ends with the letter line gets it replaced by the text line, never both."""
    reasoning = reasoning.strip()
    letter_line = answer_line(letter, language)
    lines = reasoning.splitlines()
    if lines and lines[-1].strip() == letter_line:
        if text is None:
            return reasoning
        reasoning = "\n".join(lines[:-1]).strip()
    final = letter_line if text is None else answer_line(text, language)
    return f"{reasoning}\n{final}".strip()


def convert_r1(
    input_path: str | Path,
    sft_out: str | Path | None,
    rl_out: str | Path | None,
    lang: str = "all",
    prompt: PromptConfig | None = None,
    answer: str = "letter",
) -> dict[str, int]:
    """MCQs with reasoning -> SFT chats and/or RLVR prompts. The user turn is exactly the evaluation prompt, so
    training and evaluation see the same format. ``answer``: the SFT chats end with "Answer: <letter>"
    ("letter") or "Answer: <the gold option's text>" ("text"); the RLVR prompts do not depend on it."""
    _check_lang(lang)
    if answer not in ("letter", "text"):
        raise ValueError(f"convert_r1: answer must be 'letter' or 'text', got {answer!r}")
    prompt = prompt or PromptConfig()
    sft = _Writer(sft_out) if sft_out else None
    rl = _Writer(rl_out) if rl_out else None
    stats = {"read": 0, "skipped_language": 0, "no_reasoning": 0}
    spec: TaskSpec | None = None
    for file, index, record in tqdm(_records(input_path), desc="r1", unit="mcq"):
        stats["read"] += 1
        spec = spec or _r1_spec(record)
        row_id = record.get("id") if record.get("id") not in (None, "") else f"{file.stem}-{index}"
        (item,) = parse_records(spec, [{**record, _ROW_ID: row_id}], file, source=file.name)
        if lang != "all" and item.language != lang:
            stats["skipped_language"] += 1
            continue
        messages = build_messages(item, prompt)
        if rl is not None:
            rl.write(
                {
                    "id": item.id,
                    "prompt": messages,
                    "gold_letter": item.answer,
                    "num_choices": item.num_choices,
                    "options": [text for _, text in item.options],
                    "language": item.language,
                    "level": item.level,
                }
            )
        reasoning = next((record[k] for k in _REASONING_FIELDS if isinstance(record.get(k), str)), None)
        if sft is not None:
            if reasoning is None:
                stats["no_reasoning"] += 1
                continue
            sft.write(
                {
                    "messages": [
                        *messages,
                        {
                            "role": "assistant",
                            "content": _with_answer_line(
                                reasoning,
                                item.answer,
                                item.language,
                                dict(item.options)[item.answer] if answer == "text" else None,
                            ),
                        },
                    ],
                    "language": item.language,
                    "level": item.level,
                }
            )
    for writer, name in ((sft, "sft_written"), (rl, "rl_written")):
        if writer is not None:
            writer.close()
            stats[name] = writer.count
    logger.info("r1 -> sft %s, rl %s: %s", sft_out, rl_out, stats)
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anessuite convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    corpus = sub.add_parser("corpus", help="AnesCorpus parquet -> CPT JSONL")
    corpus.add_argument("--min-chars", type=int, default=1, help="drop documents shorter than this")
    qa = sub.add_parser("qa", help="AnesQA -> SFT chat JSONL")
    qa.add_argument("--system-prompt", default=DEFAULT_QA_SYSTEM, help="optional system message")
    r1 = sub.add_parser("r1", help="AnesR1-style MCQ + reasoning -> SFT chats and RLVR prompts")
    r1.add_argument("--sft-out", default=None, help="SFT chat JSONL")
    r1.add_argument("--rl-out", default=None, help="RLVR prompt JSONL")
    for name, command in (("corpus", corpus), ("qa", qa), ("r1", r1)):
        command.add_argument("--input", required=True, help="file or folder (.parquet/.jsonl/.json)")
        command.add_argument("--lang", default="all", choices=["en", "zh", "all"], help="language to keep")
        if name != "r1":
            command.add_argument("--out", required=True, help="output JSONL")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.kind == "corpus":
        stats = convert_corpus(args.input, args.out, args.lang, args.min_chars)
    elif args.kind == "qa":
        stats = convert_qa(args.input, args.out, args.lang, args.system_prompt)
    else:
        if not args.sft_out and not args.rl_out:
            parser.error("r1 needs --sft-out and/or --rl-out")
        stats = convert_r1(args.input, args.sft_out, args.rl_out, args.lang)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
