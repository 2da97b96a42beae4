# GPU-node checks (infra/). See docs/infra.md. Neither target needs a GPU to start: check-gpu-deps only asks
# pip's resolver, and gpu-check reports "no CUDA" and exits 0 on a machine without one.
# The interpreter: the GPU venv when infra/setup_gpu_env.sh made one, else the CPU venv, else $(PYTHON).
GPU_PY = $(firstword $(wildcard .venv-gpu/bin/python) $(wildcard $(PY)) $(PYTHON))

.PHONY: check-gpu-deps gpu-check

check-gpu-deps: ## resolve the GPU requirement set with pip --dry-run (installs nothing; needs the package index)
	$(GPU_PY) infra/check_gpu_deps.py $(if $(REPORT),--report $(REPORT))

gpu-check: ## on a CUDA node: HF bf16 log-probs, vLLM vs HF + weight sync, FAISS-GPU, ZeRO-3 bf16, retrieval server (pass/fail table)
	$(GPU_PY) infra/gpu_check.py $(GPU_CHECK_ARGS)
