#!/usr/bin/env bash
# Start a vLLM OpenAI-compatible server for evaluation (AnesBench MCQ, QA EM) on a GPU node.
# Needs the GPU environment from infra/setup_gpu_env.sh (vllm 0.31.0, which requires transformers<5.18;
# the project pins transformers==5.17.0 everywhere for that reason).
#
# usage: VLLM_MODEL=/path/to/checkpoint infra/serve_vllm.sh [--dry-run] [--background] [-- extra vllm args]
#   foreground (default): exec `vllm serve`; --background: log to $LOG_DIR/vllm-$VLLM_PORT.log, write a pid
#   file, wait for GET /health, then return.
#   Clients use base URL http://$VLLM_HOST:$VLLM_PORT/v1 and model name $VLLM_SERVED_NAME (or the path).
#   Log-probs are reported under the sampling distribution (`--logprobs-mode processed_logprobs`: after
#   temperature / top-k / top-p), the quantity our trainers use; VLLMServerBackend.check_server verifies it.
#
# Environment (defaults in brackets):
#   VLLM_MODEL                   local checkpoint folder or hub id (required)
#   VLLM_HOST                    bind address [127.0.0.1]
#   VLLM_PORT                    [8000]
#   VLLM_TP                      tensor-parallel size [1]
#   VLLM_DP                      data-parallel replicas [1]; an 8-GPU node serving a 7B model: VLLM_TP=1 VLLM_DP=8
#   VLLM_DTYPE                   [bfloat16]
#   VLLM_MAX_MODEL_LEN           context length cap [unset: the model's]
#   VLLM_GPU_MEMORY_UTILIZATION  fraction of each GPU for weights + KV cache [0.90]
#   VLLM_SERVED_NAME             model name clients send [unset: VLLM_MODEL]
#   VLLM_SEED                    sampling seed [0]
#   VLLM_EXTRA_ARGS              more `vllm serve` flags, whitespace-separated [none]
#   VLLM_API_KEY                 if set, vLLM itself reads it from the environment and requires it (never
#                                put on the command line)
#   VLLM_WAIT_TIMEOUT            seconds --background waits for /health [1200]
#   PYTHON, LOG_DIR              as in lib.sh (`vllm` is taken from $PYTHON's folder)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_std_args "$@"

need_env VLLM_MODEL
VLLM_HOST="${VLLM_HOST:-127.0.0.1}"
VLLM_PORT="${VLLM_PORT:-8000}"
VLLM_TP="${VLLM_TP:-1}"
VLLM_DP="${VLLM_DP:-1}"
VLLM_DTYPE="${VLLM_DTYPE:-bfloat16}"
VLLM_GPU_MEMORY_UTILIZATION="${VLLM_GPU_MEMORY_UTILIZATION:-0.90}"
VLLM_SEED="${VLLM_SEED:-0}"
VLLM_WAIT_TIMEOUT="${VLLM_WAIT_TIMEOUT:-1200}"
[[ "$VLLM_TP" =~ ^[1-9][0-9]*$ ]] || die "VLLM_TP must be a positive integer, got '$VLLM_TP'"
[[ "$VLLM_DP" =~ ^[1-9][0-9]*$ ]] || die "VLLM_DP must be a positive integer, got '$VLLM_DP'"

server=("$(venv_bin vllm)" serve "$VLLM_MODEL" --host "$VLLM_HOST" --port "$VLLM_PORT"
    --tensor-parallel-size "$VLLM_TP" --data-parallel-size "$VLLM_DP" --dtype "$VLLM_DTYPE"
    --gpu-memory-utilization "$VLLM_GPU_MEMORY_UTILIZATION" --seed "$VLLM_SEED"
    --logprobs-mode processed_logprobs)
[[ -n "${VLLM_MAX_MODEL_LEN:-}" ]] && server+=(--max-model-len "$VLLM_MAX_MODEL_LEN")
[[ -n "${VLLM_SERVED_NAME:-}" ]] && server+=(--served-model-name "$VLLM_SERVED_NAME")
split_words extra "${VLLM_EXTRA_ARGS:-}"
server+=("${extra[@]}" "${EXTRA_ARGS[@]}")

health="http://127.0.0.1:$VLLM_PORT/health"
[[ "$VLLM_HOST" != 0.0.0.0 && "$VLLM_HOST" != "::" ]] && health="http://$VLLM_HOST:$VLLM_PORT/health"

if [[ "$BACKGROUND" == 1 ]]; then
    logfile="$LOG_DIR/vllm-$VLLM_PORT.log"
    run_bg "$logfile" "${server[@]}"
    write_pidfile "vllm-$VLLM_PORT" "$BG_PID"
    wait_for_http "$health" "$VLLM_WAIT_TIMEOUT" "$BG_PID" "$logfile"
    note "vLLM ${BG_PID:+(pid $BG_PID) }serving OpenAI API at ${health%/health}/v1"
else
    run_exec "${server[@]}"
fi
