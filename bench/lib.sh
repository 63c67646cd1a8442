# bench/lib.sh: what the benchmark scripts share, sourced by each run.sh once it has read its
# arguments and set ROOT (the repository). Defines:
#   bench_cutover BUILD_DIR   BIN: $CUTOVER_BIN when set, else BUILD_DIR/cmd/cutover,
#                             configured (RelWithDebInfo) when BUILD_DIR has no CMake cache
#                             yet and brought up to date.
#   bench_install PKG...      installs the Debian packages given (none: nothing), with sudo
#                             when not root.
#   free_port                 prints a TCP port free on 127.0.0.1 now.

bench_cutover() {
  if [ -n "${CUTOVER_BIN:-}" ]; then
    BIN=$CUTOVER_BIN
    return 0
  fi
  BIN=$1/cmd/cutover
  [ -f "$1/CMakeCache.txt" ] ||
    cmake -S "$ROOT" -B "$1" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$1" -j"$(nproc)" --target cutover >/dev/null
}

bench_install() {
  [ $# -gt 0 ] || return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "installing $*..." >&2
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@" >/dev/null
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
