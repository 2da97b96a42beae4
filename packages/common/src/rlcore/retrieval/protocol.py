"""Wire protocol of ``POST /retrieve`` (Search-R1 / verl SearchTool compatible): request validation and
response encoding, shared by the batched and the naive server so both answer byte-identically.

Request ``{"queries": [str, ...], "topk": int = 3, "return_scores": bool = false}`` (other keys ignored).
Response ``{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}``, one list per query, best
first; ``score`` is left out when ``return_scores`` is false. Errors are ``{"error": message}`` with:
400 malformed JSON or wrong top-level type, 413 too many queries or body too large, 422 an invalid field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from .docstore import DocStore

__all__ = ["ApiError", "Limits", "RetrieveRequest", "parse_retrieve", "encode_results", "error_body"]

DEFAULT_TOPK = 3


class ApiError(Exception):
    """An error answered to the client as ``{"error": message}`` with an HTTP status (never a 500)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class Limits:
    """Request limits enforced by validation."""

    max_queries: int = 512  # queries per request
    max_topk: int = 100  # largest topk accepted
    max_query_chars: int = 4096  # characters per query

    @property
    def max_body_bytes(self) -> int:
        # worst case: every character escaped as \uXXXX (6 bytes) plus quoting and commas, plus slack
        return self.max_queries * (6 * self.max_query_chars + 4) + 4096


@dataclass
class RetrieveRequest:
    queries: list[str]
    topk: int
    return_scores: bool


def parse_retrieve(body: bytes, limits: Limits) -> RetrieveRequest:
    """Validate a raw request body; raise :class:`ApiError` (4xx) naming the offending field."""
    if len(body) > limits.max_body_bytes:
        raise ApiError(413, f"request body of {len(body)} bytes exceeds the limit of {limits.max_body_bytes}")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"malformed JSON body: {err}") from None
    except RecursionError:
        raise ApiError(400, "malformed JSON body: nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(data).__name__}")
    if "queries" not in data:
        raise ApiError(422, "field 'queries' is required (a non-empty list of strings)")
    queries = data["queries"]
    if not isinstance(queries, list):
        raise ApiError(422, f"field 'queries' must be a list of strings, got {type(queries).__name__}")
    if not queries:
        raise ApiError(422, "field 'queries' is empty; send at least one query")
    if len(queries) > limits.max_queries:
        raise ApiError(
            413, f"{len(queries)} queries exceed the limit of {limits.max_queries} per request; split them"
        )
    for i, query in enumerate(queries):
        if not isinstance(query, str):
            raise ApiError(422, f"queries[{i}] must be a string, got {type(query).__name__}")
        if not query.strip():
            raise ApiError(422, f"queries[{i}] is empty or whitespace")
        if len(query) > limits.max_query_chars:
            raise ApiError(
                422, f"queries[{i}] has {len(query)} characters, over the limit of {limits.max_query_chars}"
            )
    topk = data.get("topk", DEFAULT_TOPK)
    if topk is None:
        topk = DEFAULT_TOPK
    if isinstance(topk, bool) or not isinstance(topk, int):
        raise ApiError(422, f"field 'topk' must be an integer, got {type(topk).__name__}")
    if not 1 <= topk <= limits.max_topk:
        raise ApiError(422, f"field 'topk' must be between 1 and {limits.max_topk}, got {topk}")
    return_scores = data.get("return_scores", False)
    if return_scores is None:
        return_scores = False
    if not isinstance(return_scores, bool):
        raise ApiError(
            422, f"field 'return_scores' must be true or false, got {type(return_scores).__name__}"
        )
    return RetrieveRequest(queries, topk, return_scores)


def encode_results(store: DocStore, scores: np.ndarray, rows: np.ndarray, return_scores: bool) -> bytes:
    """Search output ``(n, k)`` scores/rows -> the JSON response body (rows ``-1`` are dropped)."""
    result = []
    for score_row, row_row in zip(scores.tolist(), rows.tolist()):
        hits = []
        for score, row in zip(score_row, row_row):
            if row < 0:
                continue
            item = {"document": {"id": store.id(row), "contents": store[row]}}
            if return_scores:
                item["score"] = score
            hits.append(item)
        result.append(hits)
    return json.dumps({"result": result}, ensure_ascii=False).encode("utf-8")


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode("utf-8")
