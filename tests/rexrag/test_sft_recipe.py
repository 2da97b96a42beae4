"""The SFT warm-up recipe: demonstration-only worlds (``train.extra_worlds``: other seeds, other names, the
evaluated world untouched) and checkpoints (an interrupted warm-up resumes to the same weights)."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rexrag.recipes.sft as sft_module
from rexrag.data.qa import load_flashrag_jsonl
from rexrag.data.template import DEFAULT_TEMPLATE
from rexrag.recipes.common import TinyModelConfig, WorldDataConfig
from rexrag.recipes.sft import SFTConfig, SFTEvalConfig, SFTLoopConfig, extra_world_configs, run
from rlcore.rollout import RolloutConfig


def _config(tmp_path, world, extra: int) -> SFTConfig:
    return SFTConfig(
        data=WorldDataConfig(world=world, dir=str(tmp_path / "world"), template=DEFAULT_TEMPLATE),
        model=TinyModelConfig(vocab_size=400, hidden_size=32, num_layers=1, intermediate_size=64),
        use_chat_template=False,
        rollout=RolloutConfig(max_turns=1, max_new_tokens_per_turn=6, max_response_tokens=64),
        train=SFTLoopConfig(
            total_steps=2, batch_size=4, extra_worlds=extra, output_dir=str(tmp_path / "sft")
        ),
        eval=SFTEvalConfig(num_questions=2),
        experiment="rexrag-sft-test",
        num_threads=1,
    )


def test_extra_world_configs_use_the_next_seeds_and_never_the_evaluated_world(tmp_path, small_world):
    cfg = _config(tmp_path, small_world, extra=3)
    worlds = extra_world_configs(cfg)
    assert [w.world.seed for w in worlds] == [6, 7, 8]
    assert [w.dir for w in worlds] == [str(tmp_path / "world-extra" / f"seed{s}") for s in (6, 7, 8)]
    assert all(w.world.num_people == 30 and w.template == DEFAULT_TEMPLATE for w in worlds)
    cfg.train.extra_worlds_dir = str(tmp_path / "elsewhere")
    assert extra_world_configs(cfg)[0].dir == str(tmp_path / "elsewhere" / "seed6")
    assert extra_world_configs(_config(tmp_path, small_world, extra=0)) == []


@pytest.mark.slow
def test_sft_trains_on_demonstrations_from_every_world(tmp_path, small_world):
    results = run(_config(tmp_path, small_world, extra=2))
    extra_dirs = results["extra_worlds"]
    assert extra_dirs == [str(tmp_path / "world-extra" / "seed6"), str(tmp_path / "world-extra" / "seed7")]
    people = [set(json.loads((tmp_path / "world" / "world.json").read_text())["people"])]
    people += [set(json.loads((tmp_path / d / "world.json").read_text())["people"]) for d in extra_dirs]
    # names are new draws: the demonstration-only worlds share (almost) no person with the evaluated one
    assert len(people[0] & people[1]) <= 1 and len(people[0] & people[2]) <= 1
    # every question of every split of the extra worlds, plus the evaluated world's train questions
    expected = len(load_flashrag_jsonl(tmp_path / "world" / "train.jsonl")) + sum(
        len(load_flashrag_jsonl(tmp_path / d / f"{split}.jsonl"))
        for d in extra_dirs
        for split in ("train", "dev", "test")
    )
    assert sum(results["demos"].values()) == expected == 16 + 2 * (16 + 4 + 6)
    # the evaluated world is unchanged by the extra ones: evaluation reads its own dev questions
    assert sum(v["n"] for v in results["dev"]["by_source"].values()) == 2
    # the warm-up model carries its prompt template, for `python -m rexrag evaluate` and the RL run after it
    cfg = _config(tmp_path, small_world, extra=2)
    assert (Path(cfg.train.output_dir) / "model" / "prompt_template.txt").read_text() == cfg.data.template


@pytest.mark.slow
def test_interrupted_warm_up_resumes_to_the_same_weights(tmp_path, monkeypatch, small_world):
    base = _config(tmp_path, small_world, extra=1)
    base.train = replace(base.train, total_steps=6, save_every=2)
    base.eval = SFTEvalConfig(num_questions=0)
    reference = run(replace(base, train=replace(base.train, output_dir=str(tmp_path / "whole"))))
    assert reference["resumed_from_step"] == 0
    assert not (tmp_path / "whole" / "checkpoint").exists()  # removed once the final model is saved

    broken = replace(base, train=replace(base.train, output_dir=str(tmp_path / "broken")))
    real_collate, calls = sft_module._collate, []

    def dies_at_step_5(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt("simulated interruption")
        return real_collate(*args, **kwargs)

    monkeypatch.setattr(sft_module, "_collate", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        run(broken)
    monkeypatch.setattr(sft_module, "_collate", real_collate)
    state = torch.load(tmp_path / "broken" / "checkpoint" / "state.pt", weights_only=False)
    assert state["step"] == 4  # the last save before the interruption
    metrics = tmp_path / "broken" / "metrics.jsonl"
    with metrics.open("a", encoding="utf-8") as handle:
        handle.write('{"step": 5, "loss": 0.1')  # a record cut mid-write by the interruption
    resumed = run(replace(broken, train=replace(broken.train, save_every=3)))  # save_every may change
    assert resumed["resumed_from_step"] == 4
    whole = load_file(tmp_path / "whole" / "model" / "model.safetensors")
    again = load_file(tmp_path / "broken" / "model" / "model.safetensors")
    assert whole.keys() == again.keys()
    for name in whole:
        assert torch.equal(whole[name], again[name]), name
    lines = [json.loads(line) for line in (tmp_path / "broken" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]  # no step lost or repeated
    expected = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in lines] == pytest.approx([r["loss"] for r in expected], rel=1e-6)
    assert resumed["final_loss"] == pytest.approx(reference["final_loss"], rel=1e-6)

    # another configuration in the same folder is refused, naming the checkpoint
    changed = replace(
        broken, train=replace(broken.train, total_steps=8), optim=replace(broken.optim, lr=1e-3)
    )
    assert not (tmp_path / "broken" / "checkpoint").exists()
    # a damaged record before the checkpoint step is an error naming the file and line, not silently dropped
    from rexrag.recipes.sft import _metrics_up_to

    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "{not json", *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: unreadable"):
        _metrics_up_to(metrics, 4)
    assert [r["step"] for r in _metrics_up_to(metrics, 1)] == [1]
    shutil.copytree(
        tmp_path / "whole" / "model", tmp_path / "broken" / "checkpoint" / "model", dirs_exist_ok=True
    )
    torch.save(state, tmp_path / "broken" / "checkpoint" / "state.pt")
    with pytest.raises(ValueError, match="another SFT configuration"):
        run(changed)
    # train.resume=never starts over
    fresh = run(replace(changed, train=replace(changed.train, resume="never")))
    assert fresh["resumed_from_step"] == 0
