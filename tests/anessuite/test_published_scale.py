"""Scale check: a generated benchmark with AnesBench's published sizes and exact 2026 schema goes through the
user-facing `score` command (load -> score -> tables). Its wall-clock is logged, not asserted: timings belong to
benchmarks (docs/anessuite.md records the measured figure and its command)."""

from __future__ import annotations

import json
import logging
import time

from anessuite.__main__ import main
from anessuite.benchmark import load_anesbench
from anessuite.synthetic.published import PUBLISHED_SIZES


def test_published_sizes_load_score_tables(tmp_path):
    assert main(["synth", "--published-sizes", "--out", str(tmp_path / "pub")]) == 0
    bench = tmp_path / "pub" / "benchmark"
    record = json.loads((bench / "anesbench_en.json").read_text())[0]
    assert {"id", "question", "choice_num", "target", "category"} <= set(record) and "language" not in record
    started = time.perf_counter()
    code = main(
        [
            "score",
            "--benchmark",
            str(bench),
            "--responses",
            str(tmp_path / "pub" / "responses.jsonl"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    seconds = time.perf_counter() - started
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    for lang, sizes in PUBLISHED_SIZES.items():
        entry = results["by_language"][lang]
        assert entry["n"] == sum(sizes)  # 4,343 EN and 3,529 ZH
        assert tuple(entry["n_by_level"].values()) == sizes
        assert 0 < entry["truncated"] < entry["n"] and 0 < entry["abstained"] < entry["n"]
    assert (tmp_path / "out" / "table.md").exists() and (tmp_path / "out" / "levels.png").exists()
    logging.getLogger(__name__).info("load -> score -> tables of 7,872 items: %.1f s", seconds)
    assert len(load_anesbench(bench)) == 7872
