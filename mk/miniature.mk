# The REX-RAG paper pipeline in miniature on CPU (infra/rexrag_paper_miniature.py; docs/infra.md): the paper
# configs with a tiny model, a small world and small sizes, through the same data preparation, launcher,
# ZeRO-2 (two CPU ranks), HTTP retrieval server, checkpoint/resume and evaluation as the GPU run.
REXRAG_MINI_DIR ?= runs/rexrag-paper-miniature

.PHONY: rexrag-paper-miniature

rexrag-paper-miniature: setup ## the paper pipeline in miniature on 2 CPU ranks (world, rexrag-data, ZeRO-2, stop/resume, eval table)
	$(PY) infra/rexrag_paper_miniature.py world --out $(REXRAG_MINI_DIR)
	$(MAKE) --no-print-directory rexrag-data FLASHRAG=$(REXRAG_MINI_DIR)/data/flashrag OUT=$(REXRAG_MINI_DIR)/data/searchr1
	$(PY) infra/rexrag_paper_miniature.py run --out $(REXRAG_MINI_DIR)
