"""The miniature's revision-4 SFT options. ``sft.group_by_length``: length-grouped SFT batches train on exactly the
records, tokens and labels of the shuffled ones, with less padding; CPT refuses it. ``sft.trainable``: only the
named parameters change. Stage keys of earlier runs hold while both keep their defaults."""

from __future__ import annotations

import random

import pytest

from anessuite.pipeline import stage_cache
from anessuite.pipeline.config import HFStageConfig, PipelineConfig
from anessuite.pipeline.hf_stages import chat_to_prompt_completion, freeze_except, stage_training_args


def _chats(count: int) -> list[dict]:
    """Chats of very different lengths (short pairs and long multi-sentence answers), in random order."""
    rng = random.Random(7)
    words = "propofol kidney liver bradycardia class option answer drug cleared by".split()
    chats = []
    for i in range(count):
        question = f"Question {i}: " + " ".join(rng.choices(words, k=rng.choice([3, 40])))
        answer = " ".join(rng.choices(words, k=rng.choice([2, 60]))) + f"\nAnswer: {'ABCD'[i % 4]}"
        chats.append(
            {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
        )
    return chats


def _epoch(tmp_path, group_by_length: bool):
    """(per record: its unpadded input ids and its trained label ids) for one epoch, and the batches' padding."""
    import datasets
    import torch
    from trl import SFTTrainer

    from rlcore.models import load_causal_lm, load_tokenizer

    cfg = HFStageConfig(
        max_length=512,
        micro_batch_size=8,
        gradient_accumulation_steps=1,
        total_steps=-1,
        num_epochs=1.0,
        group_by_length=group_by_length,
    )
    args = stage_training_args("sft", cfg, tmp_path / f"grouped-{group_by_length}", seed=0)
    dataset = datasets.Dataset.from_list([chat_to_prompt_completion(c) for c in _chats(256)])
    tokenizer = load_tokenizer("tiny-qwen2", padding_side="right")
    trainer = SFTTrainer(
        load_causal_lm("tiny-qwen2", dtype=torch.float32),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    records, padding = [], 0
    for batch in trainer.get_train_dataloader():
        mask = batch["attention_mask"].bool()
        padding += int((~mask).sum())
        for ids, row_mask, labels in zip(batch["input_ids"], mask, batch["labels"]):
            records.append((tuple(ids[row_mask].tolist()), tuple(labels[labels != -100].tolist())))
    return records, padding


def test_grouped_batches_train_on_the_same_completion_tokens_with_less_padding(tmp_path):
    shuffled, shuffled_padding = _epoch(tmp_path, group_by_length=False)
    grouped, grouped_padding = _epoch(tmp_path, group_by_length=True)
    assert len(shuffled) == len(grouped) == 256
    # the same records, each with the same tokens and the same trained (completion) tokens, once per epoch
    assert sorted(grouped) == sorted(shuffled)
    assert len(set(grouped)) == 256
    assert all(0 < len(labels) < len(ids) for ids, labels in grouped)  # prompt untrained, completion trained
    # in another order: the grouped epoch is not the shuffled one, and its batches carry much less padding
    assert grouped != shuffled
    assert grouped_padding < shuffled_padding / 2


def test_the_option_reaches_trl_and_cpt_refuses_it(tmp_path):
    grouped = stage_training_args("sft", HFStageConfig(group_by_length=True), tmp_path, seed=0)
    assert grouped.train_sampling_strategy == "group_by_length"
    assert grouped.completion_only_loss is True and grouped.packing is False
    assert stage_training_args("sft", HFStageConfig(), tmp_path, seed=0).train_sampling_strategy == "random"
    with pytest.raises(ValueError, match="cpt.group_by_length"):
        stage_training_args("cpt", HFStageConfig(group_by_length=True), tmp_path, seed=0)


def test_group_by_length_off_keeps_stage_keys_and_on_changes_them():
    cfg = PipelineConfig(name="keys", base_model="tiny-qwen2")
    before = {stage: stage_cache.stage_key(cfg, stage, "m") for stage in ("cpt", "sft")}
    cfg.sft.group_by_length = False
    assert {stage: stage_cache.stage_key(cfg, stage, "m") for stage in ("cpt", "sft")} == before
    assert "group_by_length" not in stage_cache._section(cfg, "sft")
    cfg.sft.group_by_length = True
    assert stage_cache.stage_key(cfg, "sft", "m") != before["sft"]


def test_trainable_trains_only_the_named_parameters(tmp_path):
    import datasets
    import torch
    from trl import SFTTrainer

    from rlcore.models import load_causal_lm, load_tokenizer

    model = load_causal_lm("tiny-qwen2", dtype=torch.float32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trained, total = freeze_except(model, ["self_attn"])
    assert 0 < trained < total
    cfg = HFStageConfig(
        max_length=256, micro_batch_size=4, gradient_accumulation_steps=1, total_steps=2, lr=1e-2
    )
    trainer = SFTTrainer(
        model,
        args=stage_training_args("sft", cfg, tmp_path / "frozen", seed=0),
        train_dataset=datasets.Dataset.from_list([chat_to_prompt_completion(c) for c in _chats(16)]),
        processing_class=load_tokenizer("tiny-qwen2", padding_side="right"),
    )
    trainer.train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and all("self_attn" in n for n in changed)
    assert any("mlp" in n for n in before) and not any("mlp" in n or "embed" in n for n in changed)
    with pytest.raises(ValueError, match="sft.trainable"):
        freeze_except(load_causal_lm("tiny-qwen2", dtype=torch.float32), ["no_such_part"])


def test_trainable_empty_keeps_stage_keys_and_set_changes_them():
    cfg = PipelineConfig(name="keys", base_model="tiny-qwen2")
    before = stage_cache.stage_key(cfg, "sft", "m")
    assert "trainable" not in stage_cache._section(cfg, "sft")
    cfg.sft.trainable = ["self_attn"]
    assert stage_cache.stage_key(cfg, "sft", "m") != before
