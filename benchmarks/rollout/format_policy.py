"""A tiny Qwen2 taught the search protocol in a few seconds, so benchmark rollouts really search and answer.

A random model never closes a tag, so every turn would be an invalid action. Here a byte-level BPE tokenizer is
trained on a synthetic capitals world and a small Qwen2 is fitted for a few hundred steps on transcripts
``<think>…</think>\\n<search> q </search>`` + observation + ``<think>…</think>\\n<answer> a </answer>``
(loss on the policy's tokens only). Sampling at T = 1 then mostly follows the protocol, with some noise.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from rlcore.generation.testing import build_tiny_qwen2
from rlcore.models import train_bpe_tokenizer
from rlcore.rollout import DEFAULT_SEARCH_INSTRUCTION, RolloutConfig, encode_chat_prompt, format_observation
from rlcore.rollout.testing import FakeRetriever

logger = logging.getLogger(__name__)

SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ra",
    "ven",
    "tor",
    "sel",
    "dun",
    "bri",
    "as",
    "mar",
    "quel",
    "zan",
    "or",
    "pe",
    "li",
]


def capitals_world(num_countries: int, seed: int) -> list[tuple[str, str]]:
    """(country, capital) pairs with made-up names."""
    rng = random.Random(seed)

    def name(parts: int) -> str:
        return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()

    return [(name(3), name(2)) for _ in range(num_countries)]


def world_documents(world: list[tuple[str, str]]) -> list[str]:
    return [
        f"{country}\n{capital} is the capital of {country}. It lies by a river." for country, capital in world
    ]


def question(country: str) -> str:
    return f"What is the capital of {country}?"


def chat_prompt_text(tokenizer, country: str) -> str:
    messages = [{"role": "user", "content": DEFAULT_SEARCH_INSTRUCTION.format(question=question(country))}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _transcript(tokenizer, country: str, capital: str, retriever, config: RolloutConfig, rng: random.Random):
    """(ids, loss mask) of one synthetic rollout: prompt, search turn, observation, answer turn, EOS."""
    prompt = encode_chat_prompt(
        tokenizer,
        [{"role": "user", "content": DEFAULT_SEARCH_INSTRUCTION.format(question=question(country))}],
    )
    ids, mask = list(prompt), [0] * len(prompt)

    def add(text: str, trained: bool) -> None:
        piece = tokenizer.encode(text, add_special_tokens=False)
        ids.extend(piece)
        mask.extend([int(trained)] * len(piece))

    if rng.random() < 0.8:
        add(
            f"<think> I need the capital of {country}. </think>\n<search> capital of {country} </search>",
            True,
        )
        passages = retriever.search([f"capital of {country}"], config.retrieval_topk)[0]
        add(format_observation(passages, config), False)
        add(f"<think> The documents say {capital}. </think>\n<answer> {capital} </answer>", True)
    else:
        add(f"<think> I remember that it is {capital}. </think>\n<answer> {capital} </answer>", True)
    ids.append(tokenizer.eos_token_id)
    mask.append(1)
    return ids, mask


def train_format_policy(
    num_countries: int = 24,
    steps: int = 120,
    batch_size: int = 8,
    seed: int = 0,
    hidden_size: int = 128,
    cache: Path | None = None,
):
    """Tokenizer, fitted model (eval mode), the world, and a retriever over its documents.

    With ``cache`` the fitted model and tokenizer are saved there and reused by later runs with the same
    arguments (the world and retriever are rebuilt from the seed).
    """
    world = capitals_world(num_countries, seed)
    retriever = FakeRetriever(world_documents(world))
    config = RolloutConfig()
    folder = None
    if cache is not None:
        folder = (
            Path(cache) / f"format-policy-c{num_countries}-s{steps}-b{batch_size}-h{hidden_size}-seed{seed}"
        )
        if (folder / "config.json").exists():
            from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

            logger.info("reusing the fitted format policy in %s", folder)
            # Not AutoTokenizer: next to a qwen2 config.json it rebuilds the BPE as Qwen2Tokenizer, whose
            # pre-tokenizer splits differently, and the policy would see ids it was never trained on.
            tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
            return tokenizer, AutoModelForCausalLM.from_pretrained(folder).eval(), world, retriever
    corpus = [DEFAULT_SEARCH_INSTRUCTION.format(question=question(c)) for c, _ in world]
    corpus += [
        format_observation(p, config) for p in retriever.search([f"capital of {c}" for c, _ in world], 3)
    ]
    corpus += [
        f"<think> I need the capital of {c}. </think>\n<search> capital of {c} </search>"
        f"<think> The documents say {k}. </think>\n<answer> {k} </answer>"
        for c, k in world
    ]
    tokenizer = train_bpe_tokenizer(corpus * 4, vocab_size=1024)
    rng = random.Random(seed)
    examples = [_transcript(tokenizer, c, k, retriever, config, rng) for c, k in world for _ in range(3)]
    retriever.calls.clear()
    model = build_tiny_qwen2(tokenizer, seed=seed, hidden_size=hidden_size)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    pad = tokenizer.pad_token_id
    loss = torch.tensor(float("nan"))
    for _step in tqdm(range(steps), desc="fit format policy", leave=False):
        chosen = torch.randint(len(examples), (batch_size,), generator=generator).tolist()
        width = max(len(examples[i][0]) for i in chosen)
        input_ids = torch.full((batch_size, width), pad)
        labels = torch.full((batch_size, width), -100)
        attention = torch.zeros((batch_size, width), dtype=torch.long)
        for row, index in enumerate(chosen):
            ids, mask = examples[index]
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
            labels[row, : len(ids)] = torch.tensor([t if m else -100 for t, m in zip(ids, mask)])
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    logger.info("format policy fitted: %d steps, last loss %.3f", steps, loss.item())
    model.eval()
    if folder is not None:  # temporary folder, then rename: a killed run never leaves half a model
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".format-policy.", dir=folder.parent))
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, folder)
    return tokenizer, model, world, retriever
