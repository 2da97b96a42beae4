"""Torn checkpoints are detected and skipped with a warning naming both folders; our state is JSON; checkpoints
from before ``stateful.json`` load compatibly (``weights_only=True``) or fail with a clear message."""

import json
import logging

import pytest
import torch
from accelerate import Accelerator

from rlcore.trainer.checkpoint import (
    checkpoint_problem,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
)


class Counter:
    """A stateful object like the trainer's (sampler positions, EMA, RNG state as nested lists)."""

    def __init__(self, value=0):
        self.value, self.rng = value, [3, [1, 2, 3], None]

    def state_dict(self):
        return {"value": self.value, "rng": self.rng}

    def load_state_dict(self, state):
        self.value, self.rng = state["value"], state["rng"]


@pytest.fixture()
def accelerator():
    acc = Accelerator(cpu=True)
    torch.manual_seed(0)
    acc.prepare(torch.nn.Linear(3, 2), torch.optim.AdamW(torch.nn.Linear(1, 1).parameters()))
    return acc


def _save(acc, out, steps, **kwargs):
    for step in steps:
        save_checkpoint(acc, out, step, {"sampler": {"position": step}}, keep_last=0, **kwargs)


def test_manifest_lists_every_file_with_its_size(tmp_path, accelerator):
    _save(accelerator, tmp_path, [1], stateful={"counter": Counter(5)})
    folder = tmp_path / "checkpoints" / "step-00000001"
    files = json.loads((folder / "COMPLETE").read_text())["files"]
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != "COMPLETE"}
    assert set(files) == on_disk and "stateful.json" in files and "trainer_state.json" in files
    assert all(size == (folder / name).stat().st_size for name, size in files.items())
    assert checkpoint_problem(folder) is None


@pytest.mark.parametrize("damage", ["truncate", "delete", "no-marker"])
def test_torn_newest_checkpoint_is_skipped_with_a_warning_naming_both(
    tmp_path, accelerator, checkpoint_log, damage
):
    _save(accelerator, tmp_path, [1, 2])
    good, torn = (tmp_path / "checkpoints" / f"step-0000000{i}" for i in (1, 2))
    weights = next(p for p in torn.iterdir() if p.suffix in (".safetensors", ".bin"))
    if damage == "truncate":  # a copy or a disk that lost the tail of the weights
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "delete":
        weights.unlink()
    else:
        (torn / "COMPLETE").unlink()
    assert latest_checkpoint(tmp_path) == good
    assert [step for step, _ in list_checkpoints(tmp_path)] == [1]
    warning = " ".join(_checkpoint_messages(checkpoint_log))
    assert str(torn) in warning and str(good) in warning and "torn" in warning
    if damage != "no-marker":
        assert weights.name in warning  # the reason names the damaged file
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        resolve_resume(str(torn), tmp_path)


@pytest.fixture
def checkpoint_log():
    """The checkpoint module's own warnings, read from a handler on its logger: whatever earlier tests did to the
    logging tree (root level, propagation, other libraries' lines), these tests see exactly those lines."""
    records: list[logging.LogRecord] = []
    log = logging.getLogger("rlcore.trainer.checkpoint")
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    saved = (log.level, log.disabled)
    log.setLevel(logging.WARNING)
    log.disabled = False
    log.addHandler(handler)
    yield records
    log.removeHandler(handler)
    log.level, log.disabled = saved


def _checkpoint_messages(records) -> list[str]:
    return [r.getMessage() for r in records]


def test_interrupted_write_newer_than_the_latest_is_named(tmp_path, accelerator, checkpoint_log):
    _save(accelerator, tmp_path, [1])
    (tmp_path / "checkpoints" / ".tmp-step-00000002").mkdir()
    assert resolve_resume("auto", tmp_path).name == "step-00000001"
    (message,) = _checkpoint_messages(checkpoint_log)
    assert ".tmp-step-00000002 is torn (its write was interrupted" in message and "step-00000001" in message


def test_only_a_torn_checkpoint_means_a_fresh_start_with_a_warning(tmp_path, accelerator, checkpoint_log):
    _save(accelerator, tmp_path, [1])
    (tmp_path / "checkpoints" / "step-00000001" / "trainer_state.json").write_text("{")
    assert latest_checkpoint(tmp_path) is None
    assert "training starts from step 0" in _checkpoint_messages(checkpoint_log)[0]


def test_stateful_objects_round_trip_as_json(tmp_path, accelerator):
    counter = Counter(7)
    _save(accelerator, tmp_path, [1], stateful={"counter": counter})
    folder = tmp_path / "checkpoints" / "step-00000001"
    assert json.loads((folder / "stateful.json").read_text()) == {
        "counter": {"value": 7, "rng": [3, [1, 2, 3], None]}
    }
    assert not list(folder.glob("custom_checkpoint_*.pkl"))  # nothing registered with accelerate's pickles
    restored = Counter()
    state = load_checkpoint(accelerator, folder, stateful={"counter": restored})
    assert restored.value == 7 and state["sampler"] == {"position": 1}


def test_state_that_is_not_json_is_refused_by_name(tmp_path, accelerator):
    class Bad(Counter):
        def state_dict(self):
            return {"when": object()}

    with pytest.raises(TypeError, match="stateful object 'bad' \\(Bad\\).*JSON"):
        _save(accelerator, tmp_path, [1], stateful={"bad": Bad()})


def test_older_checkpoint_with_pickled_state_loads_with_weights_only(tmp_path, accelerator):
    _save(accelerator, tmp_path, [1])
    folder = tmp_path / "checkpoints" / "step-00000001"
    (folder / "stateful.json").unlink()
    (folder / "COMPLETE").write_text("ok\n")  # the older marker, without a manifest: trusted as it is
    torch.save({"value": 11, "rng": (3, (4, 5), None)}, folder / "custom_checkpoint_0.pkl")
    restored = Counter()
    load_checkpoint(accelerator, folder, stateful={"counter": restored})
    assert restored.value == 11 and restored.rng == (3, (4, 5), None)


def test_older_checkpoint_with_an_arbitrary_pickle_is_refused_clearly(tmp_path, accelerator):
    _save(accelerator, tmp_path, [1])
    folder = tmp_path / "checkpoints" / "step-00000001"
    (folder / "stateful.json").unlink()
    torch.save({"value": Counter()}, folder / "custom_checkpoint_0.pkl")  # a class instance: code on load
    with pytest.raises(
        ValueError, match="custom_checkpoint_0.pkl: the pickled state of 'counter'.*not plain"
    ):
        load_checkpoint(accelerator, folder, stateful={"counter": Counter()})
    (folder / "custom_checkpoint_0.pkl").unlink()
    with pytest.raises(FileNotFoundError, match="neither stateful.json nor custom_checkpoint_0.pkl"):
        load_checkpoint(accelerator, folder, stateful={"counter": Counter()})


def _draws():
    import random

    import numpy as np

    return random.random(), float(np.random.randn()), torch.randn(4)


def test_rng_states_are_json_and_resume_the_same_streams(tmp_path, accelerator):
    """Each rank's Python / NumPy / torch streams go to rng_state_<rank>.json; accelerate's pickle of them is
    not left in the checkpoint. NumPy's cached Gaussian is part of the state (one randn draw before saving)."""
    _draws()
    accelerator.step = 5
    _save(accelerator, tmp_path, [1])
    expected = _draws()
    folder = tmp_path / "checkpoints" / "step-00000001"
    assert not list(folder.rglob("*.pkl"))
    data = json.loads((folder / "rng_state_0.json").read_text())
    assert data["accelerate_step"] == 5 and {"python", "numpy", "torch"} <= set(data)
    torch.manual_seed(123)  # the streams move on before the resume
    _draws()
    accelerator.step = 0
    load_checkpoint(accelerator, folder)
    got = _draws()
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])
    assert accelerator.step == 5


def test_older_checkpoint_with_accelerates_rng_pickle_still_resumes_its_streams(tmp_path, accelerator):
    """Checkpoints written before rng_state_<rank>.json: accelerate reads its own pickle (weights_only=True)."""
    _save(accelerator, tmp_path, [1])
    folder = tmp_path / "checkpoints" / "step-00000001"
    (folder / "rng_state_0.json").unlink()
    accelerator.save_state(str(tmp_path / "accelerate"))  # accelerate's own RNG pickle of the current streams
    (folder / "random_states_0.pkl").write_bytes(
        (tmp_path / "accelerate" / "random_states_0.pkl").read_bytes()
    )
    expected = _draws()
    _draws()
    load_checkpoint(accelerator, folder)
    got = _draws()
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


def test_a_checkpoint_without_this_ranks_random_states_warns(tmp_path, accelerator, checkpoint_log):
    _save(accelerator, tmp_path, [1])
    folder = tmp_path / "checkpoints" / "step-00000001"
    (folder / "rng_state_0.json").unlink()
    load_checkpoint(accelerator, folder)
    (message,) = _checkpoint_messages(checkpoint_log)
    assert "no random states for rank 0" in message and str(folder) in message
