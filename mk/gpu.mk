# GPU-node checks (infra/). See docs/infra.md. Neither target needs a GPU to start: check-gpu-deps only asks
# pip's resolver, and gpu-check reports "no CUDA" and exits 0 on a machine without one.
# The interpreter: the GPU venv when infra/setup_gpu_env.sh made one, else the CPU venv, else $(PYTHON).
GPU_PY = $(firstword $(wildcard .venv-gpu/bin/python) $(wildcard $(PY)) $(PYTHON))

.PHONY: check-gpu-deps

check-gpu-deps: ## resolve the GPU requirement set with pip --dry-run (installs nothing; needs the package index)
	$(GPU_PY) infra/check_gpu_deps.py $(if $(REPORT),--report $(REPORT))
