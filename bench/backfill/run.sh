#!/usr/bin/env bash
# bench/backfill/run.sh: `cutover backfill` against `rclone copy`, the same documents from the
# same legacy store to the same S3 emulator at the same concurrency, in one table.
#
# Two sets: 10,000 documents of 16 KiB and 50 documents of 20 MiB (sizes with --small-count,
# --small-size, --large-count, --large-size). The legacy store is nginx serving the files from
# a directory on 127.0.0.1 (a static server in C: it must not be the bottleneck, and the
# example app, one Node process, would be); the S3 emulator is the test fixture's s3rver
# (Node, checks SigV4). For each set, in turn:
#   cutover  `cutover backfill --concurrency C` from a JSONL list of the keys, a fresh state
#            database: each document read once from legacy.raw_url, hashed, PUT with
#            Content-MD5 and x-amz-checksum-sha256 (multipart above s3.part_size), HEAD-checked
#            and recorded verified in PostgreSQL;
#   rclone   `rclone copy` (Debian's rclone, installed with apt-get when missing) with its HTTP
#            backend as the source and `--files-from` the same key list, to the same bucket
#            under another prefix, `--transfers C --checkers C`.
# Measured for each: wall time, documents/s, MB/s (10^6 bytes), CPU seconds (user+sys) and
# peak RSS (GNU time -v), CPU seconds per 1,000 documents, and the CPU the S3 emulator spent
# in the same span (from /proc), so that the bottleneck is visible. The seeds' backfill (50
# documents/s) is the floor row.
#
# Usage: bench/backfill/run.sh [--concurrency C] [--small-count N] [--small-size BYTES]
#                              [--large-count N] [--large-size BYTES] [--only small|large]
#                              [--rates]
# --rates measures the throttles instead: 1,500 × 16 KiB at --rate 50 and 600 × 64 KiB at
# --rate-bytes 1Mi, each over a 20 s window of completions (verified_at) after 3 s, against
# the limit (the goal: within 10%).
# BENCH_KEEP=1 keeps the temporary directory. Environment: CUTOVER_BIN (default:
# build-bench/cmd/cutover, configured RelWithDebInfo and brought up to date here).
# Needs what the tests need (scripts/deps.sh) plus nginx and rclone (installed when missing).
# Everything binds to 127.0.0.1 and everything started here is stopped on exit.
set -euo pipefail

CONC=16
NS=10000
SS=16384
NL=50
SL=$((20 * 1024 * 1024))
ONLY=
RATES=
while [ $# -gt 0 ]; do
  case "$1" in
    --concurrency) CONC=$2; shift 2 ;;
    --small-count) NS=$2; shift 2 ;;
    --small-size) SS=$2; shift 2 ;;
    --large-count) NL=$2; shift 2 ;;
    --large-size) SL=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --rates) RATES=1; shift ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$ROOT/bench/lib.sh"
bench_cutover "$ROOT/build-bench"
need=()
command -v rclone >/dev/null || need+=(rclone)
command -v nginx >/dev/null || need+=(nginx-light)
[ -x /usr/bin/time ] || need+=(time)
bench_install "${need[@]}"

T=$(mktemp -d /tmp/cutover-bfbench.XXXXXX)
NGX_PID=
cleanup() {
  [ -n "$NGX_PID" ] && { kill "$NGX_PID" 2>/dev/null || true; wait "$NGX_PID" 2>/dev/null || true; }
  CUTOVER_TEST_BUCKET=cutover-bench "$ROOT/tests/harness/services.sh" stop "$T/svc" >/dev/null 2>&1 || true
  if [ -n "${BENCH_KEEP:-}" ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cpu_s() { awk -v t="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
calc() { awk "BEGIN {printf \"$1\", $2}"; }

echo "starting PostgreSQL and s3rver..." >&2
CUTOVER_TEST_BUCKET=cutover-bench timeout 180 "$ROOT/tests/harness/services.sh" start "$T/svc" >/dev/null
# shellcheck disable=SC1091
. "$T/svc/env"
PSQL=(env PGCONNECT_TIMEOUT=10 "$PG_BIN/psql" -X -q -t -A -v ON_ERROR_STOP=1)
BUCKET=cutover-bench

# the legacy store's files: deterministic bytes, distinct per document
mkdir -p "$T/www/raw"
make_set() { # NAME COUNT SIZE
  local name=$1 n=$2 size=$3
  head -c "$size" /dev/urandom > "$T/base-$name"
  : > "$T/$name.list"; : > "$T/$name.jsonl"
  for i in $(seq -w 1 "$n"); do
    local k="$name-$i.bin"
    # the first 16 bytes differ per document (so no two objects are the same)
    { printf '%016d' "$((10#$i))"; tail -c +17 "$T/base-$name"; } > "$T/www/raw/$k"
    echo "$k" >> "$T/$name.list"
    echo "{\"key\": \"$k\"}" >> "$T/$name.jsonl"
  done
}
echo "writing the documents..." >&2
SETS=()
if [ -n "$RATES" ]; then
  make_set rdocs 1500 16384
  make_set rbytes 600 65536
else
  [ "$ONLY" = large ] || { make_set small "$NS" "$SS"; SETS+=("small:$NS:$SS"); }
  [ "$ONLY" = small ] || { make_set large "$NL" "$SL"; SETS+=("large:$NL:$SL"); }
fi

NGX=$(free_port)
cat > "$T/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $T/nginx-error.log crit;
pid $T/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $T; proxy_temp_path $T; fastcgi_temp_path $T;
  uwsgi_temp_path $T; scgi_temp_path $T;
  keepalive_requests 1000000;
  sendfile on;
  server {
    listen 127.0.0.1:$NGX;
    root $T/www;
    default_type application/octet-stream;
    autoindex on; # rclone's HTTP backend reads the listing
  }
}
CONF
nginx -c "$T/nginx.conf" -p "$T" & NGX_PID=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$NGX") 2>/dev/null && break; sleep 0.05; done

# rate_run SET ARGS...: a backfill of SET with ARGS; prints the documents/s and bytes/s of
# the completions in a 20 s window starting 3 s after the first one
rate_run() {
  local set=$1; shift
  "${PSQL[@]}" "$PG_URL" -c "CREATE DATABASE bfbench_$set" >/dev/null
  local db="postgresql://postgres@127.0.0.1:$PG_PORT/bfbench_$set"
  cat > "$T/$set.json" <<CONF
{"upstream": "http://127.0.0.1:9", "database_url": "$db", "spool_dir": "$T",
 "log": {"level": "warn"},
 "s3": {"endpoint": "$S3_ENDPOINT", "region": "$S3_REGION", "bucket": "$BUCKET",
        "path_style": true, "access_key_id": "$S3_ACCESS_KEY", "secret_access_key": "$S3_SECRET_KEY"},
 "legacy": {"raw_url": "http://127.0.0.1:$NGX/raw/{key}"},
 "backfill": {"source": {"jsonl": "$T/$set.jsonl"}, "rate": 0, "concurrency": $CONC}}
CONF
  timeout 60 "$BIN" migrate-db --config "$T/$set.json" >/dev/null
  timeout 600 "$BIN" backfill --config "$T/$set.json" "$@" > "$T/$set.out" 2>&1 ||
    { tail -5 "$T/$set.out" >&2; exit 1; }
  "${PSQL[@]}" "$db" -F ' ' -c "
    WITH t AS (SELECT min(verified_at) + interval '3 s' AS a FROM cutover.documents)
    SELECT round(count(*) / 20.0, 1), round(coalesce(sum(size), 0) / 20.0)
    FROM cutover.documents, t WHERE verified_at >= t.a AND verified_at < t.a + interval '20 s'"
}

if [ -n "$RATES" ]; then
  echo "documents/s: --rate 50..." >&2
  read -r d _ <<<"$(rate_run rdocs --rate 50)"
  echo "bytes/s: --rate-bytes 1Mi..." >&2
  read -r _ b <<<"$(rate_run rbytes --rate-bytes 1Mi)"
  printf '\n%-24s %10s %12s %8s\n' limit limit measured off
  printf '%-24s %10s %12s %7s%%\n' "documents/s (--rate)" 50 "$d" "$(calc %+.1f "($d - 50) * 100 / 50")"
  printf '%-24s %10s %12s %7s%%\n' "bytes/s (--rate-bytes)" 1048576 "$b" \
    "$(calc %+.1f "($b - 1048576) * 100 / 1048576")"
  echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg) ($(nproc) CPUs)"
  exit 0
fi

declare -A R
# timed NAME SET COMMAND...: runs under GNU time, with the emulator's CPU around it
timed() {
  local name=$1 set=$2; shift 2
  local s0 t0 t1
  s0=$(cpu_s "$S3_PID"); t0=$EPOCHREALTIME
  /usr/bin/time -v -o "$T/$name-$set.time" "$@" > "$T/$name-$set.out" 2>&1 ||
    { echo "$name ($set) failed:" >&2; tail -20 "$T/$name-$set.out" >&2; exit 1; }
  t1=$EPOCHREALTIME
  R[$set,$name,wall]=$(calc %.2f "$t1 - $t0")
  R[$set,$name,s3cpu]=$(calc %.2f "$(cpu_s "$S3_PID") - $s0")
  R[$set,$name,cpu]=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.2f", u + s}' "$T/$name-$set.time")
  R[$set,$name,rss]=$(awk -F': ' '/Maximum resident/ {printf "%.0f", $2 / 1024}' "$T/$name-$set.time")
}

for spec in "${SETS[@]}"; do
  IFS=: read -r set n size <<<"$spec"
  echo "$set: $n x $size bytes, concurrency $CONC" >&2
  # cutover: a fresh state database
  "${PSQL[@]}" "$PG_URL" -c "CREATE DATABASE bfbench_$set" >/dev/null
  DB="postgresql://postgres@127.0.0.1:$PG_PORT/bfbench_$set"
  cat > "$T/$set.json" <<CONF
{"upstream": "http://127.0.0.1:9", "database_url": "$DB", "spool_dir": "$T",
 "log": {"level": "warn"},
 "s3": {"endpoint": "$S3_ENDPOINT", "region": "$S3_REGION", "bucket": "$BUCKET",
        "path_style": true, "access_key_id": "$S3_ACCESS_KEY", "secret_access_key": "$S3_SECRET_KEY",
        "part_size": 8388608},
 "legacy": {"raw_url": "http://127.0.0.1:$NGX/raw/{key}"},
 "backfill": {"source": {"jsonl": "$T/$set.jsonl"}, "rate": 0, "concurrency": $CONC}}
CONF
  timeout 60 "$BIN" migrate-db --config "$T/$set.json" >/dev/null
  echo "  cutover..." >&2
  timed cutover "$set" timeout 1800 "$BIN" backfill --config "$T/$set.json"
  v=$("${PSQL[@]}" "$DB" -c "SELECT count(*) FROM cutover.documents WHERE state = 'verified'")
  [ "$v" = "$n" ] || { echo "cutover: $v of $n verified" >&2; exit 1; }
  echo "  rclone..." >&2
  # AWS_CA_BUNDLE (set on some machines) makes rclone 1.60 refuse its own HTTP transport
  timed rclone "$set" env -u AWS_CA_BUNDLE RCLONE_CONFIG_SRC_TYPE=http RCLONE_CONFIG_SRC_URL="http://127.0.0.1:$NGX/raw/" \
    RCLONE_CONFIG_DST_TYPE=s3 RCLONE_CONFIG_DST_PROVIDER=Other RCLONE_CONFIG_DST_ENDPOINT="$S3_ENDPOINT" \
    RCLONE_CONFIG_DST_REGION="$S3_REGION" RCLONE_CONFIG_DST_ACCESS_KEY_ID="$S3_ACCESS_KEY" \
    RCLONE_CONFIG_DST_SECRET_ACCESS_KEY="$S3_SECRET_KEY" RCLONE_CONFIG_DST_FORCE_PATH_STYLE=true \
    timeout 1800 rclone copy --config /dev/null --files-from "$T/$set.list" --transfers "$CONC" \
    --checkers "$CONC" --no-traverse --s3-chunk-size 8M src: "dst:$BUCKET/rclone-$set"
done

printf '\n%-6s %-8s %9s %9s %8s %8s %9s %8s %9s %9s\n' set tool wall_s docs/s MB/s cpu_s "cpu/1k" rss_MiB s3rver_cpu "s3/1k"
for spec in "${SETS[@]}"; do
  IFS=: read -r set n size <<<"$spec"
  for tool in cutover rclone; do
    w=${R[$set,$tool,wall]}; c=${R[$set,$tool,cpu]}; s=${R[$set,$tool,s3cpu]}
    printf '%-6s %-8s %9s %9s %8s %8s %9s %8s %9s %9s\n' "$set" "$tool" "$w" \
      "$(calc %.1f "$n / $w")" "$(calc %.1f "$n * $size / 1e6 / $w")" "$c" \
      "$(calc %.2f "$c * 1000 / $n")" "${R[$set,$tool,rss]}" "$s" "$(calc %.2f "$s * 1000 / $n")"
  done
  printf '%-6s %-8s %9s %9s %8s %8s %9s %8s %9s %9s\n' "$set" seeds "$(calc %.0f "$n / 50")" 50.0 - - - - - -
  printf '%-6s cutover/rclone: %.2fx documents/s and MB/s, %.2fx CPU seconds per 1,000 documents\n' \
    "$set" "$(calc %.4f "${R[$set,rclone,wall]} / ${R[$set,cutover,wall]}")" \
    "$(calc %.4f "${R[$set,cutover,cpu]} / ${R[$set,rclone,cpu]}")"
done
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg) ($(nproc) CPUs)"
