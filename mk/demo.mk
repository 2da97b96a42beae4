# The main job: `make demo` runs everything end to end on the embedded defaults (CPU, offline) in runs/demo/<time>/.
# See docs/demo.md. DEMO_ARGS passes overrides, e.g. make demo DEMO_ARGS="rexrag.train_steps=40" or "--smoke".
.PHONY: demo

demo: setup ## the main job: world -> index -> HTTP retriever -> SFT -> REX-RAG -> EM, + AnesBench table, MLflow (<10 min, 2 cores)
	$(PY) -m experiments.demo.run_demo --config experiments/demo/config.yaml $(DEMO_ARGS)
