#!/bin/bash
# The container image checked by its parts, where no Docker engine runs: a Debian 12
# (bookworm, minbase) root filesystem with the runtime stage's packages, taken from the
# Dockerfile's own list (scripts/packages/runtime.txt), the binary built as the build stage
# builds it, the same non-root user (10001); then, with that root mounted read-only and only
# the spool writable (a tmpfs, as the Kubernetes emptyDir), as uid 10001:
#   ldd finds every library; `cutover --help`; `cutover config check` of the Kubernetes
#   ConfigMap's configuration with its Secret's variables; a short `cutover proxy` that
#   serves /healthz, answers a request (502: no app behind it) and drains on SIGTERM.
# A maintainer's script, not CI: it needs root, debootstrap and the Debian mirror, and takes
# a few minutes. The mirror is the host's apt source (the first deb line of its sources), or
# $MIRROR. The root is kept in $IMAGE_ROOT (default /tmp/cutover-image).
#   sudo ./scripts/image-check.sh
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
R=${IMAGE_ROOT:-/tmp/cutover-image}
M=$R.ro
mirror=${MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)}
mirror=${mirror:-http://deb.debian.org/debian}
log=/tmp/cutover-image-check.log
t0=$(date +%s)
step_t=$t0
fails=0
step() { # step NAME: prints the time the previous step took
    local now
    now=$(date +%s)
    printf '  %-58s %4d s\n' "$1" $((now - step_t))
    step_t=$now
}
bad() { echo "  FAIL: $*"; fails=$((fails + 1)); }
cleanup() {
    [ -n "${proxy_pid:-}" ] && kill "$proxy_pid" 2>/dev/null
    for m in var/spool/cutover dev proc ""; do
        mountpoint -q "$M/$m" && umount -l "$M/$m"
    done
    return 0
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] || { echo "image-check: run as root (debootstrap, chroot, mount)" >&2; exit 2; }
command -v debootstrap >/dev/null ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1
: >"$log"

# 1. the runtime stage's root: bookworm minbase plus runtime.txt, no recommends (as
#    apt-get install --no-install-recommends in the Dockerfile)
pkgs=$(sed 's/#.*//' "$root/scripts/packages/runtime.txt" | xargs | tr ' ' ,)
echo "image-check: bookworm minbase + $pkgs (mirror $mirror)"
cleanup
rm -rf "$R" "$M"
mkdir -p "$R" "$M"
if ! debootstrap --variant=minbase --include="$pkgs" bookworm "$R" "$mirror" >>"$log" 2>&1; then
    echo "image-check: debootstrap failed (see $log)"
    exit 1
fi
step "debootstrap bookworm minbase + runtime packages"

# 2. the binary, as the build stage builds it
b=$root/build-image
if ! { cmake -S "$root" -B "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCUTOVER_TESTS=OFF &&
       cmake --build "$b" -j2 --target cutover; } >>"$log" 2>&1; then
    echo "image-check: build failed (see $log)"
    exit 1
fi
install -m 0755 "$b/cmd/cutover" "$R/usr/local/bin/cutover"
strip --strip-debug "$R/usr/local/bin/cutover"
step "cutover built (RelWithDebInfo, tests off) and copied in"

# 3. the user and directories of the runtime stage; the configuration files
chroot "$R" groupadd --gid 10001 cutover
chroot "$R" useradd --no-log-init --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin cutover
install -d -o 10001 -g 10001 -m 0750 "$R/var/spool/cutover"
install -d -m 0755 "$R/etc/cutover"
rm -rf "$R/var/cache/apt/archives/"*.deb "$R/var/lib/apt/lists/"*
out=$(mktemp -d)
if ! node "$root/tests/deploy/check.js" "$root/deploy/kubernetes" "$out" >>"$log" 2>&1; then
    echo "image-check: tests/deploy/check.js failed (run scripts/deps.sh first; see $log)"
    exit 1
fi
cp "$out/cutover.json" "$R/etc/cutover/kubernetes.json"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
p_data=$(free_port) p_admin=$(free_port) p_app=$(free_port)
cat >"$R/etc/cutover/cutover.json" <<EOF
{ "listen": "127.0.0.1:$p_data", "upstream": "http://127.0.0.1:$p_app",
  "admin": { "listen": "127.0.0.1:$p_admin" }, "spool_dir": "/var/spool/cutover",
  "limits": { "shutdown_grace_s": 2 } }
EOF
echo "image-check: root filesystem $(du -sh --exclude=proc "$R" | cut -f1) ($(chroot "$R" dpkg-query -W | wc -l) packages)"

# 4. read-only: a read-only bind mount of the root; /proc and /dev as a runtime gives them,
#    and the spool on a tmpfs (the volume)
mount --bind "$R" "$M" && mount -o remount,bind,ro "$M"
mount -t proc proc "$M/proc"
mount --bind /dev "$M/dev"
mount -t tmpfs -o size=64m,uid=10001,gid=10001,mode=0750 tmpfs "$M/var/spool/cutover"
run() { # run COMMAND...: as uid 10001 in the read-only root, the image's environment
    chroot --userspec=10001:10001 "$M" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        CUTOVER_CONFIG=/etc/cutover/cutover.json "$@"
}
if touch "$M/usr/local/bin/x" 2>/dev/null; then bad "the root is writable"; fi
step "user 10001, root mounted read-only, spool on tmpfs"

# 5. the checks
missing=$(run ldd /usr/local/bin/cutover | grep -c "not found")
nlibs=$(run ldd /usr/local/bin/cutover | grep -c "=> /")
[ "$missing" = 0 ] && [ "$nlibs" -gt 0 ] || bad "ldd: $missing libraries not found"
echo "  ldd: $nlibs libraries found, $missing not found"
run cutover --help >>"$log" 2>&1 || bad "cutover --help"
run whoami >/dev/null 2>&1 && [ "$(run id -u)" = 10001 ] || bad "not running as 10001"
vars=()
while IFS= read -r line; do vars+=("$line"); done <"$out/secret.env"
if ! chroot --userspec=10001:10001 "$M" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin \
        "${vars[@]}" cutover config check /etc/cutover/kubernetes.json >>"$log" 2>&1; then
    bad "cutover config check of the ConfigMap's configuration"
fi
run cutover config check /etc/cutover/cutover.json >>"$log" 2>&1 || bad "config check of the proxy's"
step "ldd, --help, config check (ConfigMap + Secret), as 10001"

run cutover proxy >"$out/proxy.log" 2>&1 &
proxy_pid=$!
ok=0
for _ in $(seq 100); do
    if curl -fsS -m 1 "http://127.0.0.1:$p_admin/healthz" >/dev/null 2>&1; then ok=1; break; fi
    kill -0 "$proxy_pid" 2>/dev/null || break
    sleep 0.1
done
[ $ok = 1 ] || bad "cutover proxy: /healthz did not answer within 10 s"
code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "http://127.0.0.1:$p_data/documents/x/url")
[ "$code" = 502 ] || bad "cutover proxy: a request without an app behind got $code, not 502"
ready=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "http://127.0.0.1:$p_admin/readyz")
[ "$ready" = 503 ] || bad "cutover proxy: /readyz without an app got $ready, not 503"
# the process runs as 10001 in the image's root
puid=$(awk '/^Uid:/ {print $2}' "/proc/$(pgrep -P "$proxy_pid" -x cutover || echo "$proxy_pid")/status" 2>/dev/null)
kill -TERM "$(pgrep -P "$proxy_pid" -x cutover || echo "$proxy_pid")"
wait "$proxy_pid"
prc=$?
proxy_pid=
[ "$prc" = 0 ] || bad "cutover proxy: exit status $prc after SIGTERM"
grep -q '"event":"stopped"' "$out/proxy.log" || bad "cutover proxy: no 'stopped' line"
if grep -qi "read-only\|permission denied" "$out/proxy.log"; then bad "cutover proxy: wrote outside its spool"; fi
echo "  proxy: /healthz 200, a request 502, /readyz 503, uid ${puid:-?}, SIGTERM -> exit $prc"
cat "$out/proxy.log" >>"$log"
step "cutover proxy: start, serve, drain on SIGTERM"

rm -rf "$out"
echo "image-check: $([ $fails = 0 ] && echo passed || echo "$fails FAILED") in $(( $(date +%s) - t0 )) s (log: $log)"
[ $fails = 0 ]
