#!/usr/bin/env bash
# Fuzzes one target for real with libFuzzer (clang), growing its corpus in a scratch copy.
#   tests/fuzz/run.sh config|http_check|sigv4|h1parse|multipart|journal|jsplice [SECONDS]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${1:?usage: $0 config|http_check|sigv4|h1parse|multipart|journal|jsplice [SECONDS]}
seconds=${2:-60}
command -v clang >/dev/null || apt-get install -y -qq clang >/dev/null
CC=clang cmake -S "$root" -B "$root/build-fuzz" -DCMAKE_BUILD_TYPE=Debug -DCUTOVER_FUZZ=ON >/dev/null
cmake --build "$root/build-fuzz" -j"$(nproc)" --target "fuzz_$target" >/dev/null
work=$(mktemp -d /tmp/cutover-fuzz-XXXXXX)
cp -r "$root/tests/fuzz/corpus/$target/." "$work/"
"$root/build-fuzz/tests/fuzz_$target" -max_total_time="$seconds" -max_len=8192 "$work"
echo "corpus grown in $work (copy new finds into tests/fuzz/corpus/$target)"
