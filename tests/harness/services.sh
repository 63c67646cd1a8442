#!/usr/bin/env bash
# Starts or stops the real services the tests and the demo use, all bound to 127.0.0.1 on
# free ports: a throwaway PostgreSQL cluster, s3rver (an S3 emulator that checks SigV4) and
# the example application with its legacy store.
#
#   tests/harness/services.sh start DIR   # writes DIR/env (KEY=VALUE lines) when all answer
#   tests/harness/services.sh stop DIR    # stops whatever DIR/env says is running
#
# For fault tests, on a private instance only (never the shared fixture's, other tests use
# it): one service stopped and started again on the same port, with its data kept.
#   tests/harness/services.sh pg-stop DIR   # PostgreSQL stopped at once (-m immediate)
#   tests/harness/services.sh pg-start DIR  # started again, returns once it takes connections
#   tests/harness/services.sh s3-stop DIR   # s3rver killed (SIGKILL: an outage, not a drain)
#   tests/harness/services.sh s3-start DIR  # started again; DIR/env gets the new S3_PID
#
# Needs: PostgreSQL 15 server binaries, node, and `npm ci` done in tests/harness/s3rver
# (scripts/deps.sh does all of it). PostgreSQL refuses to run as root, so the cluster runs as
# the `postgres` user in a directory that user owns.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
usage="usage: $0 start|stop|pg-stop|pg-start|s3-stop|s3-start DIR"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "$usage" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bucket=${CUTOVER_TEST_BUCKET:-cutover-test}

free_port() {
    node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});'
}

wait_for() { # wait_for SECONDS COMMAND...: polls until the command succeeds
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

stop_all() {
    [ -f "$dir/env" ] || return 0
    # shellcheck disable=SC1091
    . "$dir/env"
    for p in "${APP_PID:-}" "${S3_PID:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    if [ -n "${PG_DATA:-}" ] && [ -d "$PG_DATA" ]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$(dirname "$PG_DATA")"
    fi
    for p in "${APP_PID:-}" "${S3_PID:-}"; do
        [ -n "$p" ] || continue
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    rm -f "$dir/env"
}

# Reads DIR/env of a running instance; fails when there is none.
load_env() {
    [ -f "$dir/env" ] || { echo "services: no $dir/env" >&2; exit 1; }
    # shellcheck disable=SC1091
    . "$dir/env"
}

pg_start() { # pg_start DATA PORT: the options every start of the cluster uses
    local base
    base=$(dirname "$1")
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$1" -w -l "$base/server.log" \
        -o "-c listen_addresses=127.0.0.1 -c port=$2 -c unix_socket_directories=$base -c fsync=off -c max_connections=200" \
        start >>"$dir/pg_ctl.log" 2>&1
}

s3_start() { # s3_start PORT: s3rver on its data directory; prints its pid
    : >"$dir/s3rver.log"
    NODE_OPTIONS=--openssl-legacy-provider node "$here/s3rver/run.js" "$1" "$dir/s3data" \
        "$bucket,cutover-demo,cutover-bench" >>"$dir/s3rver.log" 2>&1 &
    echo $!
}

case "$cmd" in
stop)
    stop_all
    exit 0
    ;;
pg-stop)
    load_env
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >>"$dir/pg_ctl.log" 2>&1
    exit 0
    ;;
pg-start)
    load_env
    pg_start "$PG_DATA" "$PG_PORT"
    wait_for 30 "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT"
    exit 0
    ;;
s3-stop)
    load_env
    kill -9 "$S3_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$S3_PID" 2>/dev/null || break; sleep 0.05; done
    exit 0
    ;;
s3-start)
    load_env
    port=${S3_ENDPOINT##*:}
    pid=$(s3_start "$port")
    sed -i "s/^S3_PID=.*/S3_PID=$pid/" "$dir/env"
    wait_for 30 grep -q ready "$dir/s3rver.log"
    exit 0
    ;;
start) ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac

stop_all
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
trap 'echo "services: start failed; logs in $dir" >&2; stop_all' ERR

# PostgreSQL
pg_bin=$(pg_config --bindir 2>/dev/null || true)
[ -x "$pg_bin/initdb" ] || pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
pg_data=$(mktemp -d /tmp/cutover-pg-XXXXXX)
chown postgres: "$pg_data"
pg_port=$(free_port)
runuser -u postgres -- "$pg_bin/initdb" -D "$pg_data/data" -U postgres -A trust -E UTF8 \
    --locale=C.UTF-8 -N >"$dir/initdb.log" 2>&1
: >"$dir/pg_ctl.log"
PG_BIN=$pg_bin pg_start "$pg_data/data" "$pg_port"
cat >"$dir/env" <<ENV
SERVICES_DIR=$dir
PG_BIN=$pg_bin
PG_DATA=$pg_data/data
PG_PORT=$pg_port
PG_URL=postgresql://postgres@127.0.0.1:$pg_port/postgres
ENV
wait_for 30 "$pg_bin/pg_isready" -h 127.0.0.1 -p "$pg_port"

# s3rver
[ -d "$here/s3rver/node_modules/@20minutes/s3rver" ] || (cd "$here/s3rver" && npm ci --no-audit --no-fund >/dev/null)
s3_port=$(free_port)
rm -rf "$dir/s3data" && mkdir -p "$dir/s3data"
s3_pid=$(s3_start "$s3_port")
cat >>"$dir/env" <<ENV
S3_PID=$s3_pid
S3_ENDPOINT=http://127.0.0.1:$s3_port
S3_REGION=us-east-1
S3_BUCKET=$bucket
S3_ACCESS_KEY=S3RVER
S3_SECRET_KEY=S3RVER
ENV
wait_for 30 grep -q ready "$dir/s3rver.log"

# the example application and its legacy store
if [ -f "$root/examples/app/server.js" ]; then
    app_port=$(free_port)
    rm -rf "$dir/app" && mkdir -p "$dir/app"
    node "$root/examples/app/server.js" --listen "127.0.0.1:$app_port" --data "$dir/app" \
        >"$dir/app.log" 2>&1 &
    app_pid=$!
    cat >>"$dir/env" <<ENV
APP_PID=$app_pid
APP_URL=http://127.0.0.1:$app_port
LEGACY_URL=http://127.0.0.1:$app_port
APP_DATA=$dir/app
ENV
    wait_for 30 curl -fsS "http://127.0.0.1:$app_port/health"
fi
trap - ERR
echo "services: up ($dir/env)"
