#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds cutover twice (optimised, then with
# AddressSanitizer + UndefinedBehaviorSanitizer) and runs every CTest test in both builds
# against a real PostgreSQL, s3rver and the example application, all started and stopped
# by the suite itself, after a short pass of every fuzz target. Exits non-zero on any failure.
#
#   ./scripts/test.sh            # everything
#   CUTOVER_TEST_SANITIZE=0 ./scripts/test.sh    # skip the sanitizer build
#   CUTOVER_TEST_ARGS="-L unit" ./scripts/test.sh  # extra ctest arguments
#   CUTOVER_TEST_FUZZ=0 ./scripts/test.sh        # skip the fuzzers' short pass (default 3 s each)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
start=$SECONDS

"$root/scripts/deps.sh"

jobs=$(nproc 2>/dev/null || echo 2)
run_suite() { # run_suite BUILD_DIR CMAKE_ARGS...
    local dir=$1; shift
    echo "== build $dir"
    cmake -S "$root" -B "$root/$dir" -DCUTOVER_TESTS=ON "$@" >/dev/null
    cmake --build "$root/$dir" -j"$jobs"
    echo "== test $dir"
    # whatever happens, the services this run started are stopped
    services_dir="$root/$dir/test-services"
    trap '"$root/tests/harness/services.sh" stop "$services_dir" >/dev/null 2>&1 || true' EXIT
    (cd "$root/$dir" && ctest --output-on-failure --no-tests=error -j"$jobs" --timeout 900 ${CUTOVER_TEST_ARGS:-})
    "$root/tests/harness/services.sh" stop "$root/$dir/test-services" >/dev/null 2>&1 || true
    trap - EXIT
}

# a short pass of every fuzz target (libFuzzer, ASan + UBSan): CUTOVER_TEST_FUZZ seconds each
if [ "${CUTOVER_TEST_FUZZ:-3}" != 0 ]; then
    echo "== fuzz: ${CUTOVER_TEST_FUZZ:-3} s per target"
    "$root/scripts/fuzz.sh" "${CUTOVER_TEST_FUZZ:-3}"
fi
run_suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCUTOVER_SANITIZE=OFF
if [ "${CUTOVER_TEST_SANITIZE:-1}" != 0 ]; then
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DCUTOVER_SANITIZE=ON
fi
echo "== all tests passed in $((SECONDS - start)) s"
