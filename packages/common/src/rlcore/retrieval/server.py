"""Retrieval HTTP server (FastAPI + uvicorn), wire-compatible with Search-R1's ``retrieval_server.py``.

    python -m rlcore.retrieval.server --index runs/indexes/wiki --kind flat --port 8000

Endpoints: ``POST /retrieve`` (see ``protocol``), ``GET /health`` (200 only once the index is loaded, 503
while loading), ``GET /metrics`` (Prometheus text). ``--mode batched`` (default) merges concurrent requests
into one encode + search (``batching.MicroBatcher``) and computes a lone request on the event loop with no
hand-off (``MicroBatcher.lone``); ``--mode naive`` runs each request on its own in a thread pool (one request =
one encode + one search), the design of Search-R1's server, kept for benchmarks.
Both modes share everything else: HTTP handling, validation, the encoder, the search and the response encoding.

The query encoder is the one the index was built with; on CPU a transformer encoder runs with ONNX Runtime when
it is installed (``--encoder-backend auto``, see :func:`default_encoder`; ``--encoder-backend torch`` keeps torch).

Binds 127.0.0.1 unless ``--host`` says otherwise. If the environment variable named by ``--token-env``
(default ``RLCORE_RETRIEVER_TOKEN``) is set, ``/retrieve`` and ``/metrics`` need ``Authorization: Bearer
<token>``. SIGINT/SIGTERM stop accepting connections, finish queued requests, then exit.
"""

from __future__ import annotations

import argparse
import gc
import hmac
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from ..logging_utils import setup_logging
from .batching import Metrics, MicroBatcher, Overloaded
from .client import TOKEN_ENV
from .dense import DenseParams
from .onnx_encoder import BACKENDS
from .protocol import ApiError, Limits, encode_results, error_body, parse_retrieve

__all__ = ["ServerConfig", "create_app", "main"]

logger = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    """Settings of one retrieval server."""

    index: str = ""  # index folder built by rlcore.retrieval.build
    kind: str = "flat"  # flat | hnsw | ivfpq | bm25 | hybrid
    host: str = "127.0.0.1"  # bind address (0.0.0.0 only on a trusted network)
    port: int = 8000  # TCP port
    mode: str = "batched"  # batched (micro-batching) | naive (one request = one search)
    device: str = "auto"  # query encoder device
    encoder: str = ""  # query encoder spec; "" = the one the index was built with; e.g. minilm@onnx
    encoder_backend: str = "auto"  # auto (onnx on CPU if installed) | torch | onnx | onnx-int8
    gpu: bool = False  # move Flat/IVF FAISS indexes to all visible GPUs (fp16, sharded)
    mmap: bool = False  # map the index file instead of reading it (less RAM, slower first queries)
    max_batch_queries: int = 256  # most queries merged into one encode + search
    max_wait_ms: float = 0.0  # how long a free worker waits for company while another batch computes
    max_queue_queries: int = 4096  # queued + in-flight queries before 503
    max_queue_wait_ms: float = 0.0  # shed (503) requests queued longer than this; 0 = no limit
    batch_workers: int = 2  # worker threads: batches computing at once (one per core at most)
    parallel_min_queries: int = 8  # a batch starts beside a running one only below/above this many queries
    inline_max_queries: int = 1  # a lone request up to this size computes on the event loop (0: never)
    retry_after_s: int = 1  # Retry-After header on 503
    ef_search: int = 128  # HNSW search breadth
    nprobe: int = 32  # IVF cells probed per query
    token_env: str = TOKEN_ENV  # environment variable holding the bearer token (unset -> no auth)
    limits: Limits = field(default_factory=Limits)  # request validation limits


# The smallest value of each numeric command-line option: 1, or 0 where 0 means "off", "no limit" or "any port".
_NUMERIC_FLOOR = dict.fromkeys(
    "port max_wait_ms max_queue_wait_ms inline_max_queries retry_after_s threads".split(), 0
) | dict.fromkeys(
    "max_batch_queries max_queue_queries batch_workers parallel_min_queries ef_search nprobe max_queries max_topk"
    " max_query_chars".split(),
    1,
)


class _State:
    def __init__(self) -> None:
        self.status = "loading"  # loading | ok | error | shutting_down
        self.error: str | None = None
        self.retriever = None
        self.info: dict[str, Any] = {}


def create_app(config: ServerConfig, retriever=None):
    """Build the FastAPI app. With ``retriever`` given it serves that object at once (tests, embedding);
    otherwise the index named in ``config`` loads in a background thread after start-up."""
    state, metrics = _State(), Metrics()
    token = os.environ.get(config.token_env) or None

    def process_batch(batch: list[tuple[list[str], int, object]]) -> list[bytes]:
        """Worker-thread side: one search per distinct topk over all queries of the batch."""
        retriever = state.retriever
        out: list[bytes | None] = [None] * len(batch)
        for topk in sorted({topk for _, topk, _ in batch}):
            members = [i for i, (_, k, _) in enumerate(batch) if k == topk]
            queries = [q for i in members for q in batch[i][0]]
            scores, rows = retriever.search_rows(queries, topk)
            start = 0
            for i in members:
                n = len(batch[i][0])
                out[i] = encode_results(
                    retriever.store, scores[start : start + n], rows[start : start + n], batch[i][2]
                )
                start += n
        return out

    batcher = MicroBatcher(
        process_batch,
        config.max_batch_queries,
        config.max_wait_ms / 1000.0,
        config.max_queue_queries,
        metrics,
        num_workers=config.batch_workers,
        max_queue_wait=config.max_queue_wait_ms / 1000.0,
        parallel_min_queries=config.parallel_min_queries,
        inline_max_queries=config.inline_max_queries,
    )

    def load() -> None:
        from .retriever import load_retriever

        try:
            started = time.perf_counter()
            params = DenseParams(ef_search=config.ef_search, nprobe=config.nprobe)
            state.retriever = load_retriever(
                config.index,
                kind=config.kind,
                encoder=config.encoder or default_encoder(config),
                device=config.device,
                params=params,
                gpu=config.gpu,
                mmap=config.mmap,
            )
            state.retriever.search_rows(["warm-up query"], 1)  # first call pays lazy initialisation
            # Everything loaded so far (model modules, docstore) lives as long as the server: move it out of
            # the collector's reach, so a full collection no longer walks it and stalls a batch for tens of ms.
            gc.collect()
            gc.freeze()
            state.info = {"index": config.index, "load_seconds": round(time.perf_counter() - started, 2)}
            encoder = _query_encoder(state.retriever)
            if encoder is not None:
                state.info["encoder"] = encoder.spec
            state.status = "ok"
            logger.info(
                "index ready: %s (%s, %d passages) in %.1fs",
                config.index,
                config.kind,
                len(state.retriever),
                time.perf_counter() - started,
            )
        except Exception as err:  # reported by /health; the process stays up so the error is visible
            logger.exception("failed to load index %s", config.index)
            state.status, state.error = "error", f"{type(err).__name__}: {err}"

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        if retriever is not None:
            state.retriever, state.status = retriever, "ok"
        else:
            threading.Thread(target=load, name="retrieval-load", daemon=True).start()
        yield
        state.status = "shutting_down"
        await batcher.close()

    app = FastAPI(title="rlcore retrieval", lifespan=lifespan, docs_url=None, redoc_url=None)

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> _Answer:
        return _Answer(status, error_body(message), headers or {})

    def authorised(authorization: str) -> bool:
        if token is None:
            return True
        return authorization.startswith("Bearer ") and hmac.compare_digest(
            authorization[7:].encode(), token.encode()
        )

    def unavailable(message: str) -> _Answer:
        return error(503, message, {"Retry-After": str(config.retry_after_s)})

    async def answer(headers: dict[bytes, bytes], receive, source) -> _Answer:
        if not authorised(headers.get(b"authorization", b"").decode("latin-1")):
            return error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        if state.status != "ok":
            return unavailable(f"index not ready (status: {state.status})")
        limit = config.limits.max_body_bytes
        length = headers.get(b"content-length", b"").decode("latin-1")
        if length.isdigit() and int(length) > limit:
            return error(413, f"request body of {length} bytes exceeds the limit of {limit}")
        body = await _read_body(receive, limit)
        if body is None:
            return error(413, f"request body exceeds the limit of {limit} bytes")
        try:
            parsed = parse_retrieve(body, config.limits)
        except ApiError as err:
            return error(err.status, err.message, err.headers)
        if config.mode == "naive":
            # like a sync FastAPI endpoint (Search-R1): each request searches alone in the 40-thread pool
            batch = [(parsed.queries, parsed.topk, parsed.return_scores)]
            result = (await run_in_threadpool(process_batch, batch))[0]
        elif batcher.lone(len(parsed.queries), source):  # alone on its connection: no hand-off at all
            result = batcher.run_inline(parsed.queries, parsed.topk, parsed.return_scores)
        else:
            try:
                result = await batcher.submit(parsed.queries, parsed.topk, parsed.return_scores)
            except Overloaded as err:
                return unavailable(f"overloaded: {err}; retry later")
        return _Answer(200, result, {}, len(parsed.queries))

    async def retrieve(scope, receive, send) -> None:
        """``POST /retrieve`` as a bare ASGI handler: the hot path skips the framework's routing, request
        object and middleware, a large share of the server's CPU when every request carries one query."""
        started = time.perf_counter()
        try:
            if scope["method"] != "POST":
                response = error(405, f"method {scope['method']} not allowed; use POST", {"Allow": "POST"})
            else:
                response = await answer(dict(scope["headers"]), receive, scope.get("client"))
        except _ClientGone:
            return
        except Exception as err:  # a bug, not bad input: logged with traceback, answered as JSON
            logger.exception("internal error in /retrieve")
            response = error(500, f"internal error: {type(err).__name__}")
        metrics.record_request(response.status, time.perf_counter() - started, response.num_queries)
        head = [(b"content-type", b"application/json"), (b"content-length", str(len(response.body)).encode())]
        head += [(k.lower().encode(), v.encode()) for k, v in response.headers.items()]
        await send({"type": "http.response.start", "status": response.status, "headers": head})
        await send({"type": "http.response.body", "body": response.body})

    @app.get("/health")
    async def health() -> Response:
        body: dict[str, Any] = {"status": state.status, "kind": config.kind, "mode": config.mode}
        if state.status == "ok":
            body.update(passages=len(state.retriever), **state.info)
        if state.error:
            body["error"] = state.error
        return JSONResponse(body, status_code=200 if state.status == "ok" else 503)

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        if not authorised(request.headers.get("authorization", "")):
            body = error_body("missing or wrong bearer token")
            return Response(body, 401, {"WWW-Authenticate": "Bearer"}, media_type="application/json")
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    app.state.retrieval = state
    app.state.batcher = batcher
    app.state.metrics = metrics
    return RetrievalApp(app, retrieve)


@dataclass
class _Answer:
    status: int
    body: bytes
    headers: dict[str, str]
    num_queries: int = 0


class _ClientGone(Exception):
    """The client disconnected before its request body arrived."""


async def _read_body(receive, limit: int) -> bytes | None:
    """The request body from ASGI ``receive``; None once it exceeds ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class RetrievalApp:
    """The ASGI application: ``/retrieve`` goes straight to its handler, everything else (``/health``,
    ``/metrics``, lifespan, 404s) to the FastAPI app. ``state`` is the FastAPI app's state."""

    def __init__(self, app: FastAPI, retrieve):
        self.app, self.state, self._retrieve = app, app.state, retrieve

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/retrieve":
            await self._retrieve(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def default_encoder(config: ServerConfig) -> str | None:
    """The query encoder when ``--encoder`` is not given: the index's own, on ``--encoder-backend``
    (:func:`~rlcore.retrieval.onnx_encoder.backend_for`); None keeps the spec the index records."""
    from .dense import DENSE_KINDS
    from .encoders import resolve_device
    from .manifest import get_entry
    from .onnx_encoder import backend_for

    if config.kind not in (*DENSE_KINDS, "hybrid"):
        return None
    entry = get_entry(Path(config.index), "flat" if config.kind == "hybrid" else config.kind)
    device = "cuda" if config.gpu else resolve_device(config.device)
    return backend_for(entry.get("encoder"), config.encoder_backend, device)


def _query_encoder(retriever):
    """The query encoder of a dense or hybrid retriever, else None."""
    searcher = getattr(retriever, "searcher", None)
    return getattr(getattr(searcher, "first", searcher), "encoder", None)


def _limit_threads(threads: int) -> None:
    """Cap torch and FAISS (OpenMP) threads; 0 keeps their defaults (one per core)."""
    if threads <= 0:
        return
    # faiss comes from the cpu/gpu extra and only dense indexes need it
    import faiss
    import torch

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    # Idle OpenMP workers sleep instead of spinning, so they do not steal the core the HTTP event loop needs
    # between batches (and do not burn CPU that other processes on a shared node need).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # uvicorn is needed only to serve
    import uvicorn

    defaults = ServerConfig()
    parser = argparse.ArgumentParser(
        prog="python -m rlcore.retrieval.server", description="retrieval HTTP server"
    )
    parser.add_argument("--index", required=True, help="index folder built by `make index`")
    options = "kind host port mode device encoder encoder_backend max_batch_queries max_wait_ms"
    options += " max_queue_queries max_queue_wait_ms batch_workers parallel_min_queries inline_max_queries"
    for name in (*options.split(), "retry_after_s", "ef_search", "nprobe", "token_env"):
        default = getattr(defaults, name)
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=type(default), default=default, help=f"default {default}"
        )
    for name in ("max_queries", "max_topk", "max_query_chars"):
        default = getattr(defaults.limits, name)
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=default, help=f"default {default}"
        )
    parser.add_argument("--gpu", action="store_true", help="FAISS on all visible GPUs (needs the gpu extra)")
    parser.add_argument("--mmap", action="store_true", help="memory-map the index instead of reading it")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch/FAISS threads (default 0: one per core)"
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if args.mode not in ("batched", "naive"):
        parser.error("--mode must be batched or naive")
    for name, lowest in _NUMERIC_FLOOR.items():
        if getattr(args, name) < lowest:
            parser.error(f"--{name.replace('_', '-')} must be at least {lowest}, got {getattr(args, name)}")
    if args.encoder_backend not in ("auto", *BACKENDS):
        parser.error(f"--encoder-backend must be auto, {', '.join(BACKENDS)}")
    setup_logging(args.log_level.upper())
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    _limit_threads(args.threads)
    limits = Limits(args.max_queries, args.max_topk, args.max_query_chars)
    fields = {k: v for k, v in vars(args).items() if k in ServerConfig.__dataclass_fields__}
    config = ServerConfig(**fields, limits=limits)
    if config.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("binding %s: the server is reachable from other machines", config.host)
    app = create_app(config)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
