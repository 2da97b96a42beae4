"""The in-process HF backend's batching: batch planning by template and length, the shared-prefix prefill,
greedy answers identical to one-question-at-a-time decoding, and grouped key/value heads passed to SDPA uncopied."""

from __future__ import annotations

import pytest
import torch

from anessuite.backends.hf import GQA_SDPA, HFChatBackend, common_prefix_length, length_runs, plan_batches


@pytest.mark.parametrize(
    "prompts, expected",
    [
        ([[1, 2, 3], [1, 2, 4], [1, 2]], 2),  # the shortest prompt bounds the prefix
        ([[5, 6], [5, 6]], 2),  # identical prompts share everything
        ([[1, 2], [2, 1]], 0),  # differ at the first token
        ([[7, 8, 9]], 3),  # one prompt is its own prefix
    ],
)
def test_common_prefix_length(prompts, expected):
    assert common_prefix_length(prompts) == expected


def test_plan_batches_keeps_templates_apart_sorted_by_length():
    template_a = [[1] * 8 + [10 + i] * (3 - i % 3) for i in range(5)]  # five prompts of template A
    template_b = [
        [1, 1, 2, 2, 2, 2, 2, 2] + [20 + i] * (1 + i % 2) for i in range(3)
    ]  # 3 of B (2 tokens shared)
    prompts = template_b[:1] + template_a + template_b[1:]
    batches = plan_batches(prompts, batch_size=2)
    assert sorted(i for batch in batches for i in batch) == list(range(8))  # each prompt exactly once
    assert all(1 <= len(batch) <= 2 for batch in batches)
    assert len(batches) == 5  # A: 2 + 2 + 1, B: 2 + 1; partial chunks are not pooled across templates
    for batch in batches:  # one template per batch
        assert len({tuple(prompts[i][:8]) for i in batch}) == 1
    lengths_a = [len(prompts[i]) for batch in batches for i in batch if prompts[i][2] == 1]
    assert lengths_a == sorted(lengths_a)  # within a template, shortest first


@pytest.mark.parametrize(
    "lengths, expected",
    [
        ([77, 78, 99, 140], [2, 1, 1]),  # 99 beside 77+78 pads 297 slots for 254 tokens (> 10% more)
        ([10, 10, 11], [3]),  # 33 slots for 31 tokens: within 10%, one forward
        ([5], [1]),
        ([], []),
        ([1, 2, 3, 4], [1, 1, 1, 1]),  # every step doubles the relative padding: one row per forward
    ],
)
def test_length_runs_split_only_where_padding_exceeds_the_waste(lengths, expected):
    assert length_runs(lengths, waste=0.1) == expected
    assert sum(expected) == len(lengths)


@pytest.fixture(scope="module")
def backend():
    backend = HFChatBackend("tiny-qwen2", batch_size=4, dtype="float32")
    backend.prefill_waste = (
        100.0  # one suffix forward per group, whatever the lengths (shapes asserted below)
    )
    return backend


def _conversations():
    system = "You answer anesthesiology multiple-choice questions. Think step by step, then write Answer: X."
    questions = [
        "Which drug is a volatile agent?",
        "Name an opioid.",
        "What does MAC stand for exactly here?",
    ]
    questions.append("Propofol is given how?")
    return [[{"role": "system", "content": system}, {"role": "user", "content": q}] for q in questions]


def test_shared_prefix_prefill_gives_the_one_by_one_answers(backend):
    conversations = _conversations()
    seen: list[tuple[int, int]] = []
    hook = backend.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        backend.batch_size, backend.share_prefix = 4, True
        shared = dict(backend.complete(conversations, max_new_tokens=8))
        first_calls = seen[:2]
        backend.batch_size = 1
        single = dict(backend.complete(conversations, max_new_tokens=8))
    finally:
        hook.remove()
        backend.batch_size = 4
    # the first forward runs the common prefix once (batch 1), the second the four suffixes together
    assert first_calls[0][0] == 1 and first_calls[0][1] >= 8
    assert first_calls[1][0] == 4 and first_calls[1][1] < first_calls[0][1]
    assert [shared[i].text for i in range(4)] == [single[i].text for i in range(4)]
    assert [shared[i].num_tokens for i in range(4)] == [single[i].num_tokens for i in range(4)]
    assert all(shared[i].finish_reason in ("stop", "length") for i in range(4))


def test_suffixes_of_uneven_length_prefill_in_runs_with_the_one_by_one_answers(backend):
    """No padding allowed: each distinct suffix length is its own forward on the one prefix cache, the runs are
    joined into one decoding batch, and the answers equal one-question-at-a-time decoding."""
    conversations = _conversations()
    seen: list[tuple[int, int]] = []
    hook = backend.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        backend.prefill_waste = 0.0
        runs = dict(backend.complete(conversations, max_new_tokens=8))
        calls = list(seen)
        backend.batch_size = 1
        single = dict(backend.complete(conversations, max_new_tokens=8))
    finally:
        hook.remove()
        backend.batch_size, backend.prefill_waste = 4, 100.0
    first_step = next(i for i, (_, width) in enumerate(calls) if width == 1)  # decode steps feed 1 token
    prefills = calls[1:first_step]  # after the prefix forward
    assert sum(rows for rows, _ in prefills) == 4 and len(prefills) >= 2
    assert [runs[i].text for i in range(4)] == [single[i].text for i in range(4)]


def test_prefix_sharing_off_runs_plain_left_padded_batches(backend):
    seen: list[tuple[int, int]] = []
    hook = backend.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        backend.share_prefix = False
        plain = dict(backend.complete(_conversations(), max_new_tokens=4))
    finally:
        hook.remove()
        backend.share_prefix = True
    assert seen[0][0] == 4 and seen[0][1] > 8  # whole prompts in one forward
    assert len(plain) == 4


def test_groups_of_two_templates_decode_in_one_batch_with_one_by_one_answers(backend):
    """Two templates of two questions each, batch size 4: the second group joins the running batch (its cache
    left-padded to the first group's length) and every answer equals one-question-at-a-time decoding."""
    long_system = (
        "You answer anesthesiology multiple-choice questions. Think step by step, then write Answer: X."
    )
    conversations = _conversations()[:2] + [
        [{"role": "system", "content": "Short rules."}, {"role": "user", "content": q}]
        for q in (
            "Which drug is a volatile agent?",
            "What is the usual induction dose of propofol in adults?",
        )
    ]
    assert long_system in conversations[0][0]["content"]
    seen: list[tuple[int, int]] = []
    hook = backend.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        backend.batch_size = 4
        joined = dict(backend.complete(conversations, max_new_tokens=6))
        batched_calls = list(seen)
        backend.batch_size = 1
        single = dict(backend.complete(conversations, max_new_tokens=6))
    finally:
        hook.remove()
        backend.batch_size = 4
    # prefix + suffixes of one group, then of the other, then decode steps over all four rows together
    assert [shape[0] for shape in batched_calls[:4]] == [1, 2, 1, 2]
    assert batched_calls[4] == (4, 1)
    assert [joined[i].text for i in range(4)] == [single[i].text for i in range(4)]


def test_grouped_heads_reach_sdpa_uncopied_with_the_stock_results(backend):
    """The backend switched the model (4 query heads over 2 key/value heads) to ``sdpa_gqa``; on a left-padded
    batch it matches transformers' stock ``sdpa`` (which copies the key/value heads) to float32 rounding."""
    model = backend.model
    assert model.config._attn_implementation == GQA_SDPA
    input_ids = torch.tensor([[0, 0, 11, 12, 13, 14], [21, 22, 23, 24, 25, 26]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        ours = model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits
        model.set_attn_implementation("sdpa")
        try:
            stock = model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits
        finally:
            model.set_attn_implementation(GQA_SDPA)
    assert torch.allclose(ours[0, 2:], stock[0, 2:], atol=1e-5)  # pad positions carry no meaning
    assert torch.allclose(ours[1], stock[1], atol=1e-5)
    assert torch.equal(ours[:, -1].argmax(-1), stock[:, -1].argmax(-1))
