"""The demo's committed warm-up policy: its manifest matches the files, and a damaged folder or manifest is named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from demo_helpers import REPO, load_warmup_module

warmup = load_warmup_module()

COMMITTED = REPO / "experiments" / "demo" / "warmup-policy"


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    folder = tmp_path / "policy"
    shutil.copytree(COMMITTED, folder)
    return folder


def test_the_committed_policy_matches_its_manifest_and_loads():
    entries = warmup.verify(COMMITTED)
    assert set(entries) == set(warmup.FILES)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(COMMITTED)
    assert sum(p.numel() for p in model.parameters()) > 1_000_000  # the 4-layer policy, not a placeholder


def test_a_changed_weights_file_is_named(copy: Path):
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(warmup.WarmupError, match=r"model\.safetensors: SHA-256 .* is not the committed"):
        warmup.verify(copy)
    assert warmup.compare(copy, COMMITTED) == ["model.safetensors"]
    assert warmup.compare(COMMITTED, COMMITTED) == []


def test_a_git_lfs_pointer_instead_of_the_weights_is_named(copy: Path):
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 4732560\n"
    (copy / "model.safetensors").write_text(pointer)
    with pytest.raises(warmup.WarmupError, match=r"model\.safetensors: SHA-256 .*\(\d+ bytes\)"):
        warmup.verify(copy)


def test_a_malformed_or_incomplete_manifest_names_file_and_line(copy: Path):
    manifest = copy / warmup.MANIFEST
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0], "not-a-digest  config.json", *lines[2:]]) + "\n")
    with pytest.raises(warmup.WarmupError, match=r"SHA256SUMS:2: expected"):
        warmup.verify(copy)
    manifest.write_text("\n".join(line for line in lines if not line.endswith("tokenizer.json")) + "\n")
    with pytest.raises(warmup.WarmupError, match=r"no digest for tokenizer\.json"):
        warmup.verify(copy)
    (copy / "config.json").unlink()
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(warmup.WarmupError, match=r"config\.json: missing"):
        warmup.verify(copy)


def test_update_copies_a_policy_and_rewrites_the_manifest(copy: Path, tmp_path: Path):
    target = tmp_path / "updated"
    entries = warmup.update(copy, target)
    assert warmup.verify(target) == entries == warmup.read_manifest(COMMITTED)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(warmup.WarmupError, match=r"not a saved policy folder, missing tokenizer\.json"):
        warmup.update(copy, tmp_path / "again")


def test_the_command_line_exit_codes(copy: Path, capsys: pytest.CaptureFixture[str]):
    assert warmup.main(["verify"]) == 0
    assert warmup.main(["compare", str(copy)]) == 0
    (copy / "generation_config.json").write_text("{}")
    assert warmup.main(["compare", str(copy)]) == 1
    assert "differs from the committed warm-up in: generation_config.json" in capsys.readouterr().out
