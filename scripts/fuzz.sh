#!/usr/bin/env bash
# Fuzzes every parser that takes outside bytes, each for a bounded time, with libFuzzer
# (Debian's clang) under AddressSanitizer and UndefinedBehaviorSanitizer, each from its seed
# corpus (tests/fuzz/corpus/<target>, grown in a scratch copy), and prints a table: target,
# executions, findings. Exits non-zero on any finding; its input is kept in
# .run/fuzz/<target>/ (add it to the corpus with the fix: CTest replays every seed).
#   ./scripts/fuzz.sh [SECONDS] [TARGET...]   (default 60 s each, every target)
# The test command (scripts/test.sh) runs a short pass of every target.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in "$root"/tests/fuzz/fuzz_*.c; do
        t=${f##*/fuzz_}
        targets+=("${t%.c}")
    done
fi
command -v clang >/dev/null || { echo "fuzz: clang is missing (scripts/deps.sh)" >&2; exit 1; }

b=$root/build-fuzz
start=$SECONDS
CC=clang cmake -S "$root" -B "$b" -DCMAKE_BUILD_TYPE=Debug -DCUTOVER_FUZZ=ON \
    -DCUTOVER_TESTS=ON >/dev/null
cmake --build "$b" -j"$(nproc 2>/dev/null || echo 2)" \
    --target "${targets[@]/#/fuzz_}" >"$b/fuzz-build.log" 2>&1 ||
    { tail -20 "$b/fuzz-build.log" >&2; exit 1; }
built=$((SECONDS - start))

work=$(mktemp -d /tmp/cutover-fuzz-XXXXXX)
trap 'rm -rf "$work"' EXIT
total_execs=0
total_findings=0
printf '%-12s %12s %9s %8s\n' target executions findings seconds
for t in "${targets[@]}"; do
    mkdir -p "$work/$t/corpus" "$work/$t/crashes"
    cp -r "$root/tests/fuzz/corpus/$t/." "$work/$t/corpus/"
    t0=$SECONDS
    # leaks count as findings; -timeout makes a hang one too
    "$b/tests/fuzz_$t" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/$t/crashes/" \
        "$work/$t/corpus" >"$work/$t/log" 2>&1 || true
    execs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$work/$t/log" | tail -1)
    findings=$(find "$work/$t/crashes" -type f | wc -l)
    if [ -z "$execs" ] && [ "$findings" = 0 ]; then
        findings=1 # it died without a report: keep the log
        cp "$work/$t/log" "$work/$t/crashes/died.log"
    fi
    if [ "$findings" -gt 0 ]; then
        mkdir -p "$root/.run/fuzz/$t"
        cp "$work/$t/crashes/"* "$work/$t/log" "$root/.run/fuzz/$t/"
    fi
    printf '%-12s %12s %9s %8s\n' "$t" "${execs:-?}" "$findings" $((SECONDS - t0))
    total_execs=$((total_execs + ${execs:-0}))
    total_findings=$((total_findings + findings))
done
echo "fuzz: ${#targets[@]} targets, $total_execs executions, $total_findings findings" \
    "(${seconds} s each, build ${built} s)"
if [ "$total_findings" -gt 0 ]; then
    echo "fuzz: inputs and logs in $root/.run/fuzz/" >&2
    exit 1
fi
