"""Every committed REX-RAG config loads into its schema and validates; the paper configs keep the official values."""

from pathlib import Path

import pytest

from rexrag.recipes.evaluate import EvalConfig
from rexrag.recipes.sft import SFTConfig
from rexrag.recipes.train import RexRagTrainConfig
from rexrag.trigger import OFFICIAL_PROBE_PROB
from rlcore.config import load_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "packages" / "rexrag" / "configs"
CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))


def _schema(path: Path):
    if path.name.startswith("sft"):
        return SFTConfig
    if path.name.startswith("eval"):
        return EvalConfig
    return RexRagTrainConfig


def test_configs_exist():
    names = {p.relative_to(CONFIG_DIR).as_posix() for p in CONFIGS}
    assert {
        "paper/rexrag_qwen2.5-3b.yaml",
        "paper/searchr1_grpo_qwen2.5-7b.yaml",
        "cpu/rexrag.yaml",
        "cpu/grpo.yaml",
        "cpu/sft.yaml",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(CONFIG_DIR).as_posix())
def test_config_loads_and_validates(path, tmp_path):
    cfg = load_config(_schema(path), path)
    if isinstance(cfg, RexRagTrainConfig):
        if cfg.qa.source == "files" and not cfg.qa.train_files:
            # the own-data configs take the user's question files from the command line, as their header says
            assert "qa.train_files=" in path.read_text(encoding="utf-8"), (
                f"{path}: no command line for the files"
            )
            questions = tmp_path / "questions.jsonl"
            questions.write_text('{"id": "0", "question": "q?", "golden_answers": ["a"]}\n', encoding="utf-8")
            cfg.qa.train_files = cfg.qa.eval_files = [str(questions)]
        cfg.validate()


def test_paper_configs_keep_the_official_hyperparameters():
    cfg = load_config(RexRagTrainConfig, CONFIG_DIR / "paper" / "rexrag_qwen2.5-3b.yaml")
    assert (cfg.objective.prompts_per_step, cfg.objective.num_generations) == (512, 5)
    assert (cfg.optim.lr, cfg.optim.warmup_steps, cfg.train.total_steps) == (1e-6, 286, 1005)
    assert (cfg.objective.kl_coef, cfg.objective.kl_kind, cfg.objective.eps_low, cfg.objective.eps_high) == (
        0.001,
        "k3",
        0.2,
        0.2,
    )
    assert (cfg.rollout.max_turns, cfg.rollout.retrieval_topk, cfg.rollout.max_new_tokens_per_turn) == (
        5,
        3,
        500,
    )
    assert (cfg.rexrag.keep_ratio_init, cfg.rexrag.correction) == (0.08, "paper")
    assert cfg.rexrag.probe_prob == OFFICIAL_PROBE_PROB  # randint(0, 100) < 20 draws with p = 20/101
    baseline = load_config(RexRagTrainConfig, CONFIG_DIR / "paper" / "searchr1_grpo_qwen2.5-3b.yaml")
    assert not baseline.rexrag.enabled
    # the baseline differs from REX-RAG only in rexrag.enabled
    baseline.rexrag.enabled = True
    assert baseline == cfg
    clip_high = load_config(RexRagTrainConfig, CONFIG_DIR / "paper" / "rexrag_cliphigh_qwen2.5-3b.yaml")
    assert (clip_high.objective.eps_high, clip_high.rexrag.keep_ratio_init) == (0.28, 0.12)


EXPERIMENTS = CONFIG_DIR.parents[2] / "experiments"


@pytest.mark.parametrize("name", ["rexrag-cpu", "rexrag-cpu-multiworld"])
def test_cpu_arms_differ_only_in_the_method(name):
    folder = EXPERIMENTS / name
    base = load_config(RexRagTrainConfig, folder / "arms" / "rexrag.yaml")
    assert base == load_config(RexRagTrainConfig, folder / "config.yaml")
    for arm_name, field, value in [
        ("grpo", "enabled", False),
        ("rexrag_no_correction", "correction", "none"),
        ("rexrag_coarse", "correction", "coarse"),
        ("rexrag_dead_end", "trigger", "dead_end_group"),
    ]:
        arm = load_config(RexRagTrainConfig, folder / "arms" / f"{arm_name}.yaml")
        assert getattr(arm.rexrag, field) == value
        setattr(arm.rexrag, field, getattr(base.rexrag, field))
        assert arm == base, arm_name
    sft_name = "sft_stage1.yaml" if name.endswith("multiworld") else "sft.yaml"
    sft = load_config(SFTConfig, folder / sft_name)
    assert sft.data == base.qa.world  # same world (and index) for the warm-up and RL


def test_package_cpu_grpo_is_the_cpu_rexrag_recipe_without_the_method():
    grpo = load_config(RexRagTrainConfig, CONFIG_DIR / "cpu" / "grpo.yaml")
    rexrag = load_config(RexRagTrainConfig, CONFIG_DIR / "cpu" / "rexrag.yaml")
    assert not grpo.rexrag.enabled and rexrag.rexrag.enabled
    grpo.rexrag.enabled = True
    assert grpo == rexrag


def test_multiworld_context_only_arm_differs_from_no_correction_only_in_train_inserted():
    folder = EXPERIMENTS / "rexrag-cpu-multiworld" / "arms"
    plain = load_config(RexRagTrainConfig, folder / "rexrag_no_correction.yaml")
    context = load_config(RexRagTrainConfig, folder / "rexrag_no_correction_context.yaml")
    assert plain.rexrag.train_inserted and not context.rexrag.train_inserted
    context.rexrag.train_inserted = True
    assert context == plain


def test_multiworld_warm_up_chains_its_stages_into_the_rl_arms():
    folder = EXPERIMENTS / "rexrag-cpu-multiworld"
    stage1 = load_config(SFTConfig, folder / "sft_stage1.yaml")
    stage2 = load_config(SFTConfig, folder / "sft_stage2.yaml")
    arm = load_config(RexRagTrainConfig, folder / "arms" / "rexrag.yaml")
    assert stage1.model.init == "scratch" and stage1.train.extra_worlds >= 1
    assert stage2.model.init == f"{stage1.train.output_dir}/model"  # stage 2 continues from stage 1
    assert arm.model.path == f"{stage2.train.output_dir}/model"  # RL starts from stage 2
    assert stage2.data == stage1.data == arm.qa.world
    # the evaluated world is not among the demonstration-only worlds
    from rexrag.recipes.sft import extra_world_configs

    assert stage1.data.world.seed not in {w.world.seed for w in extra_world_configs(stage2)}
    # the floor keeps at least 2 probes of the 16 originals a step; the cap keeps alpha below 1/6
    from rexrag.filtering import probe_budget

    originals = arm.objective.prompts_per_step * arm.objective.num_generations
    assert probe_budget(originals, arm.rexrag.keep_ratio_min) == 2
    assert probe_budget(originals, arm.rexrag.keep_ratio_max) == 3


def test_retriever_url_defaults_to_the_environment_variable(monkeypatch):
    from rexrag.recipes.train import RetrieverConfig, RexRagTrainConfig, open_retriever
    from rlcore.config import load_config

    monkeypatch.setenv("RLCORE_RETRIEVER_URL", "http://127.0.0.1:9911")
    cfg = load_config(RexRagTrainConfig, overrides=["retriever.kind=http"])
    assert cfg.retriever.url == "http://127.0.0.1:9911"
    # a config built in Python resolves the same default when the client is opened
    assert open_retriever(RetrieverConfig(kind="http"), None).url == "http://127.0.0.1:9911"
    monkeypatch.delenv("RLCORE_RETRIEVER_URL")
    assert load_config(RexRagTrainConfig, overrides=[]).retriever.url == "http://127.0.0.1:8000"


PAPER_RUN_CONFIGS = sorted(
    p for p in (CONFIG_DIR / "paper").glob("*.yaml") if not p.name.startswith(("eval", "sft"))
)


@pytest.mark.parametrize("path", PAPER_RUN_CONFIGS, ids=lambda p: p.name)
def test_paper_configs_use_the_official_turn_semantics(path):
    cfg = load_config(RexRagTrainConfig, path)
    rollout = cfg.rollout
    # a turn without <search>/<answer> gets feedback and the loop goes on, without the EOS that ended it
    assert (rollout.end_on_eos, rollout.drop_eos_before_feedback) == (False, True)
    # observations keep their first 500 tokens; prompts their last 2048 (max_start_length)
    assert (rollout.obs_truncation, rollout.max_obs_tokens, rollout.max_start_tokens) == ("cut", 500, 2048)
    assert cfg.rexrag.probe_prob == OFFICIAL_PROBE_PROB


def test_paper_eval_config_uses_the_training_turn_semantics():
    train = load_config(RexRagTrainConfig, CONFIG_DIR / "paper" / "rexrag_qwen2.5-3b.yaml").rollout
    evaluation = load_config(EvalConfig, CONFIG_DIR / "paper" / "eval_qwen2.5-3b.yaml").rollout
    assert evaluation == train


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["qa.source=file"], "invalid value 'file' for 'qa.source'; did you mean 'files'?"),
        (["retriever.kind=bm25"], "invalid value 'bm25' for 'retriever.kind'; did you mean 'world-bm25'?"),
        (["rexrag.correction=papr"], "invalid value 'papr' for 'rexrag.correction'; did you mean 'paper'?"),
        (["qa.source=files"], "qa.source=files needs qa.train_files"),
        (["qa.source=files", "qa.train_files=[no/such/train.jsonl]"], "'qa.train_files': path not found"),
    ],
)
def test_dry_run_rejects_bad_values_in_one_line(overrides, expected, capsys):
    """A wrong enum value, a missing file or an impossible combination fails `--dry-run` (not the run)."""
    from rexrag.recipes.train import main

    code = main(["--config", str(CONFIG_DIR / "cpu" / "rexrag.yaml"), "--dry-run", *overrides])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("train.steps=5", "train.total_steps"),
        ("train.lr=0.1", "optim.lr"),
        ("train.warmup_steps=3", "optim.warmup_steps"),
        ("train.threads=1", "num_threads"),
        ("output_dir=x", "train.output_dir"),
    ],
)
def test_sft_speaks_the_trainer_vocabulary_and_old_names_fail_naming_the_new_key(old, new):
    """Learning rate, steps, seed, output folder and resume have the GRPO recipes' names in the SFT warm-up too."""
    from rlcore.config import ConfigError

    with pytest.raises(ConfigError, match=f"config key '{old.split('=')[0]}' is now '{new}'"):
        load_config(SFTConfig, CONFIG_DIR / "cpu" / "sft.yaml", [old])
    sft = load_config(SFTConfig, CONFIG_DIR / "cpu" / "sft.yaml")
    train = load_config(RexRagTrainConfig, CONFIG_DIR / "cpu" / "rexrag.yaml")
    for key in ("optim.lr", "optim.warmup_steps", "optim.weight_decay", "optim.max_grad_norm", "train.total_steps",
                "train.seed", "train.output_dir", "train.resume", "train.save_every", "num_threads"):  # fmt: skip
        section, _, name = key.rpartition(".")
        for cfg in (sft, train):
            holder = getattr(cfg, section) if section else cfg
            assert hasattr(holder, name), f"{type(cfg).__name__} has no {key}"


def test_explain_names_where_each_value_of_an_arm_comes_from(capsys):
    """`--explain` on an experiment arm: its own key, the package config's keys under it, and the defaults."""
    from rexrag.recipes.train import main

    arm = EXPERIMENTS / "rexrag-cpu" / "arms" / "grpo.yaml"
    assert main(["--config", str(arm), "--explain", "train.seed=2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    package = CONFIG_DIR / "cpu" / "rexrag.yaml"
    assert lines[0] == (
        f"# merge order (later wins): default -> {package} -> {EXPERIMENTS / 'rexrag-cpu' / 'config.yaml'} -> {arm}"
        " -> command line"
    )
    origin = {line.split(":")[0]: line.rsplit("  # ", 1)[1] for line in lines[1:]}
    assert origin["rexrag.enabled"] == str(arm)
    assert origin["optim.lr"] == origin["rexrag.probe_prob"] == str(package)
    assert origin["train.seed"] == "command line"
    assert origin["rollout.top_p"] == origin["objective.ppo_epochs"] == "default"
