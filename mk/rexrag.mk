# REX-RAG (packages/rexrag): synthetic world, SFT warm-up, GRPO vs REX-RAG at CPU scale, paper-scale launches,
# evaluation and tables. See docs/rexrag.md. Variables read here are prefixed REXRAG_ so other area makefiles
# that use short names are not affected.
REXRAG_CPU_DIR ?= runs/rexrag-cpu
REXRAG_SEEDS ?= 0 1 2
REXRAG_CPU_CONFIGS := packages/rexrag/configs/cpu
REXRAG_PAPER_CONFIGS := packages/rexrag/configs/paper
REXRAG_SIZE ?= 3b

.PHONY: rexrag-world rexrag-sft-cpu rexrag-sft-cpu-multiworld reproduce-rexrag-cpu reproduce-rexrag-cpu-ablations reproduce-rexrag-cpu-long reproduce-rexrag-cpu-multiworld \
	reproduce-rexrag-cpu-multiworld-ablations reproduce-rexrag-main \
	rexrag-eval rexrag-table test-rexrag rexrag-data

rexrag-world: setup ## write the synthetic knowledge world (corpus + questions, FlashRAG and Search-R1 layouts)
	$(PY) -m rexrag make-world --out $(REXRAG_CPU_DIR)/world-export seed=0

$(REXRAG_CPU_DIR)/sft/model/config.json:
	$(PY) -m rexrag sft --config $(REXRAG_CPU_CONFIGS)/sft.yaml

rexrag-sft-cpu: setup $(REXRAG_CPU_DIR)/sft/model/config.json ## SFT warm-up of the tiny search agent (CPU, reused if present)

reproduce-rexrag-cpu: setup $(REXRAG_CPU_DIR)/sft/model/config.json ## GRPO vs REX-RAG on the synthetic world, seeds $(REXRAG_SEEDS) (CPU), then the table
	for seed in $(REXRAG_SEEDS); do \
		for arm in grpo rexrag; do \
			$(PY) -m rexrag train --config $(REXRAG_CPU_CONFIGS)/$$arm.yaml train.seed=$$seed rexrag.seed=$$seed \
				train.output_dir=$(REXRAG_CPU_DIR)/$$arm-seed$$seed train.resume=never || exit 1; \
		done; \
	done
	$(PY) experiments/rexrag-cpu/summarize.py --runs $(REXRAG_CPU_DIR) --arms grpo rexrag --seeds $(REXRAG_SEEDS) \
		--out experiments/rexrag-cpu

reproduce-rexrag-cpu-ablations: setup $(REXRAG_CPU_DIR)/sft/model/config.json ## ablations (no / coarse correction, dead-end trigger), seeds $(REXRAG_SEEDS) (CPU; after reproduce-rexrag-cpu)
	for seed in $(REXRAG_SEEDS); do \
		for arm in rexrag_no_correction rexrag_coarse rexrag_dead_end; do \
			$(PY) -m rexrag train --config $(REXRAG_CPU_CONFIGS)/$$arm.yaml train.seed=$$seed rexrag.seed=$$seed \
				train.output_dir=$(REXRAG_CPU_DIR)/$$arm-seed$$seed train.resume=never || exit 1; \
		done; \
	done
	$(PY) experiments/rexrag-cpu/summarize.py --runs $(REXRAG_CPU_DIR) \
		--arms grpo rexrag rexrag_no_correction rexrag_coarse rexrag_dead_end --seeds $(REXRAG_SEEDS) \
		--out experiments/rexrag-cpu/ablations

REXRAG_LONG_DIR ?= runs/rexrag-cpu-long

reproduce-rexrag-cpu-long: setup $(REXRAG_CPU_DIR)/sft/model/config.json ## GRPO vs REX-RAG for 200 steps (5x rexrag-cpu), seeds $(REXRAG_SEEDS), held-out EM every 20 steps (CPU)
	for seed in $(REXRAG_SEEDS); do \
		for arm in grpo rexrag; do \
			$(PY) -m rexrag train --config $(REXRAG_CPU_CONFIGS)/$$arm.yaml train.seed=$$seed rexrag.seed=$$seed \
				train.total_steps=200 heldout_curve.every=20 tracking.experiment=rexrag-cpu-long \
				train.output_dir=$(REXRAG_LONG_DIR)/$$arm-seed$$seed train.resume=never || exit 1; \
		done; \
	done
	$(PY) experiments/rexrag-cpu/summarize.py --runs $(REXRAG_LONG_DIR) --arms grpo rexrag --seeds $(REXRAG_SEEDS) \
		--out experiments/rexrag-cpu-long

REXRAG_MW_DIR ?= runs/rexrag-cpu-multiworld
REXRAG_MW_CONFIGS := $(REXRAG_CPU_CONFIGS)/multiworld

$(REXRAG_MW_DIR)/sft-stage1/model/config.json:
	$(PY) -m rexrag sft --config $(REXRAG_MW_CONFIGS)/sft_stage1.yaml output_dir=$(REXRAG_MW_DIR)/sft-stage1

$(REXRAG_MW_DIR)/sft/model/config.json: $(REXRAG_MW_DIR)/sft-stage1/model/config.json
	$(PY) -m rexrag sft --config $(REXRAG_MW_CONFIGS)/sft_stage2.yaml model.init=$(REXRAG_MW_DIR)/sft-stage1/model \
		output_dir=$(REXRAG_MW_DIR)/sft

rexrag-sft-cpu-multiworld: setup $(REXRAG_MW_DIR)/sft/model/config.json ## multi-world SFT warm-up, two stages (CPU, about 35 min, reused if present)

reproduce-rexrag-cpu-multiworld: setup $(REXRAG_MW_DIR)/sft/model/config.json ## GRPO vs REX-RAG from the multi-world warm-up, 100 steps, seeds $(REXRAG_SEEDS) (CPU)
	for seed in $(REXRAG_SEEDS); do \
		for arm in grpo rexrag; do \
			$(PY) -m rexrag train --config $(REXRAG_MW_CONFIGS)/$$arm.yaml train.seed=$$seed rexrag.seed=$$seed \
				model.path=$(REXRAG_MW_DIR)/sft/model train.output_dir=$(REXRAG_MW_DIR)/$$arm-seed$$seed \
				train.resume=never || exit 1; \
		done; \
	done
	$(PY) experiments/rexrag-cpu/summarize.py --runs $(REXRAG_MW_DIR) --arms grpo rexrag --seeds $(REXRAG_SEEDS) \
		--out experiments/rexrag-cpu-multiworld

reproduce-rexrag-cpu-multiworld-ablations: setup $(REXRAG_MW_DIR)/sft/model/config.json ## no correction (with / without training the inserted prompt), coarse correction, dead-end trigger from the multi-world warm-up (CPU; after reproduce-rexrag-cpu-multiworld)
	for seed in $(REXRAG_SEEDS); do \
		for arm in rexrag_no_correction rexrag_no_correction_context rexrag_coarse rexrag_dead_end; do \
			$(PY) -m rexrag train --config $(REXRAG_MW_CONFIGS)/$$arm.yaml train.seed=$$seed rexrag.seed=$$seed \
				model.path=$(REXRAG_MW_DIR)/sft/model train.output_dir=$(REXRAG_MW_DIR)/$$arm-seed$$seed \
				train.resume=never || exit 1; \
		done; \
	done
	$(PY) experiments/rexrag-cpu/summarize.py --runs $(REXRAG_MW_DIR) \
		--arms grpo rexrag rexrag_no_correction rexrag_no_correction_context rexrag_coarse rexrag_dead_end \
		--seeds $(REXRAG_SEEDS) --out experiments/rexrag-cpu-multiworld/ablations

reproduce-rexrag-main: setup ## paper main table (Qwen2.5-$(REXRAG_SIZE), 8 GPUs): Search-R1 GRPO and REX-RAG, then greedy eval + table
	for arm in searchr1_grpo rexrag; do \
		RECIPE=rexrag.recipes.train CONFIG=$(REXRAG_PAPER_CONFIGS)/$${arm}_qwen2.5-$(REXRAG_SIZE).yaml START_RETRIEVER=1 \
			infra/launch_train.sh -- train.output_dir=runs/rexrag-main/$${arm}-$(REXRAG_SIZE) || exit 1; \
	done
	$(PY) -m rexrag table "Search-R1=runs/rexrag-main/searchr1_grpo-$(REXRAG_SIZE)/eval.json" \
		"REX-RAG=runs/rexrag-main/rexrag-$(REXRAG_SIZE)/eval.json" --out-dir experiments/rexrag-main --stem table-$(REXRAG_SIZE)

rexrag-data: setup ## paper data from FlashRAG files: make rexrag-data FLASHRAG=<FlashRAG_datasets folder> OUT=<folder>
	@test -n "$(FLASHRAG)" -a -n "$(OUT)" || { echo "usage: make rexrag-data FLASHRAG=<FlashRAG_datasets folder> OUT=<folder>" >&2; exit 2; }
	$(PY) -m rexrag prepare-data --flashrag $(FLASHRAG) --out $(OUT)

rexrag-eval: setup ## re-score predictions: make rexrag-eval REXRAG_PRED=predictions.jsonl REXRAG_OUT=eval.json
	$(PY) -m rexrag eval --predictions $(REXRAG_PRED) --out $(REXRAG_OUT)

test-rexrag: setup ## the REX-RAG tests only (CPU; the two end-to-end training tests are marked slow)
	$(PY) -m pytest tests/rexrag -q
