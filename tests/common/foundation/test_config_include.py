"""rlcore.config includes (`base:`), Literal choices, must-exist paths and `--explain`: merge order, errors, origins."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from rlcore.config import (
    ConfigError,
    existing_path,
    load_config,
    load_config_explained,
    recipe_main,
)


@dataclass
class Optim:
    lr: float = 1e-6  # learning rate
    schedule: Literal["constant", "cosine"] = "constant"  # learning-rate schedule


@dataclass
class Data:
    kind: Literal["world", "files"] = "world"  # where questions come from
    files: list[str] = existing_path(factory=list, hint="write them with `make data`")  # question files
    modes: list[Literal["generate", "loglik"]] = field(default_factory=lambda: ["generate"])  # eval modes


@dataclass
class Recipe:
    seed: int = 0  # global seed
    name: str = "run"  # run name
    optim: Optim = field(default_factory=Optim)  # optimiser
    data: Data = field(default_factory=Data)  # data

    def validate(self) -> None:
        if self.data.kind == "files" and not self.data.files:
            raise ValueError("data.kind=files needs data.files")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_bases_merge_in_order_then_the_file_then_the_command_line(tmp_path: Path):
    write(tmp_path / "common.yaml", "seed: 1\nname: common\noptim:\n  lr: 0.1\n")
    write(tmp_path / "sched.yaml", "name: sched\noptim:\n  schedule: cosine\n")
    arm = write(tmp_path / "arms" / "a.yaml", "base: [../common.yaml, ../sched.yaml]\nseed: 2\n")
    loaded = load_config_explained(Recipe, arm, ["optim.lr=0.5"])
    cfg = loaded.config
    assert cfg.seed == 2  # the including file wins over its bases
    assert cfg.name == "sched"  # the later base wins over the earlier one
    assert cfg.optim.schedule == "cosine"  # kept from the second base
    assert cfg.optim.lr == 0.5  # the command line wins over every file
    assert loaded.sources == [
        str(tmp_path / "common.yaml"),
        str(tmp_path / "sched.yaml"),
        str(arm),
        "command line",
    ]
    assert loaded.origin == {
        "seed": str(arm),
        "name": str(tmp_path / "sched.yaml"),
        "optim.lr": "command line",
        "optim.schedule": str(tmp_path / "sched.yaml"),
    }


def test_nested_bases_resolve_relative_to_each_including_file(tmp_path: Path):
    write(tmp_path / "root.yaml", "seed: 5\nname: root\n")
    write(tmp_path / "mid" / "mid.yaml", "base: ../root.yaml\nname: mid\n")
    leaf = write(tmp_path / "mid" / "deep" / "leaf.yaml", "base: ../mid.yaml\noptim:\n  lr: 0.3\n")
    cfg = load_config(Recipe, leaf)
    assert (cfg.seed, cfg.name, cfg.optim.lr) == (5, "mid", 0.3)
    # the same file as a single string or a one-item list
    single = write(tmp_path / "single.yaml", "base: [root.yaml]\n")
    assert load_config(Recipe, single).name == "root"


def test_a_diamond_is_not_a_cycle(tmp_path: Path):
    write(tmp_path / "root.yaml", "seed: 5\n")
    write(tmp_path / "a.yaml", "base: root.yaml\nname: a\n")
    write(tmp_path / "b.yaml", "base: root.yaml\noptim:\n  lr: 0.2\n")
    top = write(tmp_path / "top.yaml", "base: [a.yaml, b.yaml]\n")
    cfg = load_config(Recipe, top)
    assert (cfg.seed, cfg.name, cfg.optim.lr) == (5, "a", 0.2)


def test_include_cycle_names_the_chain(tmp_path: Path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"include cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(Recipe, tmp_path / "a.yaml")
    write(tmp_path / "self.yaml", "base: self.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_config(Recipe, tmp_path / "self.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base: missing.yaml\n", "'base' file not found: missing.yaml"),
        ("base: 3\n", "'base' must be a file name or a list of file names"),
        ("base: [ok.yaml, {a: 1}]\n", "'base' must be a file name or a list of file names"),
    ],
)
def test_bad_base_values_fail_with_the_file(tmp_path: Path, text: str, message: str):
    write(tmp_path / "ok.yaml", "seed: 1\n")
    config = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(Recipe, config)
    assert str(err.value).startswith(str(config)) and message in str(err.value)


def test_an_unknown_key_in_a_base_names_the_base_and_the_nearest_key(tmp_path: Path):
    write(tmp_path / "base.yaml", "optim:\n  lrr: 0.1\n")
    arm = write(tmp_path / "arm.yaml", "base: base.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_config(Recipe, arm)
    text = str(err.value)
    assert text.startswith(str(tmp_path / "base.yaml") + ": unknown config key 'optim.lrr'")
    assert "did you mean 'optim.lr'?" in text
    # `base` is only a key at the top of a file, not a schema key or an override
    with pytest.raises(ConfigError, match="unknown config key 'base'"):
        load_config(Recipe, None, ["base=x.yaml"])


@pytest.mark.parametrize(
    ("source", "overrides", "expected"),
    [
        ("file", [], "invalid value 'cosin' for 'optim.schedule'; did you mean 'cosine'?"),
        ("command line", ["data.kind=file"], "invalid value 'file' for 'data.kind'; did you mean 'files'?"),
        (
            "command line",
            ["data.kind=zzz"],
            "invalid value 'zzz' for 'data.kind' (valid values: world, files)",
        ),
        ("command line", ["data.modes=[generate,logli]"], "'data.modes[1]'; did you mean 'loglik'?"),
    ],
)
def test_a_value_outside_the_choices_names_the_nearest_value(tmp_path, source, overrides, expected):
    config = write(tmp_path / "c.yaml", "optim:\n  schedule: cosin\n" if source == "file" else "seed: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(Recipe, config, overrides)
    assert str(err.value).startswith(str(config) if source == "file" else "command line")
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_must_exist_paths_are_checked_when_given(tmp_path: Path):
    assert load_config(Recipe).data.files == []  # empty: nothing to check
    present = write(tmp_path / "q.jsonl", "{}\n")
    assert load_config(Recipe, None, [f"data.files=[{present}]"]).data.files == [str(present)]
    with pytest.raises(ConfigError) as err:
        load_config(Recipe, None, [f"data.files=[{present},{tmp_path / 'nope.jsonl'}]"])
    assert str(err.value) == (
        f"config key 'data.files': path not found: {tmp_path / 'nope.jsonl'} (write them with `make data`)"
    )


def test_dry_run_runs_validate_and_prints_one_line(capsys):
    calls: list = []
    assert recipe_main(Recipe, calls.append, ["--dry-run", "data.kind=files"]) == 2
    err = capsys.readouterr().err
    assert err == "config error: data.kind=files needs data.files\n"
    assert recipe_main(Recipe, calls.append, ["--dry-run", "data.kind=fils"]) == 2
    assert "did you mean 'files'?" in capsys.readouterr().err
    assert calls == []


def test_explain_prints_each_value_with_its_source(tmp_path: Path, capsys):
    write(tmp_path / "base.yaml", "seed: 1\noptim:\n  lr: 0.1\n")
    arm = write(tmp_path / "arm.yaml", "base: base.yaml\nname: arm\n")
    calls: list = []
    assert recipe_main(Recipe, calls.append, ["--config", str(arm), "--explain", "optim.lr=0.25"]) == 0
    assert calls == []
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0]
        == f"# merge order (later wins): default -> {tmp_path / 'base.yaml'} -> {arm} -> command line"
    )
    table = {line.split(":")[0]: line.rsplit("# ", 1)[1] for line in lines[1:]}
    assert table == {
        "seed": str(tmp_path / "base.yaml"),
        "name": str(arm),
        "optim.lr": "command line",
        "optim.schedule": "default",
        "data.kind": "default",
        "data.files": "default",
        "data.modes": "default",
    }
    assert any(line.startswith("optim.lr: 0.25 ") for line in lines)
    assert any(line.startswith('data.modes: ["generate"] ') for line in lines)


def test_explain_follows_a_mapping_replaced_by_a_later_file(tmp_path: Path):
    """A later layer that sets a whole list drops the earlier origin of that list."""
    write(tmp_path / "base.yaml", "data:\n  modes: [loglik]\n")
    arm = write(tmp_path / "arm.yaml", "base: base.yaml\ndata:\n  modes: [generate, loglik]\n")
    loaded = load_config_explained(Recipe, arm)
    assert loaded.config.data.modes == ["generate", "loglik"]
    assert loaded.origin == {"data.modes": str(arm)}


def test_a_path_built_from_the_environment_is_left_to_the_run(tmp_path: Path, monkeypatch):
    """`${oc.env:DATA}/x` names a machine-specific location that a later download creates: not checked at load."""
    monkeypatch.setenv("H16A_DATA", str(tmp_path / "later"))
    config = write(tmp_path / "c.yaml", "data:\n  files: ['${oc.env:H16A_DATA}/q.jsonl']\n")
    assert load_config(Recipe, config).data.files == [str(tmp_path / "later" / "q.jsonl")]
    literal = write(tmp_path / "d.yaml", f"data:\n  files: ['{tmp_path / 'later' / 'q.jsonl'}']\n")
    with pytest.raises(ConfigError, match="path not found"):
        load_config(Recipe, literal)


@dataclass
class Renamed(Recipe):
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"optim.learning_rate": "optim.lr", "out": "name"}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["optim.learning_rate=0.1"],
            "command line: config key 'optim.learning_rate' is now 'optim.lr'; rename it",
        ),
        (["out=x"], "command line: config key 'out' is now 'name'; rename it"),
        (
            ["optim.learning_rat=0.1"],
            "command line: unknown config key 'optim.learning_rat'",
        ),  # not an old name: nearest key
    ],
)
def test_an_old_key_name_fails_naming_the_new_one(overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_config(Renamed, None, overrides)
    assert str(err.value).startswith(expected)
    assert load_config(Renamed, None, ["optim.lr=0.1"]).optim.lr == 0.1
