"""A small OpenAI-compatible chat server over an in-process HF model, with dynamic batching.

For CPU benchmarks and tests of the HTTP evaluation path when no vLLM/SGLang GPU server exists. Requests
arriving within ``max_wait_ms`` of each other (up to ``max_batch``) are decoded together through
``rlcore.generation.HFBackend``; greedy only (``temperature`` must be 0). Binds to 127.0.0.1.

    python -m anessuite.bench.server --model smollm2-135m-instruct --port 8011
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["build_app", "main"]

logger = logging.getLogger(__name__)


@dataclass
class _Request:
    messages: list[dict[str, str]]
    max_tokens: int
    future: asyncio.Future = field(repr=False)


def build_app(backend: Any, model_name: str, max_batch: int = 16, max_wait_ms: float = 20.0):
    """FastAPI app serving ``/v1/models`` and ``/v1/chat/completions`` from an ``HFChatBackend``."""
    # fastapi is heavy (~0.2 s to import) and only the server needs it
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import JSONResponse

    queue: asyncio.Queue[_Request] = asyncio.Queue()
    stats = {"batches": 0, "requests": 0}

    def _complete_all(conversations: list, max_tokens: int) -> dict:
        return dict(backend.complete(conversations, max_tokens))

    async def worker() -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + max_wait_ms / 1000
            while len(batch) < max_batch and (timeout := deadline - loop.time()) > 0:
                try:
                    batch.append(await asyncio.wait_for(queue.get(), timeout))
                except TimeoutError:
                    break
            max_tokens = max(request.max_tokens for request in batch)
            try:
                conversations = [request.messages for request in batch]
                results = await loop.run_in_executor(None, _complete_all, conversations, max_tokens)
            except Exception as err:  # noqa: BLE001 - report the failure to every waiting request
                for request in batch:
                    request.future.set_exception(err)
                continue
            stats["batches"] += 1
            stats["requests"] += len(batch)
            for index, request in enumerate(batch):
                request.future.set_result(results[index])

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        task = asyncio.create_task(worker())
        yield
        task.cancel()

    app = FastAPI(lifespan=lifespan)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model"}]}

    @app.get("/stats")
    async def get_stats() -> dict:
        return stats

    @app.post("/v1/chat/completions")
    async def chat(body: dict) -> JSONResponse:
        if body.get("model") not in (None, model_name):
            raise HTTPException(404, f"model {body.get('model')!r} is not served (serving {model_name!r})")
        if float(body.get("temperature", 0.0)) != 0.0:
            raise HTTPException(400, "this server decodes greedily only; send temperature 0")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HTTPException(400, "messages must be a non-empty list")
        future = asyncio.get_running_loop().create_future()
        await queue.put(_Request(messages, int(body.get("max_tokens") or 256), future))
        completion = await future
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": completion.text},
                        "finish_reason": completion.finish_reason,
                    }
                ],
                "usage": {"completion_tokens": completion.num_tokens},
            }
        )

    return app


def main(argv: list[str] | None = None) -> int:
    # uvicorn is needed only to serve
    import uvicorn

    # heavy and optional here: loads torch, transformers
    from anessuite.backends.hf import HFChatBackend

    parser = argparse.ArgumentParser(prog="anessuite.bench.server", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model folder or embedded name")
    parser.add_argument("--port", type=int, default=8011, help="port on 127.0.0.1")
    parser.add_argument("--max-batch", type=int, default=16, help="requests decoded together")
    parser.add_argument("--max-wait-ms", type=float, default=20.0, help="how long to wait to fill a batch")
    args = parser.parse_args(argv)
    backend = HFChatBackend(args.model, batch_size=args.max_batch)
    app = build_app(backend, args.model, args.max_batch, args.max_wait_ms)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
