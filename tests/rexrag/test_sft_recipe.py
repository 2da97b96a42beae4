"""The SFT warm-up recipe: demonstration-only worlds (``train.extra_worlds``: other seeds, other names, the
evaluated world untouched), its demonstration order and rows, and checkpoints (an interrupted warm-up resumes to the
same weights)."""

import json
import random
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rlcore.trainer.sft as sft_engine
from rexrag.data.demos import Demo
from rexrag.data.qa import load_flashrag_jsonl
from rexrag.data.template import DEFAULT_TEMPLATE
from rexrag.recipes.common import TinyModelConfig, WorldDataConfig
from rexrag.recipes.sft import (
    SFTConfig,
    SFTEvalConfig,
    SFTLoopConfig,
    demo_order,
    demo_rows,
    extra_world_configs,
    run,
)
from rlcore.rollout import RolloutConfig
from rlcore.tracking_store import MLflowConfig
from rlcore.trainer.checkpoint import write_manifest
from rlcore.trainer.reporting import truncate_metrics


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
        tracking=MLflowConfig(experiment="rexrag-sft-test"),
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
    assert not (tmp_path / "whole" / "checkpoints").exists()  # removed once the final model is saved

    broken = replace(base, train=replace(base.train, output_dir=str(tmp_path / "broken")))
    real_step_end = sft_engine._StepLog.on_step_end

    def dies_after_step_5(self, args, state, control, **kwargs):
        real_step_end(self, args, state, control, **kwargs)
        if state.global_step == 5:
            raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(sft_engine._StepLog, "on_step_end", dies_after_step_5)
    with pytest.raises(KeyboardInterrupt):
        run(broken)
    monkeypatch.setattr(sft_engine._StepLog, "on_step_end", real_step_end)
    checkpoints = tmp_path / "broken" / "checkpoints"
    # the last save before the interruption, the one before it pruned; our state is JSON
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-4"]
    saved = json.loads((checkpoints / "checkpoint-4" / "engine_state.json").read_text())
    assert set(saved) == {"config_hash", "run_id", "elapsed_seconds", sft_engine.LOSS_SUM_KEY}
    reference_losses = [
        json.loads(line)["loss"] for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    ]
    # the engine keeps the summed losses of steps 1-4, so a resumed run's mean loss covers every step
    assert saved[sft_engine.LOSS_SUM_KEY] == pytest.approx(sum(reference_losses[:4]), rel=1e-5)
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
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]  # no step lost or repeated
    expected = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["loss"], r["grad_norm"], r["lr"]) for r in lines] == [
        (r["loss"], r["grad_norm"], r["lr"]) for r in expected
    ]
    assert resumed["final_loss"] == reference["final_loss"]
    assert not checkpoints.exists()

    # a damaged record before the checkpoint step is an error naming the file and line, not silently dropped
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "{not json", *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: unreadable"):
        truncate_metrics(metrics, 4)
    truncate_metrics(metrics, 1)
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1]

    # another configuration in the same folder is refused, naming the checkpoint
    shutil.copytree(tmp_path / "whole" / "model", checkpoints / "checkpoint-4")
    (checkpoints / "checkpoint-4" / "engine_state.json").write_text(json.dumps(saved))
    write_manifest(checkpoints / "checkpoint-4")
    changed = replace(
        broken, train=replace(broken.train, total_steps=8), optim=replace(broken.optim, lr=1e-3)
    )
    with pytest.raises(
        ValueError, match="checkpoint-4: this checkpoint was written by another SFT configuration"
    ):
        run(changed)
    # train.resume=never starts over
    fresh = run(replace(changed, train=replace(changed.train, resume="never")))
    assert fresh["resumed_from_step"] == 0


def test_a_checkpoint_of_the_earlier_warm_up_loop_is_refused_by_name(tmp_path, small_world):
    cfg = _config(tmp_path, small_world, extra=0)
    legacy = Path(cfg.train.output_dir) / "checkpoint" / "state.pt"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"")
    with pytest.raises(ValueError, match=r"checkpoint/state.pt: a checkpoint of the earlier warm-up loop"):
        run(cfg)


def test_demonstration_order_and_rows():
    # permutations of all demonstrations from random.Random(seed), one after another, cut into batches
    order = demo_order(num_demos=4, batch_size=3, total_steps=3, seed=0)
    rng = random.Random(0)
    stream = rng.sample(range(4), 4) + rng.sample(range(4), 4) + rng.sample(range(4), 4)
    assert order == stream[:9] and len(order) == 9
    assert sorted(order[:4]) == [0, 1, 2, 3] and sorted(order[4:8]) == [0, 1, 2, 3]
    demo = Demo(
        prompt_ids=[5, 6],
        response_ids=[7, 8, 9, 10],
        loss_mask=[True, False, False, True],
        kind="search",
        text="",
    )
    # the prompt and the retrieved tokens (mask False) carry -100: only model-written tokens are trained on
    assert demo_rows([demo]) == [
        {"input_ids": [5, 6, 7, 8, 9, 10], "labels": [-100, -100, 7, -100, -100, 10]}
    ]
