"""Prompt records for the trainer: reading JSONL and turning one record into prompt token ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlcore.io import iter_jsonl_records
from rlcore.rollout import encode_chat_prompt

__all__ = ["load_records", "encode_record_prompt", "record_id"]


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """One dict per non-empty line of a JSONL file; errors name the file and line."""
    path = Path(path)
    records = []
    for line_number, record in iter_jsonl_records(path, what="data.path: prompt file"):
        record.setdefault("_line", line_number)
        records.append(record)
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def record_id(record: dict[str, Any], index: int, id_field: str) -> str:
    """The record's id, or its position when it has none (group ids are built from this)."""
    value = record.get(id_field)
    return str(value) if value is not None else f"record{index}"


def encode_record_prompt(
    tokenizer: Any,
    record: dict[str, Any],
    prompt_field: str = "prompt",
    use_chat_template: bool = True,
    system_prompt: str | None = None,
) -> list[int]:
    """Prompt token ids of one record.

    Accepted forms, in order: ``prompt_ids`` (list of ints, used as is); ``record[prompt_field]`` as a list of
    chat messages (chat template applied); ``record[prompt_field]`` as a string (one user turn through the chat
    template, after ``system_prompt`` if given, or raw text when ``use_chat_template`` is False).
    """
    if "prompt_ids" in record:
        ids = record["prompt_ids"]
        if not isinstance(ids, list) or not ids or not all(isinstance(t, int) for t in ids):
            raise ValueError(f"record {record.get('id', '?')}: prompt_ids must be a non-empty list of ints")
        return list(ids)
    if prompt_field not in record:
        raise KeyError(
            f"record {record.get('id', record.get('_line', '?'))} has no '{prompt_field}' field "
            f"(data.prompt_field); its keys are {sorted(record)}"
        )
    prompt = record[prompt_field]
    if isinstance(prompt, list):
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + prompt
        return encode_chat_prompt(tokenizer, messages)
    if not isinstance(prompt, str):
        raise TypeError(
            f"record field '{prompt_field}' must be a string or a list of messages, got {type(prompt).__name__}"
        )
    if not use_chat_template:
        return tokenizer.encode(prompt, add_special_tokens=False)
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": prompt}
    ]
    return encode_chat_prompt(tokenizer, messages)
