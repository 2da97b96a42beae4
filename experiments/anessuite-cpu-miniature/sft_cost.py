"""Cost of one SFT step of a pipeline config, measured (README.md, "Revisions", 4): the config's SFT data (written as
the pipeline writes it, with its prompt) trained from ``--model`` with the stage's own TRL arguments, the process's
CPU time and the wall-clock of each optimizer step after ``--warmup`` steps, and the tokens a batch holds against
the tokens it is padded to. Nothing is saved but the report.

    python experiments/anessuite-cpu-miniature/sft_cost.py --config experiments/anessuite-cpu-miniature/pipeline_r4.yaml \
        --model runs/anessuite-miniature-r3/pipeline-seed0/cpt/final --steps 40 --out cost.json [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure the SFT step cost of a pipeline config.")
    parser.add_argument("--config", required=True, help="pipeline YAML")
    parser.add_argument("--model", required=True, help="the model SFT starts from")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps timed (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=5, help="steps run before timing")
    parser.add_argument("--out", required=True, help="report (JSON)")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_args(argv)

    import datasets
    import torch
    from transformers import TrainerCallback
    from trl import SFTTrainer

    from anessuite.pipeline.config import PipelineConfig
    from anessuite.pipeline.data import plan_data, prepare_data
    from anessuite.pipeline.hf_stages import _load_jsonl, chat_to_prompt_completion, stage_training_args
    from rlcore.config import load_config
    from rlcore.models import load_causal_lm, load_tokenizer

    torch.set_num_threads(1)
    cfg = load_config(PipelineConfig, args.config, args.overrides)
    cfg.sft.total_steps = args.warmup + args.steps

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[tuple[float, float]] = []
            self.real = self.padded = 0

        def on_step_end(self, targs, state, control, **kwargs):
            self.marks.append((time.perf_counter(), time.process_time()))

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_data(cfg.data, Path(tmp) / "data", cfg.seed, cfg.prompt, plan_data(cfg))
        rows = [chat_to_prompt_completion(row) for row in _load_jsonl(Path(data["sft"]), cfg.sft.max_samples)]
        tokenizer = load_tokenizer(args.model, padding_side="right")
        trainer = SFTTrainer(
            load_causal_lm(args.model, dtype=torch.float32),
            args=stage_training_args("sft", cfg.sft, Path(tmp) / "trainer", cfg.seed),
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[clock],
        )
        collate = trainer.data_collator

        def counting(features):
            batch = collate(features)
            clock.real += int(batch["attention_mask"].sum())
            clock.padded += int(batch["attention_mask"].numel())
            return batch

        trainer.data_collator = counting
        trainer.train()
        lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    timed = clock.marks[args.warmup - 1 :] if args.warmup else [(0.0, 0.0)] + clock.marks
    wall = (timed[-1][0] - timed[0][0]) / args.steps
    cpu = (timed[-1][1] - timed[0][1]) / args.steps
    report = {
        "config": args.config,
        "overrides": list(args.overrides),
        "model": args.model,
        "records": len(rows),
        "mean_record_tokens": sum(lengths) / len(lengths),
        "max_record_tokens": max(lengths),
        "steps_timed": args.steps,
        "wall_s_per_step": round(wall, 4),
        "cpu_s_per_step": round(cpu, 4),
        "batch_tokens_real_share": round(clock.real / clock.padded, 4),
        "group_by_length": cfg.sft.group_by_length,
        "load_1min_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(report, indent=1))
    Path(args.out).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
