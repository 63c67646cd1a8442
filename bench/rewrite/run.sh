#!/usr/bin/env bash
# bench/rewrite/run.sh: signed-URL reads direct to the app, through `cutover proxy` with the
# rewrite off (read_from_s3 percent 0: pass-through) and on (percent 100, document state
# cached), in one table: requests/s, p50, p99.
#
# The "app" is nginx answering every GET /documents/{key}/url with a small JSON answer holding
# a legacy URL, so that the figures show what cutover adds rather than the app's own cost (the
# example app in node would be the bottleneck). PostgreSQL comes from tests/harness/services.sh;
# each cutover has a database of its own with one `verified` document, so its flags are its
# own. The rewrite-on target parses the app's JSON answer, presigns an S3 URL (SigV4 query
# signing, no S3 call) and re-encodes the answer; its state lookups are cache hits after the
# first read. The load is wrk (as in bench/proxy/run.sh), closed loop, X-User-Id set; every
# target is measured --rounds times, targets taking turns within each round, medians printed.
#
# Goal (issue 10): under 100 µs added at p50 by the rewrite (on - off), and rewrite-on
# throughput at least 0.9 × pass-through.
#
# Usage: bench/rewrite/run.sh [--duration S] [--connections N] [--threads T] [--rounds R]
# Environment: CUTOVER_BIN (default: build-proxy/cmd/cutover, built if missing);
# BENCH_PERF=FILE records a 5 s `perf record -g` profile of the rewrite-on cutover afterwards.
# BENCH_CALLGRIND=N instead runs both cutovers under valgrind --tool=callgrind, sends each N
# reads one after another on one connection (no wrk), and prints instructions per read: the
# whole process's (on and off) and the rewrite hooks' own (inclusive). Instruction counts do
# not depend on the machine's load, so they compare builds where timings cannot.
# Needs: wrk, nginx, PostgreSQL 15 server binaries, node (services.sh). Everything binds to
# 127.0.0.1 and everything started here is stopped on exit.
set -euo pipefail

DUR=10
CONNS=32
THREADS=1
ROUNDS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DUR=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/bench/lib.sh"
bench_cutover "$ROOT/build-proxy"
for c in wrk nginx; do command -v $c >/dev/null || { echo "needs $c" >&2; exit 1; }; done

T=$(mktemp -d /tmp/cutover-rbench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  "$ROOT/tests/harness/services.sh" stop "$T/svc" >/dev/null 2>&1 || true
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

echo "starting PostgreSQL (services.sh)..." >&2
timeout 120 "$ROOT/tests/harness/services.sh" start "$T/svc" >/dev/null
# shellcheck disable=SC1091
. "$T/svc/env"
PSQL=(env PGCONNECT_TIMEOUT=10 "$PG_BIN/psql" -X -q -t -A -v ON_ERROR_STOP=1)

APP=$(free_port)
KEY=org-1/bench-document.pdf
mkdir -p "$T/app"
cat > "$T/app/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $T/app/error.log crit;
pid $T/app/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $T/app; proxy_temp_path $T/app; fastcgi_temp_path $T/app;
  uwsgi_temp_path $T/app; scgi_temp_path $T/app;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$APP;
    location /documents/ { default_type application/json;
      return 200 '{"url":"https://legacy.example.com/delivery/org-1/bench-document.pdf?expires=1900000000&sig=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","expires_at":1900000000}'; }
  }
}
CONF
nginx -c "$T/app/nginx.conf" -p "$T/app" & PIDS+=($!)

# start_cutover NAME PERCENT: its own database with one verified document; sets PORT (not in
# a subshell, so that its pid reaches PIDS and the cleanup)
start_cutover() {
  local name=$1 pct=$2 port adm db
  port=$(free_port); adm=$(free_port)
  "${PSQL[@]}" "$PG_URL" -c "CREATE DATABASE rbench_$name" >/dev/null
  db="postgresql://postgres@127.0.0.1:$PG_PORT/rbench_$name"
  cat > "$T/$name.json" <<CONF
{"listen": "127.0.0.1:$port", "upstream": "http://127.0.0.1:$APP",
 "admin": {"listen": "127.0.0.1:$adm", "token": "bench-admin-token"},
 "database_url": "$db", "spool_dir": "$T",
 "log": {"level": "warn", "access": false},
 "s3": {"endpoint": "$S3_ENDPOINT", "region": "$S3_REGION", "bucket": "cutover-bench",
        "path_style": true, "access_key_id": "$S3_ACCESS_KEY", "secret_access_key": "$S3_SECRET_KEY"},
 "routes": [
  {"name": "signed-url", "kind": "signed_url", "path": "/documents/{key}/url",
   "url": {"response_json": "/url"}, "sticky": {"header": "X-User-Id"}}],
 "flags": {"read_from_s3": {"percent": $pct}}}
CONF
  timeout 60 "$BIN" migrate-db --config "$T/$name.json" > "$T/$name.migrate.log" 2>&1 ||
    { cat "$T/$name.migrate.log" >&2; exit 1; }
  "${PSQL[@]}" "$db" -c "INSERT INTO cutover.documents (storage_key, s3_key, state) VALUES ('$KEY', 'bench/$KEY', 'verified')" >/dev/null
  if [ -n "${BENCH_CALLGRIND:-}" ]; then
    valgrind --tool=callgrind --callgrind-out-file="$T/$name.cg" \
      "$BIN" proxy --config "$T/$name.json" > "$T/$name.log" 2>&1 & PIDS+=($!)
    CGPID[$name]=$!
  else
    "$BIN" proxy --config "$T/$name.json" > "$T/$name.log" 2>&1 & PIDS+=($!)
  fi
  wait_port "$port" >&2
  PORT=$port
}
declare -A CGPID
start_cutover off 0; OFF=$PORT
start_cutover on 100; ON=$PORT
wait_port "$APP"
EKEY=org-1%2Fbench-document.pdf
# each cutover applies its flags from the database within a second of starting
for _ in $(seq 1 100); do
  curl -s -H 'X-User-Id: u1' "http://127.0.0.1:$ON/documents/$EKEY/url" | grep -q X-Amz-Signature && break
  sleep 0.1
done
curl -s -H 'X-User-Id: u1' "http://127.0.0.1:$ON/documents/$EKEY/url" | grep -q X-Amz-Signature ||
  { echo "the rewrite-on cutover does not rewrite" >&2; cat "$T/on.log" >&2; exit 1; }
curl -s -H 'X-User-Id: u1' "http://127.0.0.1:$OFF/documents/$EKEY/url" | grep -q legacy.example ||
  { echo "the pass-through cutover rewrites" >&2; exit 1; }

if [ -n "${BENCH_CALLGRIND:-}" ]; then
  N=$BENCH_CALLGRIND
  for n in off:$OFF on:$ON; do
    # N reads on one kept-alive connection; every one must come back 200
    args=(); for _ in $(seq 1 "$N"); do args+=(-o /dev/null "http://127.0.0.1:${n##*:}/documents/$EKEY/url"); done
    codes=$(curl -s -w '%{http_code}\n' -H 'X-User-Id: bench-user' "${args[@]}" | sort | uniq -c)
    echo "${n%%:*}: $codes" >&2
    kill -TERM "${CGPID[${n%%:*}]}"; wait "${CGPID[${n%%:*}]}" || true
  done
  [ -n "${BENCH_CALLGRIND_KEEP:-}" ] && cp "$T/on.cg" "$T/off.cg" "$BENCH_CALLGRIND_KEEP/"
  total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}'; }
  incl() { callgrind_annotate --inclusive=yes "$1" 2>/dev/null |
    awk -v f="$2" '!done && ($0 ~ ":"f" " || $0 ~ ":"f"$") {gsub(",","",$1); print $1; done=1}'; }
  echo
  echo "callgrind, $N reads each (the process from start to stop), instructions per read:"
  awk -v on="$(total "$T/on.cg")" -v off="$(total "$T/off.cg")" -v n="$N" 'BEGIN {
    printf "  whole process, rewrite off: %.0f\n  whole process, rewrite on:  %.0f\n", off/n, on/n;
    printf "  difference (on - off):     %.0f\n", (on-off)/n }'
  echo "rewrite-on, inclusive, per read (those present in this build):"
  for f in rw_start rw_response rw_response_body act s3_presign s3_presign_nowait \
           sigv4_presign_query jsplice_find jsplice_put_string json_loadb json_dumps; do
    v=$(incl "$T/on.cg" "$f")
    if [ -n "$v" ]; then
      awk -v v="$v" -v n="$N" -v f="$f" 'BEGIN {printf "  %-20s %.0f\n", f, v/n}'
    fi
  done
  exit 0
fi

declare -A RPS P50 P99
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}'; }
run_wrk() { # name port round
  local url="http://127.0.0.1:$2/documents/$EKEY/url" out
  wrk -t"$THREADS" -c"$CONNS" -d2s -H 'X-User-Id: bench-user' "$url" >/dev/null 2>&1 # warm up
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency -H 'X-User-Id: bench-user' "$url")
  RPS[$1,$3]=$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')
  P50[$1,$3]=$(echo "$out" | awk '$1=="50%" {print $2}' | to_ms)
  P99[$1,$3]=$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)
}
TARGETS="direct:$APP off:$OFF on:$ON"
for r in $(seq 1 "$ROUNDS"); do
  for n in $TARGETS; do run_wrk "${n%%:*}" "${n##*:}" "$r"; done
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2}'; }
med() { local a=$1 n=$2 vals=() r; for r in $(seq 1 "$ROUNDS"); do eval "vals+=(\"\${$a[$n,$r]}\")"; done; median "${vals[@]}"; }
declare -A LABEL=([direct]="direct (nginx app)" [off]="cutover, rewrite off" [on]="cutover, rewrite on")
echo
echo "wrk -t$THREADS -c$CONNS -d${DUR}s, signed-URL JSON answer, $(nproc) CPUs, median of $ROUNDS rounds"
printf "| %-22s | %10s | %9s | %9s |\n" target "req/s" "p50 ms" "p99 ms"
printf "|------------------------|-----------:|----------:|----------:|\n"
for n in direct off on; do
  printf "| %-22s | %10.0f | %9s | %9s |\n" "${LABEL[$n]}" "$(med RPS "$n")" "$(med P50 "$n")" "$(med P99 "$n")"
done
echo
awk -v on="$(med P50 on)" -v off="$(med P50 off)" -v ron="$(med RPS on)" -v roff="$(med RPS off)" 'BEGIN {
  printf "added at p50 by the rewrite: %.0f us (goal < 100)\n", (on - off) * 1000;
  printf "rewrite-on throughput / pass-through: %.2f (goal >= 0.90)\n", ron / roff }'
if [ -n "${BENCH_PERF:-}" ]; then
  perf record -g -o "$BENCH_PERF" -p "$(pgrep -f "$T/on.json" | head -1)" -- sleep 5 2>/dev/null &
  PERF=$!
  wrk -t"$THREADS" -c"$CONNS" -d5s -H "X-User-Id: bench-user" "http://127.0.0.1:$ON/documents/$EKEY/url" >/dev/null
  wait "$PERF" || true
fi
