#!/usr/bin/env bash
# Fuzzes one target for real with libFuzzer (clang), growing its corpus in a scratch copy.
#   tests/fuzz/run.sh TARGET [SECONDS]   (TARGET: a tests/fuzz/fuzz_TARGET.c; all at once: scripts/fuzz.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${1:?usage: $0 TARGET [SECONDS], TARGET one of tests/fuzz/fuzz_TARGET.c}
seconds=${2:-60}
command -v clang >/dev/null || apt-get install -y -qq clang >/dev/null
CC=clang cmake -S "$root" -B "$root/build-fuzz" -DCMAKE_BUILD_TYPE=Debug -DCUTOVER_FUZZ=ON >/dev/null
cmake --build "$root/build-fuzz" -j"$(nproc)" --target "fuzz_$target" >/dev/null
work=$(mktemp -d /tmp/cutover-fuzz-XXXXXX)
cp -r "$root/tests/fuzz/corpus/$target/." "$work/"
"$root/build-fuzz/tests/fuzz_$target" -max_total_time="$seconds" -max_len=8192 "$work"
echo "corpus grown in $work (copy new finds into tests/fuzz/corpus/$target)"
