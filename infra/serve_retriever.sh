#!/usr/bin/env bash
# Start the retrieval service (`python -m rlcore.retrieval.server`) on a GPU node. With RETRIEVER_GPU=1
# (the default) the server moves a Flat/IVF FAISS index onto every visible GPU, stored in fp16 and sharded
# across them (a 21M x 768 wiki-18 Flat index is 64.6 GB in fp32, 32.3 GB in fp16, about 4 GB per GPU over
# 8); HNSW has no GPU version and stays on CPU. GET /health answers 503 while the index loads and 200 once
# it is served; a load error is reported there too, and the wait below stops at once on it.
#
# usage: RETRIEVER_INDEX=/path/to/index infra/serve_retriever.sh [--dry-run] [--background] [-- extra server args]
#   foreground (default): exec the server; Ctrl-C / SIGTERM stop it.
#   --background: start it with its log in $LOG_DIR/retriever-$RETRIEVER_PORT.log, write
#                 $LOG_DIR/retriever-$RETRIEVER_PORT.pid, wait for GET /health, then return.
#   Build an index first: make index CORPUS=... OUT=... (see docs/retrieval.md).
#
# Environment (defaults in brackets):
#   RETRIEVER_INDEX         index folder written by `make index` / rlcore.retrieval.build (required)
#   RETRIEVER_KIND          flat | hnsw | ivfpq | bm25 | hybrid [flat]
#   RETRIEVER_HOST          bind address [127.0.0.1]; set 0.0.0.0 only to serve other nodes on a trusted network
#   RETRIEVER_PORT          [8100]
#   RETRIEVER_GPU           1: FAISS index on all visible GPUs, fp16, sharded (--gpu); 0: CPU index [1]
#   RETRIEVER_GPUS          CUDA_VISIBLE_DEVICES for the server, e.g. 0,1,2,3 [unset: all GPUs of the node]
#   RETRIEVER_DEVICE        query-encoder device, e.g. cuda or cpu [unset: the server picks]
#   RETRIEVER_MMAP          1: memory-map the index file instead of reading it (less RAM) [0]
#   RETRIEVER_EXTRA_ARGS    more server flags, whitespace-separated, e.g. "--max-batch-queries 512" [none]
#   RETRIEVER_WAIT_TIMEOUT  seconds --background waits for /health [900]
#   RLCORE_RETRIEVER_TOKEN  if set, the server requires it as a bearer token (read from the environment by
#                           the server; never on the command line)
#   PYTHON, LOG_DIR         as in lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_std_args "$@"

need_env RETRIEVER_INDEX
RETRIEVER_KIND="${RETRIEVER_KIND:-flat}"
RETRIEVER_HOST="${RETRIEVER_HOST:-127.0.0.1}"
RETRIEVER_PORT="${RETRIEVER_PORT:-8100}"
RETRIEVER_GPU="${RETRIEVER_GPU:-1}"
RETRIEVER_MMAP="${RETRIEVER_MMAP:-0}"
RETRIEVER_WAIT_TIMEOUT="${RETRIEVER_WAIT_TIMEOUT:-900}"
one_of "$RETRIEVER_KIND" RETRIEVER_KIND flat hnsw ivfpq bm25 hybrid
one_of "$RETRIEVER_GPU" RETRIEVER_GPU 0 1
one_of "$RETRIEVER_MMAP" RETRIEVER_MMAP 0 1
need_file "$RETRIEVER_INDEX" "retrieval index (RETRIEVER_INDEX)"

server=("$PYTHON" -m rlcore.retrieval.server --index "$RETRIEVER_INDEX" --kind "$RETRIEVER_KIND"
    --host "$RETRIEVER_HOST" --port "$RETRIEVER_PORT")
[[ "$RETRIEVER_GPU" == 1 ]] && server+=(--gpu)
[[ -n "${RETRIEVER_DEVICE:-}" ]] && server+=(--device "$RETRIEVER_DEVICE")
[[ "$RETRIEVER_MMAP" == 1 ]] && server+=(--mmap)
split_words extra "${RETRIEVER_EXTRA_ARGS:-}"
server+=("${extra[@]}" "${EXTRA_ARGS[@]}")
if [[ -n "${RETRIEVER_GPUS:-}" ]]; then
    server=(env "CUDA_VISIBLE_DEVICES=$RETRIEVER_GPUS" "${server[@]}")
fi

health="http://127.0.0.1:$RETRIEVER_PORT/health"
[[ "$RETRIEVER_HOST" != 0.0.0.0 && "$RETRIEVER_HOST" != "::" ]] && health="http://$RETRIEVER_HOST:$RETRIEVER_PORT/health"

if [[ "$BACKGROUND" == 1 ]]; then
    logfile="$LOG_DIR/retriever-$RETRIEVER_PORT.log"
    run_bg "$logfile" "${server[@]}"
    write_pidfile "retriever-$RETRIEVER_PORT" "$BG_PID"
    wait_for_http "$health" "$RETRIEVER_WAIT_TIMEOUT" "$BG_PID" "$logfile"
    note "retrieval server ${BG_PID:+(pid $BG_PID) }ready at ${health%/health}"
else
    run_exec "${server[@]}"
fi
