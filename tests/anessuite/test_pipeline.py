"""A tiny CPT -> SFT -> GRPO run on CPU (random tiny Qwen2), resume by re-run, and the GRPO reward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anessuite.pipeline.config import PipelineConfig
from anessuite.pipeline.grpo_stage import answer_line_format, make_reward_fn
from anessuite.pipeline.run import run_pipeline, stage_final, stage_plan


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("reasoning\nAnswer: B", 1.0),  # the answer line closes the response
        ("reasoning\n答案：C\n", 1.0),  # Chinese answer line, trailing newline
        ("Answer: B\nbut then more text", 0.0),  # the answer line is not last
        ("The answer is B", 0.0),  # a correct statement but not the required line
        ("", 0.0),
    ],
)
def test_answer_line_format(completion, expected):
    assert answer_line_format(completion) == expected


def test_reward_mcq_plus_format():
    reward = make_reward_fn(format_weight=0.5)
    values = reward(
        ["x\nAnswer: B", "The answer is B.", "x\nAnswer: A", "no idea"],
        gold_letter=["B"] * 4,
        num_choices=[4] * 4,
        options=[["a", "b", "c", "d"]] * 4,
        language=["en"] * 4,
    )
    # correct+format = 1 + 0.5; correct only = 1; format only = 0.5; neither = 0
    assert values == [1.5, 1.0, 0.5, 0.0]


def test_stage_plan_labels():
    cfg = PipelineConfig()
    assert stage_plan(cfg) == [("cpt", "base+CPT"), ("sft", "base+CPT+SFT"), ("grpo", "base+CPT+SFT+GRPO")]
    cfg.cpt.enabled = False
    assert [label for _, label in stage_plan(cfg)] == ["base+SFT", "base+SFT+GRPO"]


def _tiny_cfg(out) -> PipelineConfig:
    cfg = PipelineConfig(name="tiny", base_model="tiny-qwen2", out_dir=str(out), tracking=True)
    for stage in (cfg.cpt, cfg.sft):
        stage.max_steps, stage.max_length, stage.max_samples = 2, 64, 16
        stage.per_device_batch_size, stage.gradient_accumulation_steps = 2, 1
        stage.logging_steps, stage.save_steps = 1, 1
    cfg.grpo.total_steps = 1
    cfg.grpo.max_prompts = 4
    cfg.grpo.objective.num_generations = 2
    cfg.grpo.objective.prompts_per_step = 2
    cfg.grpo.rollout.max_new_tokens_per_turn = 8
    cfg.grpo.format_weight = 0.1
    cfg.eval.modes = ["loglik", "generate"]
    cfg.eval.max_new_tokens = 4
    cfg.eval.limit_per_language = 2
    cfg.eval.bootstrap_iters = 10
    return cfg


@pytest.mark.slow
def test_tiny_pipeline_runs_and_resumes(tmp_path):
    out = tmp_path / "pipe"
    results = run_pipeline(_tiny_cfg(out))
    assert list(results) == ["base", "base+CPT", "base+CPT+SFT", "base+CPT+SFT+GRPO"]
    for stage in ("cpt", "sft", "grpo"):
        done = json.loads((out / stage / "DONE.json").read_text())
        assert (out / stage / "train_summary.json").exists() and done["final"]
    # each stage starts from the previous stage's model
    # (markers store "final" relative to the pipeline folder so it can be moved; "input" is the path used)
    sft_input = json.loads((out / "sft" / "DONE.json").read_text())["input"]
    cpt_final = json.loads((out / "cpt" / "DONE.json").read_text())["final"]
    assert Path(sft_input).resolve() == (out / cpt_final).resolve()
    for mode in ("loglik", "generate"):
        table = (out / f"table_{mode}.md").read_text()
        assert table.count("\n") == 2 + 4 and "base+CPT+SFT+GRPO" in table
    assert results["base"]["loglik"]["overall"]["n"] == 4  # 2 EN + 2 ZH items
    # a re-run resumes: every stage is skipped and evaluations come from the cache
    stamps = {s: (out / s / "DONE.json").stat().st_mtime_ns for s in ("cpt", "sft", "grpo")}
    again = run_pipeline(_tiny_cfg(out))
    assert {s: (out / s / "DONE.json").stat().st_mtime_ns for s in stamps} == stamps
    assert again["base+CPT+SFT+GRPO"]["generate"]["eval"]["new_items"] == 0
    assert again["base+CPT"]["loglik"]["by_language"] == results["base+CPT"]["loglik"]["by_language"]


@pytest.mark.slow
def test_identical_stages_and_responses_are_reused_across_pipelines(tmp_path):
    first = tmp_path / "pipe"
    cfg = _tiny_cfg(first)
    cfg.grpo.enabled = False
    run_pipeline(cfg)
    for stage in ("cpt", "sft"):  # markers written before stage keys existed get them on the next run
        marker = first / stage / "DONE.json"
        done = json.loads(marker.read_text())
        key = done.pop("key")
        marker.write_text(json.dumps(done))
    run_pipeline(cfg)
    assert json.loads((first / "sft" / "DONE.json").read_text())["key"] == key  # the same key, recomputed
    assert "key" in json.loads((first / "cpt" / "DONE.json").read_text())

    # the same CPT and SFT under another name and folder: nothing is trained or generated again
    second = tmp_path / "pipe-renamed"
    renamed = _tiny_cfg(second)
    renamed.name, renamed.grpo.enabled = "tiny-renamed", False
    results = run_pipeline(renamed)
    for stage in ("cpt", "sft"):
        done = json.loads((second / stage / "DONE.json").read_text())
        assert done["reused"] is True and not (second / stage / "train_summary.json").exists()
        assert Path(done["final"]).resolve() == Path(stage_final(first, stage)).resolve()
    assert all(results[label]["generate"]["eval"]["new_items"] == 0 for label in results)

    # a different SFT learning rate is a different model: CPT is reused, SFT trains
    changed = _tiny_cfg(tmp_path / "pipe-lr")
    changed.name, changed.grpo.enabled, changed.sft.learning_rate = "tiny-lr", False, 3e-4
    run_pipeline(changed)
    assert json.loads((tmp_path / "pipe-lr" / "cpt" / "DONE.json").read_text()).get("reused") is True
    sft_done = json.loads((tmp_path / "pipe-lr" / "sft" / "DONE.json").read_text())
    assert "reused" not in sft_done and (tmp_path / "pipe-lr" / "sft" / "train_summary.json").exists()
