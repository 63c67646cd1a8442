#!/usr/bin/env bash
# Fails when a C file of the project is not formatted by the project's .clang-format.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "clang-format not installed"; exit 1; }
bad=0
while IFS= read -r f; do
    clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || { echo "not clang-format clean: $f"; bad=1; }
done < <(git ls-files '*.c' '*.h' 2>/dev/null || find core proxy storage flags tests bench -name '*.[ch]')
exit $bad
