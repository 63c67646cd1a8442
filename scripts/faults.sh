#!/usr/bin/env bash
# The reliability and security suite in one command: the CTest tests labelled `faults` (the
# fault scenarios of tests/upload/test_dual_write_faults.c on a private PostgreSQL, s3rver and
# example app; the hostile-input tests of tests/hostile/; the secrets scan) and the earlier
# hostile-input tests they build on (test_proxy_raw: smuggling, header floods, limits;
# test_proxy_e2e: header and idle deadlines; test_proxy_linger; test_admin: admin body limit
# and token lockout; test_dual_write: an unmirrorable upload; test_backfill_legacy: its
# `cutover backfill` SIGKILLed at a random point and run again), then the fault table: for each
# fault, the documents acknowledged to the client (2xx), verified in S3 with the client's
# bytes, failed with a reason, lost (acknowledged but neither: must be 0) and verified with
# other bytes (must be 0). Exits non-zero when a test fails.
#
#   ./scripts/faults.sh                 # optimised build in ./build (slow faults included)
#   ./scripts/faults.sh build-asan      # a sanitizer build dir (its CTest has no slow faults)
#   ./scripts/faults.sh [BUILD] --fuzz SECONDS --soak MINUTES
#       the whole suite in one command: the faults' table, then every fuzz target for
#       SECONDS (scripts/fuzz.sh: executions and findings), then the soak for MINUTES
#       (scripts/soak.sh: RSS and descriptor trend); each table printed as it ends
#
# scripts/test.sh runs the same tests as part of the whole suite (and a 3 s fuzz pass); this
# prints their table. The soak (10 minutes of mixed traffic) is not part of CI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=build fuzz_s=0 soak_min=0
while [ $# -gt 0 ]; do
    case "$1" in
    --fuzz) fuzz_s=${2:?--fuzz SECONDS}; shift 2 ;;
    --soak) soak_min=${2:?--soak MINUTES}; shift 2 ;;
    -*) echo "usage: $0 [BUILD] [--fuzz SECONDS] [--soak MINUTES]" >&2; exit 2 ;;
    *) build=$1; shift ;;
    esac
done
case "$build" in /*) ;; *) build="$root/$build" ;; esac
start=$SECONDS

if [ ! -f "$build/CMakeCache.txt" ]; then
    "$root/scripts/deps.sh"
    cmake -S "$root" -B "$build" -DCUTOVER_TESTS=ON >/dev/null
fi
cmake --build "$build" -j2 >/dev/null

table=$(mktemp /tmp/cutover-faults-XXXXXX)
trap 'rm -f "$table"; "$root/tests/harness/services.sh" stop "$build/test-services" >/dev/null 2>&1 || true' EXIT
export CUTOVER_FAULTS_TABLE=$table
rc=0
tests='^(test_dual_write_faults|test_faults_slow|test_hostile_.*|test_secrets_scan'
tests+='|test_proxy_raw|test_proxy_e2e|test_proxy_linger|test_admin|test_dual_write'
tests+='|test_backfill_legacy)$'
(cd "$build" && ctest --output-on-failure --no-tests=error -j2 -R "$tests" --timeout 600) || rc=$?

echo
printf '%-40s %6s %8s %6s %5s %11s %7s  %s\n' fault acked verified failed lost wrong-bytes seconds \
    "first failure's reason"
while IFS=$'\t' read -r fault acked verified failed lost wrong secs reason; do
    printf '%-40s %6s %8s %6s %5s %11s %7s  %s\n' "$fault" "$acked" "$verified" "$failed" "$lost" \
        "$wrong" "$secs" "${reason:0:60}"
done <"$table"
echo "faults: $((SECONDS - start)) s, $([ $rc = 0 ] && echo passed || echo FAILED)"
if [ "$fuzz_s" != 0 ]; then
    echo
    "$root/scripts/fuzz.sh" "$fuzz_s" || rc=1
fi
if [ "$soak_min" != 0 ]; then
    echo
    CUTOVER_BUILD=$build "$root/scripts/soak.sh" "$soak_min" || rc=1
fi
echo "suite: $((SECONDS - start)) s, $([ $rc = 0 ] && echo passed || echo FAILED)"
exit $rc
