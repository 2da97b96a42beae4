"""The SFT engine's checkpoint choice (``rlcore.trainer.sft``): the newest complete ``checkpoint-<step>`` (its
``COMPLETE`` manifest holds), torn ones skipped with a warning naming them and the one used, explicit folders
checked, ``never`` honoured; and the fixed sample order. Training itself is tested through its two users
(tests/rexrag/test_sft_*.py, tests/anessuite/test_pipeline.py) and the kill-point tests (tests/faults)."""

import json
import logging

import pytest

from rlcore.trainer import sft
from rlcore.trainer.checkpoint import write_manifest


def _checkpoint(root, step, complete=True):
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if complete:
        write_manifest(folder)
    return folder


@pytest.fixture
def engine_log(caplog):
    caplog.set_level(logging.WARNING, logger=sft.logger.name)
    return caplog


def test_newest_complete_checkpoint_is_chosen_by_step_not_by_name(tmp_path):
    _checkpoint(tmp_path, 2)
    ten = _checkpoint(tmp_path, 10)  # "checkpoint-10" sorts before "checkpoint-2" as text
    (tmp_path / "checkpoint-notes").mkdir()  # not a step: ignored
    assert sft.find_sft_checkpoint(tmp_path) == ten
    assert sft.find_sft_checkpoint(tmp_path, "never") is None
    assert sft.find_sft_checkpoint(tmp_path / "absent") is None  # a fresh run


def test_torn_checkpoints_are_skipped_with_a_warning_naming_both(tmp_path, engine_log):
    kept = _checkpoint(tmp_path, 4)
    no_marker = _checkpoint(tmp_path, 6, complete=False)  # killed before the manifest
    assert sft.find_sft_checkpoint(tmp_path) == kept
    assert (
        f"checkpoint {no_marker} is torn (no COMPLETE marker); resuming from {kept} instead"
        in engine_log.text
    )
    engine_log.clear()
    cut = _checkpoint(tmp_path, 8)
    (cut / "model.safetensors").write_bytes(b"x" * 3)  # a file cut short after the manifest was written
    assert sft.find_sft_checkpoint(tmp_path) == kept
    assert f"{cut} is torn (model.safetensors has 3 bytes, the manifest says 10)" in engine_log.text


def test_only_torn_checkpoints_mean_starting_over_with_a_warning(tmp_path, engine_log):
    torn = _checkpoint(tmp_path, 2, complete=False)
    assert sft.find_sft_checkpoint(tmp_path) is None
    assert f"{torn} is torn" in engine_log.text and "nothing (training starts from step 0)" in engine_log.text


def test_an_explicit_checkpoint_must_be_complete(tmp_path):
    good = _checkpoint(tmp_path, 2)
    assert sft.find_sft_checkpoint(tmp_path / "elsewhere", str(good)) == good
    torn = _checkpoint(tmp_path, 4, complete=False)
    with pytest.raises(FileNotFoundError, match=r"train.resume=.*checkpoint-4.*not a complete checkpoint"):
        sft.find_sft_checkpoint(tmp_path, str(torn))


def test_engine_state_reads_back_and_is_empty_without_one(tmp_path):
    folder = _checkpoint(tmp_path, 2)
    assert sft.read_engine_state(folder) == {} and sft.read_engine_state(None) == {}
    (folder / sft.ENGINE_STATE).write_text(json.dumps({"config_hash": "abc", "elapsed_seconds": 1.5}))
    assert sft.read_engine_state(folder) == {"config_hash": "abc", "elapsed_seconds": 1.5}


def test_fixed_order_sampler_yields_the_order_as_given():
    sampler = sft.FixedOrderSampler([3, 0, 3, 1])
    assert list(sampler) == [3, 0, 3, 1] and len(sampler) == 4
