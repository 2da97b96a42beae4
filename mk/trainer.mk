# GRPO trainer (rlcore.trainer): the tiny smoke run and the benchmark against TRL. See docs/trainer.md.
# BENCH_TRAINER_ARGS is passed through to the benchmark (e.g. --steps 8 --rounds 3); nothing else is assigned.
.PHONY: bench-trainer train-smoke

bench-trainer: setup ## our GRPO step vs TRL GRPOTrainer on CPU: median step time, ratio, losses on identical inputs
	$(PY) benchmarks/trainer/bench_trainer.py --out benchmarks/trainer/results.json $(BENCH_TRAINER_ARGS)

train-smoke: setup ## 3 GRPO steps of the tiny random Qwen2 on the bundled addition prompts (plumbing check, CPU)
	$(PY) -m rlcore.trainer --config packages/common/src/rlcore/trainer/configs/tiny_single_turn.yaml
