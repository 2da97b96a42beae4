# Generation backends and the multi-turn rollout engine (rlcore.generation, rlcore.rollout). See docs/rollout.md.
# BENCH_ROLLOUT_ARGS passes extra flags, e.g. BENCH_ROLLOUT_ARGS="--scenarios format --questions 16".
.PHONY: bench-rollout test-rollout

bench-rollout: setup ## rollout tokens/s: our engine vs a naive per-turn decode/re-encode loop, + token-mismatch count
	$(PY) benchmarks/rollout/bench_rollout.py $(BENCH_ROLLOUT_ARGS)

test-rollout: setup ## the generation and rollout tests only (CPU, ~1 min)
	$(PY) -m pytest tests/common/generation tests/common/rollout -q
