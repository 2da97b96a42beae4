#!/usr/bin/env bash
# Launch one training recipe on this node through accelerate, deepspeed or torchrun, with a DeepSpeed
# ZeRO config from infra/deepspeed/. Run it once per node (the SLURM templates do that with srun).
#
# usage: RECIPE=rexrag.recipes.train CONFIG=experiments/<name>/config.yaml infra/launch_train.sh [--dry-run] [-- key=value ...]
#   Arguments after `--` are appended to the recipe command line (config overrides such as optim.lr=1e-6).
#
# Environment (defaults in brackets):
#   RECIPE            python module of the recipe, run as `-m RECIPE` (required)
#   CONFIG            YAML passed as --config [none]
#   LAUNCHER          accelerate | deepspeed | torchrun | python (one process, no launcher) [accelerate]
#   ZERO_STAGE        1 | 2 | 3, or 0 for no DeepSpeed [2]
#   DS_CONFIG         DeepSpeed JSON [infra/deepspeed/zero${ZERO_STAGE}.json]
#   DS_CONFIG_KEY     if set, also pass `DS_CONFIG_KEY=DS_CONFIG` as a config override [unset]
#   NNODES            number of nodes [SLURM_NNODES or 1]
#   NODE_RANK         this node's rank [SLURM_NODEID or 0]
#   NPROC_PER_NODE    processes (GPUs) on this node [SLURM_GPUS_ON_NODE, CUDA_VISIBLE_DEVICES count, nvidia-smi, or 1]
#   MASTER_ADDR       rendezvous host [127.0.0.1]      MASTER_PORT  rendezvous port [29500]
#   HOSTFILE          deepspeed launcher, several nodes: MPI-style hostfile [written from SLURM_JOB_NODELIST]
#   MIXED_PRECISION   accelerate --mixed_precision (no|fp16|bf16) [unset: the DeepSpeed JSON decides]
#   START_RETRIEVER   1: start infra/serve_retriever.sh on this node first and stop it afterwards [0]
#   RETRIEVER_URL     retrieval service base URL; training waits for GET $RETRIEVER_URL/health
#                     [http://127.0.0.1:$RETRIEVER_PORT when START_RETRIEVER=1, else unset: no wait]
#   RETRIEVER_WAIT_TIMEOUT  seconds to wait for the health check [900]
#   PYTHON            interpreter [.venv-gpu/bin/python, .venv/bin/python, or python3]
#   LOG_DIR           logs of background services [runs/logs]
#
# Every launcher gets the same environment: ACCELERATE_USE_DEEPSPEED=true and
# ACCELERATE_DEEPSPEED_CONFIG_FILE=$DS_CONFIG (an Accelerator() in the recipe picks the plugin up from these,
# whichever launcher started it), RLCORE_DEEPSPEED_CONFIG=$DS_CONFIG and RLCORE_RETRIEVER_URL=$RETRIEVER_URL
# (configs can read them with ${oc.env:RLCORE_RETRIEVER_URL,...}).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_std_args "$@"

need_env RECIPE
CONFIG="${CONFIG:-}"
LAUNCHER="${LAUNCHER:-accelerate}"
ZERO_STAGE="${ZERO_STAGE:-2}"
NNODES="${NNODES:-${SLURM_NNODES:-1}}"
NODE_RANK="${NODE_RANK:-${SLURM_NODEID:-0}}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
MIXED_PRECISION="${MIXED_PRECISION:-}"
START_RETRIEVER="${START_RETRIEVER:-0}"
RETRIEVER_PORT="${RETRIEVER_PORT:-8100}"
RETRIEVER_WAIT_TIMEOUT="${RETRIEVER_WAIT_TIMEOUT:-900}"
if [[ -z "${NPROC_PER_NODE:-}" ]]; then
    NPROC_PER_NODE="$(gpus_on_node)"
    ((NPROC_PER_NODE > 0)) || NPROC_PER_NODE=1
fi

one_of "$LAUNCHER" LAUNCHER accelerate deepspeed torchrun python
one_of "$ZERO_STAGE" ZERO_STAGE 0 1 2 3
one_of "$START_RETRIEVER" START_RETRIEVER 0 1
[[ "$NNODES" =~ ^[1-9][0-9]*$ ]] || die "NNODES must be a positive integer, got '$NNODES'"
[[ "$NPROC_PER_NODE" =~ ^[1-9][0-9]*$ ]] || die "NPROC_PER_NODE must be a positive integer, got '$NPROC_PER_NODE'"
[[ "$NODE_RANK" =~ ^[0-9]+$ ]] && ((NODE_RANK < NNODES)) || die "NODE_RANK=$NODE_RANK must be in [0, NNODES=$NNODES)"
if [[ "$LAUNCHER" == python ]] && ((NNODES * NPROC_PER_NODE > 1)); then
    die "LAUNCHER=python runs one process; got NNODES=$NNODES NPROC_PER_NODE=$NPROC_PER_NODE"
fi
[[ -n "$CONFIG" ]] && need_file "$CONFIG" "recipe config (CONFIG)"

# --- environment shared by every launcher --------------------------------------------------------------
child_env=()
if ((ZERO_STAGE > 0)); then
    DS_CONFIG="${DS_CONFIG:-$INFRA_DIR/deepspeed/zero${ZERO_STAGE}.json}"
    need_file "$DS_CONFIG" "DeepSpeed config (DS_CONFIG)"
    child_env+=(ACCELERATE_USE_DEEPSPEED=true "ACCELERATE_DEEPSPEED_CONFIG_FILE=$DS_CONFIG"
        "RLCORE_DEEPSPEED_CONFIG=$DS_CONFIG")
fi
if [[ "$START_RETRIEVER" == 1 ]]; then
    RETRIEVER_URL="${RETRIEVER_URL:-http://127.0.0.1:$RETRIEVER_PORT}"
fi
RETRIEVER_URL="${RETRIEVER_URL:-}"
[[ -n "$RETRIEVER_URL" ]] && child_env+=("RLCORE_RETRIEVER_URL=$RETRIEVER_URL")

# --- the recipe command line ----------------------------------------------------------------------------
recipe_args=()
[[ -n "$CONFIG" ]] && recipe_args+=(--config "$CONFIG")
if ((ZERO_STAGE > 0)) && [[ -n "${DS_CONFIG_KEY:-}" ]]; then
    recipe_args+=("$DS_CONFIG_KEY=$DS_CONFIG")
fi
recipe_args+=("${EXTRA_ARGS[@]}")

world_size=$((NNODES * NPROC_PER_NODE))
case "$LAUNCHER" in
    accelerate)
        launch=("$PYTHON" -m accelerate.commands.launch
            --num_machines "$NNODES" --num_processes "$world_size" --machine_rank "$NODE_RANK"
            --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT")
        if ((ZERO_STAGE > 0)); then
            launch+=(--use_deepspeed --deepspeed_config_file "$DS_CONFIG")
            ((NNODES > 1)) && launch+=(--deepspeed_multinode_launcher standard)
        else
            ((world_size > 1)) && launch+=(--multi_gpu)
        fi
        [[ -n "$MIXED_PRECISION" ]] && launch+=(--mixed_precision "$MIXED_PRECISION")
        launch+=(-m "$RECIPE")
        ;;
    torchrun)
        launch=("$PYTHON" -m torch.distributed.run
            --nnodes "$NNODES" --nproc-per-node "$NPROC_PER_NODE" --node-rank "$NODE_RANK"
            --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" -m "$RECIPE")
        ;;
    deepspeed)
        # --no_local_rank: the recipes' CLI takes --config and overrides only; ranks come from the environment.
        launch=("$PYTHON" -m deepspeed.launcher.runner --num_gpus "$NPROC_PER_NODE"
            --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT")
        if ((NNODES > 1)); then
            if [[ -z "${HOSTFILE:-}" ]]; then
                HOSTFILE="$LOG_DIR/hostfile-${SLURM_JOB_ID:-local}"
                if is_dry_run; then
                    note "write $HOSTFILE: one line '<host> slots=$NPROC_PER_NODE' per node of SLURM_JOB_NODELIST"
                else
                    need_env SLURM_JOB_NODELIST
                    mkdir -p "$LOG_DIR"
                    scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\$/ slots=$NPROC_PER_NODE/" >"$HOSTFILE"
                fi
            fi
            # --no_ssh: SLURM already started this script on every node; each one launches its own ranks.
            launch+=(--hostfile "$HOSTFILE" --no_ssh --node_rank "$NODE_RANK" --num_nodes "$NNODES")
        fi
        launch+=(--no_local_rank --module "$RECIPE")
        ;;
    python)
        launch=("$PYTHON" -m "$RECIPE")
        ;;
esac

# --- optional retrieval service on this node -------------------------------------------------------------
retriever_pid=""
stop_retriever() {
    if [[ -n "$retriever_pid" ]] && kill -0 "$retriever_pid" 2>/dev/null; then
        log "stopping the retrieval server (pid $retriever_pid)"
        kill "$retriever_pid" 2>/dev/null || true
    fi
}
if [[ "$START_RETRIEVER" == 1 ]]; then
    RETRIEVER_HOST="${RETRIEVER_HOST:-127.0.0.1}" RETRIEVER_PORT="$RETRIEVER_PORT" DRY_RUN="$DRY_RUN" \
        "$INFRA_DIR/serve_retriever.sh" --background
    if ! is_dry_run; then
        retriever_pid="$(cat "$LOG_DIR/retriever-$RETRIEVER_PORT.pid")"
        trap stop_retriever EXIT
    fi
elif [[ -n "$RETRIEVER_URL" ]]; then
    wait_for_http "${RETRIEVER_URL%/}/health" "$RETRIEVER_WAIT_TIMEOUT"
fi

note "node $NODE_RANK of $NNODES, $NPROC_PER_NODE processes per node (world size $world_size), ZeRO stage $ZERO_STAGE"
if ((${#child_env[@]})); then
    run env "${child_env[@]}" "${launch[@]}" "${recipe_args[@]}"
else
    run "${launch[@]}" "${recipe_args[@]}"
fi
