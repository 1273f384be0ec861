#!/usr/bin/env bash
# Local development PostgreSQL for the wallet ledger.
#
#   deploy/local/postgres.sh {start|stop|status|reset}
#
# One private cluster per state dir, ${WALLET_HOME:-<repo>/.run}/postgres, listening on
# 127.0.0.1:${WALLET_PG_PORT:-25432} only. Every command is idempotent and safe to re-run after a
# machine restart (stale postmaster.pid / socket lock files are cleaned up).
#
# Exit codes: 0 ok (status: running), 3 status: stopped, 1 anything else.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
WALLET_HOME=${WALLET_HOME:-$REPO/.run}
STATE=$WALLET_HOME/postgres
DATA=$STATE/data
LOG_DIR=$STATE/log
LOG=$LOG_DIR/postgres.log
PORT=${WALLET_PG_PORT:-25432}
DB_NAME=wallet
DB_ROLE=wallet
# Postgres refuses to run as root; when we are root, every server-side command runs as this user.
PG_OS_USER=postgres

die() {
    echo "postgres.sh: $*" >&2
    exit 1
}

# --- socket directory -------------------------------------------------------------------------
# A unix socket path is limited to ~107 bytes (sun_path); a deep WALLET_HOME would push
# "<dir>/.s.PGSQL.<port>" over it and the server would refuse to start. Fall back to a short,
# per-state-dir directory under /tmp in that case.
socket_dir() {
    local dir=$STATE/sock
    if ((${#dir} + ${#PORT} + 10 > 100)); then
        local hash
        hash=$(printf '%s' "$STATE" | sha1sum | cut -c1-12)
        dir=/tmp/wallet-pg-$hash
    fi
    printf '%s' "$dir"
}
SOCK_DIR=$(socket_dir)

# --- binaries ---------------------------------------------------------------------------------
find_pg_bin() {
    # Highest installed major version that has a server binary.
    local dir best=""
    for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V); do
        [[ -x $dir/postgres && -x $dir/initdb && -x $dir/pg_ctl ]] && best=$dir
    done
    printf '%s' "$best"
}

ensure_pg_installed() {
    PG_BIN=$(find_pg_bin)
    [[ -n $PG_BIN ]] && return 0
    [[ $EUID -eq 0 ]] || die "no PostgreSQL server under /usr/lib/postgresql/*/bin and not root: install Debian's 'postgresql' package"
    echo "postgres.sh: installing Debian's postgresql package" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Try without refreshing the index first (fast, works offline with a warm apt cache).
    if ! apt-get install -y -q --no-install-recommends postgresql >&2; then
        apt-get update -q >&2
        apt-get install -y -q --no-install-recommends postgresql >&2
    fi
    PG_BIN=$(find_pg_bin)
    [[ -n $PG_BIN ]] || die "installed postgresql but found no server binaries under /usr/lib/postgresql/*/bin"
}

# Run a server-side command as the postgres OS user (or as ourselves when not root). cd / first:
# the postgres user may not be allowed into the caller's working directory (e.g. /root), and
# initdb/pg_ctl complain when they cannot resolve it.
# fd 9 (our flock) is closed for the child: a postmaster inheriting it would hold the lock forever.
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        (cd / && runuser -u "$PG_OS_USER" -- "$@" 9>&-)
    else
        (cd / && "$@" 9>&-)
    fi
}

# mkdir -p that also makes every directory it newly creates traversable (o+x) for the postgres
# user. Existing directories are left alone: we never loosen permissions on dirs we do not own.
mkdir_traversable() {
    local target=$1 missing=() d=$1
    while [[ ! -d $d ]]; do
        missing+=("$d")
        d=$(dirname "$d")
    done
    mkdir -p "$target"
    local m
    for m in "${missing[@]}"; do
        chmod o+x "$m"
    done
}

# Directories the postgres user must own (data, log, socket).
pg_owned_dir() {
    local dir=$1 mode=$2
    mkdir -p "$dir"
    if [[ $EUID -eq 0 ]]; then
        chown "$PG_OS_USER:" "$dir"
    fi
    chmod "$mode" "$dir"
}

prepare_dirs() {
    mkdir_traversable "$STATE"
    if [[ $EUID -eq 0 ]] && ! runuser -u "$PG_OS_USER" -- test -x "$STATE"; then
        die "the '$PG_OS_USER' user cannot reach $STATE (a parent directory is not traversable); choose another WALLET_HOME"
    fi
    pg_owned_dir "$DATA" 0700
    pg_owned_dir "$LOG_DIR" 0755
    pg_owned_dir "$SOCK_DIR" 0755
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

# The pid of our live postmaster, or nothing. A pid in postmaster.pid only counts if that process
# is a postgres server for *this* data dir: after a machine restart the pid may belong to anything.
server_pid() {
    local pidfile=$DATA/postmaster.pid pid
    [[ -f $pidfile ]] || return 0
    pid=$(head -n1 "$pidfile" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    alive "$pid" || return 0
    local comm cmdline
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    if [[ $comm == postgres* && $cmdline == *"$DATA"* ]]; then
        printf '%s' "$pid"
    fi
}

# Live processes whose working directory is our data dir: every postgres process chdirs there.
# After "kill -9 <postmaster>" its backends can outlive it for a while.
data_dir_users() {
    local p pids=() real
    real=$(realpath -m "$DATA") # /proc/<pid>/cwd is always the resolved path
    for p in /proc/[0-9]*; do
        [[ $(readlink "$p/cwd" 2>/dev/null || true) == "$real" ]] || continue
        alive "${p#/proc/}" && pids+=("${p#/proc/}")
    done
    printf '%s' "${pids[*]}"
}

clean_stale_files() {
    # Only called when no server of ours is running: whatever lock files remain are leftovers
    # of a killed server (power loss, OOM, container restart) and would block the next start
    # if their pid has been reused. postmaster.pid is also Postgres's guard against two sets of
    # processes sharing one data dir, so never remove it while old processes still use the dir.
    local users
    users=$(data_dir_users)
    if [[ -n $users ]]; then
        die "no postmaster, but leftover postgres processes still use $DATA (pids: $users); they exit on their own shortly after a crash - retry, or stop them"
    fi
    if [[ -f $DATA/postmaster.pid ]]; then
        echo "postgres.sh: removing stale $DATA/postmaster.pid" >&2
        rm -f "$DATA/postmaster.pid"
    fi
    rm -f "$SOCK_DIR/.s.PGSQL.$PORT" "$SOCK_DIR/.s.PGSQL.$PORT.lock"
}

# --- cluster setup ----------------------------------------------------------------------------
init_cluster() {
    [[ -f $DATA/PG_VERSION ]] && return 0
    echo "postgres.sh: initdb $DATA" >&2
    # trust auth: this is a throwaway development cluster that only listens on loopback and on a
    # private unix socket; pg_hba.conf's host lines from initdb cover 127.0.0.1/32 and ::1/128 only.
    as_pg "$PG_BIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C \
        --auth-local=trust --auth-host=trust >"$STATE/initdb.log" 2>&1 \
        || { tail -n 30 "$STATE/initdb.log" >&2; die "initdb failed (see $STATE/initdb.log)"; }
}

# Project settings live in a marked block at the end of postgresql.conf (later lines win). The
# block is rewritten on every start so a changed WALLET_PG_PORT or socket dir takes effect.
# fsync and synchronous_commit are deliberately NOT touched: they stay ON (the defaults) so the
# dev cluster has the same durability semantics as production.
write_config() {
    local conf=$DATA/postgresql.conf
    local block
    block=$(
        cat <<EOF
# BEGIN wallet-local (managed by deploy/local/postgres.sh, rewritten on every start)
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCK_DIR'
max_connections = 200
shared_buffers = 256MB
# END wallet-local
EOF
    )
    local current wanted
    current=$(cat "$conf")
    wanted=$(sed '/^# BEGIN wallet-local/,/^# END wallet-local/d' "$conf")$'\n'$block
    [[ $current == "$wanted" ]] && return 0
    # Write through the postgres user so the file keeps its owner and mode.
    printf '%s\n' "$wanted" | as_pg tee "$conf.wallet-new" >/dev/null
    as_pg mv "$conf.wallet-new" "$conf"
}

psql_admin() {
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK_DIR" -p "$PORT" -U postgres -d postgres
}

ensure_role_and_db() {
    psql_admin <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_ROLE') THEN
        CREATE ROLE $DB_ROLE LOGIN CREATEDB;
    END IF;
END
\$\$;
ALTER ROLE $DB_ROLE LOGIN CREATEDB;
SELECT 'CREATE DATABASE $DB_NAME OWNER $DB_ROLE ENCODING ''UTF8'' TEMPLATE template0'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB_NAME') \gexec
SQL
}

dsn() {
    printf 'postgresql://%s@127.0.0.1:%s/%s' "$DB_ROLE" "$PORT" "$DB_NAME"
}

# --- commands ---------------------------------------------------------------------------------
cmd_start() {
    ensure_pg_installed
    prepare_dirs
    local pid
    pid=$(server_pid)
    if [[ -n $pid ]]; then
        echo "postgres already running (pid $pid)"
    else
        clean_stale_files
        init_cluster
        write_config
        echo "postgres.sh: starting on 127.0.0.1:$PORT (log: $LOG)" >&2
        if ! as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null; then
            tail -n 30 "$LOG" >&2 || true
            die "pg_ctl start failed (see $LOG)"
        fi
        pid=$(server_pid)
        [[ -n $pid ]] || die "pg_ctl reported success but no postmaster is running (see $LOG)"
        echo "postgres started (pid $pid)"
    fi
    ensure_role_and_db
    dsn
    echo
}

cmd_stop() {
    local pid
    pid=$(server_pid)
    if [[ -z $pid ]]; then
        [[ -d $DATA ]] && clean_stale_files
        echo "postgres not running"
        return 0
    fi
    PG_BIN=$(find_pg_bin)
    if ! as_pg "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null; then
        # A fast shutdown that hangs (stuck client, I/O) must not leave a server behind.
        echo "postgres.sh: fast shutdown timed out, using immediate" >&2
        as_pg "$PG_BIN/pg_ctl" -D "$DATA" -m immediate -w -t 30 stop >/dev/null || true
    fi
    local i
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        die "postmaster $pid still alive after stop"
    fi
    echo "postgres stopped (was pid $pid)"
}

cmd_status() {
    local pid
    pid=$(server_pid)
    if [[ -n $pid ]]; then
        echo "postgres running (pid $pid) on 127.0.0.1:$PORT, data $DATA, dsn $(dsn)"
        return 0
    fi
    echo "postgres stopped"
    return 3
}

cmd_reset() {
    cmd_stop
    rm -rf "$STATE"
    # The /tmp fallback socket dir (long WALLET_HOME) lives outside the state dir.
    if [[ $SOCK_DIR == /tmp/wallet-pg-* ]]; then
        rm -rf "$SOCK_DIR"
    fi
    echo "postgres state removed ($STATE)"
}

# Serialise start/stop/reset of one state dir (two terminals, a test and a Makefile racing).
take_lock() {
    mkdir_traversable "$WALLET_HOME"
    exec 9>"$WALLET_HOME/.postgres.lock"
    flock -w 120 9 || die "timed out waiting for $WALLET_HOME/.postgres.lock"
}

main() {
    local cmd=${1:-}
    case $cmd in
        start | stop | reset) take_lock ;;
    esac
    case $cmd in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        reset) cmd_reset ;;
        *)
            echo "usage: $0 {start|stop|status|reset}" >&2
            exit 1
            ;;
    esac
}

main "$@"
