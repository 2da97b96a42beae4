"""rlcore.config: merge order, unknown/mistyped keys, YAML errors, env interpolation, dry-run CLI, hashing."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from rlcore.config import ConfigError, config_hash, load_config, recipe_main, to_dict, to_yaml


@dataclass
class OptimConfig:
    lr: float = 1e-6  # learning rate
    warmup_steps: int = 0  # linear warm-up length


@dataclass
class DataConfig:
    path: str = "data.jsonl"  # training file
    max_items: int | None = None  # cap on items (None = all)


@dataclass
class RecipeConfig:
    seed: int = 0  # global seed
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimiser settings
    data: DataConfig = field(default_factory=DataConfig)  # data settings
    tags: list[str] = field(default_factory=list)  # free-form run tags


def test_defaults_yaml_then_overrides(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("seed: 3\noptim:\n  lr: 1.0e-5\n  warmup_steps: 10\n")
    cfg = load_config(RecipeConfig, yaml_file, ["optim.lr=2e-5", "tags=[a,b]"])
    assert isinstance(cfg, RecipeConfig) and isinstance(cfg.optim, OptimConfig)
    assert cfg.seed == 3  # from YAML
    assert cfg.optim.warmup_steps == 10  # from YAML
    assert cfg.optim.lr == pytest.approx(2e-5)  # the override wins over YAML
    assert cfg.data.path == "data.jsonl"  # untouched default
    assert cfg.tags == ["a", "b"]


def test_an_empty_override_is_the_empty_string_and_null_is_none():
    """`key=` (what a shell leaves of `key=''`) sets "", as Hydra reads it; OmegaConf alone would give None, which a
    str field refuses. `key=null` still sets None."""
    cfg = load_config(RecipeConfig, None, ["data.path=", "data.max_items=null"])
    assert cfg.data.path == "" and cfg.data.max_items is None
    with pytest.raises(ConfigError, match="invalid value for 'data.max_items'"):
        load_config(RecipeConfig, None, ["data.max_items="])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optim.lrr=1"], "unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
        (["sed=1"], "unknown config key 'sed'; did you mean 'seed'?"),
        (["data.maxitems=3"], "did you mean 'data.max_items'?"),
        (["optim.lr=fast"], "invalid value for 'optim.lr'"),
        (["seed=1.5"], "invalid value for 'seed'"),
        (["seed"], "not of the form a.b=c"),
    ],
)
def test_bad_overrides_name_the_key(overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_config(RecipeConfig, None, overrides)
    assert expected in str(err.value)


def test_unknown_key_in_yaml_names_file(tmp_path):
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text("optim:\n  learning_rate: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(RecipeConfig, yaml_file)
    assert str(yaml_file) in str(err.value)
    assert "'optim.learning_rate'" in str(err.value)


def test_malformed_yaml_reports_line(tmp_path):
    yaml_file = tmp_path / "broken.yaml"
    yaml_file.write_text("seed: 1\noptim: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_config(RecipeConfig, yaml_file)
    assert f"{yaml_file}:" in str(err.value) and "invalid YAML" in str(err.value)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(RecipeConfig, tmp_path / "nope.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(RecipeConfig, listed)


def test_env_interpolation(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_DATA_DIR", "/data/x")
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("data:\n  path: ${oc.env:MY_DATA_DIR}/train.jsonl\n")
    assert load_config(RecipeConfig, yaml_file).data.path == "/data/x/train.jsonl"


def test_hash_is_stable_and_sensitive():
    a = load_config(RecipeConfig)
    b = load_config(RecipeConfig)
    c = load_config(RecipeConfig, None, ["seed=1"])
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)
    assert len(config_hash(a)) == 12
    assert to_dict(c)["seed"] == 1


def test_recipe_main_dry_run_prints_yaml_and_does_not_run(capsys):
    calls = []
    code = recipe_main(RecipeConfig, calls.append, ["--dry-run", "optim.lr=0.5"])
    out = capsys.readouterr().out
    assert code == 0 and calls == []
    assert "lr: 0.5" in out and "config_hash:" in out


def test_recipe_main_runs_and_reports_errors(capsys):
    calls = []
    assert recipe_main(RecipeConfig, calls.append, ["seed=7"]) == 0
    assert calls[0].seed == 7
    assert recipe_main(RecipeConfig, calls.append, ["optim.lrr=1"]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err
    assert len(calls) == 1


def test_to_yaml_round_trip(tmp_path):
    cfg = load_config(RecipeConfig, None, ["seed=9", "data.max_items=5"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(RecipeConfig, path) == cfg
