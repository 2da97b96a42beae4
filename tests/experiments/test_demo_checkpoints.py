"""The demo's committed checkpoints: each manifest matches its files, the models load, and a damaged folder or
manifest is named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from demo_helpers import REPO, load_checkpoints_module

checkpoints = load_checkpoints_module()

COMMITTED = REPO / "experiments" / "demo" / "committed"
WARMUP = checkpoints.CHECKPOINTS["rexrag-warmup"]


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    folder = tmp_path / "policy"
    shutil.copytree(COMMITTED / "rexrag-warmup", folder)
    return folder


@pytest.mark.parametrize("name", sorted(checkpoints.CHECKPOINTS))
def test_each_committed_checkpoint_matches_its_manifest_and_loads(name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = COMMITTED / name
    assert checkpoints.folder_of(name) == folder
    assert set(checkpoints.verify(folder, checkpoints.CHECKPOINTS[name])) == set(
        checkpoints.CHECKPOINTS[name]
    )
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) > 800_000  # the trained models, not placeholders
    assert AutoTokenizer.from_pretrained(folder).encode("Question:")


def test_a_changed_weights_file_is_named(copy: Path):
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(
        checkpoints.CheckpointError, match=r"model\.safetensors: SHA-256 .* is not the committed"
    ):
        checkpoints.verify(copy, WARMUP)
    assert checkpoints.compare(copy, COMMITTED / "rexrag-warmup", WARMUP) == ["model.safetensors"]
    assert checkpoints.compare(COMMITTED / "rexrag-warmup", COMMITTED / "rexrag-warmup", WARMUP) == []


def test_a_git_lfs_pointer_instead_of_the_weights_is_named(copy: Path):
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 4732560\n"
    (copy / "model.safetensors").write_text(pointer)
    with pytest.raises(checkpoints.CheckpointError, match=r"model\.safetensors: SHA-256 .*\(\d+ bytes\)"):
        checkpoints.verify(copy, WARMUP)


def test_a_malformed_or_incomplete_manifest_names_file_and_line(copy: Path):
    manifest = copy / checkpoints.MANIFEST
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0], "not-a-digest  config.json", *lines[2:]]) + "\n")
    with pytest.raises(checkpoints.CheckpointError, match=r"SHA256SUMS:2: expected"):
        checkpoints.verify(copy, WARMUP)
    manifest.write_text("\n".join(line for line in lines if not line.endswith("tokenizer.json")) + "\n")
    with pytest.raises(checkpoints.CheckpointError, match=r"no digest for tokenizer\.json"):
        checkpoints.verify(copy, WARMUP)
    (copy / "config.json").unlink()
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(checkpoints.CheckpointError, match=r"config\.json: missing"):
        checkpoints.verify(copy, WARMUP)


def test_update_copies_a_model_folder_and_rewrites_the_manifest(copy: Path, tmp_path: Path):
    target = tmp_path / "updated"
    entries = checkpoints.update(copy, target, WARMUP)
    assert (
        checkpoints.verify(target, WARMUP)
        == entries
        == checkpoints.read_manifest(COMMITTED / "rexrag-warmup", WARMUP)
    )
    (copy / "tokenizer.json").unlink()
    with pytest.raises(
        checkpoints.CheckpointError, match=r"not a saved model folder, missing tokenizer\.json"
    ):
        checkpoints.update(copy, tmp_path / "again", WARMUP)


def test_the_command_line(copy: Path, capsys: pytest.CaptureFixture[str]):
    assert checkpoints.main(["verify"]) == 0
    assert checkpoints.main(["compare", "rexrag-warmup", str(copy)]) == 0
    (copy / "generation_config.json").write_text("{}")
    assert checkpoints.main(["compare", "rexrag-warmup", str(copy)]) == 1
    assert "differs from the committed rexrag-warmup in: generation_config.json" in capsys.readouterr().out
    assert checkpoints.main(["verify", "no-such-model"]) == 2
    assert "unknown checkpoint 'no-such-model'" in capsys.readouterr().err


def test_only_committed_folders_are_checked_against_a_manifest(copy: Path):
    assert checkpoints.verify_if_committed(COMMITTED / "anessuite-cpt-sft") == checkpoints.read_manifest(
        COMMITTED / "anessuite-cpt-sft", checkpoints.CHECKPOINTS["anessuite-cpt-sft"]
    )
    (copy / checkpoints.MANIFEST).unlink()
    assert checkpoints.verify_if_committed(copy) is None  # a user's own model folder needs no manifest
    with pytest.raises(checkpoints.CheckpointError, match="SHA256SUMS: missing"):
        checkpoints.verify(copy)
