"""The default synthetic world (seed 0, the seed every committed AnesSuite experiment uses) is pinned by a hash
of its generated content, so a generator change cannot silently alter the worlds earlier results came from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq

from anessuite.synthetic.generate import WorldDataConfig, generate_world_data

# Content hash of generate_world_data(WorldDataConfig(seed=0)) before the miniature design was added.
DEFAULT_SEED0_SHA256 = "ec03ae8c49ad943766bdd3930210cfcce91855cb51a899ae3510f780b06140d1"


def content_digest(root: Path) -> str:
    """sha256 over every file but the manifest; parquet files by their columns (independent of the writer)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name == "manifest.json":
            continue
        digest.update(path.relative_to(root).as_posix().encode())
        if path.suffix == ".parquet":
            columns = pq.read_table(path).to_pydict()
            digest.update(json.dumps(columns, ensure_ascii=False, sort_keys=True).encode())
        else:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_default_world_seed0_is_unchanged(tmp_path):
    generate_world_data(tmp_path, WorldDataConfig(seed=0))
    assert content_digest(tmp_path) == DEFAULT_SEED0_SHA256
