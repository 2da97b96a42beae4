"""Every committed recipe config (experiments/*/*.yaml, packages/*/configs/**/*.yaml) is validated by
running the recipe its `# recipe:` line names with --dry-run. Nothing is skipped silently: a config without
the line fails, with a message saying what to add."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from config_harness import REPO, RecipeLineError, dry_run, explain, find_configs, find_key, recipe_argv

CONFIGS = find_configs()


def _example_data_files(scratch: Path) -> list[str]:
    """The docs' example of your own data, written into ``scratch``, as the question-file overrides."""
    out = scratch / "my_data"
    subprocess.run(
        [sys.executable, "-m", "rexrag", "example-data", "--out", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return [f"qa.train_files=[{out / 'train.jsonl'}]", f"qa.eval_files=[{out / 'test.jsonl'}]"]


# configs whose input files are given on the command line (their header says so): the harness writes the files the
# docs' example would and passes them, so the config is still dry-run, not skipped
COMMAND_LINE_INPUTS = {
    f"packages/rexrag/configs/cpu/{name}.yaml": _example_data_files
    for name in ("sft_own_data", "sft_own_data_scratch", "grpo_own_data", "rexrag_own_data")
}


@pytest.mark.parametrize(
    "config",
    CONFIGS or [pytest.param(None, marks=pytest.mark.skip(reason="no recipe config is committed yet"))],
    ids=[str(c) for c in CONFIGS] or ["none-yet"],
)
def test_config_dry_runs_through_its_recipe(config: Path, tmp_path: Path):
    try:
        recipe_argv(REPO / config)
    except RecipeLineError as err:
        pytest.fail(str(err))
    prepare = COMMAND_LINE_INPUTS.get(str(config))
    result = dry_run(config, scratch=tmp_path, overrides=prepare(tmp_path) if prepare else None)
    assert result.returncode == 0, explain(config, result)
    assert isinstance(result.resolved, dict) and result.resolved, (
        f"{config}: --dry-run must print the resolved config as a YAML mapping on stdout; got:\n"
        f"{result.stdout[:2000]}"
    )
    if config.parts[0] == "experiments" and config.name == "config.yaml":
        seeds = [
            s for s in find_key(result.resolved, "seed") if isinstance(s, int) and not isinstance(s, bool)
        ]
        assert seeds, f"{config}: an experiment config must pin an integer `seed` (CONVENTIONS.md)"


# --- the harness itself: these must fail where a broken config would ---------------------------------------

FAKE_RECIPE = """
from dataclasses import dataclass, field
from rlcore.config import recipe_main


@dataclass
class Trainer:
    lr: float = 1e-6  # learning rate


@dataclass
class Config:
    seed: int = 0  # random seed
    trainer: Trainer = field(default_factory=Trainer)  # optimisation


if __name__ == "__main__":
    raise SystemExit(recipe_main(Config, lambda cfg: 0))
"""


@pytest.fixture
def fake_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "fakepkg").mkdir(parents=True)
    (root / "fakepkg" / "__init__.py").write_text("")
    (root / "fakepkg" / "train.py").write_text(textwrap.dedent(FAKE_RECIPE))
    (root / "experiments" / "good").mkdir(parents=True)
    (root / "experiments" / "good" / "config.yaml").write_text(
        "# Tiny run.\n# recipe: fakepkg.train\nseed: 7\n"
    )
    (root / "packages" / "p" / "configs" / "sub").mkdir(parents=True)
    (root / "packages" / "p" / "configs" / "sub" / "x.yaml").write_text("# recipe: fakepkg.train\n")
    (root / "experiments" / "good" / "pipeline.yaml").write_text("# recipe: fakepkg.train\nseed: 8\n")
    (root / "experiments" / "good" / "summarize.py").write_text("")  # not YAML: not a config
    (root / "packages" / "p" / "src" / "p" / "configs").mkdir(parents=True)
    (root / "packages" / "p" / "src" / "p" / "configs" / "y.yaml").write_text("# recipe: fakepkg.train\n")
    (root / "packages" / "p" / "data").mkdir()
    (root / "packages" / "p" / "data" / "z.yaml").write_text("not: a config\n")  # outside configs/: ignored
    return root


def test_discovery_finds_every_layout(fake_repo: Path):
    assert find_configs(fake_repo) == [
        Path("experiments/good/config.yaml"),
        Path("experiments/good/pipeline.yaml"),
        Path("packages/p/configs/sub/x.yaml"),
        Path("packages/p/src/p/configs/y.yaml"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# recipe: rexrag.train\nseed: 1\n", ["rexrag.train"]),
        ("# Table 3.\n#\n#   recipe:   anessuite eval  \nseed: 1\n", ["anessuite", "eval"]),  # subcommand CLI
        ("\n# recipe: a_b.c_d\n", ["a_b.c_d"]),  # blank lines before the comments are fine
    ],
)
def test_recipe_line_is_read_from_the_leading_comments(tmp_path: Path, text: str, expected: list[str]):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    assert recipe_argv(config) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed: 1\n", "no '# recipe: <python module>' line"),
        (
            "seed: 1\n# recipe: rexrag.train\n",
            "no '# recipe: <python module>' line",
        ),  # after YAML: not a header
        ("# recipe: rexrag/train.py\n", "is not '# recipe: <python.module> [subcommand]'"),
        ("# recipe: x; rm -rf /\n", "is not '# recipe: <python.module> [subcommand]'"),
    ],
)
def test_bad_recipe_lines_fail_with_a_message(tmp_path: Path, text: str, message: str):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    with pytest.raises(RecipeLineError, match=message.replace("[", r"\[").replace("]", r"\]")):
        recipe_argv(config)


def test_a_valid_config_passes(fake_repo: Path, tmp_path: Path):
    result = dry_run(
        Path("experiments/good/config.yaml"),
        root=fake_repo,
        scratch=tmp_path,
        extra_env={"PYTHONPATH": str(fake_repo)},
    )
    assert result.returncode == 0, result.stderr
    assert result.resolved == {"seed": 7, "trainer": {"lr": 1e-6}}
    assert find_key(result.resolved, "seed") == [7]


def test_an_unknown_key_fails_with_the_recipe_error(fake_repo: Path, tmp_path: Path):
    config = fake_repo / "experiments" / "good" / "config.yaml"
    config.write_text("# recipe: fakepkg.train\nseed: 1\ntrainer:\n  lrr: 0.1\n")
    result = dry_run(
        Path("experiments/good/config.yaml"),
        root=fake_repo,
        scratch=tmp_path,
        extra_env={"PYTHONPATH": str(fake_repo)},
    )
    assert result.returncode == 2
    assert "unknown config key 'trainer.lrr'" in explain(Path("experiments/good/config.yaml"), result)


def test_a_missing_recipe_module_fails(fake_repo: Path, tmp_path: Path):
    config = fake_repo / "experiments" / "good" / "config.yaml"
    config.write_text("# recipe: fakepkg.nonexistent\nseed: 1\n")
    result = dry_run(
        Path("experiments/good/config.yaml"),
        root=fake_repo,
        scratch=tmp_path,
        extra_env={"PYTHONPATH": str(fake_repo)},
    )
    assert result.returncode != 0
    assert "No module named fakepkg.nonexistent" in result.stderr
