#!/usr/bin/env bash
# bench/proxy/run.sh: one command comparing cutover's proxy with nginx and HAProxy.
#
# An nginx "app" answers every request with the same small body on 127.0.0.1. wrk then
# measures, with the same threads and connections: the app directly, nginx in front of it,
# HAProxy in front of it (both keeping upstream connections alive), and `cutover proxy`
# twice: with one event loop per CPU (`workers.proxy_loops: 0`) and with its default of one
# loop (`workers.proxy_loops: 1`).
# Then the resident memory of the one-loop-per-CPU cutover with 1,000 idle keep-alive client
# connections, and while 4 clients each upload and download 1 GiB through it.
#
# Every target is measured --rounds times, the targets taking turns within each round, and
# the medians are printed (the machine moves single runs by 10-20%). With CUTOVER_BIN_B set, a
# second cutover binary (an earlier version, say) is measured in the same rounds, one loop.
#
# Usage: bench/proxy/run.sh [--duration S] [--connections N] [--threads T] [--rounds R]
# Environment: CUTOVER_BIN (default: build-proxy/cmd/cutover, built if missing),
# CUTOVER_BIN_B (optional).
# Everything binds to 127.0.0.1 and everything started here is stopped on exit.
set -euo pipefail

DUR=10
CONNS=64
THREADS=1
ROUNDS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DUR=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/bench/lib.sh"
bench_cutover "$ROOT/build-proxy"
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v curl >/dev/null || need+=(curl)
bench_install "${need[@]}"

T=$(mktemp -d /tmp/cutover-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT

wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

APP=$(free_port); NGX=$(free_port); HAP=$(free_port); CUT=$(free_port); ADM=$(free_port)
CUT1=$(free_port); ADM1=$(free_port); CUTB=$(free_port); ADMB=$(free_port)
BODY='{"id":"0123456789","url":"https://legacy.example/x"}' # 50 bytes
truncate -s 1G "$T/big.bin"

mkdir -p "$T/app" "$T/ngx"
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
    client_max_body_size 0;
    location = /big.bin { root $T; }
    location /upload { client_body_buffer_size 1m; client_body_in_file_only off; proxy_pass http://127.0.0.1:$APP/sink; }
    location /sink { return 200 "ok"; }
    location / { default_type application/json; return 200 '$BODY'; }
  }
}
CONF
cat > "$T/ngx/nginx.conf" <<CONF
worker_processes auto;
daemon off;
error_log $T/ngx/error.log crit;
pid $T/ngx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $T/ngx; proxy_temp_path $T/ngx; fastcgi_temp_path $T/ngx;
  uwsgi_temp_path $T/ngx; scgi_temp_path $T/ngx;
  keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$APP; keepalive 128; }
  server {
    listen 127.0.0.1:$NGX;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
cat > "$T/haproxy.cfg" <<CONF
global
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAP
  default_backend app
backend app
  server s1 127.0.0.1:$APP
CONF
cat > "$T/cutover.json" <<CONF
{"listen":"127.0.0.1:$CUT","upstream":"http://127.0.0.1:$APP",
 "admin":{"listen":"127.0.0.1:$ADM"},"log":{"level":"warn","access":false},
 "workers":{"proxy_loops":0}}
CONF
cat > "$T/cutover1.json" <<CONF
{"listen":"127.0.0.1:$CUT1","upstream":"http://127.0.0.1:$APP",
 "admin":{"listen":"127.0.0.1:$ADM1"},"log":{"level":"warn","access":false},
 "workers":{"proxy_loops":1}}
CONF
sed -e "s/:$CUT1\"/:$CUTB\"/" -e "s/:$ADM1\"/:$ADMB\"/" "$T/cutover1.json" > "$T/cutoverB.json"

ulimit -n 65536 2>/dev/null || true
nginx -c "$T/app/nginx.conf" -p "$T/app" & PIDS+=($!)
nginx -c "$T/ngx/nginx.conf" -p "$T/ngx" & PIDS+=($!)
haproxy -q -f "$T/haproxy.cfg" & PIDS+=($!)
"$BIN" proxy --config "$T/cutover.json" > "$T/cutover.log" 2>&1 & CPID=$!; PIDS+=($CPID)
"$BIN" proxy --config "$T/cutover1.json" > "$T/cutover1.log" 2>&1 & PIDS+=($!)
TARGETS="direct:$APP nginx:$NGX haproxy:$HAP cutover:$CUT cutover1:$CUT1"
if [ -n "${CUTOVER_BIN_B:-}" ]; then
  "$CUTOVER_BIN_B" proxy --config "$T/cutoverB.json" > "$T/cutoverB.log" 2>&1 & PIDS+=($!)
  TARGETS="$TARGETS cutoverB:$CUTB"
fi
for n in $TARGETS; do wait_port "${n##*:}"; done

declare -A RPS P50 P99
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}'; }
run_wrk() { # name port round
  wrk -t"$THREADS" -c"$CONNS" -d2s "http://127.0.0.1:$2/" >/dev/null 2>&1 # warm up
  local out; out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:$2/")
  RPS[$1,$3]=$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')
  P50[$1,$3]=$(echo "$out" | awk '$1=="50%" {print $2}' | to_ms)
  P99[$1,$3]=$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)
}
for r in $(seq 1 "$ROUNDS"); do
  for n in $TARGETS; do
    run_wrk "${n%%:*}" "${n##*:}" "$r"
  done
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2}'; }
# median over the rounds of array $1 for target $2
med() { local a=$1 n=$2 vals=() r; for r in $(seq 1 "$ROUNDS"); do eval "vals+=(\"\${$a[$n,$r]}\")"; done; median "${vals[@]}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# median over the rounds of the per-round ratio $1[$2]/$1[$3]
medratio() { local a=$1 x=$2 y=$3 vals=() r; for r in $(seq 1 "$ROUNDS"); do eval "vals+=(\$(ratio \"\${$a[$x,$r]}\" \"\${$a[$y,$r]}\"))"; done; median "${vals[@]}"; }

declare -A LABEL=([direct]=direct [nginx]=nginx [haproxy]=haproxy
  [cutover]="cutover ($(nproc) loops)" [cutover1]="cutover (1 loop)" [cutoverB]="cutover B (1 loop)")
NAMES=""
for n in $TARGETS; do NAMES="$NAMES ${n%%:*}"; done
echo
echo "wrk -t$THREADS -c$CONNS -d${DUR}s, 50-byte answer, $(nproc) CPUs, median of $ROUNDS rounds"
[ -n "${CUTOVER_BIN_B:-}" ] && echo "cutover B: $CUTOVER_BIN_B"
printf "| %-18s | %10s | %9s | %9s |\n" target "req/s" "p50 ms" "p99 ms"
printf "|--------------------|-----------:|----------:|----------:|\n"
for n in $NAMES; do
  printf "| %-18s | %10.0f | %9s | %9s |\n" "${LABEL[$n]}" "$(med RPS "$n")" "$(med P50 "$n")" "$(med P99 "$n")"
done
echo
echo "ratios, each the median of the per-round ratios:"
for c in $NAMES; do
  case $c in cutover*) ;; *) continue ;; esac
  for o in nginx haproxy; do
    echo "${LABEL[$c]}/$o: req/s x$(medratio RPS "$c" "$o"), p99 x$(medratio P99 "$c" "$o")"
  done
done
if [ -n "${CUTOVER_BIN_B:-}" ]; then
  echo "cutover (1 loop)/cutover B: req/s x$(medratio RPS cutover1 cutoverB), p99 x$(medratio P99 cutover1 cutoverB)"
fi

rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$CPID/status"; }
echo
echo "cutover ($(nproc) loops) RSS after the wrk runs: $(rss_mib) MiB"

# 1,000 idle keep-alive client connections (one request each, then held open)
python3 - "$CUT" "$T/idle.ready" <<'PY' & IDLE=$!
import socket, sys, time, os
port, ready = int(sys.argv[1]), sys.argv[2]
socks = []
for i in range(1000):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf or len(buf.split(b"\r\n\r\n", 1)[1]) < 50:
        buf += s.recv(4096)
    socks.append(s)
open(ready, "w").close()
time.sleep(30)
PY
PIDS+=($IDLE)
for _ in $(seq 1 600); do [ -f "$T/idle.ready" ] && break; sleep 0.05; done
[ -f "$T/idle.ready" ] || { echo "idle clients never connected" >&2; exit 1; }
echo "cutover RSS with 1000 idle keep-alive connections: $(rss_mib) MiB (goal < 50)"
kill "$IDLE" 2>/dev/null || true; wait "$IDLE" 2>/dev/null || true

# 4 clients each uploading and downloading 1 GiB at the same time
XF=()
for i in 1 2 3 4; do
  head -c 1073741824 /dev/zero | curl -s -o /dev/null -H 'Expect:' -T - -X POST \
    "http://127.0.0.1:$CUT/upload" & XF+=($!)
  curl -s -o /dev/null "http://127.0.0.1:$CUT/big.bin" & XF+=($!)
done
PIDS+=("${XF[@]}")
MAX=0
start=$(date +%s)
while :; do
  alive=0
  for p in "${XF[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive -eq 1 ] || break
  r=$(awk '/VmRSS/ {print $2}' "/proc/$CPID/status")
  [ "$r" -gt "$MAX" ] && MAX=$r
  sleep 0.2
done
echo "cutover peak RSS during 4 x (1 GiB up + 1 GiB down): $(awk -v m="$MAX" 'BEGIN{printf "%.1f", m/1024}') MiB (goal < 64), $(( $(date +%s) - start )) s"
