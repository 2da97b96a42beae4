# AnesSuite: AnesBench evaluation, the CPT -> SFT -> GRPO (Morpheus) pipeline and the paper's tables.
# See docs/anessuite.md. User variables (BENCHMARK, MODELS, BACKEND, OUT, ...) are read, never assigned here.
.PHONY: reproduce-table3 reproduce-morpheus reproduce-training-strategies reproduce-anessuite-miniature bench-eval anessuite-eval anessuite-pipeline anesbench

_anessuite_empty :=
_anessuite_space := $(_anessuite_empty) $(_anessuite_empty)
_anessuite_comma := ,
# MODELS may be space- or comma-separated; the recipe wants a YAML list [a,b].
_anessuite_models = $(subst $(_anessuite_space),$(_anessuite_comma),$(strip $(subst $(_anessuite_comma),$(_anessuite_space),$(MODELS))))
_anessuite_model = $(subst $(_anessuite_space),$(_anessuite_comma),$(strip $(subst $(_anessuite_comma),$(_anessuite_space),$(MODEL))))

reproduce-table3: setup ## AnesBench Table 3 (EN/ZH x Sys1/1.x/2/Total, Avg.); default: the CPU miniature's pipelines (3 seeds, pooled); real: BENCHMARK=<dir> [MODELS=<paths or URL>] [BACKEND=vllm]
	$(if $(or $(BENCHMARK),$(MODELS)),$(PY) -m anessuite table3 --config experiments/anessuite-table3/config.yaml \
		$(if $(BENCHMARK),benchmark=$(BENCHMARK)) \
		$(if $(MODELS),'models=[$(_anessuite_models)]' max_new_tokens=2048 output_dir=$(or $(OUT),experiments/anessuite-table3/results-custom)) \
		$(if $(BACKEND),backend=$(BACKEND)) $(TABLE3_ARGS),$(PY) -m anessuite experiment --config experiments/anessuite-table3/experiment.yaml $(TABLE3_ARGS))

reproduce-morpheus: setup ## Morpheus Table 4 layout (base / +SFT / +SFT+GRPO) at CPU scale on the synthetic world
	$(PY) -m anessuite morpheus --config experiments/anessuite-morpheus/config.yaml $(MORPHEUS_ARGS)

reproduce-training-strategies: setup ## Table 5 layout (base vs +CPT x SFT data) at CPU scale on the synthetic world
	$(PY) -m anessuite strategies --config experiments/anessuite-training-strategies/config.yaml $(STRATEGIES_ARGS)

reproduce-anessuite-miniature: setup ## pre-registered CPU miniature of CPT -> SFT -> GRPO: world + from-scratch base, Tables 3/4 (3 seeds), Table 5 (seed 0), knowledge probe before/after CPT, pooled results
	$(PY) -m anessuite experiment --config experiments/anessuite-cpu-miniature/experiment.yaml $(MINIATURE_ARGS)

bench-eval: setup ## eval throughput: batched in-process vs one-at-a-time (ratio), and HTTP client concurrency vs sequential
	$(PY) -m anessuite.bench.eval_speed --out experiments/anessuite-bench-eval $(BENCH_EVAL_ARGS)

anessuite-eval: setup ## one model on a benchmark: make anessuite-eval [EVAL_ARGS='model=... benchmark=... backend.kind=openai']
	$(PY) -m anessuite eval --config packages/anessuite/configs/eval_cpu.yaml $(EVAL_ARGS)

anessuite-pipeline: setup ## CPT -> SFT -> GRPO on CPU (resumable): make anessuite-pipeline [PIPELINE_CONFIG=...]
	$(PY) -m anessuite pipeline --config $(or $(PIPELINE_CONFIG),packages/anessuite/configs/pipeline_cpu.yaml) $(PIPELINE_ARGS)

anesbench: setup ## any model -> its AnesBench Table 3 row (official decoding/prompt): make anesbench MODEL=<folder | served name> BENCHMARK=<folder> [BACKEND=hf|vllm|openai] [BASE_URL=http://127.0.0.1:8000/v1] [OUT=dir]
	$(if $(MODEL),,$(error MODEL=<local model folder, or a name served at BASE_URL> is required))
	$(if $(BENCHMARK),,$(error BENCHMARK=<folder with anesbench_en.json / anesbench_zh.json> is required))
	$(PY) -m anessuite table3 --config packages/anessuite/configs/anesbench.yaml \
		'models=[$(_anessuite_model)]' benchmark=$(BENCHMARK) \
		backend=$(or $(BACKEND),$(if $(BASE_URL),openai,hf)) $(if $(BASE_URL),base_url=$(BASE_URL)) \
		$(if $(OUT),output_dir=$(OUT)) $(ANESBENCH_ARGS)
