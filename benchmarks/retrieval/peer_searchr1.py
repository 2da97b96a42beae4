"""Run Search-R1's own ``search_r1/search/retrieval_server.py``, unmodified, on a CPU-only machine.

    python benchmarks/retrieval/peer_searchr1.py --checkout ../Search-R1 --port 8011 \\
        --index .cache/retrieval/wiki-minilm/flat.faiss --corpus .cache/retrieval/wiki.jsonl --model minilm

Their script is written for GPUs: it moves the encoder and every input batch to CUDA, frees the CUDA cache after
each search, runs the encoder in fp16 and binds 0.0.0.0:8000. This launcher changes only those calls, then runs
the script as ``__main__`` with its own command line:

- ``Module.cuda`` / ``Tensor.cuda`` return the object unchanged and ``torch.cuda.empty_cache`` does nothing;
- ``Module.half`` returns the module unchanged: fp16 is their GPU setting, and on CPU it would run emulated
  (slower and less exact), so the peer encodes in fp32 like our server;
- ``uvicorn.run`` binds 127.0.0.1 and ``--port``.

Everything else (their corpus loading through ``datasets``, encoder, FAISS search, FastAPI endpoint and thread
pool) is theirs. ``bench_server.py --peer CHECKOUT`` (``make bench-retrieval PEER=CHECKOUT``) uses this.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

SCRIPT = Path("search_r1/search/retrieval_server.py")


def script_path(checkout: str | Path) -> Path:
    """Their server script inside a Search-R1 checkout, with a clear error when it is not one."""
    path = Path(checkout).expanduser() / SCRIPT
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: PEER must be a Search-R1 checkout (git clone of PeterGriffinJin/Search-R1)"
        )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkout", required=True, help="Search-R1 checkout")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--index", required=True, help="FAISS index file (our flat.faiss works as is)")
    parser.add_argument("--corpus", required=True, help="JSONL corpus, one {id, contents} per line")
    parser.add_argument("--model", required=True, help="encoder folder, or 'minilm' for the packaged MiniLM")
    parser.add_argument("--topk", type=int, default=3)
    args = parser.parse_args()
    script = script_path(args.checkout)
    model = args.model
    if model == "minilm":
        from rlcore.retrieval.encoders import minilm_path

        model = str(minilm_path())

    import torch
    import uvicorn

    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.cuda.empty_cache = lambda: None
    torch.nn.Module.half = lambda self: self
    serve = uvicorn.run

    def run_on_loopback(app, *unused, **kwargs):
        kwargs.update(host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
        serve(app, **kwargs)

    uvicorn.run = run_on_loopback
    # their --retriever_name decides query prefixes ("e5", "bge"); MiniLM takes none, like ours
    name = "e5" if "e5" in Path(model).name.lower() else "minilm"
    sys.argv = [
        str(script),
        "--index_path",
        args.index,
        "--corpus_path",
        args.corpus,
        "--topk",
        str(args.topk),
        "--retriever_name",
        name,
        "--retriever_model",
        model,
    ]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
