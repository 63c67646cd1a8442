#!/usr/bin/env bash
# The soak: MINUTES (default 10) of mixed traffic through one `cutover proxy` on a private
# stack, looking for leaks. Not part of CI (too long); run it by hand:
#
#   ./scripts/soak.sh [MINUTES]        # at least 2 (the trend is judged from 6); uses ./build (or $CUTOVER_BUILD)
#
# Stack, all on 127.0.0.1: PostgreSQL, s3rver and the example app started by
# tests/harness/services.sh in .run/soak/services (never the tests' shared fixture), and
# cutover in front of the app with upload, signed-URL and delete routes, dual_write on and
# a backfill source (the app's documents.jsonl, seeded with historical documents through
# /_control/seed, about half the run's worth at backfill.rate documents/s).
#
# Traffic (one node process, 4 clients in turn, bounded by a short pause between requests):
# multipart uploads of 1 KiB, 16 KiB, 256 KiB and 2 MiB, signed-URL reads with one of 50
# X-User-Id values (one in four fetches the URL and compares the bytes with the upload's
# SHA-256), deletes of uploaded documents; every 30 s a flag flip through `cutover flags set`
# (read_from_s3.percent 25, 100 (--force: the gate counts the backfill's pending rows), 0,
# and shadow_read between 0 and 0.1); the backfill started through POST /admin/backfill
# after the first tenth of the run. Every request expects a 2xx: there are no expected
# errors (a document is never read or deleted once its delete was sent).
#
# Every 10 s: cutover's RSS (VmRSS) and open descriptors (/proc/PID/fd). At the end: a table
# per minute, and the least-squares slope of RSS and descriptors over the second half of the
# run (the first half is warm-up: pools, caches, the backfill starting). Exit 1 when RSS
# grows by 1 MiB/min or more, descriptors by 1/min or more, any request or flag flip failed,
# or an acknowledged upload is not, once the mirror settled (deadline 180 s), verified with
# the client's bytes, deleted (its S3 delete done) or failed with a reason; or a backfill
# document is in none of those states. Everything it started is stopped on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
minutes=${1:-10}
case "$minutes" in '' | *[!0-9]*) echo "usage: $0 [MINUTES]" >&2; exit 2 ;; esac
[ "$minutes" -ge 2 ] || { echo "soak: at least 2 minutes" >&2; exit 2; }
build=${CUTOVER_BUILD:-$root/build}
bin="$build/cmd/cutover"
run="$root/.run/soak"
duration=$((minutes * 60))
rss_max_kib_min=1024 # thresholds of "flat"
fds_max_min=1
backfill_rate=10

cutover_pid='' traffic_pid=''
stop_all() {
    for p in "$traffic_pid" "$cutover_pid"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    for p in "$traffic_pid" "$cutover_pid"; do
        [ -n "$p" ] || continue
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    "$root/tests/harness/services.sh" stop "$run/services" >/dev/null 2>&1 || true
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"

if [ ! -x "$bin" ]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$build" -j2 --target cutover >/dev/null
fi

"$root/tests/harness/services.sh" stop "$run/services" >/dev/null 2>&1 || true
rm -rf "$run"
mkdir -p "$run/spool"
"$root/tests/harness/services.sh" start "$run/services" >/dev/null
# shellcheck disable=SC1091
. "$run/services/env"
psql() { "$PG_BIN/psql" -X -q -A -t "$PG_URL" "$@"; }

listen_port=$(free_port)
admin_port=$(free_port)
export CUTOVER_ADMIN_TOKEN=soak-admin-token
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
write_example_config "$S3_BUCKET" true "$backfill_rate" 4
"$bin" migrate-db --config "$run/cutover.json" >/dev/null
seed=$((duration * backfill_rate / 2))
curl -fsS -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"count\": $seed, \"size\": 16384, \"org\": \"soak-archive\", \"prefix\": \"soak-archive/doc-\"}" \
    "$APP_URL/_control/seed"

"$bin" proxy --config "$run/cutover.json" >"$run/cutover.log" 2>&1 &
cutover_pid=$!
wait_url "http://127.0.0.1:$admin_port/readyz" 30 || { echo "soak: cutover not ready; see $run/cutover.log" >&2; exit 1; }
"$bin" flags set dual_write=true --reason "soak" --config "$run/cutover.json" >/dev/null

# The traffic: runs for the duration, writes its counters to traffic.json every second and,
# at the end, every acknowledged upload to acked.csv (key, sha256, deleted by the client).
cat >"$run/traffic.js" <<'JS'
'use strict';
const crypto = require('crypto'), fs = require('fs');
const [proxy, dir, seconds] = [process.argv[2], process.argv[3], Number(process.argv[4])];
const sizes = [[1024, 4], [16384, 4], [262144, 2], [2097152, 1]]; // size, weight
const live = [], acked = new Map(); // key -> {sha, deleted}
const c = { requests: 0, errors: 0, uploads: 0, reads: 0, fetched: 0, deletes: 0 };
const errs = [];
let stop = false, seq = 0;
function pickSize() {
    let w = Math.random() * sizes.reduce((a, s) => a + s[1], 0);
    for (const [n, k] of sizes) if ((w -= k) < 0) return n;
    return sizes[0][0];
}
function error(what) {
    c.errors++;
    if (errs.length < 50) errs.push(`${new Date().toISOString()} ${what}`);
}
async function req(what, url, opts) {
    c.requests++;
    try {
        const r = await fetch(url, { ...opts, signal: AbortSignal.timeout(30000) });
        const body = Buffer.from(await r.arrayBuffer());
        if (r.status < 200 || r.status > 299) { error(`${what}: HTTP ${r.status}`); return null; }
        return body;
    } catch (e) { error(`${what}: ${e.cause ? e.cause.code || e.cause.message : e.message}`); return null; }
}
async function upload() {
    const size = pickSize(), b = crypto.randomBytes(size);
    const sha = crypto.createHash('sha256').update(b).digest('hex');
    const fd = new FormData();
    fd.append('patient_id', String(1 + (seq % 40)));
    fd.append('file', new Blob([b]), `soak ${++seq}.bin`);
    c.uploads++;
    const r = await req('upload', `${proxy}/documents`, { method: 'POST', body: fd,
        headers: { 'X-Org-Id': 'soak' } });
    if (!r) return;
    let key;
    try { key = JSON.parse(r).storage_key; } catch (e) { error('upload: answer not JSON'); return; }
    acked.set(key, { sha, deleted: false });
    live.push(key);
}
async function read() {
    const key = live[Math.floor(Math.random() * live.length)];
    const enc = encodeURIComponent(key);
    c.reads++;
    const r = await req('signed-url', `${proxy}/documents/${enc}/url`,
        { headers: { 'X-User-Id': `user-${1 + Math.floor(Math.random() * 50)}` } });
    if (!r || Math.random() >= 0.25) return;
    let url;
    try { url = JSON.parse(r).url; } catch (e) { error('signed-url: answer not JSON'); return; }
    if (!/^https?:\/\//.test(url)) return;
    c.fetched++;
    const b = await req('fetch signed URL', url, {});
    if (b && crypto.createHash('sha256').update(b).digest('hex') !== acked.get(key).sha)
        error(`fetch signed URL: other bytes (${/X-Amz-Signature=/.test(url) ? 'S3' : 'app'})`);
}
async function del() {
    const key = live.splice(Math.floor(Math.random() * live.length), 1)[0];
    acked.get(key).deleted = true; // from now on it is never read again
    c.deletes++;
    await req('delete', `${proxy}/documents/${encodeURIComponent(key)}`, { method: 'DELETE' });
}
async function client() {
    while (!stop) {
        const x = Math.random();
        if (live.length < 20 || (x < 0.35 && live.length < 400)) await upload();
        else if (x < 0.85) await read();
        else await del();
        await new Promise((r) => setTimeout(r, 40));
    }
}
function save() {
    fs.writeFileSync(`${dir}/traffic.json.tmp`, JSON.stringify(c));
    fs.renameSync(`${dir}/traffic.json.tmp`, `${dir}/traffic.json`);
}
const tick = setInterval(save, 1000);
setTimeout(() => { stop = true; }, seconds * 1000);
process.on('SIGTERM', () => { stop = true; });
Promise.all([client(), client(), client(), client()]).then(() => {
    clearInterval(tick);
    save();
    const q = (s) => `"${s.replace(/"/g, '""')}"`;
    fs.writeFileSync(`${dir}/acked.csv`, [...acked].map(([k, v]) =>
        `${q(k)},${v.sha},${v.deleted}\n`).join(''));
    fs.writeFileSync(`${dir}/errors.txt`, errs.join('\n') + (errs.length ? '\n' : ''));
});
JS
node "$run/traffic.js" "http://127.0.0.1:$listen_port" "$run" "$duration" &
traffic_pid=$!

flip_errors=0
flip() { # flip NAME=VALUE [--force]: through the admin API, audited
    if ! "$bin" flags set "$@" --reason "soak" --config "$run/cutover.json" >>"$run/flips.log" 2>&1; then
        flip_errors=$((flip_errors + 1))
        echo "flip $* failed" >>"$run/flips.log"
    fi
}
backfill_started=''
backfill_at=$((duration / 10))
flips=("read_from_s3.percent=25" "shadow_read=0.1" "read_from_s3.percent=100 --force"
       "shadow_read=0" "read_from_s3.percent=0")
nflip=0
start=$SECONDS
: >"$run/samples.tsv"
# samples.tsv: seconds, RSS KiB, descriptors, requests so far, errors so far
while [ $((SECONDS - start)) -lt "$duration" ]; do
    nsample=$(($(wc -l <"$run/samples.tsv") + 1))
    next=$((start + nsample * 10))
    while [ $SECONDS -lt $next ]; do sleep 0.5; done
    t=$((SECONDS - start))
    kill -0 "$cutover_pid" 2>/dev/null || { echo "soak: cutover exited; see $run/cutover.log" >&2; exit 1; }
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$cutover_pid/status")
    fds=$(find "/proc/$cutover_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    counts=$(node -e 'const c=JSON.parse(require("fs").readFileSync(process.argv[1]));console.log(c.requests+" "+c.errors)' \
        "$run/traffic.json" 2>/dev/null || echo "0 0")
    printf '%s\t%s\t%s\t%s\n' "$t" "$rss" "$fds" "${counts// /$'\t'}" >>"$run/samples.tsv"
    if [ -z "$backfill_started" ] && [ "$t" -ge "$backfill_at" ]; then
        code=$(curl -s -o "$run/backfill-start.json" -w '%{http_code}' -X POST \
            -H "Authorization: Bearer $CUTOVER_ADMIN_TOKEN" -H 'Content-Type: application/json' \
            -d '{"action":"start"}' "http://127.0.0.1:$admin_port/admin/backfill")
        [ "$code" = 200 ] || { flip_errors=$((flip_errors + 1)); echo "backfill start: HTTP $code" >>"$run/flips.log"; }
        backfill_started=$t
    fi
    if [ $((nsample % 3)) -eq 0 ] && [ "$t" -lt "$duration" ]; then
        # shellcheck disable=SC2086
        flip ${flips[$((nflip % ${#flips[@]}))]}
        nflip=$((nflip + 1))
    fi
done
flip read_from_s3.percent=0
flip shadow_read=0
wait "$traffic_pid" || true
traffic_pid=''

# Settle: the mirror and the backfill finish; every row verified, active, failed with a
# reason or deleted with its S3 delete done.
unsettled_sql="SELECT count(*) FROM cutover.documents WHERE NOT (state IN ('verified', 'active')
    OR (state = 'failed' AND coalesce(last_error, '') <> '')
    OR (state = 'deleted' AND next_attempt_at = 'infinity'))"
deadline=$((SECONDS + 180))
while [ "$(psql -c "$unsettled_sql")" != 0 ] && [ $SECONDS -lt $deadline ]; do sleep 1; done
unsettled=$(psql -c "$unsettled_sql")
backfill_state=$(curl -fsS -H "Authorization: Bearer $CUTOVER_ADMIN_TOKEN" \
    "http://127.0.0.1:$admin_port/admin/status" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{const o=JSON.parse(s);const b=o.backfill_runner||{};console.log(`${b.state||"?"} ${b.verified??"?"} ${b.failed??"?"}`)}catch(e){console.log("?")}})' || echo '?')

# Every acknowledged upload against its row.
verdict=$(psql <<SQL
CREATE TEMP TABLE acked (k text, sha text, deleted boolean);
\copy acked FROM '$run/acked.csv' WITH (FORMAT csv)
SELECT count(*),
       count(*) FILTER (WHERE NOT a.deleted AND d.state IN ('verified', 'active') AND d.sha256 = a.sha),
       count(*) FILTER (WHERE d.state = 'failed' AND coalesce(d.last_error, '') <> ''),
       count(*) FILTER (WHERE a.deleted AND d.state = 'deleted' AND d.next_attempt_at = 'infinity'),
       count(*) FILTER (WHERE d.state IN ('verified', 'active') AND d.sha256 <> a.sha),
       (SELECT count(*) FROM cutover.documents WHERE origin = 'backfill' AND state IN ('verified', 'active'))
FROM acked a LEFT JOIN cutover.documents d ON d.storage_key = a.k;
SQL
)
read -r acked verified failed deleted wrong bf_verified <<<"${verdict//|/ }"
lost=$((acked - verified - failed - deleted - wrong))
last=$(tail -n 1 "$run/samples.tsv")
requests=$(cut -f4 <<<"$last")
errors=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).errors)' "$run/traffic.json")

echo "soak: $minutes min, cutover pid $cutover_pid, logs in $run/"
printf '%6s %10s %6s %9s %7s\n' minute RSS_MiB fds requests errors
awk -F'\t' -v step=60 '
    { m = int(($1 - 1) / step) + 1; rss[m] = $2; fds[m] = $3; req[m] = $4; err[m] = $5; if (m > n) n = m }
    END { pr = 0; pe = 0
          for (i = 1; i <= n; i++) {
              printf "%6d %10.1f %6d %9d %7d\n", i, rss[i] / 1024, fds[i], req[i] - pr, err[i] - pe
              pr = req[i]; pe = err[i] } }' "$run/samples.tsv"
# least squares over the second half: slope in units per minute
slope() { # slope COLUMN
    awk -F'\t' -v d="$duration" -v c="$1" '
        $1 > d / 2 { x = $1 / 60; y = $c; n++; sx += x; sy += y; sxx += x * x; sxy += x * y }
        END { v = n * sxx - sx * sx; printf "%.3f", (n > 1 && v > 0) ? (n * sxy - sx * sy) / v : 0 }' \
        "$run/samples.tsv"
}
rss_slope=$(slope 2) fds_slope=$(slope 3)
rss_flat=$(awk -v s="$rss_slope" -v m="$rss_max_kib_min" 'BEGIN { print (s < m) ? "flat" : "RISING" }')
fds_flat=$(awk -v s="$fds_slope" -v m="$fds_max_min" 'BEGIN { print (s < m) ? "flat" : "RISING" }')
# under 6 minutes the second half is still warm-up (pools, caches, the backfill): the trend is
# printed but not judged; errors and documents still are
judged=yes
if [ "$minutes" -lt 6 ]; then
    judged="no: a run under 6 minutes is warm-up"
    [ "$rss_flat" = flat ] || rss_flat="rising, not judged"
    [ "$fds_flat" = flat ] || fds_flat="rising, not judged"
fi
echo
printf 'trend over minutes %d-%d: RSS %s KiB/min (%s, threshold < %d KiB/min), fds %s/min (%s, threshold < %d/min)\n' \
    $((minutes / 2)) "$minutes" "$rss_slope" "$rss_flat" "$rss_max_kib_min" "$fds_slope" "$fds_flat" "$fds_max_min"
echo "traffic: $requests requests, $errors errors; flag flips and backfill start: $nflip + 2 flips, $flip_errors failed"
echo "backfill (POST /admin/backfill at ${backfill_started:-never} s): $seed seeded, $bf_verified verified; runner: $backfill_state"
echo "uploads acknowledged $acked: verified with the client's bytes $verified, deleted $deleted, failed with a reason $failed, lost $lost, other bytes $wrong"
echo "rows not settled $unsettled"
[ -s "$run/errors.txt" ] && { echo "first errors:"; head -n 10 "$run/errors.txt" | sed 's/^/  /'; }

rc=0
[ "$judged" != yes ] || { [ "$rss_flat" = flat ] && [ "$fds_flat" = flat ]; } || rc=1
echo "trend judged: $judged"
[ "$errors" = 0 ] && [ "$flip_errors" = 0 ] || rc=1
[ "$lost" = 0 ] && [ "$wrong" = 0 ] && [ "$unsettled" = 0 ] || rc=1
echo "soak: $([ $rc = 0 ] && echo passed || echo FAILED)"
exit $rc
