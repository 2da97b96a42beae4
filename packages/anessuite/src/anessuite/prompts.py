"""Zero-shot chain-of-thought chat prompts for MCQ evaluation, in English and Chinese (our own wording).

Differences from the official evaluator, on purpose:

* a Chinese variant is used for Chinese questions (the official code only ever formats ``en_*`` fields);
  ``instruction_language: en`` reproduces "English instructions for every question";
* the model is asked to end with ``Answer: X`` / ``答案：X`` so extraction rarely has to guess.

Templates are plain ``str.format`` strings with ``{letters}``, ``{question}`` and ``{options}``; ``{options}`` is
one line per option from ``option_line_en`` / ``option_line_zh`` (fields ``{letter}`` and ``{text}``; by default
``X. text``).

``preset: official`` follows the official evaluation's prompt *layout* instead: a system message
casting the model as a medical assistant for anesthesiology and general medicine, one English user message that
asks for step-by-step analysis of every option and the single most suitable letter among "A, B, C and D", with
no required answer format, then the stem and ``X. text`` option lines. The wording is ours (the official
sentences are not reproduced), instructions stay English for Chinese items as in the official code, and the stem
and options are the item's own (Chinese for Chinese items). Decoding for the preset is set by the caller:
greedy, 2,048 new tokens (``packages/anessuite/configs/anesbench.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from anessuite.mcq import MCQItem

__all__ = ["PromptConfig", "build_messages", "build_direct_messages", "format_letters", "format_options"]

SYSTEM_EN = (
    "You are a clinical assistant with deep expertise in anesthesiology, perioperative care and general "
    "medicine. You answer multiple-choice questions carefully and accurately."
)
SYSTEM_ZH = "你是一名精通麻醉学、围术期医学和临床医学的助手，会认真、准确地回答单项选择题。"
USER_EN = (
    "Here is a multiple-choice question from anesthesiology. Exactly one of the options {letters} is correct.\n"
    "Work through it step by step: consider what the question asks and weigh each option before deciding. "
    'When you are done, write your final choice on the last line as "Answer: X", where X is the option letter.\n\n'
    "Question: {question}\n{options}"
)
USER_ZH = (
    "下面是一道麻醉学单项选择题，选项{letters}中只有一个正确。\n"
    "请逐步思考：先弄清题目要求，再逐一分析每个选项，然后作出判断。"
    "最后一行请按“答案：X”的格式写出你的选择，X为选项字母。\n\n"
    "题目：{question}\n{options}"
)
SYSTEM_OFFICIAL = (
    "You are a medical AI assistant with expertise in anesthesiology and general medicine. Your task is to give "
    "accurate and concise answers to medical multiple-choice questions, always selecting the most appropriate "
    "option on the basis of medical knowledge and sound reasoning."
)
USER_OFFICIAL = (
    "The following is a multiple-choice question on medicine and anesthesiology. Analyse it carefully and select "
    "the single most appropriate option from {letters}. Think step by step: go through each option, explain why "
    "it is or is not correct, and then make your choice. Stop once you have given your answer.\n"
    "Here is the question:\n{question}\n{options}"
)
DIRECT_EN = (
    "Here is a multiple-choice question from anesthesiology. Exactly one of the options {letters} is correct. "
    "Reply with the letter of the correct option only.\n\nQuestion: {question}\n{options}"
)
DIRECT_ZH = "下面是一道麻醉学单项选择题，选项{letters}中只有一个正确。只回答正确选项的字母。\n\n题目：{question}\n{options}"


@dataclass
class PromptConfig:
    """Chat prompt for MCQ evaluation (zero-shot CoT by default)."""

    # added later, left out of config hashes and run identities while at their default
    IDENTITY_OMIT_AT_DEFAULT: ClassVar[tuple[str, ...]] = ("option_line_en", "option_line_zh")

    # "ours": the templates below; "official": the official evaluation's layout (module doc)
    preset: str = "ours"
    # "match": Chinese instructions for Chinese items; "en": English always
    instruction_language: str = "match"
    use_system_prompt: bool = True  # send a system message (some chat templates ignore or reject it)
    system_en: str = SYSTEM_EN  # system message, English
    system_zh: str = SYSTEM_ZH  # system message, Chinese
    user_en: str = USER_EN  # CoT user template, English; fields {letters} {question} {options}
    user_zh: str = USER_ZH  # CoT user template, Chinese
    direct_en: str = DIRECT_EN  # letter-only template for log-likelihood scoring, English
    direct_zh: str = DIRECT_ZH  # letter-only template for log-likelihood scoring, Chinese
    answer_prefix_en: str = "Answer:"  # assistant text the letter follows in log-likelihood mode, English
    answer_prefix_zh: str = "答案："  # same, Chinese
    option_line_en: str = "{letter}. {text}"  # one option line of {options}, English; fields {letter} {text}
    option_line_zh: str = "{letter}. {text}"  # same, Chinese

    def language_for(self, item: MCQItem) -> str:
        if self.instruction_language not in ("match", "en"):
            raise ValueError(
                f"prompt.instruction_language must be 'match' or 'en', got {self.instruction_language!r}"
            )
        return "zh" if self.instruction_language == "match" and item.language == "zh" else "en"


def format_letters(letters: list[str], language: str) -> str:
    """ "A, B, C and D" in English, "A、B、C、D" in Chinese."""
    if language == "zh":
        return "、".join(letters)
    if len(letters) == 1:
        return letters[0]
    return ", ".join(letters[:-1]) + " and " + letters[-1]


def format_options(item: MCQItem, line: str = "{letter}. {text}") -> str:
    """The option lines of ``item``, one ``line`` (``str.format`` with ``letter`` and ``text``) each."""
    return "\n".join(line.format(letter=letter, text=text) for letter, text in item.options)


def _official_messages(item: MCQItem) -> list[dict[str, str]]:
    user = USER_OFFICIAL.format(
        letters=format_letters(item.letters, "en"), question=item.question, options=format_options(item)
    )
    return [{"role": "system", "content": SYSTEM_OFFICIAL}, {"role": "user", "content": user}]


def _messages(item: MCQItem, config: PromptConfig, direct: bool) -> list[dict[str, str]]:
    if config.preset not in ("ours", "official"):
        raise ValueError(f"prompt.preset must be 'ours' or 'official', got {config.preset!r}")
    if config.preset == "official" and not direct:
        return _official_messages(item)
    language = config.language_for(item)
    template = {
        (False, "en"): config.user_en,
        (False, "zh"): config.user_zh,
        (True, "en"): config.direct_en,
        (True, "zh"): config.direct_zh,
    }[(direct, language)]
    line = config.option_line_zh if language == "zh" else config.option_line_en
    user = template.format(
        letters=format_letters(item.letters, language),
        question=item.question,
        options=format_options(item, line),
    )
    messages = []
    if config.use_system_prompt:
        messages.append(
            {"role": "system", "content": config.system_zh if language == "zh" else config.system_en}
        )
    messages.append({"role": "user", "content": user})
    return messages


def build_messages(item: MCQItem, config: PromptConfig) -> list[dict[str, str]]:
    """The chain-of-thought chat messages for one item."""
    return _messages(item, config, direct=False)


def build_direct_messages(item: MCQItem, config: PromptConfig) -> tuple[list[dict[str, str]], str]:
    """Letter-only messages and the assistant prefix after which option letters are scored."""
    prefix = config.answer_prefix_zh if config.language_for(item) == "zh" else config.answer_prefix_en
    return _messages(item, config, direct=True), prefix
