# Operations: the MLflow tracking server and the run comparison report. See docs/infra.md and docs/compare.md.
# compare reads EXPERIMENT, RUNS and OUT with $(or ...) and assigns none of them, so other area makefiles
# that use the same short names are not affected.
.PHONY: mlflow-server compare _compare-needs-experiment

mlflow-server: setup ## MLflow server over runs/mlflow.db on http://127.0.0.1:$(MLFLOW_PORT) (infra/serve_mlflow.sh; MLFLOW_BACKEND=postgresql too)
	MLFLOW_PORT=$(MLFLOW_PORT) PYTHON=$(PY) infra/serve_mlflow.sh

# Checked before `setup` so a forgotten variable fails at once.
_compare-needs-experiment:
	@if [ -z "$(EXPERIMENT)" ]; then \
		echo "usage: make compare EXPERIMENT=<mlflow experiment name> [RUNS=id,id] [OUT=dir]" >&2; exit 2; fi

compare: _compare-needs-experiment setup ## side-by-side table + curves of MLflow runs: make compare EXPERIMENT=name [RUNS=id,id] [OUT=dir]
	$(PY) -m rlcore.compare --experiment "$(EXPERIMENT)" $(if $(RUNS),--runs "$(RUNS)") \
		--out "$(or $(OUT),runs/compare/$(EXPERIMENT))"
