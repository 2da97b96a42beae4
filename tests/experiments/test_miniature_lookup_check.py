"""lookup_check.py (the miniature's teacher-forced letter check, README.md "Revisions", 5): the score is whether the
gold letter is the likeliest of A-D at the last real position, the contexts stop where the letter is due."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from config_harness import load_script

torch = pytest.importorskip("torch")

LETTER_IDS = {"A": 0, "B": 1, "C": 2, "D": 3}
OTHER, PAD, VOCAB = 4, 5, 6


def _check():
    return load_script("anessuite-cpu-miniature", "lookup_check.py", "miniature_lookup_check")


class CharTokenizer:
    """One token per character: A-D are letters 0-3, every other character 4; pads (5) on ``padding_side``."""

    padding_side = "right"

    def convert_tokens_to_ids(self, token: str) -> int:
        return LETTER_IDS[token]

    def __call__(self, texts, return_tensors, padding, add_special_tokens):
        ids = [[LETTER_IDS.get(char, OTHER) for char in text] for text in texts]
        width = max(len(row) for row in ids)
        rows, masks = [], []
        for row in ids:
            pad = [PAD] * (width - len(row))
            rows.append(pad + row if self.padding_side == "left" else row + pad)
            real = [1] * len(row)
            masks.append([0] * len(pad) + real if self.padding_side == "left" else real + [0] * len(pad))
        return {"input_ids": torch.tensor(rows), "attention_mask": torch.tensor(masks)}


class FirstLetterModel:
    """At every position, prefers the first letter of the row's text among A-D, and prefers a non-letter token
    (4) even more (the check must compare letters only). Pads predict nothing useful: a read at a pad position
    prefers D."""

    def __call__(self, input_ids, attention_mask):
        batch, length = input_ids.shape
        logits = torch.zeros(batch, length, VOCAB)
        for row in range(batch):
            letters = [int(t) for t in input_ids[row] if int(t) < 4]
            first = letters[0] if letters else 3
            for position in range(length):
                is_pad = int(input_ids[row, position]) == PAD
                logits[row, position, 3 if is_pad else first] = 5.0
                logits[row, position, OTHER] = 9.0
        return SimpleNamespace(logits=logits)


def test_letter_agreement_compares_letters_at_the_last_real_position_across_batches():
    check = _check()
    contexts = [
        "- xy is option C.\nxy is option ",  # first letter C, gold C: hit
        "- xy is option B.\n- zw is option C.\nzw is option ",  # first letter B, gold C: miss
        "- q is option A.\nq is option ",  # hit, and the longest rows pad the shorter ones
        "- longer text here is option B.\n- s is option D.\ns is option ",  # first B, gold D: miss
        "- t is option D.\nt is option ",  # hit
    ]
    golds = ["C", "C", "A", "D", "D"]
    hits = check.letter_agreement(FirstLetterModel(), CharTokenizer(), contexts, golds, batch_size=2)
    assert hits == [True, False, True, False, True]


def test_answer_stub_is_the_option_sentence_up_to_the_letter():
    check = _check()
    assert check.answer_stub("bradycardia", "en") == "bradycardia is option "
    assert check.answer_stub("心动过缓", "zh") == "心动过缓是选项"


class PieceTokenizer:
    """Only what the drill set reads: the vocabulary's size and each id's decoded piece."""

    def __init__(self, vocabulary: list[str]):
        self.vocabulary = vocabulary

    def __len__(self) -> int:
        return len(self.vocabulary)

    def decode(self, ids: list[int]) -> str:
        return self.vocabulary[ids[0]]


def test_drill_contexts_stop_where_the_gold_letter_is_due():
    check = _check()
    vocabulary = [f"{a}{b}" for a in "bcdfg" for b in "aeiou"] + list(
        "山水火木金土日月星云风雨雪花草树石大小中"
    )
    tokenizer = PieceTokenizer(vocabulary)
    sets = check._drill_set(tokenizer, per_language=20, seed=3)
    for lang, (contexts, golds) in sets.items():
        assert len(contexts) == len(golds) == 20
        for context, gold in zip(contexts, golds, strict=True):
            lines = context.split("\n")
            restated = lines[-1]
            # the context ends with "<text> is option " / "<text>是选项"; the gold letter is the option line's
            text = restated[: -len(" is option ")] if lang == "en" else restated[: -len("是选项")]
            option_line = f"- {text} is option {gold}." if lang == "en" else f"{text}是选项{gold}。"
            assert restated.endswith(" is option " if lang == "en" else "是选项")
            assert option_line in lines[1:-1]
