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
# Usage: bench/proxy/run.sh [--duration S] [--connections N] [--threads T]
# Environment: CUTOVER_BIN (default: build-proxy/cmd/cutover, built if missing).
# Everything binds to 127.0.0.1 and everything started here is stopped on exit.
set -euo pipefail

DUR=10
CONNS=64
THREADS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DUR=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CUTOVER_BIN:-$ROOT/build-proxy/cmd/cutover}
if [ ! -x "$BIN" ]; then
  cmake -S "$ROOT" -B "$ROOT/build-proxy" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$ROOT/build-proxy" -j"$(nproc)" --target cutover >/dev/null
fi
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

T=$(mktemp -d /tmp/cutover-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

APP=$(free_port); NGX=$(free_port); HAP=$(free_port); CUT=$(free_port); ADM=$(free_port)
CUT1=$(free_port); ADM1=$(free_port)
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

ulimit -n 65536 2>/dev/null || true
nginx -c "$T/app/nginx.conf" -p "$T/app" & PIDS+=($!)
nginx -c "$T/ngx/nginx.conf" -p "$T/ngx" & PIDS+=($!)
haproxy -q -f "$T/haproxy.cfg" & PIDS+=($!)
"$BIN" proxy --config "$T/cutover.json" > "$T/cutover.log" 2>&1 & CPID=$!; PIDS+=($CPID)
"$BIN" proxy --config "$T/cutover1.json" > "$T/cutover1.log" 2>&1 & PIDS+=($!)
for p in $APP $NGX $HAP $CUT $CUT1; do wait_port "$p"; done

declare -A RPS P50 P99
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}'; }
run_wrk() { # name port
  wrk -t"$THREADS" -c"$CONNS" -d2s "http://127.0.0.1:$2/" >/dev/null 2>&1 # warm up
  local out; out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:$2/")
  RPS[$1]=$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')
  P50[$1]=$(echo "$out" | awk '$1=="50%" {print $2}' | to_ms)
  P99[$1]=$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)
}
for n in direct:$APP nginx:$NGX haproxy:$HAP cutover:$CUT cutover1:$CUT1; do
  run_wrk "${n%%:*}" "${n##*:}"
done

declare -A LABEL=([direct]=direct [nginx]=nginx [haproxy]=haproxy
  [cutover]="cutover ($(nproc) loops)" [cutover1]="cutover (1 loop)")
echo
echo "wrk -t$THREADS -c$CONNS -d${DUR}s, 50-byte answer, $(nproc) CPUs"
printf "| %-18s | %10s | %9s | %9s |\n" target "req/s" "p50 ms" "p99 ms"
printf "|--------------------|-----------:|----------:|----------:|\n"
for n in direct nginx haproxy cutover cutover1; do
  printf "| %-18s | %10s | %9s | %9s |\n" "${LABEL[$n]}" "${RPS[$n]}" "${P50[$n]}" "${P99[$n]}"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
for c in cutover cutover1; do
  for o in nginx haproxy; do
    echo "${LABEL[$c]}/$o: req/s x$(ratio "${RPS[$c]}" "${RPS[$o]}"), p99 x$(ratio "${P99[$c]}" "${P99[$o]}")"
  done
done

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
