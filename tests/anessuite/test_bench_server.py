"""The local OpenAI-compatible server used by `make bench-eval`: dynamic batching, errors, and our client."""

from __future__ import annotations

import time

import httpx
import pytest

from anessuite.backends import Completion
from anessuite.backends.openai_compat import OpenAIChatBackend
from anessuite.bench.eval_speed import _serve


class EchoBackend:
    """Answers with the user text reversed; records batch sizes; each batch takes 50 ms."""

    name = "echo"

    def __init__(self):
        self.batches: list[int] = []

    def complete(self, conversations, max_new_tokens):
        self.batches.append(len(conversations))
        time.sleep(0.05)
        for index, conversation in enumerate(conversations):
            text = conversation[-1]["content"][::-1][:max_new_tokens]
            yield index, Completion(text=text, num_tokens=len(text), finish_reason="stop")


@pytest.fixture()
def server():
    backend = EchoBackend()
    url, handle = _serve(backend, "echo-model", max_batch=8)
    yield url, backend
    handle.should_exit = True


def test_concurrent_requests_are_batched(server):
    url, backend = server
    client = OpenAIChatBackend(url, "echo-model", concurrency=8)
    results = dict(client.complete([[{"role": "user", "content": f"q{i}"}] for i in range(16)], 32))
    client.close()
    assert [results[i].text for i in range(16)] == [f"q{i}"[::-1] for i in range(16)]
    assert sum(backend.batches) == 16 and max(backend.batches) > 1  # requests in flight were decoded together
    assert httpx.get(url.removesuffix("/v1") + "/stats").json()["requests"] == 16


def test_server_rejects_sampling_and_unknown_model(server):
    url, _ = server
    body = {"model": "echo-model", "messages": [{"role": "user", "content": "x"}], "temperature": 0.7}
    assert httpx.post(url + "/chat/completions", json=body).status_code == 400
    body.update(temperature=0, model="other")
    assert httpx.post(url + "/chat/completions", json=body).status_code == 404
    assert httpx.get(url + "/models").json()["data"][0]["id"] == "echo-model"
