"""HFBackend on a tiny random Qwen2: log-probs equal a recomputation, greedy equals model.generate, stops hold."""

from __future__ import annotations

import pytest
import torch

from rlcore.generation import FINISH_LENGTH, FINISH_STOP, HFBackend, SamplingParams, sampling_logprobs
from rlcore.generation.testing import build_tiny_qwen2, build_tiny_tokenizer

PROMPT_TEXTS = [
    "Question: who wrote the novel?",
    "<search> capital",
    "A",
    "Answer the question. Reason inside",
]


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return build_tiny_qwen2(tok, seed=0)


@pytest.fixture(scope="module")
def prompts(tok):
    # Different lengths, so left padding and per-row positions are exercised.
    return [tok.encode(text, add_special_tokens=False) for text in PROMPT_TEXTS]


def recompute_logprobs(model, prompt, generated, temperature=1.0, top_k=-1, top_p=1.0):
    """Log-probs of ``generated`` after ``prompt`` from one unpadded forward pass, filtered like the sampler."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + generated])).logits[0]
    step_logits = logits[len(prompt) - 1 : len(prompt) + len(generated) - 1]  # position t predicts token t+1
    logprobs = sampling_logprobs(step_logits, temperature, top_k, top_p)
    return logprobs.gather(-1, torch.tensor(generated).unsqueeze(-1)).squeeze(-1)


def test_logprobs_match_a_forward_pass_at_temperature_1(model, tok, prompts):
    backend = HFBackend(model, tok, batch_size=4)
    outs = backend.generate(prompts, SamplingParams(max_new_tokens=24, seed=1, ignore_eos=True))
    for prompt, out in zip(prompts, outs):
        assert len(out.token_ids) == 24 and out.finish_reason == FINISH_LENGTH
        # at T=1 without filtering the sampling distribution is the model's: a plain log-softmax
        with torch.no_grad():
            logits = model(torch.tensor([prompt + out.token_ids])).logits[0, len(prompt) - 1 : -1]
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(out.token_ids)[:, None]).squeeze(-1)
        assert torch.allclose(torch.tensor(out.logprobs), expected, atol=1e-4)


@pytest.mark.parametrize("top_k, top_p", [(20, 1.0), (20, 0.9), (-1, 0.8)])
def test_logprobs_match_with_temperature_and_filters(model, tok, prompts, top_k, top_p):
    backend = HFBackend(model, tok, batch_size=3)  # 4 prompts -> batches of 3 and 1
    params = SamplingParams(
        max_new_tokens=20, temperature=0.7, top_k=top_k, top_p=top_p, seed=2, ignore_eos=True
    )
    outs = backend.generate(prompts, params)
    for prompt, out in zip(prompts, outs):
        expected = recompute_logprobs(model, prompt, out.token_ids, 0.7, top_k, top_p)
        assert torch.isfinite(expected).all()  # every sampled token is inside the filtered support
        assert torch.allclose(torch.tensor(out.logprobs), expected, atol=1e-4)
        # and these differ from the unfiltered T=1 log-probs, so the check above is not vacuous
        assert not torch.allclose(
            torch.tensor(out.logprobs), recompute_logprobs(model, prompt, out.token_ids), atol=1e-3
        )


def test_greedy_matches_model_generate(model, tok, prompts):
    backend = HFBackend(model, tok, batch_size=4)
    outs = backend.generate(prompts, SamplingParams(max_new_tokens=16, greedy=True))
    width = max(map(len, prompts))
    pad = tok.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    attention_mask = (input_ids != pad).long()
    reference = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=16,
        do_sample=False,
        pad_token_id=pad,
        eos_token_id=tok.eos_token_id,
    )
    for row, out in enumerate(outs):
        expected = reference[row, width:].tolist()
        if tok.eos_token_id in expected:
            expected = expected[: expected.index(tok.eos_token_id) + 1]
        assert out.token_ids == expected
        # greedy log-probs are under the unmodified model distribution
        assert torch.allclose(
            torch.tensor(out.logprobs), recompute_logprobs(model, prompts[row], out.token_ids), atol=1e-4
        )


def test_batching_and_row_dropping_do_not_change_results(model, tok, prompts):
    params = SamplingParams(max_new_tokens=12, greedy=True, stop_token_ids=[])
    alone = [HFBackend(model, tok, batch_size=1).generate([p], params)[0] for p in prompts]
    together = HFBackend(model, tok, batch_size=8).generate(prompts, params)
    assert [g.token_ids for g in alone] == [g.token_ids for g in together]


def test_stop_strings_and_stop_ids(model, tok, prompts):
    backend = HFBackend(model, tok, batch_size=4)
    free = backend.generate(prompts, SamplingParams(max_new_tokens=30, greedy=True, ignore_eos=True))
    stops = []
    for out in free:
        text = out.text
        stops.append(text[len(text) // 2 : len(text) // 2 + 2])  # a 2-char string the greedy run does produce
    for prompt, reference, stop in zip(prompts, free, stops):
        [out] = backend.generate(
            [prompt], SamplingParams(max_new_tokens=30, greedy=True, ignore_eos=True, stop=[stop])
        )
        # Stopped at the first token whose decoding contains the stop string; the ids are a prefix of the free run.
        assert out.finish_reason == FINISH_STOP and out.stop_reason == stop
        assert stop in out.text and stop not in tok.decode(out.token_ids[:-1])
        assert out.token_ids == reference.token_ids[: len(out.token_ids)]
    # a stop id ends the row right after that token
    reference = free[0].token_ids
    stop_id = reference[5]
    [out] = backend.generate(
        [prompts[0]],
        SamplingParams(max_new_tokens=30, greedy=True, ignore_eos=True, stop_token_ids=[stop_id]),
    )
    assert out.token_ids == reference[: reference.index(stop_id) + 1]
    assert (out.finish_reason, out.stop_reason) == (FINISH_STOP, stop_id)


def test_seed_reproducibility_and_training_mode_restored(model, tok, prompts):
    backend = HFBackend(model, tok)
    first = backend.generate(prompts, SamplingParams(max_new_tokens=10, seed=5, ignore_eos=True))
    second = backend.generate(prompts, SamplingParams(max_new_tokens=10, seed=5, ignore_eos=True))
    third = backend.generate(prompts, SamplingParams(max_new_tokens=10, seed=6, ignore_eos=True))
    assert [g.token_ids for g in first] == [g.token_ids for g in second]
    assert [g.token_ids for g in first] != [g.token_ids for g in third]
    model.train()
    backend.generate(prompts[:1], SamplingParams(max_new_tokens=2))
    assert model.training
    model.eval()


def test_eos_from_generation_config_stops_unless_ignored(model, tok, prompts):
    backend = HFBackend(model, tok)
    reference = backend.generate(
        [prompts[0]], SamplingParams(max_new_tokens=12, greedy=True, ignore_eos=True)
    )[0]
    fake_eos = reference.token_ids[3]
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [saved, fake_eos]  # Qwen-style list of EOS ids
    try:
        assert backend.eos_token_ids() == {tok.eos_token_id, saved, fake_eos} - {None}
        [out] = backend.generate([prompts[0]], SamplingParams(max_new_tokens=12, greedy=True))
        assert out.token_ids == reference.token_ids[: reference.token_ids.index(fake_eos) + 1]
        assert out.finish_reason == FINISH_STOP
        [out] = backend.generate(
            [prompts[0]], SamplingParams(max_new_tokens=12, greedy=True, ignore_eos=True)
        )
        assert out.token_ids == reference.token_ids
    finally:
        model.generation_config.eos_token_id = saved


def test_prompt_validation(model, tok):
    backend = HFBackend(model, tok)
    with pytest.raises(ValueError, match=r"prompts\[1\]"):
        backend.generate([[1, 2], []], SamplingParams(max_new_tokens=2))
    with pytest.raises(ValueError, match="invalid token id"):
        backend.generate([[10**9]], SamplingParams(max_new_tokens=2))
