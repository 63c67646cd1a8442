#!/usr/bin/env bash
# bench/upload/run.sh: uploads at a steady rate, direct to the example app and through
# `cutover proxy` with dual_write off and on, in one table.
#
# For each size (64 KiB at --rate-small uploads/s, 8 MiB at --rate-large uploads/s), three
# targets are measured in turn:
#   direct   the example application itself;
#   dw off   `cutover proxy` in front of it, flag dual_write false;
#   dw on    the same with dual_write true: every upload teed to the spool, recorded in
#            PostgreSQL before the client gets the app's answer, then copied to S3 (s3rver)
#            and verified by the mirror workers.
# Each cutover run gets a fresh database (`cutover migrate-db`, then the flags' initial values
# come from its configuration) and a fresh process, so its peak RSS (VmHWM) is its own.
# The load is an open loop (bench/upload/loadgen.c, libcurl multi): upload i is due at
# i / rate whatever the earlier ones are doing, and its latency counts from when it was due.
# A short warm-up precedes each measured window. For `dw on`, after the window the script
# waits (at most --drain seconds) until every document is `verified`, then reads the mirror
# lag from cutover.documents: verified_at - created_at (created_at is written when the app's
# 2xx answer is recorded, just before the client gets it). CPU seconds (user+sys, from
# /proc) cover the measured window (and for `dw on` the drain after it), for cutover and,
# to show where the time goes, for the app and s3rver too.
#
# Uploads are multipart/form-data (the file in part "file"); with --raw the body is the file.
#
# Usage: bench/upload/run.sh [--duration S] [--warmup S] [--rate-small R] [--rate-large R]
#                            [--drain S] [--raw] [--only 64KiB|8MiB] [--pin]
# --pin: PostgreSQL and s3rver, which stand in for services on other hosts (RDS, S3), run on
# the last CPU; the app, cutover and the load generator on the others (taskset), so that the
# emulator's work for the mirror does not take CPU from the app as real S3 would not. Every
# row of the run is pinned the same way.
# BENCH_KEEP=1 keeps the temporary directory (configurations, logs) for a look afterwards.
# Environment: CUTOVER_BIN (default: build-proxy/cmd/cutover, configured and brought up to
# date here like bench/proxy/run.sh's).
# Needs what the tests need (scripts/deps.sh): PostgreSQL 15, node, libcurl's headers, cc.
# Everything binds to 127.0.0.1, every step is bounded in time, and everything started here
# is stopped on exit.
set -euo pipefail

DUR=20
WARM=3
RATE_S=100
RATE_L=2
DRAIN=60
RAW=
ONLY=
PIN=
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DUR=$2; shift 2 ;;
    --warmup) WARM=$2; shift 2 ;;
    --rate-small) RATE_S=$2; shift 2 ;;
    --rate-large) RATE_L=$2; shift 2 ;;
    --drain) DRAIN=$2; shift 2 ;;
    --raw) RAW=--raw; shift ;;
    --only) ONLY=$2; shift 2 ;;
    --pin) PIN=1; shift ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$ROOT/bench/lib.sh"
bench_cutover "$ROOT/build-proxy"

T=$(mktemp -d /tmp/cutover-ubench.XXXXXX)
CPID=
cleanup() {
  if [ -n "$CPID" ]; then
    kill -9 "$CPID" 2>/dev/null || true
    wait "$CPID" 2>/dev/null || true
  fi
  "$ROOT/tests/harness/services.sh" stop "$T/svc" >/dev/null 2>&1 || true
  if [ -n "${BENCH_KEEP:-}" ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cc -O2 -std=c11 -Wall -Wextra -o "$T/loadgen" "$HERE/loadgen.c" -lcurl

echo "starting PostgreSQL, s3rver and the example app..." >&2
# ON_APP: the prefix that runs a command on the app's CPUs (empty without --pin)
ON_APP=()
ON_SVC=()
if [ -n "$PIN" ]; then
  NCPU=$(nproc)
  [ "$NCPU" -ge 2 ] || { echo "--pin needs 2 CPUs or more" >&2; exit 2; }
  APP_CPUS=0; [ "$NCPU" -le 2 ] || APP_CPUS=0-$((NCPU - 2))
  SVC_CPUS=$((NCPU - 1))
  ON_APP=(taskset -c "$APP_CPUS"); ON_SVC=(taskset -c "$SVC_CPUS")
fi
timeout 120 "${ON_SVC[@]}" "$ROOT/tests/harness/services.sh" start "$T/svc" >/dev/null
# shellcheck disable=SC1091
. "$T/svc/env"
if [ -n "$PIN" ]; then
  # the example app was started with the services: every thread of it to the app's CPUs
  taskset -a -p -c "$APP_CPUS" "$APP_PID" >/dev/null
  echo "pinned: PostgreSQL and s3rver on CPU $SVC_CPUS; app, cutover, load generator on CPU $APP_CPUS" >&2
fi
# every query bounded: 10 s to connect, 30 s to run
PSQL=(env PGCONNECT_TIMEOUT=10 "PGOPTIONS=-c statement_timeout=30000" "$PG_BIN/psql" -X -q -t -A
  -v ON_ERROR_STOP=1)
BUCKET=cutover-bench

# CPU seconds (user+sys) a process has used so far
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a - b}'; }
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k {print $2}'; }

# start_cutover NAME DUAL_WRITE: a fresh database and a fresh process; sets CPID, CUT, DB
start_cutover() {
  local name=${1,,} dw=$2 adm
  CUT=$(free_port); adm=$(free_port); ADM=$adm
  "${PSQL[@]}" "$PG_URL" -c "CREATE DATABASE bench_$name" >/dev/null
  DB="postgresql://postgres@127.0.0.1:$PG_PORT/bench_$name"
  mkdir -p "$T/spool-$name"
  cat > "$T/$name.json" <<CONF
{"listen": "127.0.0.1:$CUT", "upstream": "$APP_URL",
 "admin": {"listen": "127.0.0.1:$adm", "token": "bench-admin-token"},
 "database_url": "$DB", "spool_dir": "$T/spool-$name",
 "log": {"level": "warn", "access": false},
 "limits": {"shutdown_grace_s": 5},
 "s3": {"endpoint": "$S3_ENDPOINT", "region": "$S3_REGION", "bucket": "$BUCKET",
        "path_style": true, "access_key_id": "$S3_ACCESS_KEY", "secret_access_key": "$S3_SECRET_KEY"},
 "legacy": {"raw_url": "$APP_URL/legacy/raw/{key}"},
 "routes": [
  {"name": "upload", "kind": "upload", "method": "POST", "path": "/documents",
   "file_field": "file", "key": {"response_json": "/storage_key"},
   "vars": {"org": {"header": "X-Org-Id"}}, "s3_key": "bench/{org}/{key}"}],
 "flags": {"dual_write": $dw}}
CONF
  timeout 60 "$BIN" migrate-db --config "$T/$name.json" > "$T/$name.migrate.log" 2>&1 ||
    { cat "$T/$name.migrate.log" >&2; exit 1; }
  "${ON_APP[@]}" "$BIN" proxy --config "$T/$name.json" > "$T/$name.log" 2>&1 & CPID=$!
  local i
  for i in $(seq 1 200); do
    curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$adm/readyz" 2>/dev/null && break
    kill -0 "$CPID" 2>/dev/null || { cat "$T/$name.log" >&2; exit 1; }
    sleep 0.05
  done
  [ "$i" -lt 200 ] || { echo "cutover ($name) never became ready" >&2; cat "$T/$name.log" >&2; exit 1; }
}

stop_cutover() {
  kill -TERM "$CPID" 2>/dev/null || true
  local i
  for i in $(seq 1 100); do kill -0 "$CPID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$CPID" 2>/dev/null || true
  wait "$CPID" 2>/dev/null || true
  CPID=
}

# load PORT RATE SIZE SECONDS WARMUP: one loadgen run, its KEY=VALUE line on stdout
load() {
  echo "-- $1 rate $2 size $3" >>"$T/loadgen.err"
  timeout $(( $4 + $5 + 60 )) "${ON_APP[@]}" "$T/loadgen" --url "http://127.0.0.1:$1/documents" --rate "$2" \
    --size "$3" --duration "$4" --warmup "$5" --timeout 30 --max-inflight 256 \
    --header "X-Org-Id: bench" $RAW 2>>"$T/loadgen.err" || true
}

declare -A R # R[size,target,metric]
measure() { # SIZE_LABEL SIZE RATE TARGET
  local sl=$1 size=$2 rate=$3 tg=$4 port c0=0 a0 s0 out ws
  case $tg in
    direct) port=${APP_URL##*:} ;;
    off) start_cutover "${sl}_off" false; port=$CUT ;;
    on) start_cutover "${sl}_on" true; port=$CUT ;;
  esac
  echo "  $sl $tg: warm-up ${WARM}s, then ${DUR}s at $rate/s" >&2
  load "$port" "$rate" "$size" "$WARM" 0 >/dev/null
  if [ "$tg" = on ]; then wait_verified 30 >/dev/null || true; fi
  [ -n "$CPID" ] && c0=$(cpu_s "$CPID")
  a0=$(cpu_s "$APP_PID"); s0=$(cpu_s "$S3_PID")
  local t0=$EPOCHREALTIME
  out=$(load "$port" "$rate" "$size" "$DUR" 0)
  [ -n "$out" ] || out="ok=0 errors=? achieved=0 p50_ms=- p99_ms=- window_start=0"
  R[$sl,$tg,out]=$out
  local t1=$SECONDS
  if [ "$tg" = on ]; then
    R[$sl,$tg,unverified]=$(wait_verified "$DRAIN" || true)
    R[$sl,$tg,drain]=$((SECONDS - t1))
    ws=$(field "$out" window_start)
    R[$sl,$tg,lag]=$("${PSQL[@]}" "$DB" -F ' ' -c "
      SELECT count(*),
             coalesce(round(1000 * percentile_disc(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM verified_at - created_at))), -1),
             coalesce(round(1000 * percentile_disc(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM verified_at - created_at))), -1)
      FROM cutover.documents WHERE state = 'verified' AND created_at >= to_timestamp($ws)")
  fi
  if [ "$tg" = on ]; then
    # dual-write's own share of the latency: the app's 2xx answer held for its record
    # (cutover_upload_record_seconds, warm-up included), p50 and p99 as bucket bounds
    R[$sl,$tg,rec]=$(curl -fsS --max-time 5 "http://127.0.0.1:$ADM/metrics" 2>/dev/null | awk '
      /^cutover_upload_record_seconds_bucket/ {
        le = $1; sub(/.*le="/, "", le); sub(/".*/, "", le); n++; b[n] = le; c[n] = $2 }
      END {
        if (n == 0 || c[n] == 0) { print "- -"; exit }
        for (q = 1; q <= 2; q++) {
          want = (q == 1 ? 0.5 : 0.99) * c[n]
          for (i = 1; i <= n && c[i] < want; i++) ;
          out = out (q == 2 ? " " : "") (b[i] == "+Inf" ? ">10000" : sprintf("<=%g", b[i] * 1000))
        }
        print out }')
  fi
  if [ -n "$CPID" ]; then
    R[$sl,$tg,cpu]=$(sub "$(cpu_s "$CPID")" "$c0")
    R[$sl,$tg,rss]=$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$CPID/status")
    stop_cutover
  fi
  R[$sl,$tg,appcpu]=$(sub "$(cpu_s "$APP_PID")" "$a0")
  R[$sl,$tg,s3cpu]=$(sub "$(cpu_s "$S3_PID")" "$s0")
  R[$sl,$tg,span]=$(sub "$EPOCHREALTIME" "$t0")
}

# wait_verified SECONDS: waits until no document of $DB is short of `verified`; prints how
# many still are (0 when all are) and fails when the time ran out first
wait_verified() {
  local deadline=$((SECONDS + $1)) n
  while :; do
    n=$("${PSQL[@]}" "$DB" -c "SELECT count(*) FROM cutover.documents WHERE state <> 'verified'")
    [ "$n" = 0 ] && { echo 0; return 0; }
    [ $SECONDS -lt $deadline ] || { echo "$n"; return 1; }
    sleep 0.2
  done
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
SPECS=("64KiB:65536:$RATE_S" "8MiB:8388608:$RATE_L")
for spec in "${SPECS[@]}"; do
  IFS=: read -r sl size rate <<<"$spec"
  [ -z "$ONLY" ] || [ "$ONLY" = "$sl" ] || continue
  for tg in direct off on; do measure "$sl" "$size" "$rate" "$tg"; done
done

echo
echo "$([ -n "$RAW" ] && echo raw-body || echo multipart) uploads at a fixed arrival rate (open loop), ${DUR}s each after ${WARM}s of warm-up; $(nproc) CPUs,"
echo "load average before: $LOAD0 (the machine is shared: single runs move by 10-20% or more)"
if [ -n "$PIN" ]; then
  echo "pinned (--pin): PostgreSQL and s3rver on CPU $SVC_CPUS; the app, cutover and the load generator on CPU $APP_CPUS"
fi
printf "| %-6s | %-6s | %6s | %8s | %6s | %8s | %8s | %8s | %8s | %7s | %13s | %7s | %13s | %13s |\n" \
  size target rate/s achieved errors "p50 ms" "p99 ms" "lag p50" "lag p99" "drain" "cut CPU" "cut RSS" "app CPU" "s3rver CPU"
echo "|--------|--------|-------:|---------:|-------:|---------:|---------:|---------:|---------:|--------:|--------------:|--------:|--------------:|--------------:|"
# pct CPU_S: that CPU time as a share of one core over the measured span
pct() { awk -v c="$1" -v s="$2" 'BEGIN {printf "%.1f s %3.0f%%", c, (s > 0 ? 100 * c / s : 0)}'; }
for spec in "64KiB:$RATE_S" "8MiB:$RATE_L"; do
  IFS=: read -r sl rate <<<"$spec"
  [ -z "$ONLY" ] || [ "$ONLY" = "$sl" ] || continue
  for tg in direct off on; do
    out=${R[$sl,$tg,out]}
    label=$tg; [ "$tg" = direct ] || label="dw $tg"
    lag50=-; lag99=-; cpu=-; rss=-; drain=-
    if [ "$tg" = on ]; then
      read -r _ lag50 lag99 <<<"${R[$sl,$tg,lag]}"
      lag50="$lag50 ms"; lag99="$lag99 ms"; drain="${R[$sl,$tg,drain]} s"
    fi
    span=${R[$sl,$tg,span]}
    [ "$tg" = direct ] || { cpu=$(pct "${R[$sl,$tg,cpu]}" "$span"); rss="${R[$sl,$tg,rss]} MiB"; }
    printf "| %-6s | %-6s | %6s | %8s | %6s | %8s | %8s | %8s | %8s | %7s | %13s | %7s | %13s | %13s |\n" \
      "$sl" "$label" "$rate" "$(field "$out" achieved)" "$(field "$out" errors)" \
      "$(field "$out" p50_ms)" "$(field "$out" p99_ms)" "$lag50" "$lag99" "$drain" "$cpu" "$rss" \
      "$(pct "${R[$sl,$tg,appcpu]}" "$span")" "$(pct "${R[$sl,$tg,s3cpu]}" "$span")"
  done
done
echo
for spec in "64KiB:$RATE_S" "8MiB:$RATE_L"; do
  IFS=: read -r sl rate <<<"$spec"
  [ -z "$ONLY" ] || [ "$ONLY" = "$sl" ] || continue
  read -r rec50 rec99 <<<"${R[$sl,on,rec]:-- -}"
  echo "$sl dw on: the app's answer held for its record (cutover_upload_record_seconds): p50 $rec50 ms, p99 $rec99 ms"
done
echo "CPU: user+sys seconds during the measured window (dw on: and the drain until every document"
echo "was verified), and that as a share of one core over the same span. drain: seconds after the"
echo "window until every document was verified. lag: the app's answer recorded -> verified."
echo "Goals (issue 8):"
for spec in "64KiB:$RATE_S" "8MiB:$RATE_L"; do
  IFS=: read -r sl rate <<<"$spec"
  [ -z "$ONLY" ] || [ "$ONLY" = "$sl" ] || continue
  off99=$(field "${R[$sl,off,out]}" p99_ms); on99=$(field "${R[$sl,on,out]}" p99_ms)
  verdict=$(awk -v a="$on99" -v b="$off99" 'BEGIN { if (b + 0 <= 0) print "n/a"; else printf "%+.1f%% %s", 100 * (a - b) / b, (a <= 1.05 * b ? "met" : "NOT met") }')
  echo "  $sl: p99 with dual-write on within 5% of off: on $on99 ms vs off $off99 ms: $verdict"
  read -r n _ lag99 <<<"${R[$sl,on,lag]}"
  un=${R[$sl,on,unverified]}
  if [ "$sl" = 64KiB ]; then
    verdict=$(awk -v l="$lag99" -v r="$rate" 'BEGIN { if (l < 0) print "n/a"; else printf "%s%s", (l < 1000 ? "met" : "NOT met"), (r < 100 ? " (but the rate is below 100/s)" : "") }')
    echo "  $sl: mirror lag p99 under 1 s at 100 uploads/s: $lag99 ms at $rate/s: $verdict"
  fi
  echo "  $sl: $n documents of the window verified; not verified after the drain: $un"
done
if grep -q '^loadgen' "$T/loadgen.err"; then
  echo; echo "load generator errors (first lines of each run that had some):"
  awk '/^--/ {h = $0; n = 0; next} n++ < 3 {if (h) print h; h = ""; print}' "$T/loadgen.err"
fi
