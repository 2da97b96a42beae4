"""ONNX Runtime backend for the transformer encoders: the same model, pooling and normalisation, run faster on CPU.

Selected with a backend suffix on the encoder spec: ``minilm@onnx`` (fp32) or ``minilm@onnx-int8`` (int8 dynamic
quantisation of the weight matrices), likewise ``e5:PATH@onnx`` and ``st:PATH@onnx-int8``. The first use exports
the model (``torch.onnx``, the TorchScript exporter, with masked mean pooling and L2 normalisation inside the graph),
lets ONNX Runtime optimise the graph, and for ``onnx-int8`` quantises it; the files are cached under
``$RLCORE_CACHE/onnx/<fingerprint>/`` (``~/.cache/rlcore``) and reused afterwards.

The fingerprint is the torch encoder's (same weights, same settings), so an index built with ``minilm`` is served
with ``minilm@onnx-int8`` and the reverse. fp32 ONNX matches torch to ~1e-6; int8 changes the embeddings slightly
(``make bench-retrieval`` reports its top-3 agreement and recall@10 against the fp32 Flat results).

Texts are encoded in length-sorted batches, so each batch is padded only to its own longest text.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
from filelock import FileLock
from tqdm.auto import tqdm

from rlcore.models import cache_dir

__all__ = ["BACKENDS", "OnnxEncoder", "backend_for", "split_backend"]

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "onnx-int8")
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def split_backend(spec: str) -> tuple[str, str]:
    """``"minilm@onnx-int8"`` -> ``("minilm", "onnx-int8")``; a spec without a known suffix uses torch."""
    base, sep, backend = spec.rpartition("@")
    if not sep:
        return spec, "torch"
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown encoder backend {backend!r} in {spec!r}; choose from {', '.join(BACKENDS)}"
        )
    return base, backend


def backend_for(recorded: str | None, backend: str, device: str) -> str | None:
    """The spec that serves an index built with encoder ``recorded`` on ``backend`` (``auto``, ``torch``,
    ``onnx``, ``onnx-int8``); None keeps ``recorded`` as it is (no encoder, the hashing encoder, or ``auto``
    where ONNX does not apply).

    ``auto`` picks ONNX Runtime fp32 for a transformer encoder recorded without a backend, on a CPU ``device``,
    when onnxruntime and onnx are installed: the same function as torch to ~1e-6 (``make bench-retrieval``
    finds identical rankings) at about twice the speed. Otherwise torch, as recorded."""
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"encoder backend must be auto or one of {', '.join(BACKENDS)}, got {backend!r}")
    if not recorded or recorded.startswith("hashing"):
        return None
    base, recorded_backend = split_backend(recorded)
    if backend == "auto":
        if recorded_backend != "torch" or device != "cpu":
            return None
        # the onnx extra: the export needs onnx (once), serving needs onnxruntime
        if not all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime")):
            logger.info("onnxruntime or onnx is not installed: %s runs with torch", recorded)
            return None
        backend = "onnx"
    return base if backend == "torch" else f"{base}@{backend}"


def _require_onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            "encoder backends onnx / onnx-int8 need onnxruntime and onnx "
            "(pip install 'rlcore[onnx]', or make setup, which installs requirements/cpu.txt)"
        ) from err
    return onnxruntime


def _export(folder: Path, out: Path) -> None:
    """Write ``folder``'s encoder as ONNX: inputs (batch, seq) int64 ids/mask/types -> (batch, dim) unit vectors."""
    # torch is heavy (~1 s to import) and only this path needs it
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(folder), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))

    class Pooled(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state  # (batch, seq, dim)
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    # the example batch has padding, so the traced graph applies the attention mask for every input
    example = tokenizer(["a short one", "a somewhat longer example text"], padding=True, return_tensors="pt")
    if "token_type_ids" not in example:
        example["token_type_ids"] = torch.zeros_like(example["input_ids"])
    axes = {name: {0: "batch", 1: "seq"} for name in _INPUTS}
    with torch.inference_mode():
        torch.onnx.export(
            Pooled(model),
            tuple(example[name] for name in _INPUTS),
            str(out),
            input_names=list(_INPUTS),
            output_names=["embedding"],
            dynamic_axes={**axes, "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def _build_files(folder: Path, fingerprint: str, backend: str) -> Path:
    """Export (and quantise) once per fingerprint; returns the .onnx file for ``backend``."""
    root = cache_dir() / "onnx" / fingerprint
    root.mkdir(parents=True, exist_ok=True)
    fp32, int8 = root / "model.onnx", root / "model-int8.onnx"
    wanted = int8 if backend == "onnx-int8" else fp32
    with FileLock(str(root / "export.lock"), timeout=1800):
        if wanted.exists():
            return wanted
        if not fp32.exists():
            logger.info("exporting %s to ONNX (once; cached in %s)", folder, root)
            partial = root / "model.onnx.partial"
            _export(folder, partial)
            partial.rename(fp32)
        if backend == "onnx-int8" and not int8.exists():
            # onnxruntime is the onnx extra and only the ONNX encoder needs it
            from onnxruntime.quantization import QuantType, quantize_dynamic

            logger.info("quantising %s to int8 (dynamic, per-channel weights)", fp32)
            partial = root / "model-int8.onnx.partial"
            quantize_dynamic(str(fp32), str(partial), weight_type=QuantType.QInt8, per_channel=True)
            partial.rename(int8)
        (root / "source.json").write_text(json.dumps({"folder": str(folder), "fingerprint": fingerprint}))
    return wanted


class OnnxEncoder:
    """Mean-pooled, L2-normalised transformer encoder run by ONNX Runtime (see module docstring).

    ``spec``/``fingerprint``/``dim`` follow the torch encoder of the same model; ``backend`` says how it runs.
    ``threads`` caps ONNX Runtime's intra-op threads; None follows ``torch.get_num_threads()``, so the server's
    ``--threads`` (and ``OMP_NUM_THREADS``) apply to both backends alike.
    """

    normalize = True

    def __init__(
        self,
        folder: str | Path,
        spec: str,
        fingerprint: str,
        backend: str = "onnx",
        batch_size: int = 128,
        max_length: int = 256,
        query_prefix: str = "",
        passage_prefix: str = "",
        threads: int | None = None,
    ):
        if backend not in ("onnx", "onnx-int8"):
            raise ValueError(f"OnnxEncoder backend must be onnx or onnx-int8, got {backend!r}")
        ort = _require_onnxruntime()
        # transformers is heavy and only this path needs it
        from transformers import AutoConfig, AutoTokenizer

        self.folder = Path(folder)
        self.backend, self.fingerprint = backend, fingerprint
        self.spec = f"{spec}@{backend}"
        self.batch_size, self.max_length = batch_size, max_length
        self.query_prefix, self.passage_prefix = query_prefix, passage_prefix
        self.dim = int(AutoConfig.from_pretrained(str(self.folder)).hidden_size)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is None:
            # torch is heavy (~1 s to import) and only this path needs it
            import torch

            threads = torch.get_num_threads()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        path = _build_files(self.folder, fingerprint, backend)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _encode(self, texts: list[str], show_progress: bool) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(text) for text in texts], kind="stable")  # length-bucketed batches
        starts = range(0, len(texts), self.batch_size)
        for start in tqdm(starts, desc="encode", disable=not show_progress, unit=" batch"):
            rows = order[start : start + self.batch_size]
            batch = self.tokenizer(
                [texts[i] for i in rows],
                max_length=self.max_length,
                padding=True,
                truncation=True,
                return_tensors="np",
            )
            feeds = {name: batch[name].astype(np.int64) for name in _INPUTS if name in batch}
            if "token_type_ids" not in feeds:
                feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
            out[rows] = self.session.run(None, feeds)[0]
        return out

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """``(n, dim)`` embeddings of ``query_prefix + text``."""
        return self._encode([self.query_prefix + t for t in texts], show_progress=False)

    def encode_passages(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """``(n, dim)`` embeddings of ``passage_prefix + text``."""
        return self._encode([self.passage_prefix + t for t in texts], show_progress=show_progress)
