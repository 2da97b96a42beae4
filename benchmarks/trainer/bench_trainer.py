"""Our GRPO trainer against TRL 1.16's GRPOTrainer on the same single-turn step, on CPU.

    python benchmarks/trainer/bench_trainer.py [--steps 5] [--warmup 1] [--rounds 2] [--out FILE]
    make bench-trainer

Two measurements:

1. Step time. The same step in both: the tiny random Qwen2 (Qwen vocabulary), 4 prompts x 4 rollouts, up to
   32 new tokens at temperature 1 (no top-k/top-p), the same reward, one AdamW step with grad clipping 1.0, no
   reference model (beta = 0), no old-log-prob recomputation (one PPO epoch, one mini-batch), token-mean loss,
   no tracking. Each framework runs in its own subprocess; rounds alternate (ours, TRL, ours, TRL, ...) so
   background load hits both alike. Reported: median wall-clock and median process CPU seconds per step
   (the CPU time is what this process consumed, so it is less sensitive to other jobs on the machine).
2. Losses on identical inputs. TRL generates and scores one batch; we capture the exact tensors its loss sees
   (prompt/completion ids and masks, advantages). Then, on the same initial weights, TRL's own ``_compute_loss``
   and our objectives (``rlcore.objectives``) evaluate several loss variants on that batch (ratio != 1 through
   fixed perturbed old log-probs, clip-higher, seq-mean-token-mean, k3 KL), side by side with the gradient norm
   of each. Advantages are compared too (TRL's vs ``grpo_advantages`` on rewards recomputed from the decoded
   completions).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PROMPTS = REPO / "packages/common/src/rlcore/trainer/configs/tiny_addition.jsonl"
MODEL = "tiny-qwen2"
NUM_PROMPTS, NUM_GENERATIONS, MAX_NEW_TOKENS, SEED, LR = 4, 4, 32, 0, 1e-6


def letter_reward(completions, **columns):
    """Share of ASCII letters in the text: continuous, so groups of random rollouts have reward variance."""
    return [sum(ch.isascii() and ch.isalpha() for ch in text) / max(len(text), 1) for text in completions]


def chat_prompts(tokenizer) -> list[str]:
    """The prompt texts, chat template applied once here so both frameworks see identical token ids."""
    rows = [json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip()]
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": r["prompt"]}], tokenize=False, add_generation_prompt=True
        )
        for r in rows
    ]


# --- runners (each in its own process) ------------------------------------------------------------------


def run_ours(total_steps: int) -> dict:
    from rlcore.config import load_config
    from rlcore.models import load_tokenizer
    from rlcore.trainer import RLTrainConfig, train

    tokenizer = load_tokenizer(MODEL)
    records = [
        {"id": f"p{i}", "prompt_ids": tokenizer.encode(text, add_special_tokens=False)}
        for i, text in enumerate(chat_prompts(tokenizer))
    ]
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(
            RLTrainConfig,
            overrides=[
                f"model.path={MODEL}",
                f"rollout.max_new_tokens_per_turn={MAX_NEW_TOKENS}",
                "rollout.top_k=-1",
                "rollout.top_p=1.0",
                "rollout.temperature=1.0",
                "rollout.stop_at_answer=false",
                f"objective.prompts_per_step={NUM_PROMPTS}",
                f"objective.num_generations={NUM_GENERATIONS}",
                "objective.ppo_epochs=1",
                "objective.minibatch_size=0",
                f"objective.micro_batch_size={NUM_PROMPTS * NUM_GENERATIONS}",
                "objective.kl_coef=0",
                "objective.advantage_eps=1e-4",
                f"optim.lr={LR}",
                "optim.weight_decay=0",
                "optim.max_grad_norm=1.0",
                f"train.total_steps={total_steps}",
                f"train.seed={SEED}",
                "train.save_final_model=false",
                f"train.output_dir={out}",
                "train.resume=never",
                "tracking.enabled=false",
            ],
        )
        result = train(cfg, records=records, reward_fn=letter_reward)
    return {
        "wall": [m["time/step"] for m in result.metrics],
        "cpu": [m["time/step_cpu"] for m in result.metrics],
        "loss": [m["loss/total"] for m in result.metrics],
    }


def _trl_config(output_dir: str, max_steps: int, **overrides):
    from trl import GRPOConfig

    settings = dict(
        output_dir=output_dir,
        per_device_train_batch_size=NUM_PROMPTS * NUM_GENERATIONS,
        num_generations=NUM_GENERATIONS,
        max_completion_length=MAX_NEW_TOKENS,
        gradient_accumulation_steps=1,
        num_iterations=1,
        beta=0.0,
        learning_rate=LR,
        weight_decay=0.0,
        max_grad_norm=1.0,
        lr_scheduler_type="constant",
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        max_steps=max_steps,
        seed=SEED,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        loss_type="dapo",
        scale_rewards="group",
        disable_dropout=True,
        use_vllm=False,
    )
    settings.update(overrides)
    return GRPOConfig(**settings)


def run_trl(total_steps: int) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from rlcore.models import load_tokenizer, resolve_model_path

    class StepClock(TrainerCallback):
        def __init__(self):
            self.wall, self.cpu = [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self._wall, self._cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.wall.append(time.perf_counter() - self._wall)
            self.cpu.append(time.process_time() - self._cpu)

    path = str(resolve_model_path(MODEL))
    tokenizer = load_tokenizer(path)
    dataset = Dataset.from_list([{"prompt": text} for text in chat_prompts(tokenizer)])
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        trainer = GRPOTrainer(
            model=path,
            reward_funcs=[letter_reward],
            args=_trl_config(out, total_steps),
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[clock],
        )
        trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return {"wall": clock.wall, "cpu": clock.cpu, "loss": losses}


def run_parity() -> dict:
    """TRL generates one batch; both loss implementations evaluate it on the same initial weights."""
    import torch
    from datasets import Dataset
    from trl import GRPOTrainer

    from rlcore.config import load_config
    from rlcore.models import load_causal_lm, load_tokenizer, resolve_model_path
    from rlcore.objectives import aggregation_denominator, grpo_advantages
    from rlcore.trainer import RLTrainConfig
    from rlcore.trainer.batching import TrainBatch
    from rlcore.trainer.forward import response_logprobs
    from rlcore.trainer.grpo import micro_batch_loss
    from rlcore.trainer.metrics import MetricSums

    captured: dict = {}

    class CapturingGRPOTrainer(GRPOTrainer):
        """Records the first batch TRL's loss sees (benchmark harness only)."""

        def _compute_loss(self, model, inputs):
            if not captured:
                captured.update(
                    {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in inputs.items()}
                )
            return super()._compute_loss(model, inputs)

    torch.manual_seed(SEED)
    path = str(resolve_model_path(MODEL))
    tokenizer = load_tokenizer(path)
    dataset = Dataset.from_list([{"prompt": text} for text in chat_prompts(tokenizer)])
    with tempfile.TemporaryDirectory() as out:
        trainer = CapturingGRPOTrainer(
            model=path,
            reward_funcs=[letter_reward],
            args=_trl_config(out, 1),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        initial = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        trainer.train()
    trainer.model.load_state_dict(initial)  # back to the weights the batch was generated with
    trl_model = trainer.model.train()
    ours = load_causal_lm(path, dtype=torch.float32).train()

    prompt_ids, prompt_mask = captured["prompt_ids"], captured["prompt_mask"]
    completion_ids, completion_mask = captured["completion_ids"], captured["completion_mask"]
    # A random model never emits EOS, so every completion has the full length and token-mean equals
    # seq-mean-token-mean. Shorten the masks of some rows (identically for both sides) so the aggregations differ.
    lengths = completion_mask.sum(dim=1) - 3 * (torch.arange(completion_mask.shape[0]) % 5)
    completion_mask = (torch.arange(completion_mask.shape[1]) < lengths.unsqueeze(1)).to(
        completion_mask.dtype
    )
    captured["completion_mask"] = completion_mask
    captured["num_items_in_batch"] = completion_mask.sum()
    attention = torch.cat([prompt_mask, completion_mask], dim=1).long()
    batch = TrainBatch(
        input_ids=torch.cat([prompt_ids, completion_ids], dim=1),
        attention_mask=attention,
        position_ids=(attention.cumsum(1) - 1).clamp(min=0),
        response_ids=completion_ids,
        response_mask=completion_mask.bool(),
        loss_mask=completion_mask.bool(),
        sampled_mask=completion_mask.bool(),
        sample_logprobs=torch.zeros(completion_ids.shape),
        advantages=captured["advantages"].float(),
    )
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    rewards = torch.tensor(letter_reward(texts))
    # TRL shuffles rows after generation: a group is the set of rows with the same prompt
    groups = [str(prompt_ids[i][prompt_mask[i].bool()].tolist()) for i in range(len(texts))]
    our_advantages = grpo_advantages(rewards, groups, eps=1e-4)
    with torch.no_grad():
        base, _ = response_logprobs(ours, batch)
    generator = torch.Generator().manual_seed(1)
    old = base + (torch.rand(base.shape, generator=generator) - 0.5) * 0.6  # ratios in ~[0.74, 1.35]
    ref = base + (torch.rand(base.shape, generator=generator) - 0.5) * 0.6

    variants = [  # name, TRL settings, our settings, old log-probs, reference log-probs
        ("dapo, ratio 1", {"loss_type": "dapo"}, {"aggregation": "token-mean"}, None, None),
        ("dapo, perturbed old", {"loss_type": "dapo"}, {"aggregation": "token-mean"}, old, None),
        (
            "dapo, clip-higher 0.28",
            {"loss_type": "dapo", "epsilon_high": 0.28},
            {"aggregation": "token-mean", "eps_high": 0.28},
            old,
            None,
        ),
        (
            "grpo (seq-mean-token-mean)",
            {"loss_type": "grpo"},
            {"aggregation": "seq-mean-token-mean"},
            old,
            None,
        ),
        (
            "dapo + k3 KL beta 0.04",
            {"loss_type": "dapo", "beta": 0.04, "bias_correction": False},
            {"aggregation": "token-mean"},
            old,
            ref,
        ),
        (
            "dapo + ratio-weighted k3 KL",
            {"loss_type": "dapo", "beta": 0.04, "bias_correction": True},
            {"aggregation": "token-mean", "kl_importance_weighted": True},
            old,
            ref,
        ),
    ]
    rows = []
    for name, trl_settings, our_settings, old_lp, ref_lp in variants:
        trainer.loss_type = trl_settings["loss_type"]
        trainer.beta = trl_settings.get("beta", 0.0)
        trainer.epsilon_low, trainer.epsilon_high = 0.2, trl_settings.get("epsilon_high", 0.2)
        trainer.current_gradient_accumulation_steps = 1
        trainer.args.use_bias_correction_kl = trl_settings.get("bias_correction", False)
        inputs = dict(captured)
        if old_lp is not None:
            inputs["old_per_token_logps"] = old_lp
        if ref_lp is not None:
            inputs["ref_per_token_logps"] = ref_lp
        trl_model.zero_grad(set_to_none=True)
        trl_loss = trainer._compute_loss(trl_model, inputs)
        trl_loss.backward()
        trl_grad = torch.nn.utils.clip_grad_norm_(trl_model.parameters(), float("inf")).item()

        ours.zero_grad(set_to_none=True)
        # our side runs the trainer's own micro-batch loss (the code path `train` uses), configured to match
        cfg = load_config(
            RLTrainConfig,
            overrides=[
                f"objective.aggregation={our_settings['aggregation']}",
                f"objective.eps_high={our_settings.get('eps_high', 0.2)}",
                f"objective.kl_coef={trl_settings.get('beta', 0.0)}",
                f"objective.kl_importance_weighted={our_settings.get('kl_importance_weighted', False)}",
            ],
        )
        batch.old_logprobs, batch.ref_logprobs = old_lp, ref_lp
        denominator = float(aggregation_denominator(batch.loss_mask, cfg.objective.aggregation))
        loss = micro_batch_loss(ours, batch, cfg, denominator, MetricSums(), num_updates=1)
        loss.backward()
        our_grad = torch.nn.utils.clip_grad_norm_(ours.parameters(), float("inf")).item()
        rows.append(
            {
                "variant": name,
                "trl_loss": trl_loss.item(),
                "our_loss": loss.item(),
                "loss_abs_diff": abs(trl_loss.item() - loss.item()),
                "trl_grad_norm": trl_grad,
                "our_grad_norm": our_grad,
                "grad_norm_rel_diff": abs(trl_grad - our_grad) / max(trl_grad, 1e-12),
            }
        )
    return {
        "batch": {
            "completions": int(completion_ids.shape[0]),
            "completion_tokens": int(completion_mask.sum()),
            "prompt_width": int(prompt_ids.shape[1]),
        },
        "advantage_max_abs_diff": float((our_advantages - captured["advantages"].float()).abs().max()),
        "losses": rows,
    }


# --- orchestration ----------------------------------------------------------------------------------------


def _child(kind: str, steps: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--child-steps", str(steps)],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{kind} run failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def _versions() -> dict:
    from importlib import metadata

    return {name: metadata.version(name) for name in ("torch", "transformers", "trl", "accelerate")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps at the start of each run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per framework")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--child", choices=["ours", "trl", "parity"], help=argparse.SUPPRESS)
    parser.add_argument("--child-steps", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = (
            {"ours": run_ours, "trl": run_trl}[args.child](args.child_steps)
            if args.child != "parity"
            else run_parity()
        )
        print("RESULT " + json.dumps(result))
        return 0

    from rich.console import Console
    from rich.table import Table

    from rlcore.tracking import provenance

    console = Console(width=150)
    total = args.warmup + args.steps
    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    for round_index in range(args.rounds):
        for kind in ("ours", "trl"):
            console.print(f"round {round_index + 1}/{args.rounds}: {kind} ({total} steps)")
            runs[kind].append(_child(kind, total))
    summary = {}
    for kind, results in runs.items():
        wall = [t for r in results for t in r["wall"][args.warmup :]]
        cpu = [t for r in results for t in r["cpu"][args.warmup :]]
        summary[kind] = {
            "median_step_wall_s": statistics.median(wall),
            "median_step_cpu_s": statistics.median(cpu),
            "step_wall_s": wall,
            "step_cpu_s": cpu,
        }
    ratio_wall = summary["ours"]["median_step_wall_s"] / summary["trl"]["median_step_wall_s"]
    ratio_cpu = summary["ours"]["median_step_cpu_s"] / summary["trl"]["median_step_cpu_s"]
    console.print("parity: TRL loss code vs ours on one TRL-generated batch")
    parity = _child("parity", 0)

    table = Table(title="GRPO step on CPU: ours vs TRL GRPOTrainer")
    for column in ("", "ours", "TRL", "ours / TRL"):
        table.add_column(column)
    table.add_row(
        "median step, wall s",
        f"{summary['ours']['median_step_wall_s']:.3f}",
        f"{summary['trl']['median_step_wall_s']:.3f}",
        f"{ratio_wall:.2f}",
    )
    table.add_row(
        "median step, CPU s",
        f"{summary['ours']['median_step_cpu_s']:.3f}",
        f"{summary['trl']['median_step_cpu_s']:.3f}",
        f"{ratio_cpu:.2f}",
    )
    console.print(table)
    losses = Table(
        title=f"Losses on identical inputs (advantages max |diff| {parity['advantage_max_abs_diff']:.2e})"
    )
    for column in ("variant", "TRL loss", "our loss", "|diff|", "TRL grad norm", "our grad norm", "rel diff"):
        losses.add_column(column)
    for row in parity["losses"]:
        losses.add_row(
            row["variant"],
            f"{row['trl_loss']:.6e}",
            f"{row['our_loss']:.6e}",
            f"{row['loss_abs_diff']:.1e}",
            f"{row['trl_grad_norm']:.6f}",
            f"{row['our_grad_norm']:.6f}",
            f"{row['grad_norm_rel_diff']:.1e}",
        )
    console.print(losses)

    payload = {
        "setup": {
            "model": MODEL,
            "prompts_per_step": NUM_PROMPTS,
            "num_generations": NUM_GENERATIONS,
            "max_new_tokens": MAX_NEW_TOKENS,
            "seed": SEED,
            "warmup_steps": args.warmup,
            "measured_steps_per_run": args.steps,
            "rounds": args.rounds,
            "device": "cpu",
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "versions": _versions(),
            "load_average_at_end": os.getloadavg(),
        },
        "step_time": {
            **summary,
            "ratio_wall_ours_over_trl": ratio_wall,
            "ratio_cpu_ours_over_trl": ratio_cpu,
        },
        "parity": parity,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "provenance": {
            k: v for k, v in provenance().items() if k.startswith(("git.", "version.", "host.cpus"))
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
