"""A tiny CPT -> SFT -> GRPO run on CPU (random tiny Qwen2), resume by re-run, and the GRPO reward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anessuite.pipeline import stage_cache
from anessuite.pipeline.config import PipelineConfig
from anessuite.pipeline.data import plan_data, prepare_data
from anessuite.pipeline.grpo_stage import answer_line_format, make_reward_fn
from anessuite.pipeline.hf_stages import cpt_text_dataset
from anessuite.pipeline.run import _parent_run, run_pipeline, stage_final, stage_plan
from anessuite.synthetic.generate import WorldDataConfig, generate_world_data
from rlcore.config import load_config
from rlcore.tracking import PARENT_ENV, start_run
from rlcore.tracking_store import MLflowConfig

REPO = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("The adverse effect of Quelodexol is pruritus.\nAnswer: pruritus", 1.0),  # one option's text
        ("...\n答案：瘙痒。", 1.0),  # Chinese, closing full stop
        ("...\nAnswer:  Pruritus ", 1.0),  # case and spacing ignored
        ("...\nAnswer: D", 0.0),  # text-answer SFT never writes a letter line
        ("...\nAnswer: itching", 0.0),  # a text that is no option
        ("Answer: pruritus\nmore text", 0.0),  # not the last line
    ],
)
def test_answer_line_format_for_text_answers(completion, expected):
    options = ["hyperkalemia", "hypotension", "bradycardia", "pruritus", "瘙痒"]
    assert answer_line_format(completion, "text", options) == expected


def test_text_answer_reward_pays_the_format_term_for_option_text_lines():
    reward = make_reward_fn(format_weight=0.5, answer="text")
    options = [["hypotension", "pruritus", "bradycardia", "seizures"]] * 3
    values = reward(
        ["x\nAnswer: pruritus", "x\nAnswer: seizures", "x\nAnswer: B"],
        gold_letter=["B"] * 3,
        num_choices=[4] * 3,
        options=options,
        language=["en"] * 3,
    )
    # right text = 1 + 0.5; wrong text = 0.5; a correct letter line is right but not the taught form = 1
    assert values == [1.5, 0.5, 1.0]
    with pytest.raises(ValueError, match="data.sft_answer"):
        make_reward_fn(format_weight=0.5, answer="options")


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


def test_run_folder_and_stage_keys_are_stable(monkeypatch):
    """Folder names and stage keys are what earlier runs were stored under: a change here would retrain every
    finished pipeline on its next run (values of the code before the stage cache moved to its own module). A new
    config field changes them: register it in stage_cache.ADDED_SETTINGS with the value that keeps the old
    behaviour. The pinned values are those of the embedded models' earlier builds; a rebuilt model (SmolLM2 build
    2) changes its pipelines' keys on purpose, checked at the end."""
    cfg = PipelineConfig()
    monkeypatch.setattr(stage_cache, "_model_identity", lambda model: model)
    assert stage_cache.training_fingerprint(cfg) == "2ca1022d", "new field? see stage_cache.ADDED_SETTINGS"
    assert stage_cache.stage_key(cfg, "sft", "smollm2-135m-instruct") == "03408ce9d833f6d2"
    cfg.grpo.rollout.max_start_tokens = 512  # a setting added later changes the key once it is used
    assert stage_cache.stage_key(cfg, "grpo", "some/model") != "2791752e340daebd"
    cfg.grpo.rollout.max_start_tokens = 0
    assert stage_cache.stage_key(cfg, "grpo", "some/model") == "2791752e340daebd"
    cpu = load_config(PipelineConfig, REPO / "packages/anessuite/configs/pipeline_cpu.yaml")
    assert stage_cache.training_fingerprint(cpu) == "8abb4d6d"
    assert stage_cache.stage_key(cpu, "cpt", cpu.base_model) == "bc5a37af453ba2c7"
    assert stage_cache.stage_key(cpu, "grpo", "x") == "e682daea7582b60b"
    monkeypatch.undo()
    assert stage_cache.training_fingerprint(cpu) != "8abb4d6d"
    assert stage_cache.stage_key(cpu, "cpt", cpu.base_model) != "bc5a37af453ba2c7"
    assert stage_cache.stage_key(cpu, "grpo", "x") == "e682daea7582b60b"  # not trained from the base model


def test_stage_key_follows_what_changes_the_model():
    cfg = PipelineConfig()
    key = stage_cache.stage_key(cfg, "sft", "base")
    cfg.sft.launcher = "accelerate launch --config_file x.yaml"  # how it runs, not what it trains
    cfg.data.benchmark = "/elsewhere/AnesBench"  # evaluation only
    cfg.name = "renamed"
    cfg.cpt.lr = 1.0  # another stage
    assert stage_cache.stage_key(cfg, "sft", "base") == key
    assert stage_cache.stage_key(cfg, "sft", "other-base") != key  # another input model
    cfg.sft.lr = 3e-4
    assert stage_cache.stage_key(cfg, "sft", "base") != key
    cfg.sft.lr, cfg.seed = PipelineConfig().sft.lr, 1
    assert stage_cache.stage_key(cfg, "sft", "base") != key


def _finished(folder: Path, cfg: PipelineConfig, stage: str, model_in: str) -> Path:
    final = folder / stage / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    stage_cache.write_done(cfg, folder, stage, model_in, final)
    return final


def test_finished_stage_is_found_in_a_sibling_pipeline_and_adopted(tmp_path):
    cfg = PipelineConfig()
    cfg.cpt.enabled = False
    first = tmp_path / "first"
    final = _finished(first, cfg, "sft", cfg.base_model)
    marker = json.loads((first / "sft" / "DONE.json").read_text())
    assert marker["final"] == "sft/final"  # relative: the pipeline folder can be moved
    assert Path(stage_cache.stage_final(first, "sft")) == final

    second = tmp_path / "second"
    second.mkdir()
    assert stage_cache.reuse_stage(cfg, second, "sft") is True
    adopted = json.loads((second / "sft" / "DONE.json").read_text())
    assert adopted["reused"] is True and Path(adopted["final"]) == final.resolve()
    assert stage_cache.stage_input(cfg, second, "grpo") == str(final.resolve())  # GRPO starts from it

    other = PipelineConfig()
    other.cpt.enabled, other.sft.lr = False, 3e-4
    third = tmp_path / "third"
    third.mkdir()
    assert stage_cache.reuse_stage(other, third, "sft") is False  # different settings: trains itself
    assert not (third / "sft").exists()


def test_a_finished_stage_trained_with_other_settings_is_refused_not_reused(tmp_path):
    """Two configurations sharing one output_dir (Table 5's variants once did): the second must not silently get the
    first one's model."""
    cfg = PipelineConfig()
    cfg.cpt.enabled = False
    _finished(tmp_path, cfg, "sft", cfg.base_model)
    stage_cache.check_finished_stage(cfg, tmp_path, "sft")  # the same settings: accepted
    other = PipelineConfig()
    other.cpt.enabled, other.data.sft_sources = False, ["anesqa"]
    with pytest.raises(ValueError, match=r"sft: finished with other settings .* its own output_dir"):
        stage_cache.check_finished_stage(other, tmp_path, "sft")
    marker = tmp_path / "sft" / "DONE.json"
    done = json.loads(marker.read_text())
    assert done["key_version"] == stage_cache.KEY_VERSION
    marker.write_text(json.dumps({k: v for k, v in done.items() if k != "key_version"}))
    # a key tied to the old checkout location: trusted
    stage_cache.check_finished_stage(other, tmp_path, "sft")
    marker.write_text(json.dumps({k: v for k, v in done.items() if k not in ("key", "key_version")}))
    stage_cache.check_finished_stage(other, tmp_path, "sft")  # finished before keys were recorded: trusted


def test_stage_keys_do_not_depend_on_where_the_checkout_is(tmp_path, monkeypatch):
    cfg = PipelineConfig()
    keys = []
    for checkout in ("a", "b"):
        model = tmp_path / checkout / "runs" / "model"
        model.mkdir(parents=True)
        monkeypatch.chdir(tmp_path / checkout)
        keys.append(stage_cache.stage_key(cfg, "sft", "runs/model"))
        assert stage_cache.stage_key(cfg, "sft", str(model)) == keys[-1]  # absolute or relative: one input
        assert stage_cache.stage_key(cfg, "sft", "./runs/../runs/model") == keys[-1]
    assert keys[0] == keys[1]
    assert stage_cache.stage_key(cfg, "sft", "runs/other") != keys[0]


def test_a_stage_folder_without_a_model_is_not_adopted(tmp_path):
    cfg = PipelineConfig()
    cfg.cpt.enabled = False
    _finished(tmp_path / "first", cfg, "sft", cfg.base_model)
    (tmp_path / "first" / "sft" / "final" / "config.json").unlink()  # deleted or half-copied model
    key = stage_cache.stage_key(cfg, "sft", cfg.base_model)
    assert stage_cache.find_finished_stage("sft", key, tmp_path / "second") is None


def test_stage_input_needs_the_previous_stage(tmp_path):
    cfg = PipelineConfig()
    assert stage_cache.stage_input(cfg, tmp_path, "cpt") == cfg.base_model
    with pytest.raises(FileNotFoundError, match="stage 'sft' needs 'cpt' first"):
        stage_cache.stage_input(cfg, tmp_path, "sft")


def test_a_launched_stage_nests_its_run_under_the_pipeline_run(tmp_path, monkeypatch):
    """One parent-run mechanism: the launcher passes rlcore.tracking's RLCORE_PARENT_RUN_ID to the stage process,
    whose run rlcore.tracking then nests (real sqlite store)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = PipelineConfig(
        name="nest", output_dir=str(tmp_path / "pipe"), tracking=MLflowConfig(experiment="nest-test")
    )
    with start_run(cfg.tracking.experiment, run_name="nest") as parent:
        monkeypatch.setenv(PARENT_ENV, parent.run_id)
        cfg.only_stage = "sft"
        with _parent_run(cfg, tmp_path / "pipe", {}) as stage_run:
            stage_id = stage_run.run_id
    run = MlflowClient(uri).get_run(stage_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.data.tags["stage"] == "sft" and run.info.run_name == "nest/sft"


# --- data paths: released files or the synthetic world, never a silent mix ---------------------------------


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """Small corpus / QA / benchmark folders in the released layouts (AnesCorpus_<lang>-*.parquet, AnesQA
    parquet, anesbench_<lang>.json), written by the synthetic generator; no AnesR1 (it is not released)."""
    root = tmp_path_factory.mktemp("releases")
    paths = generate_world_data(
        root / "world",
        WorldDataConfig(
            cpt_docs_en=24, cpt_docs_zh=8, rlvr_per_language=4, bench_en=(2, 1, 1), bench_zh=(2, 1, 1)
        ),
    )
    return {key: paths[key] for key in ("corpus", "anesqa", "benchmark")}


def _files_cfg(releases, **data) -> PipelineConfig:
    cfg = PipelineConfig()
    cfg.data.corpus, cfg.data.anesqa = str(releases["corpus"]), str(releases["anesqa"])
    cfg.data.benchmark, cfg.data.sft_sources = str(releases["benchmark"]), ["anesqa"]
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


def test_all_training_paths_empty_is_the_synthetic_world():
    plan = plan_data(PipelineConfig())
    assert plan.synthetic and not plan.skipped_stages
    assert set(plan.needed) == {"corpus", "anesqa", "anesr1", "benchmark"}


def test_a_given_benchmark_is_evaluated_beside_synthetic_training(releases, tmp_path):
    """`anessuite table3 benchmark=...` evaluates the CPU pipeline on the real benchmark: explicit, not a mix."""
    cfg = PipelineConfig()
    cfg.data.benchmark = str(releases["benchmark"])
    plan = plan_data(cfg)
    assert plan.synthetic
    cfg.data.benchmark = str(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"data\.benchmark: .*missing does not exist"):
        plan_data(cfg)


@pytest.mark.parametrize(
    "changes, message",
    [
        # one training path given: every path an enabled stage reads must be given too
        ({"anesqa": ""}, r"data\.anesqa is empty, but the SFT stage \(data\.sft_sources lists anesqa\)"),
        ({"benchmark": ""}, r"data\.benchmark is empty, but the stage evaluations"),
        ({"corpus": "/nonexistent/AnesCorpus"}, r"data\.corpus: /nonexistent/AnesCorpus does not exist"),
        # AnesR1 asked for by SFT but not given: an error that says it is not released
        ({"sft_sources": ["anesqa", "anesr1"]}, r"data\.anesr1 is empty.*AnesR1 is not released"),
        ({"sft_sources": ["anesqa", "r1"]}, r"data\.sft_sources: unknown source"),
    ],
)
def test_an_empty_or_missing_data_path_names_the_config_key(releases, changes, message):
    with pytest.raises(ValueError, match=message):
        plan_data(_files_cfg(releases, **changes))


def test_without_anesr1_the_grpo_stage_is_skipped_and_says_why(releases):
    plan = plan_data(_files_cfg(releases))
    assert not plan.synthetic
    assert "not released" in plan.skipped_stages["grpo"] and "data.anesr1" in plan.skipped_stages["grpo"]
    cfg = _files_cfg(releases)
    cfg.grpo.enabled = False  # nothing wants AnesR1: nothing skipped
    assert plan_data(cfg).skipped_stages == {}


def test_unused_paths_are_not_checked(releases):
    cfg = _files_cfg(releases, anesqa="/nonexistent/AnesQA")
    cfg.sft.enabled, cfg.grpo.enabled = False, False  # only CPT and the evaluations read data
    assert plan_data(cfg).needed.keys() == {"corpus", "benchmark"}


@pytest.mark.parametrize("name", ["pipeline_qwen2.5_7b.yaml", "pipeline_qwen2.5_14b.yaml"])
def test_paper_pipeline_runs_without_anesr1(name, releases, tmp_path, monkeypatch):
    """The released AnesCorpus / AnesQA / AnesBench folders under $ANESSUITE_DATA are enough."""
    data = tmp_path / "anessuite"
    data.mkdir()
    for key, folder in (("corpus", "AnesCorpus"), ("anesqa", "AnesQA"), ("benchmark", "AnesBench")):
        (data / folder).symlink_to(releases[key])
    monkeypatch.setenv("ANESSUITE_DATA", str(data))
    monkeypatch.delenv("ANESSUITE_ANESR1", raising=False)
    cfg = load_config(PipelineConfig, REPO / "packages/anessuite/configs" / name)
    assert cfg.data.anesr1 == ""
    plan = plan_data(cfg)
    assert not plan.synthetic and list(plan.skipped_stages) == ["grpo"]


@pytest.mark.parametrize("name", ["morpheus_qwen2.5_7b.yaml", "morpheus_qwen2.5_14b.yaml"])
def test_morpheus_needs_anesr1_and_says_so(name, tmp_path, monkeypatch):
    monkeypatch.setenv("ANESSUITE_DATA", str(tmp_path))
    (tmp_path / "AnesBench").mkdir()
    cfg = load_config(PipelineConfig, REPO / "packages/anessuite/configs" / name)
    with pytest.raises(ValueError, match=r"data\.anesr1: .*AnesR1 does not exist"):
        plan_data(cfg)


def test_a_converter_error_names_the_config_key(releases, tmp_path):
    empty = tmp_path / "AnesCorpus"
    empty.mkdir()
    (empty / "README.md").write_text("dataset card only")
    cfg = _files_cfg(releases, corpus=str(empty))
    cfg.grpo.enabled = False
    with pytest.raises(FileNotFoundError, match=r"data\.corpus \(.*AnesCorpus\): .*no input files"):
        prepare_data(cfg.data, tmp_path / "data", 0, cfg.prompt, plan_data(cfg))


def test_released_files_prepare_only_what_the_stages_read(releases, tmp_path):
    cfg = _files_cfg(releases)
    prepared = prepare_data(cfg.data, tmp_path / "data", 0, cfg.prompt, plan_data(cfg))
    assert not (tmp_path / "data" / "world").exists()  # nothing synthetic was generated
    assert prepared["cpt"].stat().st_size > 0 and prepared["sft"].stat().st_size > 0
    assert not prepared["rl"].exists()  # GRPO is skipped: no RL prompts
    assert prepared["benchmark"] == releases["benchmark"]


def test_cpt_text_is_streamed_into_a_memory_mapped_dataset(tmp_path):
    data = tmp_path / "cpt.jsonl"
    data.write_text("".join(json.dumps({"text": f"doc {i}", "language": "en"}) + "\n" for i in range(5)))
    dataset = cpt_text_dataset(data, None, tmp_path / "cache")
    assert dataset["text"] == [f"doc {i}" for i in range(5)] and dataset.column_names == ["text"]
    assert dataset.cache_files  # backed by an Arrow file on disk, not a Python list in memory
    assert cpt_text_dataset(data, 3, tmp_path / "cache")["text"] == ["doc 0", "doc 1", "doc 2"]
    data.write_text(json.dumps({"text": "rewritten"}) + "\n")  # a re-prepared file is read again
    assert cpt_text_dataset(data, None, tmp_path / "cache")["text"] == ["rewritten"]
    data.write_text("")
    with pytest.raises(ValueError, match="no training records"):
        cpt_text_dataset(data, None, tmp_path / "cache")


def test_num_proc_at_its_default_keeps_stage_keys_and_otherwise_changes_them():
    cfg = PipelineConfig()
    key = stage_cache.stage_key(cfg, "cpt", "base")
    cfg.cpt.num_proc = 4  # packing boundaries follow the worker shards
    assert stage_cache.stage_key(cfg, "cpt", "base") != key


@pytest.mark.slow
def test_pipeline_on_released_files_without_anesr1(releases, tmp_path, caplog):
    """CPT (two tokenising workers) -> SFT on the released layouts; GRPO skipped with a warning; no world."""
    out = tmp_path / "pipe"
    cfg = _files_cfg(releases)
    cfg.name, cfg.base_model, cfg.output_dir = "files", "tiny-qwen2", str(out)
    cfg.evaluate_base, cfg.eval.enabled = False, False
    for stage in (cfg.cpt, cfg.sft):
        stage.total_steps, stage.max_length, stage.max_samples = 1, 64, 8
        stage.micro_batch_size, stage.gradient_accumulation_steps, stage.save_every = 2, 1, 1
    cfg.cpt.num_proc = 2
    with caplog.at_level("WARNING"):
        run_pipeline(cfg)
    assert (out / "cpt" / "DONE.json").exists() and (out / "sft" / "DONE.json").exists()
    assert not (out / "grpo").exists() and not (out / "data" / "world").exists()
    assert any("AnesR1 is not released" in record.getMessage() for record in caplog.records)
    state = json.loads((out / "pipeline_state.json").read_text())
    assert "not released" in state["skipped_stages"]["grpo"]


def _tiny_cfg(out) -> PipelineConfig:
    cfg = PipelineConfig(name="tiny", base_model="tiny-qwen2", output_dir=str(out))
    for stage in (cfg.cpt, cfg.sft):
        stage.total_steps, stage.max_length, stage.max_samples = 2, 64, 16
        stage.micro_batch_size, stage.gradient_accumulation_steps = 2, 1
        stage.log_every, stage.save_every = 1, 1
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
    changed.name, changed.grpo.enabled, changed.sft.lr = "tiny-lr", False, 3e-4
    run_pipeline(changed)
    assert json.loads((tmp_path / "pipe-lr" / "cpt" / "DONE.json").read_text()).get("reused") is True
    sft_done = json.loads((tmp_path / "pipe-lr" / "sft" / "DONE.json").read_text())
    assert "reused" not in sft_done and (tmp_path / "pipe-lr" / "sft" / "train_summary.json").exists()


def test_a_pipeline_that_fails_on_its_data_paths_is_a_failed_run(releases, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = _files_cfg(releases, anesqa="")
    cfg.name, cfg.output_dir, cfg.tracking.experiment = (
        "bad-data",
        str(tmp_path / "pipe"),
        "pipeline-bad-data",
    )
    with pytest.raises(ValueError, match=r"data\.anesqa is empty"):
        run_pipeline(cfg)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("pipeline-bad-data").experiment_id])
    assert run.info.status == "FAILED" and run.info.run_name == "bad-data"
    assert "data.anesqa is empty" in run.data.tags["error"]
