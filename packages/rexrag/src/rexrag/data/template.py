"""The search-agent prompt: our own wording of the Search-R1 tag protocol, configurable.

The protocol is fixed (``<think>``, ``<search>``, ``<information>``, ``<answer>``); the wording is not, so a user can
load the exact template a checkpoint was trained with (``template_file`` in the data config). A template is any
string with one ``{question}`` placeholder.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_TEMPLATE = (
    "Answer the question below. Whenever you receive new information, reason about it inside <think> and </think>. "
    "If you lack some knowledge, query the search engine by writing <search> your query </search>; its top results "
    "will come back between <information> and </information>. You may search as many times as you need. When you "
    "are done, give only the final short answer inside <answer> and </answer>, without explanation, for example "
    "<answer> Lisbon </answer>. Question: {question}\n"
)


TEMPLATE_FILE = "prompt_template.txt"  # written beside a trained model (and in its run folder)


class TemplateError(ValueError):
    """A prompt template lacks the ``{question}`` placeholder or cannot be read."""


def normalize_question(question: str) -> str:
    """Strip whitespace and end with a question mark (as Search-R1's preprocessing does)."""
    question = question.strip()
    if question and not question.endswith("?"):
        question += "?"
    return question


def load_template(template: str | None = None, template_file: str | None = None) -> str:
    """Return the template text: ``template_file`` if given, else ``template``, else :data:`DEFAULT_TEMPLATE`."""
    if template_file:
        path = Path(template_file)
        if not path.is_file():
            raise TemplateError(f"template file not found: {path}")
        template = path.read_text(encoding="utf-8")
        source = str(path)
    else:
        source = "data.template"
    template = template or DEFAULT_TEMPLATE
    if "{question}" not in template:
        raise TemplateError(f"{source}: the template must contain a '{{question}}' placeholder")
    return template


def render_prompt(question: str, template: str = DEFAULT_TEMPLATE) -> str:
    """The user message for one question (placeholder substitution only, so braces elsewhere are safe)."""
    return template.replace("{question}", normalize_question(question))


def template_from_message(content: str, question: str) -> str:
    """The template a stored user message was rendered from: its last occurrence of the (normalised) question
    replaced by the placeholder. Raises :class:`TemplateError` when the question is not in the message."""
    question = normalize_question(question)
    if "{question}" in content:
        raise TemplateError("the stored message already contains a '{question}' placeholder")
    position = content.rfind(question) if question else -1
    if position < 0:
        raise TemplateError(f"the question {question!r} does not occur in the stored message")
    return content[:position] + "{question}" + content[position + len(question) :]


def question_in_message(content: str, template: str) -> str | None:
    """The question a message rendered from ``template`` carries (None if the message does not fit the template)."""
    head, _, tail = template.partition("{question}")
    if len(content) < len(head) + len(tail) or not (content.startswith(head) and content.endswith(tail)):
        return None
    return content[len(head) : len(content) - len(tail)]


def describe_difference(expected: str, found: str) -> str:
    """Where two prompt texts first differ, with a little context on both sides (for error messages)."""
    position = next(
        (i for i, (a, b) in enumerate(zip(expected, found)) if a != b), min(len(expected), len(found))
    )
    start = max(position - 30, 0)
    return (
        f"first difference at character {position}: expected {expected[start : position + 30]!r}, "
        f"found {found[start : position + 30]!r}"
    )


def template_mismatch_message(first: str, first_name: str, second: str, second_name: str) -> str:
    """An error text naming both templates and where they differ."""
    return (
        f"prompt template mismatch: {first_name} uses {first!r} but {second_name} uses {second!r} "
        f"({describe_difference(first, second)})"
    )


def chat_prompt_ids(tokenizer, user_message: str, use_chat_template: bool = True) -> list[int]:
    """Token ids of the rollout prompt.

    With ``use_chat_template`` (the official behaviour, applied to base models too) the user message goes through
    the tokenizer's chat template with the generation prompt appended; otherwise the raw text is encoded.
    """
    if use_chat_template:
        # heavy and optional here: loads torch
        from rlcore.rollout import encode_chat_prompt

        return encode_chat_prompt(tokenizer, [{"role": "user", "content": user_message}])
    return list(tokenizer.encode(user_message, add_special_tokens=False))
