# shellcheck shell=bash
# Shared helpers for the launchers in infra/. Source it from a script; it does nothing on its own.
#
# Every launcher follows the same rules:
#   - all settings come from environment variables with defaults (no machine-specific paths);
#   - `--dry-run` prints, on stdout, the exact commands the script would run (one per line, shell-quoted,
#     so `bash -x`-style copy/paste works) and starts nothing; log messages go to stderr;
#   - services bind to 127.0.0.1 unless a *_HOST variable says otherwise;
#   - `--help` prints the script's header comment.

set -euo pipefail

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="${REPO_ROOT:-$(cd "$INFRA_DIR/.." && pwd)}"
DRY_RUN="${DRY_RUN:-0}"
LOG_DIR="${LOG_DIR:-$REPO_ROOT/runs/logs}"
SCRIPT_NAME="$(basename "${0:-infra}")"

# The interpreter every launcher uses: $PYTHON, else the GPU venv from setup_gpu_env.sh, else the CPU
# venv from `make setup`, else python3 on PATH.
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO_ROOT/.venv-gpu/bin/python" ]]; then
        PYTHON="$REPO_ROOT/.venv-gpu/bin/python"
    elif [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
        PYTHON="$REPO_ROOT/.venv/bin/python"
    else
        PYTHON="python3"
    fi
fi

log() { printf '[%s] %s\n' "$SCRIPT_NAME" "$*" >&2; }

die() {
    printf '[%s] error: %s\n' "$SCRIPT_NAME" "$*" >&2
    exit 1
}

is_dry_run() { [[ "$DRY_RUN" == "1" ]]; }

# quote_cmd ARGS...: the arguments as one shell line (what `run` prints): plain words stay as they are,
# anything else is single-quoted, the same rule as Python's shlex.quote, so the line can be pasted back.
quote_cmd() {
    local arg out=() squote="'"
    for arg in "$@"; do
        if [[ -n "$arg" && "$arg" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
            out+=("$arg")
        else
            out+=("'${arg//$squote/$squote\\$squote$squote}'")
        fi
    done
    local IFS=' '
    printf '%s' "${out[*]}"
}

# run CMD ARGS...: print the command in dry-run mode, otherwise log it to stderr and run it.
run() {
    if is_dry_run; then
        printf '%s\n' "$(quote_cmd "$@")"
    else
        log "+ $(quote_cmd "$@")"
        "$@"
    fi
}

# run_exec CMD ARGS...: like run, but replaces the shell (signals go straight to the service).
run_exec() {
    if is_dry_run; then
        printf '%s\n' "$(quote_cmd "$@")"
        exit 0
    fi
    log "+ exec $(quote_cmd "$@")"
    exec "$@"
}

# run_bg LOGFILE CMD ARGS...: start CMD in the background with stdout+stderr in LOGFILE; sets BG_PID.
# Output goes to a file on purpose: a chatty console slows services down (SkyRL saw latency spikes).
run_bg() {
    local logfile="$1"
    shift
    BG_PID=""
    if is_dry_run; then
        printf '%s > %s 2>&1 &\n' "$(quote_cmd "$@")" "$(quote_cmd "$logfile")"
        return 0
    fi
    mkdir -p "$(dirname "$logfile")"
    log "+ $(quote_cmd "$@") > $logfile 2>&1 &"
    "$@" >"$logfile" 2>&1 &
    BG_PID=$!
}

# note TEXT: a comment line in the dry-run transcript (for steps that are not a single command).
note() {
    if is_dry_run; then
        printf '# %s\n' "$*"
    else
        log "$*"
    fi
}

# need_env NAME...: fail with a clear message when a required variable is empty.
need_env() {
    local name
    for name in "$@"; do
        [[ -n "${!name:-}" ]] || die "set $name (see \`$SCRIPT_NAME --help\`)"
    done
}

# need_file PATH WHAT: a missing input is an error for a real run and a warning in dry-run mode.
need_file() {
    if [[ -e "$1" ]]; then
        return 0
    fi
    if is_dry_run; then
        log "warning: $2 not found: $1 (dry-run continues)"
    else
        die "$2 not found: $1"
    fi
}

# one_of VALUE NAME ALLOWED...: validate an enum-like variable.
one_of() {
    local value="$1" name="$2" allowed
    shift 2
    for allowed in "$@"; do
        [[ "$value" == "$allowed" ]] && return 0
    done
    die "$name=$value is not one of: $*"
}

# venv_bin NAME: the console script NAME next to $PYTHON when it is there, else NAME from PATH.
venv_bin() {
    if [[ "$PYTHON" == */* && -x "$(dirname "$PYTHON")/$1" ]]; then
        printf '%s' "$(dirname "$PYTHON")/$1"
    else
        printf '%s' "$1"
    fi
}

# gpus_on_node: GPUs this process may use: SLURM's count, else CUDA_VISIBLE_DEVICES, else nvidia-smi, else 0.
gpus_on_node() {
    if [[ -n "${SLURM_GPUS_ON_NODE:-}" ]]; then
        printf '%s' "$SLURM_GPUS_ON_NODE"
    elif [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
        local ids
        IFS=',' read -r -a ids <<<"$CUDA_VISIBLE_DEVICES"
        printf '%s' "${#ids[@]}"
    elif command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | grep -c '^GPU' || printf '0'
    else
        printf '0'
    fi
}

# http_ok URL: true when GET URL answers 2xx within 5 s.
http_ok() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -o /dev/null --max-time 5 "$1" 2>/dev/null
    else
        "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$1" \
            >/dev/null 2>&1
    fi
}

# wait_for_http URL TIMEOUT_S [PID [LOGFILE]]: poll URL every 2 s until it answers, fail after TIMEOUT_S
# seconds, or at once when the server process PID has died (its log tail is shown) or /health reports
# {"status": "error", ...}. On failure a still-running PID is stopped: nobody else would ever stop it.
wait_for_http() {
    local url="$1" timeout_s="$2" pid="${3:-}" logfile="${4:-}"
    if is_dry_run; then
        printf '# wait until GET %s answers 2xx (timeout %s s)\n' "$url" "$timeout_s"
        return 0
    fi
    local start=$SECONDS body
    log "waiting for $url (timeout ${timeout_s}s)"
    until http_ok "$url"; do
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            [[ -n "$logfile" && -f "$logfile" ]] && tail -n 20 "$logfile" >&2
            die "the server (pid $pid) exited before $url answered${logfile:+; log: $logfile}"
        fi
        # the retrieval server keeps running after a failed index load and reports it on /health
        if command -v curl >/dev/null 2>&1; then
            body="$(curl -s --max-time 5 "$url" 2>/dev/null || true)"
            if [[ "$body" =~ \"status\":\ *\"error\" ]]; then
                _stop_unhealthy "$pid"
                die "$url reports an error: $body${logfile:+; log: $logfile}"
            fi
        fi
        if ((SECONDS - start >= timeout_s)); then
            _stop_unhealthy "$pid"
            die "$url did not answer within ${timeout_s}s${logfile:+; log: $logfile}"
        fi
        sleep 2
    done
    log "$url is up after $((SECONDS - start))s"
}

_stop_unhealthy() {
    if [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; then
        log "stopping the server (pid $1): it did not become healthy"
        kill "$1" 2>/dev/null || true
    fi
}

# write_pidfile NAME PID: record a background service so a later step (or a person) can stop it.
write_pidfile() {
    is_dry_run && return 0
    mkdir -p "$LOG_DIR"
    printf '%s\n' "$2" >"$LOG_DIR/$1.pid"
}

usage() {
    # the header comment of the calling script, without the shebang, #SBATCH lines and the leading "# "
    sed -n '2,/^[^#]/{/^#/!q;/^#SBATCH/d;s/^# \{0,1\}//;p}' "$0"
}

# parse_std_args "$@": handles --dry-run, --background, -h/--help; everything after `--` (or the first
# argument that is not an option of ours) goes to EXTRA_ARGS, which launchers pass to the program.
BACKGROUND=0
EXTRA_ARGS=()
parse_std_args() {
    while (($#)); do
        case "$1" in
            --dry-run) DRY_RUN=1 ;;
            --background) BACKGROUND=1 ;;
            -h | --help)
                usage
                exit 0
                ;;
            --)
                shift
                EXTRA_ARGS+=("$@")
                return 0
                ;;
            -*) die "unknown option $1 (pass program arguments after --; see --help)" ;;
            *)
                EXTRA_ARGS+=("$@")
                return 0
                ;;
        esac
        shift
    done
}

# dry_flag: "--dry-run" when in dry-run mode, for passing the mode on to a nested launcher.
dry_flag() { is_dry_run && printf '%s' "--dry-run" || true; }

# split_words VAR_NAME STRING: split a user-supplied *_EXTRA_ARGS string into an array (shell-style words).
split_words() {
    local -n _out="$1"
    _out=()
    [[ -z "${2:-}" ]] && return 0
    read -r -a _out <<<"$2"
}
