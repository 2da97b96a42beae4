# REX-RAG (packages/rexrag): synthetic world, SFT warm-up, GRPO vs REX-RAG at CPU scale, paper-scale launches,
# evaluation and tables. See docs/rexrag.md. Variables read here are prefixed REXRAG_ so other area makefiles
# that use short names are not affected.
REXRAG_CPU_DIR ?= runs/rexrag-cpu
REXRAG_CPU_CONFIGS := packages/rexrag/configs/cpu
REXRAG_SIZE ?= 3b

.PHONY: rexrag-world rexrag-sft-cpu rexrag-sft-cpu-multiworld reproduce-rexrag-cpu reproduce-rexrag-cpu-ablations reproduce-rexrag-cpu-long reproduce-rexrag-cpu-multiworld \
	reproduce-rexrag-cpu-multiworld-ablations reproduce-rexrag-main rexrag-cpu-mechanism-prechecks reproduce-rexrag-cpu-mechanism \
	rexrag-eval rexrag-table test-rexrag rexrag-data

rexrag-world: setup ## write the synthetic knowledge world (corpus + questions, FlashRAG and Search-R1 layouts)
	$(PY) -m rexrag make-world --out $(REXRAG_CPU_DIR)/world-export seed=0

$(REXRAG_CPU_DIR)/sft/model/config.json:
	$(PY) -m rexrag sft --config $(REXRAG_CPU_CONFIGS)/sft.yaml

rexrag-sft-cpu: setup $(REXRAG_CPU_DIR)/sft/model/config.json ## SFT warm-up of the tiny search agent (CPU, reused if present)

# Each CPU experiment is run by its driver from its own folder (experiments/<name>/experiment.yaml: warm-up stages,
# seeds x arms, summary); finished runs are skipped. REXRAG_EXPERIMENT_ARGS passes spec overrides, e.g. "seeds=[0]".
REXRAG_EXPERIMENT = $(PY) -m rexrag experiment --config experiments/$(1)/experiment.yaml $(2) $(REXRAG_EXPERIMENT_ARGS)

reproduce-rexrag-cpu: setup ## GRPO vs REX-RAG on the synthetic world, 3 seeds (CPU; SFT warm-up first if missing), then the table
	$(call REXRAG_EXPERIMENT,rexrag-cpu)

reproduce-rexrag-cpu-ablations: setup ## ablations (no / coarse correction, dead-end trigger), 3 seeds (CPU; reuses the main runs)
	$(call REXRAG_EXPERIMENT,rexrag-cpu,group=ablations)

reproduce-rexrag-cpu-long: setup ## GRPO vs REX-RAG for 200 steps (5x rexrag-cpu), 3 seeds, held-out EM every 20 steps (CPU)
	$(call REXRAG_EXPERIMENT,rexrag-cpu-long)

rexrag-sft-cpu-multiworld: setup ## multi-world SFT warm-up (two stages, about 35 min) and its test EM (CPU, each reused if present)
	$(call REXRAG_EXPERIMENT,rexrag-cpu-multiworld,only=stages)

reproduce-rexrag-cpu-multiworld: setup ## GRPO vs REX-RAG from the multi-world warm-up (built first if missing), 100 steps, 3 seeds (CPU)
	$(call REXRAG_EXPERIMENT,rexrag-cpu-multiworld)

reproduce-rexrag-cpu-multiworld-ablations: setup ## no correction (with / without training the inserted prompt), coarse correction, dead-end trigger from the multi-world warm-up (CPU; reuses the main runs)
	$(call REXRAG_EXPERIMENT,rexrag-cpu-multiworld,group=ablations)

rexrag-cpu-mechanism-prechecks: setup ## mechanism experiment: warm-up (six SFT stages), its test EM and the pre-checks (dead-end rate, direct probe check), each reused if present (CPU)
	$(call REXRAG_EXPERIMENT,rexrag-cpu-mechanism,only=stages)

reproduce-rexrag-cpu-mechanism: setup ## pre-registered mechanism test: warm-up, pre-checks (RL waits for them to pass), GRPO / REX-RAG / REX-RAG without correction x 5 seeds (CPU)
	$(call REXRAG_EXPERIMENT,rexrag-cpu-mechanism)

reproduce-rexrag-main: setup ## paper main table (Qwen2.5-$(REXRAG_SIZE), 8 GPUs): Search-R1 GRPO and REX-RAG, then greedy eval + table
	RECIPE=rexrag.recipes.train CONFIG=experiments/rexrag-main/arms/searchr1_grpo-$(REXRAG_SIZE).yaml START_RETRIEVER=1 \
		infra/launch_train.sh -- train.output_dir=runs/rexrag-main/searchr1_grpo-$(REXRAG_SIZE)
	RECIPE=rexrag.recipes.train CONFIG=experiments/rexrag-main/arms/rexrag-$(REXRAG_SIZE).yaml START_RETRIEVER=1 \
		infra/launch_train.sh -- train.output_dir=runs/rexrag-main/rexrag-$(REXRAG_SIZE)
	$(PY) -m rexrag table "Search-R1=runs/rexrag-main/searchr1_grpo-$(REXRAG_SIZE)/eval.json" \
		"REX-RAG=runs/rexrag-main/rexrag-$(REXRAG_SIZE)/eval.json" --out-dir experiments/rexrag-main --stem table-$(REXRAG_SIZE)

rexrag-data: setup ## paper data from FlashRAG files: make rexrag-data FLASHRAG=<FlashRAG_datasets folder> OUT=<folder>
	@test -n "$(FLASHRAG)" -a -n "$(OUT)" || { echo "usage: make rexrag-data FLASHRAG=<FlashRAG_datasets folder> OUT=<folder>" >&2; exit 2; }
	$(PY) -m rexrag prepare-data --flashrag $(FLASHRAG) --out $(OUT)

rexrag-eval: setup ## re-score predictions: make rexrag-eval REXRAG_PRED=predictions.jsonl REXRAG_OUT=eval.json
	$(PY) -m rexrag eval --predictions $(REXRAG_PRED) --out $(REXRAG_OUT)

test-rexrag: setup ## the REX-RAG tests only (CPU; the two end-to-end training tests are marked slow)
	$(PY) -m pytest tests/rexrag -q
