"""A small OpenAI-compatible server for tests: real HTTP on 127.0.0.1, scripted behaviour, request log.

Not a mock of the client: the client talks to it over sockets exactly as it would to vLLM or SGLang. It serves
``GET /v1/models`` and ``POST /v1/chat/completions`` and can require an API key, answer with a separate
``reasoning_content``, reject a prompt (400), be "down" (503) for a while, stop after N answers (a killed server)
and be restarted on the same port.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StubOpenAI:
    def __init__(
        self,
        models=("stub-model",),
        answer=lambda user: "Reasoning.\nAnswer: A",
        port: int | None = None,
        api_key: str | None = None,
        reasoning: bool = False,
        down_for_s: float = 0.0,
        die_after: int | None = None,
        delay_s: float = 0.0,
        reject=lambda user: "TOOLONG" in user,
        cut=lambda user: "CUT" in user,
    ):
        self.models = list(models)
        self.answer = answer
        self.port = port or free_port()
        self.api_key = api_key
        self.reasoning = reasoning
        self.down_until = time.monotonic() + down_for_s
        self.die_after = die_after
        self.delay_s = delay_s
        self.reject = reject  # user text -> answer 400 (a prompt the server refuses)
        self.cut = cut  # user text -> hit the token cap while thinking (reasoning mode)
        self.bodies: list[dict[str, Any]] = []  # every chat request body received
        self.answered = 0
        self.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.httpd: ThreadingHTTPServer | None = None

    # -- HTTP
    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _refused(self) -> bool:
                if stub.api_key and self.headers.get("Authorization") != f"Bearer {stub.api_key}":
                    self._send(401, {"error": {"message": "Incorrect API key provided", "code": 401}})
                    return True
                if time.monotonic() < stub.down_until:
                    self._send(503, {"error": {"message": "loading model"}})
                    return True
                return False

            def do_GET(self):  # noqa: N802
                if self._refused():
                    return
                if self.path != "/v1/models":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                data = [
                    {"id": m, "object": "model", "owned_by": "stub", "max_model_len": 2048}
                    for m in stub.models
                ]
                self._send(200, {"object": "list", "data": data})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self._refused():
                    return
                if body.get("model") not in stub.models:
                    return self._send(
                        404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}}
                    )
                user = body["messages"][-1]["content"]
                if stub.reject(user):
                    return self._send(
                        400, {"error": {"message": "This model's maximum context length is 2048 tokens"}}
                    )
                time.sleep(stub.delay_s)
                with stub.lock:
                    if stub.die_after is not None and stub.answered >= stub.die_after:
                        self.close_connection = True
                        threading.Thread(target=stub.stop, daemon=True).start()
                        return
                    stub.bodies.append(body)
                    stub.answered += 1
                text = stub.answer(user)
                message: dict[str, Any] = {"role": "assistant", "content": text}
                finish = "stop"
                if stub.reasoning:
                    message = {"role": "assistant", "content": text, "reasoning_content": "Let me think."}
                    if stub.cut(user):  # the token cap hit while thinking: no answer yet
                        message["content"], finish = "", "length"
                self._send(
                    200,
                    {
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                        "usage": {"completion_tokens": 7},
                    },
                )

        return Handler

    def start(self) -> StubOpenAI:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            httpd, self.httpd = self.httpd, None
            httpd.shutdown()
            httpd.server_close()

    def __enter__(self) -> StubOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def posts_for(self, fragment: str) -> int:
        return sum(fragment in body["messages"][-1]["content"] for body in self.bodies)
