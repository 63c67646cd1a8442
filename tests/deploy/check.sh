#!/usr/bin/env bash
# The deployment files, checked offline (no cluster, no Docker, no kustomize binary):
#  - deploy/kubernetes passes yamllint (Debian's package; deploy/kubernetes/.yamllint);
#  - the base and each overlay render (tests/deploy/check.js: resources, patches, images,
#    labels), every object passes the Kubernetes API's schemas with unknown fields refused,
#    and the sidecar's rules hold (ports, probes, grace period, non-root read-only, spool);
#  - the ConfigMap's configuration passes `cutover config check` with the Secret's variables;
#  - the Dockerfile reads the package lists of scripts/packages/ and keeps its contract;
#  - and each check can fail: broken copies of the manifests must be refused.
#   tests/deploy/check.sh CUTOVER_BIN
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${1:?usage: $0 CUTOVER_BIN}
k=$root/deploy/kubernetes
here=$root/tests/deploy
fails=0
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

command -v yamllint >/dev/null || { echo "yamllint is missing: run scripts/deps.sh" >&2; exit 1; }
[ -d "$here/node_modules/kubernetes-models" ] ||
    { echo "tests/deploy/node_modules is missing: run scripts/deps.sh" >&2; exit 1; }
work=$(mktemp -d /tmp/cutover-deploy-XXXXXX)
trap 'rm -rf "$work"' EXIT

# 1. lint
yamllint -s -c "$k/.yamllint" "$k" || bad "yamllint"

# 2. render and validate the base and every overlay
for d in "$k" "$k"/overlays/*/; do
    d=${d%/}
    mkdir -p "$work/out/${d##*/}"
    node "$here/check.js" "$d" "$work/out/${d##*/}" || bad "render/validate $d"
done

# 3. the configuration, with the Secret's variables and nothing else from this environment
check_config() { # check_config JSON ENVFILE
    local vars=()
    while IFS= read -r line; do vars+=("$line"); done <"$2"
    env -i PATH=/usr/bin:/bin "${vars[@]}" "$bin" config check "$1"
}
out=$work/out/kubernetes
check_config "$out/cutover.json" "$out/secret.env" || bad "config check of the ConfigMap"
: >"$work/empty.env"
if check_config "$out/cutover.json" "$work/empty.env" >/dev/null 2>&1; then
    bad "config check passed without the Secret's variables (is it run at all?)"
fi

# 4. the Dockerfile: one package list, non-root, the entry point
df=$root/Dockerfile
grep -q 'scripts/packages/build.txt' "$df" || bad "Dockerfile: the build stage must read scripts/packages/build.txt"
grep -q 'scripts/packages/runtime.txt' "$df" || bad "Dockerfile: the runtime stage must read scripts/packages/runtime.txt"
grep -q '^FROM debian:bookworm-slim AS build' "$df" || bad "Dockerfile: build stage on debian:bookworm-slim"
[ "$(grep -c '^FROM debian:bookworm-slim' "$df")" = 2 ] || bad "Dockerfile: two stages on debian:bookworm-slim"
grep -q '^ENTRYPOINT \["cutover"\]$' "$df" || bad 'Dockerfile: ENTRYPOINT ["cutover"]'
grep -q '^CMD \["proxy"\]$' "$df" || bad 'Dockerfile: CMD ["proxy"]'
grep -Eq '^USER [1-9][0-9]*' "$df" || bad "Dockerfile: a numeric non-root USER"
if grep -Eqi '^[[:space:]]*HEALTHCHECK' "$df"; then bad "Dockerfile: no HEALTHCHECK (the probes do it)"; fi

# 5. each check refuses a broken copy
mutate() { # mutate FILE SED-EXPRESSION WHAT
    rm -rf "$work/m"
    cp -r "$k" "$work/m"
    sed -i "$2" "$work/m/$1"
    if cmp -s "$k/$1" "$work/m/$1"; then
        bad "mutation '$3' changed nothing"
        return 1
    fi
}
refused() { # refused WHAT: the checker must fail on $work/m
    if node "$here/check.js" "$work/m" >/dev/null 2>&1; then bad "not refused: $1"; fi
}
mutate deployment.yaml 's/- name: admin$/- nme: admin/' "unknown field" && refused "a misspelt field"
mutate deployment.yaml 's/replicas: 2/replicas: two/' "wrong type" && refused "a wrong type"
mutate deployment.yaml 's/terminationGracePeriodSeconds: 50/terminationGracePeriodSeconds: 30/' \
    "grace" && refused "a grace period shorter than preStop + drain"
mutate service.yaml 's/targetPort: http/targetPort: 8080/' "target" &&
    refused "a Service that targets the app"
mutate job-backfill.yaml 's/parallelism: 3/parallelism: 1/' "parallelism" &&
    refused "a backfill Job without parallelism"
mutate deployment.yaml '0,/readOnlyRootFilesystem: true/{s//readOnlyRootFilesystem: false/}' \
    "read-only" && refused "a writable root filesystem"
mutate kustomization.yaml 's/^images:/imagez:/' "kustomization" &&
    refused "a kustomization field the renderer does not know"
mutate configmap.yaml 's/"shutdown_grace_s": 25/"shutdown_grace_s": 45/' "drain" &&
    refused "a drain longer than the grace period allows"
mutate secret.yaml '/LEGACY_AUTH:/d' "secret" && refused "a configuration variable the Secret lacks"
mutate service.yaml 's/name: http$/name: http   /' "lint" &&
    if yamllint -s -c "$work/m/.yamllint" "$work/m" >/dev/null 2>&1; then bad "not refused: trailing spaces"; fi

if [ "$fails" -gt 0 ]; then
    echo "deploy checks: $fails failed" >&2
    exit 1
fi
echo "deploy checks: lint, render, schemas, rules, config check and 10 refusals passed"
