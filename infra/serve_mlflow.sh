#!/usr/bin/env bash
# Start an MLflow tracking server over the project's store, so several jobs (or nodes) log to one place
# and the UI shows them side by side. No server is needed for single-machine use: recipes write the
# sqlite file runs/mlflow.db directly (see `make mlflow-ui`).
#
# usage: infra/serve_mlflow.sh [--dry-run] [--background] [-- extra `mlflow server` args]
#   Then point jobs at it: export MLFLOW_TRACKING_URI=http://$MLFLOW_HOST:$MLFLOW_PORT
#
# Environment (defaults in brackets):
#   MLFLOW_BACKEND            sqlite | postgresql [sqlite]
#   MLFLOW_DB                 sqlite file [runs/mlflow.db, or $RUNS_DIR/mlflow.db]
#   MLFLOW_PG_HOST / MLFLOW_PG_PORT / MLFLOW_PG_DB / MLFLOW_PG_USER
#                             PostgreSQL location [localhost / 5432 / mlflow / mlflow]; the password is read
#                             by libpq from PGPASSWORD or ~/.pgpass and never appears on the command line;
#                             needs `pip install psycopg2-binary` in the server's environment
#   MLFLOW_BACKEND_STORE_URI  full backend URI; overrides the three settings above [unset]
#   MLFLOW_ARTIFACTS_DIR      where the server stores artifacts it proxies [runs/mlartifacts]
#   MLFLOW_HOST               bind address [127.0.0.1]; 0.0.0.0 only behind a firewall or proxy
#   MLFLOW_PORT               [5000]
#   MLFLOW_WORKERS            server worker processes [2]
#   MLFLOW_WAIT_TIMEOUT       seconds --background waits for /health [120]
#   PYTHON, LOG_DIR           as in lib.sh (`mlflow` is taken from $PYTHON's folder)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_std_args "$@"

RUNS_ROOT="${RUNS_DIR:-$REPO_ROOT/runs}"
MLFLOW_BACKEND="${MLFLOW_BACKEND:-sqlite}"
MLFLOW_HOST="${MLFLOW_HOST:-127.0.0.1}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
MLFLOW_WORKERS="${MLFLOW_WORKERS:-2}"
MLFLOW_ARTIFACTS_DIR="${MLFLOW_ARTIFACTS_DIR:-$RUNS_ROOT/mlartifacts}"
MLFLOW_WAIT_TIMEOUT="${MLFLOW_WAIT_TIMEOUT:-120}"
one_of "$MLFLOW_BACKEND" MLFLOW_BACKEND sqlite postgresql

if [[ -n "${MLFLOW_BACKEND_STORE_URI:-}" ]]; then
    [[ "$MLFLOW_BACKEND_STORE_URI" =~ ://[^/@]*:[^/@]*@ ]] &&
        die "MLFLOW_BACKEND_STORE_URI carries a password; put it in PGPASSWORD or ~/.pgpass instead"
    backend_uri="$MLFLOW_BACKEND_STORE_URI"
elif [[ "$MLFLOW_BACKEND" == sqlite ]]; then
    MLFLOW_DB="${MLFLOW_DB:-$RUNS_ROOT/mlflow.db}"
    [[ "$MLFLOW_DB" == /* ]] || MLFLOW_DB="$PWD/$MLFLOW_DB"
    backend_uri="sqlite:///$MLFLOW_DB"
    if ! is_dry_run; then mkdir -p "$(dirname "$MLFLOW_DB")"; fi
else
    backend_uri="postgresql://${MLFLOW_PG_USER:-mlflow}@${MLFLOW_PG_HOST:-localhost}:${MLFLOW_PG_PORT:-5432}/${MLFLOW_PG_DB:-mlflow}"
    if ! is_dry_run; then
        "$PYTHON" -c 'import psycopg2' 2>/dev/null ||
            die "the postgresql backend needs psycopg2 in $PYTHON's environment: $PYTHON -m pip install psycopg2-binary"
    fi
fi
if ! is_dry_run; then mkdir -p "$MLFLOW_ARTIFACTS_DIR"; fi

server=("$(venv_bin mlflow)" server --backend-store-uri "$backend_uri"
    --artifacts-destination "$MLFLOW_ARTIFACTS_DIR" --serve-artifacts
    --host "$MLFLOW_HOST" --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS")
server+=("${EXTRA_ARGS[@]}")

health="http://127.0.0.1:$MLFLOW_PORT/health"
[[ "$MLFLOW_HOST" != 0.0.0.0 && "$MLFLOW_HOST" != "::" ]] && health="http://$MLFLOW_HOST:$MLFLOW_PORT/health"

if [[ "$BACKGROUND" == 1 ]]; then
    logfile="$LOG_DIR/mlflow-$MLFLOW_PORT.log"
    run_bg "$logfile" "${server[@]}"
    write_pidfile "mlflow-$MLFLOW_PORT" "$BG_PID"
    wait_for_http "$health" "$MLFLOW_WAIT_TIMEOUT" "$BG_PID" "$logfile"
    note "MLflow ${BG_PID:+(pid $BG_PID) }at ${health%/health}; export MLFLOW_TRACKING_URI=${health%/health}"
else
    note "MLflow UI and tracking API at ${health%/health}"
    run_exec "${server[@]}"
fi
