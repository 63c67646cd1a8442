/*
 * `cutover backfill` against the fixture's PostgreSQL, s3rver and example app (its legacy
 * store), a fresh state database per test. Documents are created in the app's store with its
 * /_control/seed under a prefix of this test's own; the JSONL source is the app's own
 * documents.jsonl, cut down to this test's lines (other tests share the app).
 *
 * - jsonl: a few hundred seeded documents all end `verified` (origin backfill), exit 0, and
 *   S3 holds the legacy store's bytes (a sample read back from both and compared); a second
 *   run enqueues nothing and copies nothing (one `copied` transition per document).
 * - sql: a table in another fresh database, read in pages of 50 (more rows than one page,
 *   keyset paging): every row recorded once and verified.
 * - bad rows: a line that is not JSON and a line without a key are reported with their line
 *   numbers while the rest is copied; a document the legacy store does not have ends `failed`
 *   with its 404 at once (one attempt), one whose S3 key cannot be built `failed` with the
 *   reason; exit status 1 with the failures listed.
 * - two processes at once: every document verified, each copied exactly once (one `copied`
 *   transition and one recording per document), the copies of both adding up to the total.
 * - killed (SIGKILL) while copying, then run again: the second run takes over the dead run's
 *   leases once they expire and finishes; every document verified and recorded copied once;
 *   documents left `copied` by a killed copier are checked against S3 (verified when S3
 *   agrees, copied again when it does not).
 * - --rate: documents enter the queue no faster than the bucket allows (a lower bound on the
 *   time the enqueueing took; a throttle can only make it slower, so this never flakes).
 */
#include "core/core.h"
#include "storage/creds.h"
#include "storage/s3.h"
#include "tests/bfenv.h"
#include "tests/s3env.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int seq;

/* ---- helpers ------------------------------------------------------------------------------ */

/* A prefix of this test's own for the app's store: "bfPID-N" */
static char *new_org(void)
{
    return xasprintf("bf%ld-%d", (long)getpid(), ++seq);
}

static void seed(const char *org, int count, int size)
{
    bfenv_seed(org, count, size);
}

/* The app's documents.jsonl lines of org, plus extra (may be NULL), written to a file of this
 * test; returns its path (new string). */
static char *jsonl_of(const char *org, const char *extra_before, const char *extra_after)
{
    return bfenv_jsonl(E.dir, org, extra_before, extra_after);
}

/* Writes this test's configuration with source (a JSON object text). */
static void write_config(const char *source)
{
    free(E.config);
    E.config = bfenv_config(E.dir, E.db_url, E.workers, source);
}

/* Runs `cutover backfill --config E.config ARGS`; returns the exit status, the output in
 * *out (new string) and the summary line in *summary (json_decref()). */
static int backfill(const char *args, char **out, json_t **summary)
{
    char *a = xasprintf("backfill --config '%s' %s", E.config, args ? args : "");
    int rc = bfenv_run(a, "backfill_summary", out, summary);
    free(a);
    return rc;
}

/* Every `step`-th verified document of org: S3's bytes are the legacy store's raw bytes and
 * the recorded SHA-256. Returns how many were compared. */
static int compare_sample(const char *org, int step)
{
    char *sql = xasprintf("SELECT storage_key, s3_key, sha256 FROM cutover.documents WHERE "
                          "state = 'verified' AND storage_key LIKE '%s/%%' ORDER BY storage_key",
                          org);
    PGresult *r = bfenv_q(E.pg, sql);
    int compared = 0;

    for (int i = 0; i < PQntuples(r); i += step) {
        const char *key = PQgetvalue(r, i, 0), *s3key = PQgetvalue(r, i, 1);
        char *want_key = xasprintf("backfilled/%s/%s", org, key);
        assert_string_equal(s3key, want_key);
        bfenv_assert_same(E.s3, key, s3key, PQgetvalue(r, i, 2));
        free(want_key);
        compared++;
    }
    PQclear(r);
    free(sql);
    return compared;
}

/* ---- fixtures ------------------------------------------------------------------------------ */

/* ---- tests --------------------------------------------------------------------------------- */

#define NJSONL 300

static void test_jsonl_then_nothing_left(void **state)
{
    char *org = new_org(), *out = NULL, *src;
    json_t *sum;
    (void)state;

    seed(org, NJSONL, 1500);
    char *path = jsonl_of(org, NULL, NULL);
    src = xasprintf("{\"jsonl\": \"%s\"}", path);
    write_config(src);
    int rc = backfill("--concurrency 16", &out, &sum);
    if (rc != 0)
        bfenv_fail_with("backfill", rc, out);
    assert_int_equal(bfenv_jint(sum, "states", "verified"), NJSONL);
    assert_int_equal(bfenv_jint(sum, "enqueued", NULL), NJSONL);
    assert_int_equal(bfenv_jint(sum, "total", NULL), NJSONL);
    assert_int_equal(bfenv_int(E.pg,
                               "SELECT count(*) FROM cutover.documents WHERE state = 'verified' "
                               "AND origin = 'backfill'"),
                     NJSONL);
    assert_true(compare_sample(org, 15) >= 20);
    json_decref(sum);
    free(out);

    /* a second run finds every document known and copies nothing */
    rc = backfill(NULL, &out, &sum);
    if (rc != 0)
        bfenv_fail_with("second backfill", rc, out);
    assert_int_equal(bfenv_jint(sum, "enqueued", NULL), 0);
    assert_int_equal(bfenv_jint(sum, "already_known", NULL), NJSONL);
    assert_int_equal(bfenv_jint(sum, "finished_this_run", NULL), 0);
    assert_int_equal(bfenv_jint(sum, "copied_by_this_process", NULL), 0);
    assert_int_equal(
        bfenv_int(E.pg, "SELECT count(*) FROM cutover.transitions WHERE to_state = 'copied'"),
        NJSONL);
    json_decref(sum);
    free(out);
    free(src);
    free(path);
    free(org);
}

#define NSQL 130

static void test_sql_keyset_pages(void **state)
{
    char *org = new_org(), *out = NULL;
    char *app_db = test_fresh_db("backfill_app");
    PGconn *app = PQconnectdb(app_db);
    json_t *sum;
    (void)state;

    assert_int_equal(PQstatus(app), CONNECTION_OK);
    seed(org, NSQL, 700);
    /* the app's own table: its keys are the seeded ones, its columns the template's vars */
    char *sql = xasprintf("CREATE TABLE app_documents (storage_key text PRIMARY KEY, "
                          "org_id text, note text);\n"
                          "INSERT INTO app_documents SELECT '%s/seed-' || lpad(i::text, 6, "
                          "'0') || '.bin', '%s', CASE WHEN i %% 2 = 0 THEN NULL ELSE 'n' END "
                          "FROM generate_series(0, %d) i",
                          org, org, NSQL - 1);
    PQclear(bfenv_q(app, sql));
    free(sql);
    char *src = xasprintf("{\"sql\": \"SELECT storage_key AS key, org_id AS org, note FROM "
                          "app_documents;\", \"database_url\": \"%s\"}",
                          app_db);
    write_config(src);
    int rc = backfill("--batch 50", &out, &sum);
    if (rc != 0)
        bfenv_fail_with("backfill", rc, out);
    assert_int_equal(bfenv_jint(sum, "enqueued", NULL), NSQL);
    assert_int_equal(bfenv_jint(sum, "states", "verified"), NSQL);
    /* each row recorded exactly once, across three pages */
    assert_int_equal(
        bfenv_int(E.pg, "SELECT count(*) FROM cutover.transitions WHERE from_state IS NULL"), NSQL);
    /* the row's columns became the document's vars (a NULL column left out) */
    char *vq = xasprintf("SELECT count(*) FROM cutover.documents WHERE vars->>'org' = '%s' AND "
                         "(vars ? 'note') = (substring(storage_key from 'seed-([0-9]+)')::int "
                         "%% 2 = 1)",
                         org);
    assert_int_equal(bfenv_int(E.pg, vq), NSQL);
    assert_true(compare_sample(org, 13) >= 10);
    free(vq);
    json_decref(sum);
    free(out);
    free(src);
    PQfinish(app);
    free(app_db);
    free(org);
}

static void test_bad_rows_and_failures(void **state)
{
    char *org = new_org(), *out = NULL;
    json_t *sum;
    (void)state;

    seed(org, 20, 512);
    /* line 1: not JSON; line 2: no key; then the 20 seeded lines; then a document the store
     * does not have, and one whose S3 key cannot be built (no org for the template) */
    char *after = xasprintf("{\"key\": \"%s/not-in-the-store.bin\", \"org\": \"%s\"}\n"
                            "\n"
                            "{\"key\": \"%s/no-org.bin\", \"org\": null}\n",
                            org, org, org);
    char *path = jsonl_of(org, "{\"key\": oops\n{\"org\": \"x\"}\n", after);
    char *src = xasprintf("{\"jsonl\": \"%s\"}", path);
    write_config(src);
    int rc = backfill(NULL, &out, &sum);
    if (rc != 1)
        bfenv_fail_with("backfill (expected to exit 1)", rc, out);
    char *l1 = xasprintf("%s:1: not JSON", path), *l2 = xasprintf("%s:2: no \"key\"", path);
    if (!strstr(out, l1) || !strstr(out, l2))
        fail_msg("bad lines not reported with their numbers:\n%s", out);
    assert_int_equal(bfenv_jint(sum, "unusable_rows", NULL), 2);
    assert_int_equal(bfenv_jint(sum, "states", "verified"), 20);
    assert_int_equal(bfenv_jint(sum, "states", "failed"), 2);
    /* the failures are listed with their reasons */
    json_t *f = json_object_get(sum, "failures");
    assert_int_equal(json_array_size(f), 2);
    char *k404 = xasprintf("%s/not-in-the-store.bin", org),
         *knoorg = xasprintf("%s/no-org.bin", org);
    bool seen404 = false, seen_noorg = false;
    for (size_t i = 0; i < json_array_size(f); i++) {
        const char *k = json_string_value(json_object_get(json_array_get(f, i), "key"));
        const char *why = json_string_value(json_object_get(json_array_get(f, i), "reason"));
        assert_non_null(k);
        assert_non_null(why);
        if (strcmp(k, k404) == 0 && strstr(why, "404"))
            seen404 = true;
        if (strcmp(k, knoorg) == 0 && strstr(why, "{org}"))
            seen_noorg = true;
    }
    if (!seen404 || !seen_noorg)
        fail_msg("failures without their reasons:\n%s", out);
    /* the 404 was not retried */
    char *aq = xasprintf("SELECT attempts FROM cutover.documents WHERE storage_key = '%s'", k404);
    assert_int_equal(bfenv_int(E.pg, aq), 1);
    free(aq);
    free(k404);
    free(knoorg);
    free(l1);
    free(l2);
    json_decref(sum);
    free(out);
    free(src);
    free(path);
    free(after);
    free(org);
}

#define NSHARED 240

static void test_two_processes_share(void **state)
{
    char *org = new_org();
    (void)state;

    seed(org, NSHARED, 1000);
    char *path = jsonl_of(org, NULL, NULL);
    char *src = xasprintf("{\"jsonl\": \"%s\"}", path);
    write_config(src);
    char *logs[2];
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        char *argv[] = {(char *)testenv_var("CUTOVER_BIN"),
                        "backfill",
                        "--config",
                        E.config,
                        "--concurrency",
                        "4",
                        "--batch",
                        "40",
                        NULL};
        logs[i] = xasprintf("%s/two-%s-%d.log", E.dir, org, i);
        pids[i] = test_spawn(argv, NULL, logs[i]);
        assert_true(pids[i] > 0);
    }
    long long copied_by[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        int st = test_wait_exit(pids[i], 120000);
        char *log = test_read_file(logs[i], NULL);
        if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            bfenv_fail_with("backfill", st, log);
        const char *s = strstr(log, "{\"event\":\"backfill_summary\"");
        assert_non_null(s);
        json_t *sum = json_loadb(s, strcspn(s, "\n"), 0, NULL);
        assert_non_null(sum);
        assert_int_equal(bfenv_jint(sum, "states", "verified"), NSHARED);
        copied_by[i] = bfenv_jint(sum, "copied_by_this_process", NULL);
        json_decref(sum);
        free(log);
        free(logs[i]);
    }
    print_message("copies: %lld by the first process, %lld by the second\n", copied_by[0],
                  copied_by[1]);
    assert_int_equal(copied_by[0] + copied_by[1], NSHARED);
    assert_int_equal(
        bfenv_int(E.pg, "SELECT count(*) FROM cutover.documents WHERE state = 'verified'"),
        NSHARED);
    /* each document recorded once and copied once */
    assert_int_equal(
        bfenv_int(E.pg, "SELECT count(*) FROM (SELECT storage_key FROM cutover.transitions "
                        "WHERE to_state = 'copied' GROUP BY storage_key HAVING count(*) = 1) "
                        "x"),
        NSHARED);
    bfenv_assert_once(E.pg, NSHARED);
    free(src);
    free(path);
    free(org);
}

#define NKILL 200

static bool some_verified(void *arg)
{
    (void)arg;
    return bfenv_int(E.pg, "SELECT count(*) FROM cutover.documents WHERE state = 'verified'") >= 30;
}

static void test_killed_then_resumed(void **state)
{
    char *org = new_org(), *out = NULL;
    json_t *sum;
    (void)state;

    seed(org, NKILL, 4000);
    char *path = jsonl_of(org, NULL, NULL);
    char *src = xasprintf("{\"jsonl\": \"%s\"}", path);
    E.workers = "{\"lease_s\": 5}";
    write_config(src);
    char *log = xasprintf("%s/killed-%s.log", E.dir, org);
    char *argv[] = {(char *)testenv_var("CUTOVER_BIN"),
                    "backfill",
                    "--config",
                    E.config,
                    "--concurrency",
                    "2",
                    "--batch",
                    "50",
                    NULL};
    pid_t pid = test_spawn(argv, NULL, log);
    assert_true(pid > 0);
    assert_true(test_wait_until(some_verified, NULL, 60000));
    int st = test_stop(pid, SIGKILL, 10000);
    assert_true(WIFSIGNALED(st));
    long long before =
        bfenv_int(E.pg, "SELECT count(*) FROM cutover.documents WHERE state = 'verified'");
    print_message("killed with %lld of %d verified\n", before, NKILL);
    /* stand-ins for copiers killed between recording a copy and marking it verified: one whose
     * object in S3 is what it recorded, one whose recorded ETag S3 does not have */
    PQclear(bfenv_q(E.pg, "UPDATE cutover.documents SET state = 'copied', updated_at = now() - "
                          "interval '1 minute' WHERE storage_key = (SELECT min(storage_key) FROM "
                          "cutover.documents WHERE state = 'verified')"));
    PQclear(bfenv_q(E.pg,
                    "UPDATE cutover.documents SET state = 'copied', s3_etag = 'not-this-one', "
                    "updated_at = now() - interval '1 minute' WHERE storage_key = (SELECT "
                    "max(storage_key) FROM cutover.documents WHERE state = 'verified')"));

    int rc = backfill(NULL, &out, &sum);
    if (rc != 0)
        bfenv_fail_with("second backfill", rc, out);
    assert_int_equal(bfenv_jint(sum, "states", "verified"), NKILL);
    assert_int_equal(bfenv_jint(sum, "enqueued", NULL) + bfenv_jint(sum, "already_known", NULL),
                     NKILL);
    /* each copied once, but the one S3 did not agree with: twice */
    assert_int_equal(
        bfenv_int(E.pg, "SELECT count(*) FROM cutover.transitions WHERE to_state = 'copied'"),
        NKILL + 1);
    assert_int_equal(
        bfenv_int(E.pg, "SELECT count(*) FROM cutover.transitions WHERE to_state = 'mismatch'"), 1);
    /* at least the stand-in (the kill itself may have left one more) */
    assert_true(bfenv_int(E.pg, "SELECT count(*) FROM cutover.transitions WHERE detail LIKE "
                                "'%interrupted copy%' AND to_state = 'verified'") >= 1);
    assert_int_equal(
        bfenv_int(E.pg, "SELECT count(*) FROM cutover.transitions WHERE from_state IS NULL"),
        NKILL);
    assert_true(compare_sample(org, 20) >= 10);
    json_decref(sum);
    free(out);
    free(log);
    free(src);
    free(path);
    free(org);
}

#define NRATE 300

static void test_rate(void **state)
{
    char *org = new_org(), *out = NULL;
    json_t *sum;
    (void)state;

    seed(org, NRATE, 100);
    char *path = jsonl_of(org, NULL, NULL);
    char *src = xasprintf("{\"jsonl\": \"%s\"}", path);
    write_config(src);
    /* 100/s in batches of 100 from an empty bucket: the last of 300 enters the queue >= 2 s
     * after the first */
    int rc = backfill("--rate 100", &out, &sum);
    if (rc != 0)
        bfenv_fail_with("backfill", rc, out);
    assert_int_equal(bfenv_jint(sum, "states", "verified"), NRATE);
    long long span_ms =
        bfenv_int(E.pg, "SELECT (extract(epoch FROM max(created_at) - min(created_at)) * "
                        "1000)::bigint FROM cutover.documents");
    print_message("300 documents enqueued over %lld ms at --rate 100\n", span_ms);
    assert_true(span_ms >= 1950);
    json_decref(sum);
    free(out);
    free(src);
    free(path);
    free(org);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_jsonl_then_nothing_left, bfenv_setup, bfenv_teardown),
        cmocka_unit_test_setup_teardown(test_sql_keyset_pages, bfenv_setup, bfenv_teardown),
        cmocka_unit_test_setup_teardown(test_bad_rows_and_failures, bfenv_setup, bfenv_teardown),
        cmocka_unit_test_setup_teardown(test_two_processes_share, bfenv_setup, bfenv_teardown),
        cmocka_unit_test_setup_teardown(test_killed_then_resumed, bfenv_setup, bfenv_teardown),
        cmocka_unit_test_setup_teardown(test_rate, bfenv_setup, bfenv_teardown),
    };
    E.tag = "backfill";
    return cmocka_run_group_tests(tests, bfenv_group_setup, bfenv_group_teardown);
}
