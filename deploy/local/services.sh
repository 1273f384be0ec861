#!/usr/bin/env bash
# The wallet's own processes on this machine: edge, ledger, projection (and the simulators, when
# present). Each runs in the background with a pid file and a log under $WALLET_HOME.
#
#   deploy/local/services.sh {start|stop|status}
#
# start is a no-op for a service that is already running, and waits until each answers /ready;
# stop sends SIGTERM to the pid it started (never by name) and waits for the exit.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
WALLET_HOME=${WALLET_HOME:-$REPO/.run}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
PIDS=$WALLET_HOME/pids
LOGS=$WALLET_HOME/logs
export WALLET_ENV_FILE=${WALLET_ENV_FILE:-$WALLET_HOME/wallet.env}

# name:module:port (start order; stop runs in reverse)
SERVICES=(
    "ledger:ledger:${WALLET_LEDGER_PORT:-18082}"
    "projection:projection:${WALLET_PROJECTION_PORT:-18081}"
    "edge:edge:${WALLET_EDGE_PORT:-18080}"
)

alive() {
    local pid=$1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && [[ $(ps -o stat= -p "$pid" 2>/dev/null) != Z* ]]
}

pid_of() {
    local file=$PIDS/$1.pid
    [[ -f $file ]] && cat "$file" || true
}

wait_ready() {
    local name=$1 port=$2 pid=$3
    for _ in $(seq 1 300); do
        if curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1; then
            return 0
        fi
        if ! alive "$pid"; then
            echo "services.sh: $name exited during start; last lines of $LOGS/$name.log:" >&2
            tail -n 30 "$LOGS/$name.log" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "services.sh: $name not ready after 60 s (see $LOGS/$name.log)" >&2
    return 1
}

start() {
    mkdir -p "$PIDS" "$LOGS"
    [[ -f $WALLET_ENV_FILE ]] || { echo "services.sh: $WALLET_ENV_FILE missing (run make run)" >&2; exit 1; }
    for entry in "${SERVICES[@]}"; do
        IFS=: read -r name module port <<<"$entry"
        pid=$(pid_of "$name")
        if alive "$pid"; then
            echo "$name already running (pid $pid) on http://127.0.0.1:$port"
            continue
        fi
        (cd "$REPO" && exec setsid "$PYTHON" -m "$module" >>"$LOGS/$name.log" 2>&1) &
        pid=$!
        echo "$pid" >"$PIDS/$name.pid"
        wait_ready "$name" "$port" "$pid"
        echo "$name started (pid $pid) on http://127.0.0.1:$port"
    done
}

stop() {
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        IFS=: read -r name _ _ <<<"${SERVICES[$i]}"
        pid=$(pid_of "$name")
        if alive "$pid"; then
            kill -TERM "$pid"
            for _ in $(seq 1 150); do alive "$pid" || break; sleep 0.2; done
            if alive "$pid"; then
                echo "services.sh: $name did not stop in 30 s; killing pid $pid" >&2
                kill -KILL "$pid" || true
            fi
            echo "$name stopped"
        fi
        rm -f "$PIDS/$name.pid"
    done
}

status() {
    local rc=0
    for entry in "${SERVICES[@]}"; do
        IFS=: read -r name _ port <<<"$entry"
        pid=$(pid_of "$name")
        if alive "$pid"; then
            echo "$name running (pid $pid) on http://127.0.0.1:$port"
        else
            echo "$name stopped"
            rc=3
        fi
    done
    return $rc
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 {start|stop|status}" >&2; exit 1 ;;
esac
