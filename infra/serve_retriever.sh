#!/usr/bin/env bash
# Start the retrieval service (`python -m rlcore.retrieval.server`) on a GPU node: the FAISS index is
# moved to the GPUs as fp16 and sharded across them (a 21M x 768 wiki-18 Flat index is 64.6 GB in fp32,
# 32.3 GB in fp16, about 4 GB per GPU over 8), then queries are answered over HTTP.
#
# usage: RETRIEVER_INDEX=/path/to/index infra/serve_retriever.sh [--dry-run] [--background] [-- extra server args]
#   foreground (default): exec the server; Ctrl-C / SIGTERM stop it.
#   --background: start it with its log in $LOG_DIR/retriever-$RETRIEVER_PORT.log, write
#                 $LOG_DIR/retriever-$RETRIEVER_PORT.pid, wait for GET /health, then return.
#
# Environment (defaults in brackets):
#   RETRIEVER_INDEX         index folder written by the index builder (required)
#   RETRIEVER_HOST          bind address [127.0.0.1]; set 0.0.0.0 only to serve other nodes on a trusted network
#   RETRIEVER_PORT          [8100]
#   RETRIEVER_DEVICE        cuda | cpu [cuda]
#   RETRIEVER_GPUS          CUDA_VISIBLE_DEVICES for the server, e.g. 0,1,2,3 [unset: all GPUs of the node]
#   RETRIEVER_FP16          1: store the index on the GPUs in fp16 [1]
#   RETRIEVER_SHARD         1: shard the index across the visible GPUs (0: replicate it on each) [1]
#   RETRIEVER_EXTRA_ARGS    more server flags, whitespace-separated [none]
#   RETRIEVER_WAIT_TIMEOUT  seconds --background waits for /health [900]
#   PYTHON, LOG_DIR         as in lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_std_args "$@"

need_env RETRIEVER_INDEX
RETRIEVER_HOST="${RETRIEVER_HOST:-127.0.0.1}"
RETRIEVER_PORT="${RETRIEVER_PORT:-8100}"
RETRIEVER_DEVICE="${RETRIEVER_DEVICE:-cuda}"
RETRIEVER_FP16="${RETRIEVER_FP16:-1}"
RETRIEVER_SHARD="${RETRIEVER_SHARD:-1}"
RETRIEVER_WAIT_TIMEOUT="${RETRIEVER_WAIT_TIMEOUT:-900}"
one_of "$RETRIEVER_DEVICE" RETRIEVER_DEVICE cuda cpu
one_of "$RETRIEVER_FP16" RETRIEVER_FP16 0 1
one_of "$RETRIEVER_SHARD" RETRIEVER_SHARD 0 1
need_file "$RETRIEVER_INDEX" "retrieval index (RETRIEVER_INDEX)"

server=("$PYTHON" -m rlcore.retrieval.server --index "$RETRIEVER_INDEX"
    --host "$RETRIEVER_HOST" --port "$RETRIEVER_PORT" --device "$RETRIEVER_DEVICE")
if [[ "$RETRIEVER_DEVICE" == cuda ]]; then
    [[ "$RETRIEVER_FP16" == 1 ]] && server+=(--fp16)
    [[ "$RETRIEVER_SHARD" == 1 ]] && server+=(--shard)
fi
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
