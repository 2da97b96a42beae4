"""Table commands end to end against a local OpenAI-compatible server (no weights)."""

from __future__ import annotations

import json

from anessuite.backends import Completion
from anessuite.bench.eval_speed import _serve
from anessuite.mcq import MCQItem
from anessuite.report import TABLE3_COLUMNS
from anessuite.tables import Table3Config, expand_models, run_table3


class AlwaysA:
    name = "always-a"

    def complete(self, conversations, max_new_tokens):
        for index, _ in enumerate(conversations):
            yield index, Completion(text="Reasoning.\nAnswer: A", num_tokens=4, finish_reason="stop")


def test_table3_for_a_served_model(tmp_path):
    options = (("A", "w"), ("B", "x"), ("C", "y"), ("D", "z"))
    # EN golds A, A, B (sys1, sys1.x, sys2); ZH golds A, C (sys1, sys1)
    items = [
        MCQItem(id="e1", question="q1", options=options, answer="A", language="en", level="system1"),
        MCQItem(id="e2", question="q2", options=options, answer="A", language="en", level="system1.x"),
        MCQItem(id="e3", question="q3", options=options, answer="B", language="en", level="system2"),
        MCQItem(id="z1", question="问题一", options=options, answer="A", language="zh", level="system1"),
        MCQItem(id="z2", question="问题二", options=options, answer="C", language="zh", level="system1"),
    ]
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "anesbench_en.json").write_text(json.dumps([i.to_record() for i in items[:3]]))
    (bench / "anesbench_zh.json").write_text(
        json.dumps([i.to_record() for i in items[3:]], ensure_ascii=False)
    )
    (tmp_path / "README.md").write_text("# x\n<!-- last-run:start -->\nold\n<!-- last-run:end -->\ntail\n")
    url, server = _serve(AlwaysA(), "always-a", max_batch=4)
    try:
        assert expand_models([url, "/some/path"]) == [("always-a", url), ("/some/path", None)]
        cfg = Table3Config(
            models=[url],
            benchmark=str(bench),
            output_dir=str(tmp_path / "out"),
            bootstrap_iters=10,
            max_new_tokens=16,
        )
        table = run_table3(cfg)
    finally:
        server.should_exit = True
    lines = table.read_text().splitlines()
    assert lines[0].startswith(
        "| " + " | ".join(["Model", *TABLE3_COLUMNS]) + " | Avg. (official extraction) |"
    )
    # EN: sys1 1/1, sys1.x 1/1, sys2 0/1, total 2/3 = 0.67; ZH: sys1 1/2 = 0.50, total 0.50; avg (0.667+0.5)/2 = 0.58;
    # the official-style extraction reads the same "Answer: A" lines (0.58); 5 items, none abstained or truncated
    assert (
        lines[2] == "| always-a | 1.00 | 1.00 | 0.00 | 0.67 | 0.50 | – | – | 0.50 | 0.58 | 0.58 | 5 | 0 | 0 |"
    )
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["rows"][0]["Avg."] == results["results"]["always-a"]["avg"]
    assert (tmp_path / "out" / "table3.png").exists() and (tmp_path / "out" / "table3.csv").exists()
    readme = (tmp_path / "README.md").read_text()  # the README's "Last run" block is written by the run
    assert "old" not in readme and lines[2] in readme and readme.endswith("<!-- last-run:end -->\ntail\n")


def test_table3_passes_max_new_tokens_to_the_pipeline(tmp_path, monkeypatch):
    """The recorded anessuite-table3 run evaluated at the pipeline's 128 tokens while its config said 2048:
    a value set in the table config now reaches the pipeline, and the effective value is recorded."""
    import anessuite.tables as tables
    from anessuite.pipeline.config import PipelineConfig

    seen = {}
    results = {"by_language": {}, "avg": None, "overall": {}}

    def fake_pipeline(config_path, overrides=()):
        seen["overrides"] = list(overrides)
        cfg = PipelineConfig()
        for override in overrides:
            if override.startswith("eval.max_new_tokens="):
                cfg.eval.max_new_tokens = int(override.split("=")[1])
        return cfg, {"base": {"generate": results}}

    monkeypatch.setattr(tables, "_pipeline", fake_pipeline)
    run_table3(Table3Config(max_new_tokens=2048, output_dir=str(tmp_path / "a")))
    assert "eval.max_new_tokens=2048" in seen["overrides"]
    assert json.loads((tmp_path / "a" / "results.json").read_text())["settings"] == {"max_new_tokens": 2048}
    run_table3(Table3Config(output_dir=str(tmp_path / "b")))  # unset: the pipeline's own value, recorded
    assert not any(o.startswith("eval.max_new_tokens") for o in seen["overrides"])
    recorded = json.loads((tmp_path / "b" / "results.json").read_text())["settings"]["max_new_tokens"]
    assert recorded == PipelineConfig().eval.max_new_tokens
