# The main job: `make demo` runs everything end to end on the embedded defaults (CPU, offline) in runs/demo/<time>/.
# See docs/demo.md. DEMO_ARGS passes overrides, e.g. make demo DEMO_ARGS="rexrag.train_steps=40" or "--smoke".
.PHONY: demo demo-warmup

demo: setup ## the main job: world -> index -> HTTP retriever -> committed warm-up -> REX-RAG -> EM, + AnesBench table, MLflow (<10 min, 2 cores)
	$(PY) -m experiments.demo.run_demo --config experiments/demo/config.yaml $(DEMO_ARGS)

# The warm-up stages of experiments/rexrag-cpu-mechanism (about three hours on 2 cores; each reused if its output
# exists), then a byte-for-byte comparison with the committed policy in experiments/demo/warmup-policy.
demo-warmup: setup ## regenerate the demo's committed warm-up policy (the mechanism experiment's six SFT stages) and compare it byte for byte
	$(call REXRAG_EXPERIMENT,rexrag-cpu-mechanism,group=warmup only=stages)
	$(PY) -m experiments.demo.warmup compare runs/rexrag-cpu-mechanism/sft/model
