#!/usr/bin/env bash
# A user who only wants the binary runs `cmake -S . -B build && cmake --build build`: that
# must work on a machine without the test framework. This hides cmocka from pkg-config (a
# pkg-config directory holding every other .pc file), configures a fresh build directory,
# and builds and runs the binary. It fails if configuring demands cmocka or if the build
# needs anything of the tests.
set -euo pipefail
src=${CUTOVER_SOURCE_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/pc"
IFS=: read -r -a dirs <<<"$(pkg-config --variable pc_path pkg-config)"
for d in "${dirs[@]}"; do
    [ -d "$d" ] || continue
    for f in "$d"/*.pc; do
        [ -e "$f" ] || continue
        name=$(basename "$f")
        [ "$name" = cmocka.pc ] && continue
        [ -e "$work/pc/$name" ] || ln -s "$f" "$work/pc/$name"
    done
done
export PKG_CONFIG_LIBDIR="$work/pc"
unset PKG_CONFIG_PATH
pkg-config --exists cmocka && { echo "FAIL: cmocka still visible to pkg-config"; exit 1; }
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$work/configure.log" 2>&1 || {
    cat "$work/configure.log"; echo "FAIL: configuring without cmocka failed"; exit 1; }
grep -q "cmocka not found" "$work/configure.log" || {
    cat "$work/configure.log"; echo "FAIL: configure did not say the tests are skipped"; exit 1; }
cmake --build "$work/build" -j2 >"$work/build.log" 2>&1 || {
    tail -n 40 "$work/build.log"; echo "FAIL: building without cmocka failed"; exit 1; }
"$work/build/cmd/cutover" --version
echo "ok: configured, built and ran cutover without cmocka"
