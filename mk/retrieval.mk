# Retrieval service (rlcore.retrieval): corpora, index builds, the HTTP server and its benchmark. See docs/retrieval.md.
# User-facing variables (CORPUS, OUT, ENCODER, KIND, INDEX, HOST, PORT) are read with $(or ...) and never
# assigned here, so other area makefiles that use the same short names are not affected.
RETRIEVAL_CACHE ?= .cache/retrieval
RETRIEVAL_WIKI := $(RETRIEVAL_CACHE)/wiki.jsonl
RETRIEVAL_CORPUS = $(or $(CORPUS),$(RETRIEVAL_WIKI))
RETRIEVAL_OUT = $(or $(OUT),$(RETRIEVAL_CACHE)/wiki-minilm)
RETRIEVAL_KIND = $(or $(KIND),flat)

.PHONY: wiki-corpus index serve-retriever bench-retrieval bench-retrieval-scale soak-retrieval

$(RETRIEVAL_WIKI):
	$(PY) -m rlcore.retrieval.corpora wiki --out $@

wiki-corpus: setup $(RETRIEVAL_WIKI) ## write the 10,033 embedded Wikipedia passages to .cache/retrieval/wiki.jsonl

index: setup ## build an index: make index CORPUS=x.jsonl OUT=dir [ENCODER=minilm] [KIND=flat|hnsw|ivfpq|bm25]
	@if [ "$(RETRIEVAL_CORPUS)" = "$(RETRIEVAL_WIKI)" ]; then $(MAKE) --no-print-directory $(RETRIEVAL_WIKI); fi
	$(PY) -m rlcore.retrieval.build --corpus $(RETRIEVAL_CORPUS) --out $(RETRIEVAL_OUT) --kind $(RETRIEVAL_KIND) \
		--encoder $(or $(ENCODER),minilm) $(BUILD_ARGS)

serve-retriever: setup ## serve an index: make serve-retriever INDEX=dir [PORT=8000] [KIND=flat] [SERVE_ARGS=--gpu]
	$(PY) -m rlcore.retrieval.server --index $(or $(INDEX),$(RETRIEVAL_OUT)) --kind $(RETRIEVAL_KIND) \
		--host $(or $(HOST),127.0.0.1) --port $(or $(PORT),8000) $(SERVE_ARGS)

bench-retrieval: setup ## our server vs naive (and Search-R1's with PEER=checkout): q/s, p99, encoder backends, recall, overload
	$(PY) benchmarks/retrieval/bench_server.py $(if $(PEER),--peer $(PEER)) $(BENCH_ARGS)

bench-retrieval-scale: setup ## index build time and peak RSS on a generated 1M-passage corpus (BM25 + hashing flat)
	$(PY) benchmarks/retrieval/bench_build.py $(BENCH_ARGS)

soak-retrieval: setup ## overload soak: 2x measured capacity, valid + malformed requests, leak checks (loopback, ~3 min)
	$(PY) -m rlcore.retrieval.soak $(SOAK_ARGS)
