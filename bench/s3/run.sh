#!/usr/bin/env bash
# S3 client benchmark (one command; not part of the tests):
#   1. presigned URLs per second on one core;
#   2. 1,000 PutObject of 16 KiB at concurrency 16 against a local s3rver: cutover's
#      transfer engine (one thread, 16 PUTs in flight), cutover's blocking calls from 16
#      threads (how the command line and simple callers use the client), `aws s3 cp
#      --recursive` and `rclone copy`, same files, one table with wall time, documents/s
#      and CPU seconds (user+sys) of each tool and of s3rver during its run.
#      Before the engine, the blocking client (16 threads, each with its own curl handle)
#      used 0.28-0.29 CPU s per 1,000 PUTs on the development machine.
#   BENCH_TOOLS=0 leaves out aws and rclone.
# Usage: bench/s3/run.sh [BUILD_DIR]   (default build-bench; configured and built here)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build-bench}
docs=${BENCH_DOCS:-1000}
conc=${BENCH_CONCURRENCY:-16}
size_kib=${BENCH_SIZE_KIB:-16}

tools=${BENCH_TOOLS:-1}
if [ "$tools" = 1 ]; then
    for pkg in awscli rclone; do
        bin=$([ $pkg = awscli ] && echo aws || echo rclone)
        command -v "$bin" >/dev/null || apt-get install -y "$pkg" >/dev/null
    done
fi

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target s3_bench >/dev/null
bench=$build/tests/s3_bench

work=$(mktemp -d /tmp/cutover-s3bench-XXXXXX)
s3_pid=
cleanup() {
    if [ -n "$s3_pid" ]; then
        kill "$s3_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$s3_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$s3_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# s3rver, started the way tests/harness/services.sh does
[ -d "$root/tests/harness/s3rver/node_modules/@20minutes/s3rver" ] ||
    (cd "$root/tests/harness/s3rver" && npm ci --no-audit --no-fund >/dev/null)
port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});')
mkdir -p "$work/s3data" "$work/files"
NODE_OPTIONS=--openssl-legacy-provider node "$root/tests/harness/s3rver/run.js" "$port" \
    "$work/s3data" cutover-bench >"$work/s3rver.log" 2>&1 &
s3_pid=$!
for _ in $(seq 300); do grep -q ready "$work/s3rver.log" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$work/s3rver.log" || { echo "s3rver did not start" >&2; cat "$work/s3rver.log" >&2; exit 1; }

export S3_ENDPOINT=http://127.0.0.1:$port S3_REGION=us-east-1 S3_BUCKET=cutover-bench
export S3_ACCESS_KEY=S3RVER S3_SECRET_KEY=S3RVER
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE=$work/aws.config AWS_SHARED_CREDENTIALS_FILE=$work/aws.credentials
cat >"$AWS_CONFIG_FILE" <<CFG
[default]
region = us-east-1
s3 =
  max_concurrent_requests = $conc
  addressing_style = path
  signature_version = s3v4
CFG
: >"$AWS_SHARED_CREDENTIALS_FILE"

for i in $(seq -w 1 "$docs"); do
    head -c $((size_kib * 1024)) /dev/urandom >"$work/files/doc-$i.bin"
done

# CPU seconds (user+sys) of a live process, from /proc (clock ticks)
proc_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$1/stat"; }

presign=$("$bench" presign 500000)

rows=()
run_tool() { # name command...
    local name=$1; shift
    local before after t
    before=$(proc_cpu "$s3_pid")
    /usr/bin/time -f "%e %U %S" -o "$work/time" "$@" >"$work/$name.out" 2>&1 ||
        { echo "$name failed:" >&2; tail -5 "$work/$name.out" >&2; exit 1; }
    after=$(proc_cpu "$s3_pid")
    read -r wall usr sys <"$work/time"
    rows+=("$(awk -v n="$name" -v w="$wall" -v u="$usr" -v s="$sys" -v b="$before" -v a="$after" \
        -v d="$docs" 'BEGIN{printf "| %-26s | %8.2f | %8.0f | %9.2f | %11.2f | %12.2f |", n, w, d/w, u+s, (u+s)*1000/d, a-b}')")
}

run_tool "cutover engine (1 thr)" "$bench" engine "$work/files" engine/ "$conc"
run_tool "cutover blocking (${conc} thr)" "$bench" put "$work/files" blocking/ "$conc"
if [ "$tools" = 1 ]; then
run_tool "aws s3 cp --recursive" aws --endpoint-url "$S3_ENDPOINT" s3 cp --recursive --quiet \
    "$work/files" "s3://$S3_BUCKET/aws/"
# rclone refuses a custom CA bundle with its own transport; the endpoint is plain http
run_tool "rclone copy" env -u AWS_CA_BUNDLE rclone copy "$work/files" ":s3:$S3_BUCKET/rclone" --s3-provider Other \
    --s3-endpoint "$S3_ENDPOINT" --s3-access-key-id S3RVER --s3-secret-access-key S3RVER \
    --s3-region us-east-1 --s3-force-path-style --s3-no-check-bucket --transfers "$conc" \
    --checkers "$conc"
fi

echo
echo "presign: $presign URLs/s on one core"
echo
echo "$docs PutObject of $size_kib KiB, concurrency $conc, s3rver on 127.0.0.1 ($(nproc) cores)"
echo "| tool                       | wall (s) |   docs/s | CPU (s)   | CPU s/1000  | s3rver CPU s |"
echo "|----------------------------|---------:|---------:|----------:|------------:|-------------:|"
printf '%s\n' "${rows[@]}"
