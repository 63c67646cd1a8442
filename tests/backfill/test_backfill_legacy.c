/*
 * `cutover backfill` against a legacy store that misbehaves and counts (tests/backfill/
 * legacy_fixture.h, in this process) with the fixture's PostgreSQL and s3rver, a fresh state
 * database per test. The store counts the GETs of every key: a copy reads the raw original
 * exactly once, so the count is the number of times a document was copied.
 *
 * - errors: a 404 ends `failed` with "HTTP 404" after exactly one GET (no retry storm); a key
 *   that answers 500 twice then 200 ends verified after three GETs (retried with backoff
 *   within the copy); a key that always answers 500 ends `failed` with "HTTP 500" after
 *   workers.max_attempts copies of legacy attempts each, and no more GETs than that.
 * - 429: the store answers 429 with Retry-After: 2 to everything for 2 s from the first
 *   request; the whole backfill stops asking (from 0.5 s to 1.9 s after the first 429 no
 *   retry and no new document reaches the store: the copies of other documents wait too),
 *   then every document ends verified.
 * - bytes/s: 24 documents of 64 KiB with --rate-bytes 256Ki take at least the time the
 *   bucket allows (a lower bound: a throttle can only make it slower, so this never flakes).
 * - three processes at once: every document verified and read from the store exactly once.
 * - killed (SIGKILL) at a random point and run again: every document verified; only the
 *   copies in flight at the kill (at most --concurrency) were read twice. Its line of the
 *   fault table (scripts/faults.sh) is written to $CUTOVER_FAULTS_TABLE when set.
 */
#include "core/core.h"
#include "tests/backfill/legacy_fixture.h"
#include "tests/bfenv.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static legacy_fixture *lf;
static int seq;

/* A JSONL file of keys "<org>/<name>" for the names given; returns its path (new string). */
static char *jsonl(const char *org, char **names, size_t n)
{
    char *path = xasprintf("%s/src-%s.jsonl", E.dir, org);
    struct buf b;
    buf_init(&b, 0);
    for (size_t i = 0; i < n; i++)
        assert_true(buf_printf(&b, "{\"key\": \"%s/%s\"}\n", org, names[i]));
    assert_true(test_write_file(path, b.data, b.len));
    buf_free(&b);
    return path;
}

/* n names "ok-SIZE-i" (new array of new strings). */
static char **ok_names(size_t n, int size)
{
    char **v = xcalloc(n, sizeof(*v));
    for (size_t i = 0; i < n; i++)
        v[i] = xasprintf("ok-%d-%05zu", size, i);
    return v;
}

static void names_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static char *new_org(void)
{
    return xasprintf("lf%ld-%d", (long)getpid(), ++seq);
}

static void write_config(const char *jsonl_path)
{
    free(E.config);
    E.config = xasprintf("%s/cutover-%d.json", E.dir, ++seq);
    char *json = xasprintf(
        "{\"upstream\": \"http://127.0.0.1:9\", \"database_url\": \"%s\", \"spool_dir\": \"%s\",\n"
        " \"log\": {\"level\": \"warn\"},\n"
        " \"s3\": {\"endpoint\": \"%s\", \"region\": \"%s\", \"bucket\": \"%s\",\n"
        "        \"path_style\": true, \"access_key_id\": \"%s\", \"secret_access_key\": \"%s\"},\n"
        " \"legacy\": {\"raw_url\": \"http://127.0.0.1:%d/raw/{key}\", \"timeout_s\": 20},\n"
        " \"workers\": %s,\n"
        " \"backfill\": {\"source\": {\"jsonl\": \"%s\"}, \"rate\": 0, \"concurrency\": 8}}\n",
        E.db_url, E.dir, testenv("S3_ENDPOINT"), testenv("S3_REGION"), testenv("S3_BUCKET"),
        testenv("S3_ACCESS_KEY"), testenv("S3_SECRET_KEY"), legacy_fixture_port(lf),
        E.workers ? E.workers : "{}", jsonl_path);
    assert_true(test_write_file(E.config, json, strlen(json)));
    free(json);
}

static void first_config(void)
{
    write_config("/nonexistent");
}

static int backfill(const char *args, char **out)
{
    char *cmd = xasprintf("'%s' backfill --config '%s' %s", testenv_var("CUTOVER_BIN"), E.config,
                          args ? args : "");
    int rc = test_run(cmd, out);
    free(cmd);
    return rc;
}

static const char *state_of(const char *key, char *reason, size_t rlen)
{
    static char st[32];
    const char *p[1] = {key};
    PGresult *r = PQexecParams(E.pg,
                               "SELECT state, coalesce(last_error, '') FROM cutover.documents "
                               "WHERE storage_key = $1",
                               1, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), 1);
    snprintf(st, sizeof(st), "%s", PQgetvalue(r, 0, 0));
    if (reason)
        snprintf(reason, rlen, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    return st;
}

static int gets(const char *org, const char *name)
{
    char *k = xasprintf("%s/%s", org, name);
    int n = legacy_fixture_gets(lf, k);
    free(k);
    return n;
}

/* How many verified documents have a recorded SHA-256 other than that of the store's bytes. */
static int wrong_hashes(void)
{
    int wrong = 0;
    PGresult *r =
        bfenv_q(E.pg, "SELECT storage_key, sha256 FROM cutover.documents WHERE state = 'verified'");
    for (int i = 0; i < PQntuples(r); i++) {
        const char *key = PQgetvalue(r, i, 0);
        uint64_t size = legacy_fixture_size(key);
        unsigned char *b = xmalloc(size ? size : 1);
        char hex[65];
        legacy_fixture_bytes(key, 0, b, size);
        bfenv_sha256_hex(b, size, hex);
        if (strcmp(hex, PQgetvalue(r, i, 1)) != 0) {
            fprintf(stderr, "verified with other bytes: %s\n", key);
            wrong++;
        }
        free(b);
    }
    PQclear(r);
    return wrong;
}

/* Every verified document's recorded SHA-256 is that of the store's bytes. */
static void check_hashes(void)
{
    assert_int_equal(wrong_hashes(), 0);
}

/* The scenario's line of scripts/faults.sh's fault table, as tests/upload/
 * test_dual_write_faults.c writes it: appended to $CUTOVER_FAULTS_TABLE when set (fault,
 * acknowledged = the source's rows, verified with the store's bytes, failed with a reason,
 * lost = neither, verified with other bytes, seconds, first reason), and printed. */
static void table_row(const char *fault, int acked, uint64_t t0)
{
    int wrong = wrong_hashes();
    int verified =
        (int)bfenv_int(E.pg, "SELECT count(*) FROM cutover.documents WHERE state = 'verified'") -
        wrong;
    PGresult *r = bfenv_q(
        E.pg, "SELECT coalesce(last_error, '') FROM cutover.documents "
              "WHERE state = 'failed' AND coalesce(last_error, '') <> '' ORDER BY storage_key");
    int failed = PQntuples(r), lost = acked - verified - failed - wrong;
    char reason[200] = "";
    if (failed)
        snprintf(reason, sizeof(reason), "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    for (char *c = reason; *c; c++)
        if (*c == '\t' || *c == '\n' || *c == '\r')
            *c = ' ';
    double secs = (double)(now_us() - t0) / 1e6;
    fprintf(stderr,
            "TABLE %s: acknowledged %d, verified %d, failed %d, lost %d, wrong bytes %d (%.1f s)\n",
            fault, acked, verified, failed, lost, wrong, secs);
    const char *path = getenv("CUTOVER_FAULTS_TABLE");
    FILE *f = path ? fopen(path, "a") : NULL;
    if (f) {
        fprintf(f, "%s\t%d\t%d\t%d\t%d\t%d\t%.1f\t%s\n", fault, acked, verified, failed, lost,
                wrong, secs, reason);
        fclose(f);
    }
    assert_int_equal(lost, 0);
    assert_int_equal(wrong, 0);
}

/* ---- fixtures ------------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    lf = legacy_fixture_start();
    return bfenv_group_setup(state);
}

static int group_teardown(void **state)
{
    legacy_fixture_free(lf);
    return bfenv_group_teardown(state);
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_errors(void **state)
{
    char *org = new_org(), *out = NULL, reason[512];
    char *names[] = {"ok-2048-1", "ok-2048-2", "nf-1", "nf-2", "e500x2-4096-1", "e500-1"};
    (void)state;

    E.workers = "{\"max_attempts\": 2}";
    char *path = jsonl(org, names, 6);
    write_config(path);
    int rc = backfill("--concurrency 4", &out);
    if (rc != 1)
        bfenv_fail_with("backfill (some fail)", rc, out);

    for (int i = 1; i <= 2; i++) {
        char *k = xasprintf("%s/nf-%d", org, i);
        assert_string_equal(state_of(k, reason, sizeof(reason)), "failed");
        assert_non_null(strstr(reason, "404"));
        free(k);
        assert_int_equal(gets(org, i == 1 ? "nf-1" : "nf-2"), 1); /* no retry at all */
    }
    char *k = xasprintf("%s/e500x2-4096-1", org);
    assert_string_equal(state_of(k, NULL, 0), "verified");
    assert_int_equal(gets(org, "e500x2-4096-1"), 3); /* two 500s retried, then the copy */
    free(k);
    k = xasprintf("%s/e500-1", org);
    assert_string_equal(state_of(k, reason, sizeof(reason)), "failed");
    assert_non_null(strstr(reason, "500"));
    /* 2 copies (workers.max_attempts) of 3 GETs each (the legacy store's attempts): bounded */
    assert_int_equal(gets(org, "e500-1"), 6);
    free(k);
    assert_int_equal(gets(org, "ok-2048-1"), 1);
    check_hashes();
    free(out);
    free(path);
    free(org);
}

#define N429 80

static void test_429_slows_everything(void **state)
{
    char *org = new_org(), *out = NULL;
    char **names = ok_names(N429, 1024);
    struct legacy_fixture_hit *hits = xcalloc(1 << 16, sizeof(*hits));
    (void)state;

    char *path = jsonl(org, names, N429);
    write_config(path);
    size_t before = legacy_fixture_hits(lf, hits, 1 << 16);
    legacy_fixture_throttle(lf, 2000, 2);
    uint64_t t_start = now_us();
    int rc = backfill("--concurrency 8", &out);
    if (rc != 0)
        bfenv_fail_with("backfill", rc, out);
    double secs = (double)(now_us() - t_start) / 1e6;
    assert_int_equal(
        bfenv_int(E.pg, "SELECT count(*) FROM cutover.documents WHERE state = 'verified'"), N429);
    size_t n = legacy_fixture_hits(lf, hits, 1 << 16);
    assert_true(n > before);
    uint64_t t0 = hits[before].at_us;
    int n429 = 0, in_gap = 0, retries_in_gap = 0;
    for (size_t i = before; i < n; i++) {
        if (hits[i].status == 429)
            n429++;
        if (hits[i].at_us >= t0 + 500000 && hits[i].at_us < t0 + 1900000) {
            in_gap++;
            retries_in_gap += hits[i].nth > 1;
        }
    }
    print_message("%d answers 429, %d requests from 0.5 s to 1.9 s after the first (%d retries), "
                  "%zu GETs, %.2f s for %d documents\n",
                  n429, in_gap, retries_in_gap, n - before, secs, N429);
    assert_true(n429 >= 1);
    /* the whole backfill held off, not only one document: no retry within the Retry-After,
     * and no new document; only the copies already started when the first 429 came back may
     * reach the store late (a loaded machine can delay their requests) */
    assert_int_equal(retries_in_gap, 0);
    assert_true(in_gap <= 8 - 1);
    assert_true(n429 <= 2 * 8); /* the copies in flight when it began, at most once more */
    check_hashes();
    free(hits);
    names_free(names, N429);
    free(out);
    free(path);
    free(org);
}

#define NBYTES 24
#define DOCBYTES 65536
#define RATE_BYTES 262144

static void test_rate_bytes(void **state)
{
    char *org = new_org(), *out = NULL;
    char **names = ok_names(NBYTES, DOCBYTES);
    (void)state;

    char *path = jsonl(org, names, NBYTES);
    write_config(path);
    uint64_t t = now_us();
    int rc = backfill("--concurrency 8 --rate-bytes 256Ki", &out);
    if (rc != 0)
        bfenv_fail_with("backfill", rc, out);
    double secs = (double)(now_us() - t) / 1e6;
    /* the bucket starts empty and saves at most a second's worth: at least (total - 1 s of
     * bytes) / rate seconds */
    double least = (double)(NBYTES * DOCBYTES - RATE_BYTES) / RATE_BYTES;
    print_message("%d bytes in %.2f s (%.0f bytes/s; the limit %d)\n", NBYTES * DOCBYTES, secs,
                  NBYTES * DOCBYTES / secs, RATE_BYTES);
    assert_true(secs >= least * 0.98);
    assert_int_equal(
        bfenv_int(E.pg, "SELECT count(*) FROM cutover.documents WHERE state = 'verified'"), NBYTES);
    check_hashes();
    names_free(names, NBYTES);
    free(out);
    free(path);
    free(org);
}

#define NSHARE 600

static void test_three_processes_once(void **state)
{
    char *org = new_org();
    char **names = ok_names(NSHARE, 512);
    char *logs[3];
    pid_t pids[3];
    (void)state;

    char *path = jsonl(org, names, NSHARE);
    write_config(path);
    for (int i = 0; i < 3; i++) {
        char *argv[] = {(char *)testenv_var("CUTOVER_BIN"),
                        "backfill",
                        "--config",
                        E.config,
                        "--concurrency",
                        "4",
                        "--batch",
                        "50",
                        NULL};
        logs[i] = xasprintf("%s/three-%s-%d.log", E.dir, org, i);
        pids[i] = test_spawn(argv, NULL, logs[i]);
        assert_true(pids[i] > 0);
    }
    for (int i = 0; i < 3; i++) {
        int st = test_wait_exit(pids[i], 120000);
        if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            char *log = test_read_file(logs[i], NULL);
            bfenv_fail_with("backfill", st, log);
        }
        free(logs[i]);
    }
    assert_int_equal(
        bfenv_int(E.pg, "SELECT count(*) FROM cutover.documents WHERE state = 'verified'"), NSHARE);
    int twice = 0;
    for (int i = 0; i < NSHARE; i++)
        if (gets(org, names[i]) != 1)
            twice++;
    assert_int_equal(twice, 0); /* every document read from the store, so copied, once */
    assert_int_equal(
        bfenv_int(E.pg, "SELECT count(*) FROM cutover.transitions WHERE to_state = 'copied'"),
        NSHARE);
    check_hashes();
    names_free(names, NSHARE);
    free(path);
    free(org);
}

#define NKILL 600
static long long kill_at;

static bool reached(void *arg)
{
    (void)arg;
    return bfenv_int(E.pg, "SELECT count(*) FROM cutover.documents WHERE state = 'verified'") >=
           kill_at;
}

static void test_killed_at_random(void **state)
{
    char *org = new_org(), *out = NULL;
    char **names = ok_names(NKILL, 700);
    uint64_t t0 = now_us();
    (void)state;

    E.workers = "{\"lease_s\": 5}";
    char *path = jsonl(org, names, NKILL);
    write_config(path);
    srand((unsigned)(now_us() ^ (uint64_t)getpid()));
    kill_at = 20 + rand() % (NKILL / 2);
    char *log = xasprintf("%s/kill-%s.log", E.dir, org);
    char *argv[] = {(char *)testenv_var("CUTOVER_BIN"),
                    "backfill",
                    "--config",
                    E.config,
                    "--concurrency",
                    "8",
                    "--batch",
                    "50",
                    NULL};
    pid_t pid = test_spawn(argv, NULL, log);
    assert_true(pid > 0);
    assert_true(test_wait_until(reached, NULL, 60000));
    int st = test_stop(pid, SIGKILL, 10000);
    assert_true(WIFSIGNALED(st));
    long long at =
        bfenv_int(E.pg, "SELECT count(*) FROM cutover.documents WHERE state = 'verified'");
    int rc = backfill(NULL, &out);
    if (rc != 0)
        bfenv_fail_with("second backfill", rc, out);
    assert_int_equal(
        bfenv_int(E.pg, "SELECT count(*) FROM cutover.documents WHERE state = 'verified'"), NKILL);
    int twice = 0, never = 0;
    for (int i = 0; i < NKILL; i++) {
        int g = gets(org, names[i]);
        twice += g > 1;
        never += g == 0;
    }
    print_message("killed at %lld verified (aimed at %lld); read twice: %d\n", at, kill_at, twice);
    assert_int_equal(never, 0);
    assert_true(twice <= 8); /* only the copies in flight at the kill */
    table_row("cutover SIGKILLed during a backfill", NKILL, t0);
    names_free(names, NKILL);
    free(log);
    free(out);
    free(path);
    free(org);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_errors, bfenv_setup, bfenv_teardown),
        cmocka_unit_test_setup_teardown(test_429_slows_everything, bfenv_setup, bfenv_teardown),
        cmocka_unit_test_setup_teardown(test_rate_bytes, bfenv_setup, bfenv_teardown),
        cmocka_unit_test_setup_teardown(test_three_processes_once, bfenv_setup, bfenv_teardown),
        cmocka_unit_test_setup_teardown(test_killed_at_random, bfenv_setup, bfenv_teardown),
    };
    E.tag = "bflegacy";
    E.no_s3 = true;
    E.first_config = first_config;
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
