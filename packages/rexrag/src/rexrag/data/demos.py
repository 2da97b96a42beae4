"""Synthetic search demonstrations for the SFT warm-up on the synthetic world.

Each demonstration is a full multi-turn response built with the real retriever and the rollout engine's own
observation formatting, so the warm-up policy sees exactly what it will see during RL. Kinds:

- ``search``: search every entity of the question's chain, then answer (the gold behaviour).
- ``memory``: answer at once "from memory" with a wrong entity of the right type: the confident dead end REX-RAG
  is built to escape (fictional facts cannot be known without searching).
- ``shortcut``: multi-hop only: search the first entity, then answer the intermediate entity (a dead end after
  one search).
- ``recovery``: the ``memory`` thought, then one self-doubt sentence from the prompt pool, then the full search
  chain: the behaviour probes try to reach.
- ``reconsider``: one search, a wrong answer thought (the intermediate entity, or a distractor), then a self-doubt
  sentence and the rest of the chain (single-hop: the same search again) to the gold answer. This is exactly the
  context a probe of a searched-but-wrong rollout continues from (clones are cut where the answer block starts).

Questions that start with one of ``memory_prone`` (question types, or a world's cue prefix such as "Guess:",
:class:`rexrag.data.world.WorldConfig`) draw their kind from the ``prone_*`` shares instead (mostly
``memory``, a few ``recovery`` and ``search``): the warm-up then knows how to search (from every other question,
and from the recoveries) but rarely chooses to on those questions, so their rollout groups are mostly all wrong and
a probe whose pool sentence leads into a search can open the dead end.

``final_thought`` is the thought written before every answer block, "So the answer is {answer}." unless set: a
warm-up whose final answers of some question types were trained as memory answers can still read those answers out
of a passage in a hop ("Next I need X."), and a final thought in the hop's words lets the answer use that reading.

With ``fresh_names`` every demonstration's entity names are replaced by new draws after its searches ran
(:mod:`rexrag.data.fresh_names`): names never recur, so the warm-up has to copy them instead of remembering them.

Only model-written text is in the loss mask; observations are conditioned on but never trained. With
``train_inserted: false`` the pool sentence of ``recovery`` / ``reconsider`` demonstrations is conditioned on but
not trained (it is text the probe sampler inserts, not text the policy writes): the policy learns to continue after
a self-doubt sentence without learning to write one itself, so its dead-end behaviour is unchanged. (During RL a
probe's inserted tokens are trained, with the policy correction, as in the official code.)
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from rexrag.data.fresh_names import FreshNames
from rexrag.data.qa import QAExample
from rexrag.data.template import chat_prompt_ids, render_prompt
from rlcore.rollout import RolloutConfig, encode_observation

KINDS = ("search", "memory", "shortcut", "recovery", "reconsider")
MEMORY_THOUGHT = "<think> I already know this. </think>\n"
FINAL_THOUGHT = "So the answer is {answer}."  # the thought before the answer block (demos.final_thought)


@dataclass
class DemoConfig:
    """Mix of demonstration kinds (shares are renormalised)."""

    # added after warm-ups were stored: left out of config hashes while off, so those keep their identity
    IDENTITY_OMIT_AT_DEFAULT: ClassVar[tuple[str, ...]] = (
        "final_thought",
        "quote",
        "extra_prefixes",
        "extra_copies",
        "distractor_key",
    )

    frac_search: float = 0.7  # correct search chains
    frac_memory: float = 0.15  # immediate wrong answer without searching
    frac_shortcut: float = 0.1  # one search, then the intermediate entity as the answer (multi-hop questions)
    frac_recovery: float = 0.05  # memory thought -> pool self-doubt sentence -> full search chain
    frac_reconsider: float = 0.0  # one search -> wrong answer thought -> pool sentence -> rest of the chain
    train_inserted: bool = True  # train on the pool sentence too (false: condition on it only)
    # question beginnings (e.g. "In which year was") whose demonstrations use the prone_* mix instead: the warm-up
    # learns to answer those from memory (a dead end), while it searches well elsewhere and sees recoveries
    memory_prone: list[str] = field(default_factory=list)
    prone_frac_search: float = 0.05  # memory-prone questions: correct search chains
    prone_frac_memory: float = 0.85  # memory-prone questions: immediate wrong answer without searching
    # memory-prone questions: memory thought -> pool sentence -> search chain
    prone_frac_recovery: float = 0.1
    seed: int = 0  # seeds the kind draw, distractors and pool sentences
    # own data (qa.source=files): per question, this many extra search demonstrations in which the golden answer
    # is replaced, in the retrieved passages and in the answer, by another name, number or word of the corpus's
    # shape (rexrag.data.own_demos.answer_swap_demos): the answer can then only be read, not remembered
    answer_swaps: int = 0
    # replace every entity name of each demonstration (question, searches, passages, answer) by a fresh draw of the
    # same shape, consistently within it (rexrag.data.fresh_names): no name recurs, so only copying fits
    fresh_names: bool = False
    # the thought before every answer block (gold or wrong), with {answer} where the answer goes
    final_thought: str = FINAL_THOUGHT
    # question beginning (after a cue) -> n: the gold final thought of those questions quotes the n words the
    # passage writes before the answer ("Next I need Gunby in 1922."): the answer is copied on from a span the
    # warm-up can find (a city it reads in hops), not recalled; the answer block holds the answer alone
    quote: dict[str, int] = field(default_factory=dict)
    # question beginnings (after a cue) that get ``extra_copies`` more demonstrations each (own kind draw, own fresh
    # names), appended after every other demonstration so those keep their draws
    extra_prefixes: list[str] = field(default_factory=list)
    extra_copies: int = 0
    # how memory / shortcut distractors are grouped: "first_words" (the question's first three words, as every
    # warm-up before it; a subject's first word splits "Where was X born?" into one group per first name, most of
    # them without another answer, so the distractor is "unknown") or "template" (the question with its chain's
    # entities masked: every question of one wording shares its answers)
    distractor_key: str = "first_words"

    def shares(self, question: str) -> list[float]:
        """The kind shares (in :data:`KINDS` order) for one question."""
        if any(question.startswith(prefix) for prefix in self.memory_prone):
            shares = [self.prone_frac_search, self.prone_frac_memory, 0.0, self.prone_frac_recovery, 0.0]
            names = "demos.prone_frac_*"
        else:
            shares = [self.frac_search, self.frac_memory, self.frac_shortcut]
            shares += [self.frac_recovery, self.frac_reconsider]
            names = "demos.frac_*"
        if min(shares) < 0 or sum(shares) <= 0:
            raise ValueError(f"{names} must be >= 0 and not all 0 (question {question!r}), got {shares}")
        return shares


@dataclass
class Demo:
    """One tokenized demonstration."""

    prompt_ids: list[int]  # chat-templated prompt
    response_ids: list[int]  # model text and observations
    loss_mask: list[bool]  # True on model-written tokens
    kind: str  # one of KINDS
    text: str  # decoded response (for inspection)


DISTRACTOR_KEYS = ("first_words", "template")


def bare_question(example: QAExample) -> str:
    """The question without the world's cue (``metadata["cue"]``, a prefix that does not change what is asked)."""
    cue = example.metadata.get("cue") or ""
    question = example.question[len(cue) :] if cue and example.question.startswith(cue) else example.question
    return question.strip()


def _answer_key(example: QAExample, by: str = "first_words") -> tuple[str, str]:
    """Questions with the same wording pattern share an answer type (city, person, year, ...). ``first_words``:
    the first three words (a subject's first word can be one of them); ``template``: the question with the entities
    of its chain (``metadata["chain"]``) masked, the first three words when it has none (a user's own questions)."""
    question = bare_question(example)
    chain = example.metadata.get("chain") or []
    if by == "template" and chain:
        for entity in sorted(chain, key=len, reverse=True):
            question = re.sub(rf"(?<!\w){re.escape(entity)}(?!\w)", "{}", question)
        return example.data_source, question
    return example.data_source, " ".join(question.split()[:3])


def passage_quote(answer: str, passages: Sequence, words: int) -> str:
    """The ``words`` words the first passage holding ``answer`` (as a whole word) writes just before it ("" when
    no passage holds it with that many words before it)."""
    pattern = re.compile(rf"((?:\S+[ \t]+){{{words}}}){re.escape(answer)}(?!\w)")
    for passage in passages:
        text = getattr(passage, "contents", None)
        text = passage["contents"] if text is None else text
        body = text.split("\n", 1)[-1]  # the text, not the title line
        match = pattern.search(body)
        if match:
            return " ".join(match.group(1).split())
    return ""


def search_chain(example: QAExample) -> list[str]:
    """The queries of a search demonstration: the synthetic world's entity chain, else the question itself (a
    user's own questions carry no entity annotations; one search with the question is what a retriever built
    for questions expects)."""
    return list(example.metadata.get("chain") or [example.question])


def _search_turns(chain: Sequence[str]) -> list[str]:
    # a whole question (own data) is not an entity to look up by name
    thought = "I need to search for this." if chain[0].endswith("?") else f"I need to look up {chain[0]}."
    turns = [f"<think> {thought} </think>\n<search> {chain[0]} </search>"]
    turns += [f"<think> Next I need {entity}. </think>\n<search> {entity} </search>" for entity in chain[1:]]
    return turns


def _final(answer: str, thought: str = FINAL_THOUGHT, quote: str = "") -> str:
    shown = f"{quote} {answer}" if quote else answer
    return f"<think> {thought.format(answer=shown)} </think>\n<answer> {answer} </answer>"


def plan_demo(
    example: QAExample, kind: str, distractor: str, pool_sentence: str, final_thought: str = FINAL_THOUGHT
) -> list[tuple[str, str]]:
    """The demonstration as segments: ("model", text), ("inserted", pool sentence) or ("search", query) (the
    observation goes after it). Segments are tokenized one by one, as the rollout engine and a probe do.
    Questions without the world's ``metadata['chain']`` search with the question text (:func:`search_chain`)."""
    chain = search_chain(example)
    answer = example.golden_answers[0]
    if kind == "memory":
        return [("model", MEMORY_THOUGHT + f"<answer> {distractor} </answer>")]
    if kind == "shortcut":
        wrong = chain[1] if len(chain) > 1 and chain[1] != answer else distractor
        return [
            ("model", _search_turns(chain)[0]),
            ("search", chain[0]),
            ("model", _final(wrong, final_thought)),
        ]
    if kind == "reconsider":
        wrong = chain[1] if len(chain) > 1 and chain[1] != answer else distractor
        redo = chain[1:] if len(chain) > 1 else chain[:1]
        segments = [("model", _search_turns(chain)[0]), ("search", chain[0])]
        segments += [
            ("model", f"<think> {final_thought.format(answer=wrong)} </think>\n"),
            ("inserted", pool_sentence),
            ("model", f" </think>\n<search> {redo[0]} </search>"),
            ("search", redo[0]),
        ]
        for entity in redo[1:]:
            segments += [
                ("model", f"<think> Next I need {entity}. </think>\n<search> {entity} </search>"),
                ("search", entity),
            ]
        return segments + [("model", _final(answer, final_thought))]
    segments: list[tuple[str, str]] = []
    turns = _search_turns(chain)
    if kind == "recovery":
        segments = [("model", MEMORY_THOUGHT), ("inserted", pool_sentence)]
        turns[0] = f" </think>\n<search> {chain[0]} </search>"
    for entity, turn in zip(chain, turns):
        segments += [("model", turn), ("search", entity)]
    segments.append(("model", _final(answer, final_thought)))
    return segments


def build_demos(
    examples: Sequence[QAExample],
    tokenizer,
    retriever,
    rollout_config: RolloutConfig,
    template: str,
    pool: Sequence[str],
    cfg: DemoConfig,
    use_chat_template: bool = True,
    names: FreshNames | None = None,
) -> list[Demo]:
    """One demonstration per example, kinds drawn with ``cfg``'s shares (shortcut falls back to memory on
    single-hop questions). With ``cfg.fresh_names`` each is renamed by ``names`` after its searches ran."""
    if cfg.fresh_names and names is None:
        raise ValueError("demos.fresh_names needs the world's entity names (it works with qa.source=world)")
    rng = random.Random(cfg.seed)
    answers_by_key: dict[tuple[str, str], list[str]] = defaultdict(list)
    for example in examples:
        answers_by_key[_answer_key(example, cfg.distractor_key)].append(example.golden_answers[0])
    if cfg.extra_copies and cfg.extra_prefixes:
        repeated = [e for e in examples if bare_question(e).startswith(tuple(cfg.extra_prefixes))]
        examples = [*examples, *(repeated * cfg.extra_copies)]
    plans = []
    for example in examples:
        kind = rng.choices(KINDS, cfg.shares(example.question))[0]  # one draw per example, prone or not
        hops = len(search_chain(example))
        if kind == "shortcut" and (hops < 2 or example.data_source == "world_compare"):
            kind = "memory"
        key = _answer_key(example, cfg.distractor_key)
        candidates = [a for a in answers_by_key[key] if a not in example.golden_answers]
        distractor = rng.choice(candidates) if candidates else "unknown"
        plans.append(
            (example, kind, plan_demo(example, kind, distractor, rng.choice(list(pool)), cfg.final_thought))
        )
    queries = sorted({text for _, _, segments in plans for part, text in segments if part == "search"})
    results = dict(zip(queries, retriever.search(queries, rollout_config.retrieval_topk))) if queries else {}
    demos = []
    for example, kind, segments in plans:
        words = next((n for prefix, n in cfg.quote.items() if bare_question(example).startswith(prefix)), 0)
        if words and kind != "memory":
            segments = _quote_final(example, segments, results, cfg.final_thought, words)
        searched = results
        if cfg.fresh_names:
            example, segments, searched = names.rename_demo(example, segments, results)
        demos.append(
            tokenize_demo(
                example, kind, segments, searched, tokenizer, rollout_config, template, cfg, use_chat_template
            )
        )
    return demos


def _quote_final(
    example: QAExample, segments: list[tuple[str, str]], results: dict, thought: str, words: int
) -> list[tuple[str, str]]:
    """``segments`` with the gold final thought quoting ``words`` words of the last search's passage before the
    answer (:func:`passage_quote`)."""
    answer = example.golden_answers[0]
    last_query = [text for part, text in segments if part == "search"][-1]
    quote = passage_quote(answer, results[last_query], words)
    if not quote or segments[-1] != ("model", _final(answer, thought)):
        return segments  # a wrong final answer (shortcut) or no passage holding the answer: as before
    return [*segments[:-1], ("model", _final(answer, thought, quote))]


def fixed_texts(template: str, pool: Sequence[str], final_thought: str = FINAL_THOUGHT) -> list[str]:
    """The text of a demonstration that is not the world's: the prompt template, the pool sentences and the
    demonstrations' own phrases (never renamed by fresh names)."""
    return [template, *pool, MEMORY_THOUGHT, _final("X", final_thought), *_search_turns(["X", "Y"])]


def tokenize_demo(
    example: QAExample,
    kind: str,
    segments: Sequence[tuple[str, str]],
    results: dict,
    tokenizer,
    rollout_config: RolloutConfig,
    template: str,
    cfg: DemoConfig,
    use_chat_template: bool = True,
) -> Demo:
    """One planned demonstration as tokens: each segment tokenized on its own, the passages ``results[query]``
    formatted by the rollout engine's observation code after each search; only model-written tokens trained."""
    prompt_ids = chat_prompt_ids(tokenizer, render_prompt(example.question, template), use_chat_template)
    response: list[int] = []
    mask: list[bool] = []
    for part, text in segments:
        if part in ("model", "inserted"):
            ids = tokenizer.encode(text, add_special_tokens=False)
            trained = part == "model" or cfg.train_inserted
        else:
            ids, _ = encode_observation(list(results[text]), rollout_config, tokenizer)
            trained = False
        response += ids
        mask += [trained] * len(ids)
    return Demo(prompt_ids, response, mask, kind, tokenizer.decode(response))
