#!/usr/bin/env bash
# Installs what building, testing and the demo need on Debian 12, only what is missing:
# the compiler and libraries, PostgreSQL 15's server binaries, curl, Node.js (Debian 12 ships
# 18), the pinned S3 emulator and the Kubernetes schemas from npm. The Debian packages are
# listed in scripts/packages/ (build.txt, test.txt), which the Dockerfile reads too; the tests
# use promtool (Debian's prometheus package: `promtool check metrics`) and headless Chromium
# (the dashboard's test). Safe to run again. Needs root for apt-get (skipped when everything
# is present).
#
# The tests and the demo run their own throwaway PostgreSQL cluster on a free port
# (tests/harness/services.sh), so the `main` cluster that Debian's package would create (and,
# with systemd, start on port 5432) is turned off before the package is installed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

# the one package list, shared with the Dockerfile: scripts/packages/ (one name a line)
mapfile -t packages < <(sed 's/#.*//; s/[[:space:]]//g; /^$/d' \
    "$root/scripts/packages/build.txt" "$root/scripts/packages/test.txt")
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    if [ "$(id -u)" != 0 ]; then
        echo "deps: run as root (apt-get is needed for: ${missing[*]})" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [ ! -e /etc/postgresql-common/createcluster.d/cutover.conf ]; then
        mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/cutover.conf
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # only promtool is wanted: a Prometheus server started by the package (with systemd) would
    # hold port 9090, the admin port's usual address
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 18 ]; then
    echo "deps: Node.js >= 18 is needed by the S3 emulator, found $(node --version)" >&2
    exit 1
fi
if [ ! -d "$root/tests/harness/s3rver/node_modules/@20minutes/s3rver" ]; then
    echo "deps: installing the S3 emulator (npm ci)"
    (cd "$root/tests/harness/s3rver" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
if [ ! -d "$root/tests/deploy/node_modules/kubernetes-models" ]; then
    echo "deps: installing the Kubernetes schemas for the manifests' check (npm ci)"
    (cd "$root/tests/deploy" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
