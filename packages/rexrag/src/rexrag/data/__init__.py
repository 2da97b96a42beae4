"""QA data: Search-R1 / FlashRAG loaders, the prompt template, and the synthetic knowledge world."""

from rexrag.data.qa import BENCHMARKS, EVAL_SPLIT, DataFormatError, QAExample, load_many, load_qa_file
from rexrag.data.template import DEFAULT_TEMPLATE, load_template, render_prompt

__all__ = [
    "BENCHMARKS",
    "EVAL_SPLIT",
    "DataFormatError",
    "QAExample",
    "load_many",
    "load_qa_file",
    "DEFAULT_TEMPLATE",
    "load_template",
    "render_prompt",
]
