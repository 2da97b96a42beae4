# The main job: `make demo` runs everything end to end on the embedded defaults (CPU, offline) in runs/demo/<time>/.
# See docs/demo.md. DEMO_ARGS passes overrides, e.g. make demo DEMO_ARGS="rexrag.train_steps=100" or "--smoke".
.PHONY: demo demo-warmup demo-anes-model

demo: setup ## the main job: world -> index -> HTTP retriever -> committed warm-up -> REX-RAG -> EM, + AnesBench miniature table, MLflow (<10 min, 2 cores)
	$(PY) -m experiments.demo.run_demo --config experiments/demo/config.yaml $(DEMO_ARGS)

# The warm-up stages of experiments/rexrag-cpu-mechanism (about three hours on 2 cores; each reused if its output
# exists), then a byte-for-byte comparison with the committed policy in experiments/demo/committed/rexrag-warmup.
demo-warmup: setup ## regenerate the demo's committed REX-RAG warm-up policy (the mechanism experiment's six SFT stages) and compare it byte for byte
	$(call REXRAG_EXPERIMENT,rexrag-cpu-mechanism,group=warmup only=stages)
	$(PY) -m experiments.demo.checkpoints compare rexrag-warmup runs/rexrag-cpu-mechanism/sft/model

# The AnesSuite miniature's revision 6 pre-check (world, from-scratch base, CPT, SFT; about 20 minutes on 2 cores,
# each stage reused if its output exists), then a byte-for-byte comparison with experiments/demo/committed/anessuite-cpt-sft.
demo-anes-model: setup ## regenerate the demo's committed AnesSuite +CPT+SFT model (the miniature's revision 6 pre-check) and compare it byte for byte
	$(PY) -m anessuite experiment --config experiments/anessuite-cpu-miniature/precheck_r6.yaml
	$(PY) -m experiments.demo.checkpoints compare anessuite-cpt-sft runs/anessuite-miniature-r6/precheck-seed0/sft/final
