#!/usr/bin/env bash
# The wallet's own processes on this machine: edge, ledger, projection, the operator API, the
# reference accounting consumer, the reconciler, and the Quadcode and Swapgate simulators
# standing in for Quadcode and Swapgate. Each runs in the background with a pid file and a log
# under $WALLET_HOME.
#
#   deploy/local/services.sh {start|stop|status} [name...]
#
# Without names it acts on every service. start is a no-op for a service that is already running,
# unless $WALLET_ENV_FILE changed since it started (then it is restarted, to read the new
# settings), and waits until each answers /ready (on the service's operational port: the edge,
# projection and operator API serve /health, /ready and /metrics there, never on their public
# port); stop sends SIGTERM to the pid it started (never by name) and waits for the exit. A pid
# file whose process is gone is stale and simply replaced.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
WALLET_HOME=${WALLET_HOME:-$REPO/.run}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
PIDS=$WALLET_HOME/pids
LOGS=$WALLET_HOME/logs
export WALLET_ENV_FILE=${WALLET_ENV_FILE:-$WALLET_HOME/wallet.env}

KEYS=$WALLET_HOME/keys
EDGE_PORT=${WALLET_EDGE_PORT:-18080}
# The simulator's port is also in WALLET_QUADCODE_BASE_URL, which the Makefile writes.
QUADCODE_SIM_PORT=${QUADCODE_SIM_PORT:-18090}
# Likewise the Swapgate simulator's, in WALLET_SWAPGATE_BASE_URL.
SWAPGATE_SIM_PORT=${SWAPGATE_SIM_PORT:-18091}

# name:module:port:ops port, where /ready is (start order; stop runs in reverse). The ledger, the
# accounting consumer, the reconciler and the simulators serve /ready on their only port.
LEDGER_PORT=${WALLET_LEDGER_PORT:-18082}
SERVICES=(
    "ledger:ledger:$LEDGER_PORT:$LEDGER_PORT"
    "projection:projection:${WALLET_PROJECTION_PORT:-18081}:${WALLET_PROJECTION_OPS_PORT:-18085}"
    "edge:edge:$EDGE_PORT:${WALLET_EDGE_OPS_PORT:-18084}"
    "quadcode-sim:simulators.quadcode:$QUADCODE_SIM_PORT:$QUADCODE_SIM_PORT"
    "swapgate-sim:simulators.swapgate:$SWAPGATE_SIM_PORT:$SWAPGATE_SIM_PORT"
    "operator-api:operator_api:${WALLET_OPERATOR_API_PORT:-18083}:${WALLET_OPERATOR_API_OPS_PORT:-18086}"
    "accounting:accounting:${WALLET_ACCOUNTING_PORT:-18092}:${WALLET_ACCOUNTING_PORT:-18092}"
    "reconciler:reconciler:${WALLET_RECONCILER_PORT:-18093}:${WALLET_RECONCILER_PORT:-18093}"
)

# A WALLET_ setting as the services see it: the environment wins over $WALLET_ENV_FILE.
setting() {
    local name=$1
    if [[ -n ${!name:-} ]]; then
        echo "${!name}"
    elif [[ -f $WALLET_ENV_FILE ]]; then
        sed -n "s/^$name=//p" "$WALLET_ENV_FILE" | tail -n 1
    fi
}

# Command-line arguments of a service (the wallet's own services read only WALLET_ settings).
# The simulator plays Quadcode: it verifies our gateway calls with our public key and the issuer
# and environment we sign with, and signs its callbacks to the edge with "Quadcode's" key.
service_args() {
    ARGS=()
    if [[ $1 == quadcode-sim ]]; then
        ARGS=(
            --host 127.0.0.1 --port "$QUADCODE_SIM_PORT"
            --client-public-key "$KEYS/client-public.pem"
            --issuer "$(setting WALLET_QUADCODE_ISSUER)"
            --audience "$(setting WALLET_QUADCODE_ENVIRONMENT)"
            --qc-private-key "$KEYS/quadcode-private.pem"
            --wallet-base-url "http://127.0.0.1:$EDGE_PORT"
        )
    elif [[ $1 == swapgate-sim ]]; then
        # It plays Swapgate: it knows our API key (the pair the Makefile made; the secret is
        # passed as a file, not on the command line), whitelisted for loopback, and trades the
        # market table of swapgate-market.json. Orders spend 1 s in each stage.
        local public secret_file
        public=$(setting WALLET_SWAPGATE_PUBLIC_KEY)
        secret_file=$(setting WALLET_SWAPGATE_SECRET_KEY_FILE)
        if [[ -z $public || -z $secret_file ]]; then
            echo "services.sh: swapgate-sim needs WALLET_SWAPGATE_PUBLIC_KEY and" \
                "WALLET_SWAPGATE_SECRET_KEY_FILE in $WALLET_ENV_FILE (make keys writes them)" >&2
            exit 1
        fi
        ARGS=(
            --host 127.0.0.1 --port "$SWAPGATE_SIM_PORT"
            --api-public-key "$public" --api-secret-key-file "$secret_file"
            --api-key-white-list-ip 127.0.0.1
            --market-file "$SCRIPT_DIR/swapgate-market.json"
            --step-s 1
        )
    fi
}

# Whether a service was named on the command line (no names: all of them).
selected() {
    local name=$1 wanted
    ((${#NAMES[@]} == 0)) && return 0
    for wanted in "${NAMES[@]}"; do [[ $wanted == "$name" ]] && return 0; done
    return 1
}

alive() {
    local pid=$1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && [[ $(ps -o stat= -p "$pid" 2>/dev/null) != Z* ]]
}

pid_of() {
    local file=$PIDS/$1.pid
    [[ -f $file ]] && cat "$file" || true
}

wait_ready() {
    local name=$1 ops_port=$2 pid=$3
    for _ in $(seq 1 300); do
        if curl -fsS "http://127.0.0.1:$ops_port/ready" >/dev/null 2>&1; then
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

# ", operations on :PORT" when a service's /health, /ready and /metrics have a port of their own.
ops_note() {
    [[ $1 == "$2" ]] || echo ", operations on :$2"
}

# SIGTERM to the pid this script started, then wait (SIGKILL after 30 s).
stop_one() {
    local name=$1 pid
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
}

start() {
    mkdir -p "$PIDS" "$LOGS"
    [[ -f $WALLET_ENV_FILE ]] || { echo "services.sh: $WALLET_ENV_FILE missing (run make run)" >&2; exit 1; }
    for entry in "${SERVICES[@]}"; do
        IFS=: read -r name module port ops_port <<<"$entry"
        selected "$name" || continue
        pid=$(pid_of "$name")
        if alive "$pid"; then
            if [[ ! $WALLET_ENV_FILE -nt $PIDS/$name.pid ]]; then
                echo "$name already running (pid $pid) on http://127.0.0.1:$port$(ops_note "$port" "$ops_port")"
                continue
            fi
            echo "$name: $WALLET_ENV_FILE changed since it started; restarting"
            stop_one "$name"
        fi
        service_args "$name"
        (cd "$REPO" && exec setsid "$PYTHON" -m "$module" "${ARGS[@]}" >>"$LOGS/$name.log" 2>&1) &
        pid=$!
        echo "$pid" >"$PIDS/$name.pid"
        wait_ready "$name" "$ops_port" "$pid"
        echo "$name started (pid $pid) on http://127.0.0.1:$port$(ops_note "$port" "$ops_port")"
    done
}

stop() {
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        IFS=: read -r name _ _ <<<"${SERVICES[$i]}"
        selected "$name" || continue
        stop_one "$name"
    done
}

status() {
    local rc=0
    for entry in "${SERVICES[@]}"; do
        IFS=: read -r name _ port ops_port <<<"$entry"
        selected "$name" || continue
        pid=$(pid_of "$name")
        if alive "$pid"; then
            echo "$name running (pid $pid) on http://127.0.0.1:$port$(ops_note "$port" "$ops_port")"
        else
            echo "$name stopped"
            rc=3
        fi
    done
    return $rc
}

ACTION=${1:-}
NAMES=("${@:2}")
for wanted in "${NAMES[@]}"; do
    known=no
    for entry in "${SERVICES[@]}"; do [[ ${entry%%:*} == "$wanted" ]] && known=yes; done
    [[ $known == yes ]] || { echo "services.sh: unknown service $wanted" >&2; exit 1; }
done

case $ACTION in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 {start|stop|status} [name...]" >&2; exit 1 ;;
esac
