"""vLLM backends without vLLM: parameter translation, output parsing, the HTTP client against a mock server.

The colocated engine itself (LLM construction, load_weights, sleep / wake_up) needs a GPU and the gpu extra;
``test_colocated_engine_on_gpu`` runs it when both are present.
"""

from __future__ import annotations

import importlib.util
import json
import os
from types import SimpleNamespace

import httpx
import pytest
import torch

from rlcore.generation import FINISH_LENGTH, FINISH_STOP, SamplingParams, VLLMBackend, VLLMServerBackend
from rlcore.generation.testing import build_tiny_tokenizer
from rlcore.generation.vllm_backend import (
    CONTEXT_FULL,
    completions_payload,
    engine_seed,
    generations_from_completions,
    generations_from_vllm,
    hf_named_tensors,
    logprobs_mode_probe,
    merge_refused,
    rows_within_context,
    vllm_request_kwargs,
    vllm_sampling_kwargs,
)

HAS_VLLM = importlib.util.find_spec("vllm") is not None
# What the environment held before any test here ran (see the last test).
_ENV_AT_IMPORT = frozenset(os.environ)


def decode(ids):
    return "|".join(map(str, ids))


def test_sampling_kwargs_translation():
    params = SamplingParams(
        max_new_tokens=7, temperature=0.7, top_p=0.9, top_k=20, stop=["</search>"], stop_token_ids=[5], seed=3
    )
    assert vllm_sampling_kwargs(params) == {
        "n": 1,
        "max_tokens": 7,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 20,
        "stop": ["</search>"],
        "stop_token_ids": [5],
        "seed": 3,
        "ignore_eos": False,
        "logprobs": 0,
        "include_stop_str_in_output": True,
        "skip_special_tokens": True,
    }
    greedy = vllm_sampling_kwargs(SamplingParams(greedy=True, temperature=0.7, top_k=0))
    # greedy is temperature 0 in vLLM; top-k "off" is -1; empty stop lists become None
    assert (greedy["temperature"], greedy["top_k"], greedy["stop"], greedy["stop_token_ids"]) == (
        0.0,
        -1,
        None,
        None,
    )


def test_generations_from_vllm_outputs():
    def step(token, value):
        return {token: SimpleNamespace(logprob=value), 999: SimpleNamespace(logprob=-9.0)}

    outputs = [
        SimpleNamespace(
            outputs=[
                SimpleNamespace(
                    token_ids=[4, 5],
                    logprobs=[step(4, -0.1), step(5, -0.2)],
                    finish_reason="stop",
                    stop_reason="</search>",
                )
            ]
        ),
        SimpleNamespace(
            outputs=[
                SimpleNamespace(
                    token_ids=[6], logprobs=[step(6, -0.3)], finish_reason="length", stop_reason=None
                )
            ]
        ),
    ]
    first, second = generations_from_vllm(outputs, decode)
    assert (first.token_ids, first.logprobs, first.finish_reason, first.text, first.stop_reason) == (
        [4, 5],
        [-0.1, -0.2],
        FINISH_STOP,
        "4|5",
        "</search>",
    )
    assert (second.finish_reason, second.logprobs) == (FINISH_LENGTH, [-0.3])
    broken = [SimpleNamespace(outputs=[SimpleNamespace(token_ids=[1], logprobs=None, finish_reason="stop")])]
    with pytest.raises(RuntimeError, match="one log-prob entry per sampled token"):
        generations_from_vllm(broken, decode)


def test_completions_payload_and_parsing():
    params = SamplingParams(max_new_tokens=4, stop=["</answer>"], seed=1)
    body = completions_payload([[1, 2], [3]], params, "policy")
    assert body["prompt"] == [[1, 2], [3]] and body["model"] == "policy"
    assert body["logprobs"] == 1 and body["return_tokens_as_token_ids"] and body["include_stop_str_in_output"]
    assert (body["stop"], body["top_k"], body["max_tokens"]) == (["</answer>"], -1, 4)
    # a request's seed applies to all its prompts, so it is given per request, never copied from params
    assert "stop_token_ids" not in body and "seed" not in body
    assert completions_payload([[3]], params, "policy", seed=99)["seed"] == 99
    response = {
        "choices": [
            {
                "index": 1,
                "finish_reason": "length",
                "logprobs": {"tokens": ["token_id:9"], "token_logprobs": [-1.5]},
            },
            {
                "index": 0,
                "finish_reason": "stop",
                "stop_reason": "</answer>",
                "logprobs": {"tokens": ["token_id:7", "token_id:8"], "token_logprobs": [-0.5, -0.25]},
            },
        ]
    }
    first, second = generations_from_completions(response, 2, decode)  # re-ordered by index
    assert (first.token_ids, first.logprobs, first.finish_reason) == ([7, 8], [-0.5, -0.25], FINISH_STOP)
    assert (second.token_ids, second.finish_reason) == ([9], FINISH_LENGTH)
    with pytest.raises(RuntimeError, match="2 choices for 3 prompts"):
        generations_from_completions(response, 3, decode)
    bad = {"choices": [{"index": 0, "logprobs": {"tokens": ["hello"], "token_logprobs": [0.0]}}]}
    with pytest.raises(RuntimeError, match="token_id"):
        generations_from_completions(bad, 1, decode)


def test_server_backend_against_a_mock_server(monkeypatch):
    tok = build_tiny_tokenizer()
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "policy"}]})
        body = json.loads(request.content)
        if body.get("top_k") == 1 and body["max_tokens"] == 1:  # check_server's log-prob mode probe
            return _probe_answer(body, 0.0)
        seen["body"], seen["auth"] = body, request.headers.get("authorization")
        choices = [
            {
                "index": i,
                "finish_reason": "length",
                "logprobs": {"tokens": [f"token_id:{t}" for t in prompt[:2]], "token_logprobs": [-0.1, -0.2]},
            }
            for i, prompt in enumerate(body["prompt"])
        ]
        return httpx.Response(200, json={"choices": choices})

    monkeypatch.setenv("TEST_VLLM_KEY", "secret")
    backend = VLLMServerBackend(
        "http://127.0.0.1:8000/",
        tok,
        "policy",
        api_key_env="TEST_VLLM_KEY",
        transport=httpx.MockTransport(handler),
    )
    backend.check_server()
    prompts = [
        tok.encode("<search> a", add_special_tokens=False),
        tok.encode("Question: b", add_special_tokens=False),
    ]
    outs = backend.generate(prompts, SamplingParams(max_new_tokens=2))
    assert seen["body"]["prompt"] == prompts and seen["auth"] == "Bearer secret"
    assert [o.token_ids for o in outs] == [p[:2] for p in prompts]
    assert outs[0].text == tok.decode(prompts[0][:2])
    with pytest.raises(NotImplementedError, match="colocated VLLMBackend"):
        backend.update_weights(None)
    with pytest.raises(RuntimeError, match="does not serve model 'other'"):
        VLLMServerBackend(
            "http://127.0.0.1:8000", tok, "other", transport=httpx.MockTransport(handler)
        ).check_server()


def _probe_answer(body, logprob: float) -> httpx.Response:
    choices = [
        {
            "index": i,
            "finish_reason": "length",
            "logprobs": {"tokens": ["token_id:1"], "token_logprobs": [logprob]},
        }
        for i, _ in enumerate(body["prompt"])
    ]
    return httpx.Response(200, json={"choices": choices})


def test_each_request_and_rank_gets_its_own_seed():
    """One seed for every row would make the G copies of a GRPO group sample the same completion."""
    params = SamplingParams(max_new_tokens=3, temperature=1.0, seed=11)
    rank0 = [kwargs["seed"] for kwargs in vllm_request_kwargs(params, 4, rank=0)]
    rank1 = [kwargs["seed"] for kwargs in vllm_request_kwargs(params, 4, rank=1)]
    assert len(set(rank0)) == 4 and not set(rank0) & set(rank1)
    assert rank0 == [kwargs["seed"] for kwargs in vllm_request_kwargs(params, 4, rank=0)], "repeatable"
    assert rank0 != [kwargs["seed"] for kwargs in vllm_request_kwargs(params.replace(seed=12), 4)]
    # everything but the seed is the shared translation
    first = vllm_request_kwargs(params, 2)[0]
    assert {k: v for k, v in first.items() if k != "seed"} == {
        k: v for k, v in vllm_sampling_kwargs(params).items() if k != "seed"
    }
    # unseeded and greedy calls carry no seed
    assert {kw["seed"] for kw in vllm_request_kwargs(params.replace(seed=None), 3)} == {None}
    assert {kw["seed"] for kw in vllm_request_kwargs(params.replace(greedy=True), 3)} == {None}
    assert engine_seed(0, 0) != engine_seed(0, 1)


def test_rows_at_max_model_len_are_refused_one_by_one(caplog):
    prompts = [[1] * 7, [1] * 8, [1] * 9, [1] * 3]
    # vLLM needs room for one new token: length 8 under max_model_len 8 already fails a whole batch
    assert rows_within_context(prompts, 8) == ([0, 3], [1, 2])
    assert rows_within_context(prompts, None) == ([0, 1, 2, 3], [])
    made = [SimpleNamespace(tag="row0"), SimpleNamespace(tag="row3")]
    with caplog.at_level("WARNING"):
        merged = merge_refused(prompts, [0, 3], made, 8)
    assert merged[0] is made[0] and merged[3] is made[1]
    for refused in (merged[1], merged[2]):
        assert (refused.token_ids, refused.finish_reason, refused.stop_reason) == (
            [],
            FINISH_LENGTH,
            CONTEXT_FULL,
        )
    assert "row 1 has 8 tokens" in caplog.text and "row 2 has 9 tokens" in caplog.text


def test_server_backend_seeds_rows_apart_and_refuses_full_contexts():
    tok = build_tiny_tokenizer()
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "policy", "max_model_len": 6}]})
        body = json.loads(request.content)
        if body.get("top_k") == 1 and body["max_tokens"] == 1:
            return _probe_answer(body, 0.0)
        bodies.append(body)
        choices = [
            {
                "index": i,
                "finish_reason": "length",
                "logprobs": {"tokens": ["token_id:4"], "token_logprobs": [-0.3]},
            }
            for i, _ in enumerate(body["prompt"])
        ]
        return httpx.Response(200, json={"choices": choices})

    backend = VLLMServerBackend(
        "http://127.0.0.1:8000", tok, "policy", transport=httpx.MockTransport(handler)
    )
    backend.check_server()
    assert backend.max_model_len == 6
    prompts = [[5, 6], [5, 6], [1] * 6, [7]]
    outs = backend.generate(prompts, SamplingParams(max_new_tokens=1, seed=2))
    # one request per sendable row, each with its own seed; the full row never reaches the server
    assert sorted(len(body["prompt"]) for body in bodies) == [1, 1, 1]
    assert len({body["seed"] for body in bodies}) == 3
    assert [o.token_ids for o in outs] == [[4], [4], [], [4]] and outs[2].stop_reason == CONTEXT_FULL
    bodies.clear()
    backend.generate(prompts, SamplingParams(max_new_tokens=1))  # unseeded: one batched request, no seed
    assert len(bodies) == 1 and "seed" not in bodies[0] and len(bodies[0]["prompt"]) == 3


def test_server_check_rejects_raw_logprobs():
    """``--logprobs-mode`` left at its raw default: the top-k=1 probe's log-prob is the model's, not 0."""
    tok = build_tiny_tokenizer()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "policy"}]})
        return _probe_answer(json.loads(request.content), -2.3)

    backend = VLLMServerBackend(
        "http://127.0.0.1:8000", tok, "policy", transport=httpx.MockTransport(handler)
    )
    with pytest.raises(RuntimeError, match="--logprobs-mode processed_logprobs"):
        backend.check_server()
    body, judge = logprobs_mode_probe(tok, "policy")
    assert (body["top_k"], body["max_tokens"], body["temperature"], body["logprobs"]) == (1, 1, 1.0, 1)
    judge({"choices": [{"logprobs": {"token_logprobs": [0.0]}} for _ in body["prompt"]]})  # processed: passes


class _FakeLLM:
    """Stands in for ``vllm.LLM``: records its arguments and, like vLLM's in-process worker, re-seeds torch."""

    made: list[dict] = []

    def __init__(self, **kwargs):
        _FakeLLM.made.append(kwargs)
        torch.manual_seed(kwargs["seed"])
        self.calls = []
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=kwargs["max_model_len"]))

    def generate(self, prompts, sampling, use_tqdm=False):
        self.calls.append((prompts, sampling))
        return [
            SimpleNamespace(
                outputs=[
                    SimpleNamespace(
                        token_ids=[3],
                        logprobs=[{3: SimpleNamespace(logprob=-0.5)}],
                        finish_reason="length",
                        stop_reason=None,
                    )
                ]
            )
            for _ in prompts
        ]


def test_colocated_backend_keeps_rng_state_and_builds_per_request_params(monkeypatch):
    fake = SimpleNamespace(LLM=_FakeLLM, SamplingParams=lambda **kwargs: kwargs)
    monkeypatch.setitem(__import__("sys").modules, "vllm", fake)
    # The backend fills in the single-process rendezvous variables; set them through monkeypatch so they are
    # removed afterwards: left in os.environ they make later subprocesses believe they run under torchrun.
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_PORT", "29533")
    tok = build_tiny_tokenizer()
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    backends = [VLLMBackend("m", tok, seed=7, max_model_len=5, rank=rank) for rank in (0, 1)]
    assert torch.equal(torch.rand(3), expected), "building the engine must not re-seed the trainer's RNG"
    assert _FakeLLM.made[-2]["seed"] == engine_seed(7, 0) != _FakeLLM.made[-1]["seed"] == engine_seed(7, 1)
    prompts = [[1, 2], [1, 2], [1] * 5]
    outs = backends[0].generate(prompts, SamplingParams(max_new_tokens=2, seed=3))
    sent, sampling = backends[0].llm.calls[0]
    assert sent == [{"prompt_token_ids": [1, 2]}, {"prompt_token_ids": [1, 2]}], "the full row is not sent"
    assert sampling[0]["seed"] != sampling[1]["seed"], "the two copies of one prompt sample apart"
    assert [o.token_ids for o in outs] == [[3], [3], []] and outs[2].stop_reason == CONTEXT_FULL


def test_hf_named_tensors_strips_wrapper_prefixes():
    state = {"module._orig_mod.model.embed_tokens.weight": torch.zeros(2), "lm_head.weight": torch.ones(1)}
    assert [name for name, _ in hf_named_tensors(state)] == ["model.embed_tokens.weight", "lm_head.weight"]
    module = torch.nn.Linear(2, 1)
    assert [name for name, _ in hf_named_tensors(module)] == ["weight", "bias"]


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed; this checks the error a CPU install gives")
def test_colocated_backend_without_vllm_explains_the_install():
    with pytest.raises(ImportError, match="GPU-node-only extra"):
        VLLMBackend("some/model")


@pytest.mark.gpu
@pytest.mark.skipif(
    not (HAS_VLLM and torch.cuda.is_available()), reason="needs the gpu extra (vllm) and a CUDA GPU"
)
def test_colocated_engine_on_gpu(tmp_path):
    """Logprobs agree with a forward pass, and weight sync changes the policy vLLM samples from."""
    from rlcore.generation import sampling_logprobs
    from rlcore.generation.testing import build_tiny_qwen2

    tok = build_tiny_tokenizer()
    model = build_tiny_qwen2(tok, hidden_size=128)  # head_dim 32: vLLM's attention backends need >= 32
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    backend = VLLMBackend(tmp_path, tok, gpu_memory_utilization=0.2, dtype="float32", max_model_len=512)
    prompt = tok.encode("Question: who wrote the novel?", add_special_tokens=False)
    params = SamplingParams(max_new_tokens=16, temperature=0.7, top_k=20, seed=0, ignore_eos=True)
    [out] = backend.generate([prompt], params)
    with torch.no_grad():
        logits = model(torch.tensor([prompt + out.token_ids])).logits[0, len(prompt) - 1 : -1]
    expected = sampling_logprobs(logits, 0.7, 20).gather(-1, torch.tensor(out.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(out.logprobs), expected, atol=1e-3)
    backend.sleep()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(-1.0)
    backend.update_weights(model)
    assert backend.last_sync_seconds is not None
    [after] = backend.generate([prompt], params.replace(greedy=True))
    with torch.no_grad():
        greedy = model(torch.tensor([prompt])).logits[0, -1].argmax().item()
    assert after.token_ids[0] == greedy


def test_backend_tests_leave_no_rendezvous_variables_behind():
    """Runs after the colocated-backend test in file order: a leaked LOCAL_RANK would make every later trainer
    subprocess call init_process_group on a fixed port."""
    leaked = [key for key in ("LOCAL_RANK", "MASTER_PORT") if key in os.environ and key not in _ENV_AT_IMPORT]
    assert not leaked, f"left in os.environ by an earlier test: {leaked}"
