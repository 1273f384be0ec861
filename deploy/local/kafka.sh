#!/usr/bin/env bash
# Local development Kafka (real Apache Kafka, single KRaft node) for the wallet ledger.
#
#   deploy/local/kafka.sh {fetch|start|stop|status|reset [--all]}
#
# The broker jars come from Maven Central via deploy/kafka/pom.xml (no tarball download needed).
# State lives in ${WALLET_HOME:-<repo>/.run}/kafka; the broker listens on
# 127.0.0.1:${WALLET_KAFKA_PORT:-29092} (controller: ${WALLET_KAFKA_CONTROLLER_PORT:-29093}) only.
# Every command is idempotent and safe after a machine restart (stale pid files are ignored).
#
# Environment:
#   WALLET_HOME                   state root (default <repo>/.run)
#   WALLET_KAFKA_PORT             broker port (29092)
#   WALLET_KAFKA_CONTROLLER_PORT  KRaft controller port (29093)
#   WALLET_KAFKA_SERVER_PROPERTIES  a file of extra broker properties, appended to the generated
#                                   server.properties (later lines win)
#   WALLET_KAFKA_LIBS             use/fill this jar dir instead of <state>/libs (lets a second
#                                 instance, e.g. the integration tests, share the fetched jars)
#   WALLET_TOPIC_PREFIX           prefix of the project topics that start creates
#   PYTHON                        interpreter with the project installed (<repo>/.venv/bin/python)
#
# Exit codes: 0 ok (status: running), 3 status: stopped, 1 anything else.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
KAFKA_VERSION=3.9.1 # keep in sync with kafka.version in deploy/kafka/pom.xml
POM=$REPO/deploy/kafka/pom.xml
LOG4J_CONFIG=$REPO/deploy/kafka/log4j.properties

WALLET_HOME=${WALLET_HOME:-$REPO/.run}
STATE=$WALLET_HOME/kafka
LIBS=${WALLET_KAFKA_LIBS:-$STATE/libs}
DATA=$STATE/data
LOGS=$STATE/logs
CONF=$STATE/server.properties
PIDFILE=$STATE/kafka.pid
OUT=$LOGS/kafka.out
MARKER=$LIBS/.fetched-kafka-$KAFKA_VERSION
PORT=${WALLET_KAFKA_PORT:-29092}
CONTROLLER_PORT=${WALLET_KAFKA_CONTROLLER_PORT:-29093}
BOOTSTRAP=127.0.0.1:$PORT
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
READY_TIMEOUT=90
STOP_TIMEOUT=60
# The broker's heap is capped: the dev box also runs Postgres, the services and the tests.
HEAP_OPTS=(-Xms512m -Xmx512m)
# Kafka's own defaults from kafka-run-class.sh.
JVM_OPTS=(-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true)

die() {
    echo "kafka.sh: $*" >&2
    exit 1
}

log() {
    echo "kafka.sh: $*" >&2
}

java_bin() {
    if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
        printf '%s' "$JAVA_HOME/bin/java"
    elif command -v java >/dev/null 2>&1; then
        command -v java
    else
        die "no java found (install a JDK/JRE 17, e.g. Debian's openjdk-17-jre-headless)"
    fi
}

# --- process state ----------------------------------------------------------------------------
# A process counts as alive unless it is gone or a zombie (kill -0 succeeds on zombies).
alive() {
    local pid=$1 state
    kill -0 "$pid" 2>/dev/null || return 1
    # Field 3 of /proc/<pid>/stat, read after the ")" that closes the command name.
    state=$(sed -n 's/^.*) \([A-Za-z]\).*$/\1/p' "/proc/$pid/stat" 2>/dev/null || true)
    [[ -n $state && $state != Z ]]
}

# The pid of *our* broker, or nothing. The pid file alone proves nothing after a restart (the
# pid may now belong to any process), so the live process must be a java running kafka.Kafka
# with this state dir's server.properties.
broker_pid() {
    [[ -f $PIDFILE ]] || return 0
    local pid cmdline
    pid=$(head -n1 "$PIDFILE" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    alive "$pid" || return 0
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    if [[ $cmdline == *java* && $cmdline == *" kafka.Kafka "* && $cmdline == *" $CONF"* ]]; then
        printf '%s' "$pid"
    fi
}

clean_stale_pidfile() {
    if [[ -f $PIDFILE && -z $(broker_pid) ]]; then
        log "removing stale pid file $PIDFILE ($(head -c 32 "$PIDFILE" 2>/dev/null | tr -d '\n'))"
        rm -f "$PIDFILE"
    fi
}

port_in_use() {
    # bash's /dev/tcp: connecting succeeds only if something listens there.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

show_logs() {
    local f
    for f in "$OUT" "$LOGS/server.log"; do
        if [[ -s $f ]]; then
            echo "----- last lines of $f -----" >&2
            tail -n 40 "$f" >&2
        fi
    done
}

# --- commands ---------------------------------------------------------------------------------
cmd_fetch() {
    if [[ -f $MARKER ]] && compgen -G "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null; then
        log "kafka $KAFKA_VERSION jars already in $LIBS"
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "mvn not found (install Debian's maven package)"
    log "fetching kafka $KAFKA_VERSION jars from Maven Central into $LIBS"
    # Fetch into a scratch dir and swap it in, so an interrupted fetch never looks complete.
    local tmp=$LIBS.partial.$$
    rm -rf "$tmp"
    mkdir -p "$(dirname "$LIBS")"
    # Maven's output goes to a file: even with -q it emits stray colour escapes on success, and
    # it prints its errors on stdout; they are shown only when the fetch fails.
    local mvn_log
    mvn_log=$(dirname "$LIBS")/fetch.log
    if ! mvn -q -B -Dstyle.color=never dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$tmp" -f "$POM" >"$mvn_log" 2>&1; then
        tail -n 40 "$mvn_log" >&2
        rm -rf "$tmp"
        die "maven could not fetch the kafka jars (is Maven Central reachable? see $mvn_log)"
    fi
    compgen -G "$tmp/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null || die "fetch produced no kafka_2.13-$KAFKA_VERSION.jar"
    touch "$tmp/.fetched-kafka-$KAFKA_VERSION"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars"
}

write_config() {
    # Rewritten on every start: it only derives from the environment (ports, state dir).
    cat >"$CONF.tmp" <<EOF
# Generated by deploy/local/kafka.sh on every start; edit the script, not this file.
# Single-node KRaft cluster: this one JVM is both broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
# Topics are created explicitly (kafka_admin ensure-topics) with the project's partition counts;
# a typo in a topic name must fail loudly instead of silently creating a 1-partition topic.
auto.create.topics.enable=false
# Thread pools sized for a small machine (the development box has two cores and also runs
# Postgres and the services): Kafka's defaults (3 network, 8 I/O, 10 background threads) only
# add hand-offs between threads there. Side by side on the callback benchmark at 1,000/s the
# broker used 29-31 % of a core with these against 31-38 % with the defaults.
num.network.threads=1
num.io.threads=2
background.threads=2
EOF
    if [[ -n ${WALLET_KAFKA_SERVER_PROPERTIES:-} ]]; then
        { echo "# from $WALLET_KAFKA_SERVER_PROPERTIES"; cat "$WALLET_KAFKA_SERVER_PROPERTIES"; } >>"$CONF.tmp"
    fi
    mv "$CONF.tmp" "$CONF"
}

run_tool() {
    # Kafka's CLI tools, with the broker's logging config so they do not warn about log4j.
    "$JAVA" -Xmx256m -Dkafka.logs.dir="$LOGS" -Dlog4j.configuration="file:$LOG4J_CONFIG" \
        -cp "$LIBS/*" "$@"
}

format_storage() {
    [[ -f $DATA/meta.properties ]] && return 0
    local cluster_id
    cluster_id=$(run_tool kafka.tools.StorageTool random-uuid 2>>"$LOGS/format.log" | tail -n1)
    [[ -n $cluster_id ]] || die "StorageTool random-uuid printed nothing (see $LOGS/format.log)"
    log "formatting $DATA (cluster id $cluster_id)"
    run_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$CONF" >>"$LOGS/format.log" 2>&1 \
        || { tail -n 20 "$LOGS/format.log" >&2; die "storage format failed (see $LOGS/format.log)"; }
}

launch_broker() {
    local p
    for p in "$PORT" "$CONTROLLER_PORT"; do
        if port_in_use "$p"; then
            die "127.0.0.1:$p is already in use by another process (not our broker)"
        fi
    done
    log "starting kafka $KAFKA_VERSION on $BOOTSTRAP (logs: $LOGS)"
    # setsid: own session, so the broker survives this shell and a Ctrl-C in the terminal.
    # The wrapper shell writes its own pid and then execs java, so the pid file holds the JVM's
    # pid whether or not setsid had to fork. fd 9 (our flock) is not passed on.
    : >"$OUT"
    # shellcheck disable=SC2016 # $$ and $@ are for the inner shell
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' kafka-launch "$PIDFILE" \
        "$JAVA" "${HEAP_OPTS[@]}" "${JVM_OPTS[@]}" \
        -Dkafka.logs.dir="$LOGS" -Dlog4j.configuration="file:$LOG4J_CONFIG" \
        -cp "$LIBS/*" kafka.Kafka "$CONF" \
        </dev/null >>"$OUT" 2>&1 9>&- &
    # Wait for the pid file (written by the wrapper before exec) and make sure it is our JVM.
    local i pid=""
    for ((i = 0; i < 50; i++)); do
        pid=$(broker_pid)
        [[ -n $pid ]] && break
        sleep 0.1
    done
    if [[ -z $pid ]]; then
        show_logs
        rm -f "$PIDFILE"
        die "the broker process exited right away"
    fi
    log "broker pid $pid"
}

kafka_admin() {
    [[ -x $PYTHON ]] || die "python not found at $PYTHON (set PYTHON or create the venv)"
    "$PYTHON" -m wallet_platform.kafka_admin "$@"
}

cmd_start() {
    JAVA=$(java_bin)
    mkdir -p "$STATE" "$DATA" "$LOGS"
    cmd_fetch
    local pid
    pid=$(broker_pid)
    if [[ -n $pid ]]; then
        echo "kafka already running (pid $pid)"
    else
        clean_stale_pidfile
        write_config
        format_storage
        launch_broker
        pid=$(broker_pid)
    fi
    if ! kafka_admin wait --bootstrap "$BOOTSTRAP" --timeout "$READY_TIMEOUT" --pid "$pid"; then
        show_logs
        if [[ -n $(broker_pid) ]]; then
            die "broker (pid $pid) did not answer on $BOOTSTRAP within ${READY_TIMEOUT}s; it is still running ('$0 stop' to stop it)"
        fi
        rm -f "$PIDFILE"
        die "broker (pid $pid) exited before answering on $BOOTSTRAP"
    fi
    kafka_admin ensure-topics --bootstrap "$BOOTSTRAP" --timeout "$READY_TIMEOUT" \
        --prefix "${WALLET_TOPIC_PREFIX:-}" || die "could not create the project topics"
    echo "kafka running (pid $pid) on $BOOTSTRAP"
}

cmd_stop() {
    local pid
    pid=$(broker_pid)
    if [[ -z $pid ]]; then
        clean_stale_pidfile
        echo "kafka not running"
        return 0
    fi
    # SIGTERM triggers the broker's controlled shutdown (flushes logs, clean-shutdown marker).
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "broker (pid $pid) still alive after ${STOP_TIMEOUT}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            die "broker (pid $pid) survived SIGKILL"
        fi
    fi
    rm -f "$PIDFILE"
    echo "kafka stopped (was pid $pid)"
}

cmd_status() {
    local pid
    pid=$(broker_pid)
    if [[ -n $pid ]]; then
        echo "kafka running (pid $pid) on $BOOTSTRAP, state $STATE"
        return 0
    fi
    echo "kafka stopped"
    return 3
}

cmd_reset() {
    local all=${1:-}
    [[ -z $all || $all == --all ]] || die "usage: $0 reset [--all]"
    cmd_stop
    rm -rf "$DATA" "$LOGS" "$CONF" "$CONF.tmp" "$PIDFILE"
    if [[ $all == --all ]]; then
        # Only our own jar dir: a shared WALLET_KAFKA_LIBS belongs to another instance.
        rm -rf "$STATE"
        echo "kafka state and jars removed ($STATE)"
    else
        echo "kafka data and logs removed (jars kept in $LIBS)"
    fi
}

# Serialise start/stop/reset/fetch of one state dir (two terminals, a test and a Makefile racing).
take_lock() {
    mkdir -p "$WALLET_HOME"
    exec 9>"$WALLET_HOME/.kafka.lock"
    flock -w 180 9 || die "timed out waiting for $WALLET_HOME/.kafka.lock"
}

main() {
    local cmd=${1:-}
    case $cmd in
        fetch | start | stop | reset) take_lock ;;
    esac
    case $cmd in
        fetch) cmd_fetch ;;
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        reset) cmd_reset "${2:-}" ;;
        *)
            echo "usage: $0 {fetch|start|stop|status|reset [--all]}" >&2
            exit 1
            ;;
    esac
}

main "$@"
