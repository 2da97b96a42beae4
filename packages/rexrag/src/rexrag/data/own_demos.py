"""The SFT warm-up's own-data source: search demonstrations built from a user's questions and retriever.

    python -m rexrag sft --config packages/rexrag/configs/cpu/sft_own_data.yaml \
        "qa.train_files=[my_data/train.jsonl]" "qa.eval_files=[my_data/test.jsonl]" \
        retriever.kind=http retriever.url=http://127.0.0.1:8765

``qa.source=files`` reads the same question records as the trainer (FlashRAG JSONL or Search-R1 parquet) and
searches the user's index (``retriever.kind=index``) or retrieval server (``retriever.kind=http``). A user's
questions carry no entity chain, so every demonstration searches with the question itself
(:func:`rexrag.data.demos.search_chain`) and copies the answer from what comes back. The demonstrations are
built by :func:`rexrag.data.demos.build_demos` with the real retriever, exactly as for the synthetic world.

A few dozen questions are learnt by heart long before a small model learns to read: the question alone predicts
its answer. ``demos.answer_swaps=N`` adds N *answer-swap* demonstrations per question
(:func:`answer_swap_demos`): the same search, but the golden answer is replaced everywhere in the retrieved
passages and in the final answer by another word of the same shape taken from the corpus (a capitalised name by
another capitalised name, a number by a number of as many digits, a lowercase word by a lowercase word). Only
copying the answer out of the passage fits those, which is the skill held-out questions need. Substitutes come from
the passages only, never from held-out answers.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from rexrag.data.demos import Demo, DemoConfig, plan_demo, tokenize_demo
from rexrag.data.qa import QAExample, load_many
from rexrag.data.template import render_prompt
from rexrag.recipes.train import open_retriever
from rlcore.config import existing_path
from rlcore.rewards.qa import normalize_answer
from rlcore.rollout import RolloutConfig
from rlcore.rollout.protocol import format_observation

logger = logging.getLogger(__name__)

# the tag protocol of the demonstrations, so a tokenizer trained from scratch keeps the tags in few tokens
PROTOCOL_TEXT = (
    "<think> I need to search for this. </think>\n<search> X </search>\n\n<information>Doc 1(Title: X) y\n"
    "</information>\n\n<think> So the answer is Z. </think>\n<answer> Z </answer>"
    "<think> I already know this. </think>\n"
)


@dataclass
class SFTQAConfig:
    """Questions the warm-up builds demonstrations from (the trainer's ``qa`` names)."""

    # world: the synthetic world of `data` (built if missing) | files: the paths below
    source: Literal["world", "files"] = "world"
    # source=files: questions to build demonstrations from (FlashRAG JSONL / Search-R1 parquet)
    train_files: list[str] = existing_path(factory=list)
    # source=files: held-out questions evaluated after the warm-up (empty: no evaluation)
    eval_files: list[str] = existing_path(factory=list)
    max_train_examples: int = 0  # cap on demonstration questions (0 = all)
    max_eval_examples: int = 0  # cap on evaluated questions (0 = all; eval.num_questions also caps)


@dataclass
class OwnData:
    """What a ``qa.source=files`` warm-up reads: its questions and the retriever to search them with."""

    train: list[QAExample] = field(default_factory=list)  # demonstration questions
    evaluation: list[QAExample] = field(default_factory=list)  # held-out questions
    retriever: object = None  # ``search(queries, topk) -> list[list[Passage]]``


def validate_source(qa: SFTQAConfig, retriever_kind: str) -> None:
    """Raise ``ValueError`` for a combination of ``qa`` and ``retriever`` that cannot work."""
    if qa.source == "files":
        if not qa.train_files:
            raise ValueError(
                "qa.source=files needs qa.train_files (the questions to build demonstrations from)"
            )
        if retriever_kind == "world-bm25":
            raise ValueError(
                "qa.source=files needs retriever.kind=index (retriever.index_dir=...) or retriever.kind=http "
                "(retriever.url=...): the synthetic world's index does not hold your passages"
            )
    elif retriever_kind != "world-bm25":
        raise ValueError(
            f"retriever.kind={retriever_kind} needs qa.source=files (the world has its own index)"
        )


def load_own_data(qa: SFTQAConfig, retriever_cfg) -> OwnData:
    """The user's questions and an open retriever (a retrieval server is asked for its health first)."""
    train = load_many(qa.train_files)
    evaluation = load_many(qa.eval_files) if qa.eval_files else []
    if qa.max_train_examples:
        train = train[: qa.max_train_examples]
    if qa.max_eval_examples:
        evaluation = evaluation[: qa.max_eval_examples]
    if not train:
        raise ValueError(f"qa.train_files {list(qa.train_files)} hold no questions")
    retriever = open_retriever(retriever_cfg, None)
    if retriever_cfg.kind == "http":  # a server that is not up is a setup mistake: say so before any work
        retriever.health()
    logger.info("own data: %d demonstration questions, %d held-out questions", len(train), len(evaluation))
    return OwnData(train, evaluation, retriever)


def own_tokenizer_texts(
    examples: Sequence[QAExample], retriever, rollout: RolloutConfig, template: str, pool: Sequence[str]
) -> list[str]:
    """Text a from-scratch tokenizer is trained on: the rendered questions, what a search with each question
    returns (observation-formatted), the answers, the pool and the tag protocol."""
    questions = [example.question for example in examples]
    results = retriever.search(questions, rollout.retrieval_topk)
    texts = [render_prompt(question, template) for question in questions]
    texts += [format_observation(list(passages), rollout) for passages in results]
    texts += [f"<answer> {answer} </answer>" for example in examples for answer in example.golden_answers]
    return texts + list(pool) * 5 + [PROTOCOL_TEXT] * 50


def answer_coverage(examples: Sequence[QAExample], retriever, topk: int) -> float:
    """Share of questions whose top-``topk`` passages for the question itself contain a golden answer
    (normalised): the ceiling of what search-then-copy demonstrations can teach."""
    if not examples:
        return 0.0
    results = retriever.search([example.question for example in examples], topk)
    found = 0
    for example, passages in zip(examples, results):
        text = normalize_answer(" ".join(passage.contents for passage in passages))
        found += any(normalize_answer(answer) in text for answer in example.golden_answers)
    return found / len(examples)


_WORD = re.compile(r"[^\W\d_][\w'-]*|\d+")


def corpus_words(passages: Sequence) -> tuple[list[str], list[str]]:
    """Capitalised words seen inside a sentence (names, not sentence openers) and lowercase words of 4+ letters,
    sorted: the substitutes of :func:`swap_answer`."""
    names, words = set(), set()
    for passage in passages:
        for line in passage.contents.splitlines():
            previous = ""
            for match in _WORD.finditer(line):
                word = match.group()
                opener = not previous or line[: match.start()].rstrip().endswith((".", "!", "?", ":"))
                if word[0].isupper() and not opener:
                    names.add(word)
                elif word.islower() and len(word) >= 4:
                    words.add(word)
                previous = word
    return sorted(names), sorted(words)


def swap_answer(answer: str, rng: random.Random, names: Sequence[str], words: Sequence[str]) -> str:
    """``answer`` with its names and numbers replaced (``"Ilda Marrow"`` -> ``"Corin Pell"``, ``"1412"`` ->
    ``"1093"``; other words kept), or, when it has neither, its lowercase words replaced; ``""`` if nothing can be
    replaced."""
    tokens = list(_WORD.finditer(answer))
    named = [t for t in tokens if t.group().isdigit() or t.group()[0].isupper()]
    targets = named or [t for t in tokens if t.group().islower()]
    if (
        not targets
        or (not names and any(not t.group().isdigit() for t in named))
        or (not named and not words)
    ):
        return ""
    for _ in range(10):
        pieces, last = [], 0
        for token in targets:
            word = token.group()
            if word.isdigit():
                low = 10 ** (len(word) - 1) if len(word) > 1 else 0
                new = str(rng.randint(low, 10 ** len(word) - 1))
            else:
                new = rng.choice(names if named else words)
            pieces += [answer[last : token.start()], new]
            last = token.end()
        swapped = "".join(pieces) + answer[last:]
        if swapped != answer:
            return swapped
    return ""


def answer_swap_demos(
    examples: Sequence[QAExample],
    tokenizer,
    retriever,
    rollout: RolloutConfig,
    template: str,
    cfg: DemoConfig,
    use_chat_template: bool = True,
) -> list[Demo]:
    """``cfg.answer_swaps`` search demonstrations per question whose golden answer is swapped for a word of the
    same shape, in the passages a search with the question returns and in the answer (kind ``search``).
    Questions whose passages do not contain a golden answer get none."""
    if not cfg.answer_swaps or not examples:
        return []
    rng = random.Random(cfg.seed + 1)
    results = retriever.search([example.question for example in examples], rollout.retrieval_topk)
    names, words = corpus_words([p for passages in results for p in passages])
    demos, skipped = [], 0
    for example, passages in zip(examples, results):
        text = "\n".join(p.contents for p in passages)
        found = [a for a in example.golden_answers if a and _occurrence(a).search(text)]
        if not found:
            skipped += 1
            continue
        answer = max(found, key=len)  # "the Querrin Downs" rather than "Querrin Downs": replaces both
        for _ in range(cfg.answer_swaps):
            new = swap_answer(answer, rng, names, words)
            if not new:
                break
            swapped = [replace(p, contents=_occurrence(answer).sub(new, p.contents)) for p in passages]
            fake = replace(example, golden_answers=[new], metadata={})
            segments = plan_demo(fake, "search", "", "")
            demos.append(
                tokenize_demo(
                    fake,
                    "search",
                    segments,
                    {example.question: swapped},
                    tokenizer,
                    rollout,
                    template,
                    cfg,
                    use_chat_template,
                )
            )
    if skipped:
        logger.info(
            "answer swaps: %d of %d questions have no golden answer in their passages", skipped, len(examples)
        )
    return demos


def _occurrence(answer: str) -> re.Pattern:
    return re.compile(rf"(?<!\w){re.escape(answer)}(?!\w)")
