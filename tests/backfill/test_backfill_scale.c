/*
 * `cutover backfill` at scale against the fixture's PostgreSQL, s3rver and example app (its
 * legacy store): NSCALE small documents seeded in the app's store, backfilled once from an SQL
 * table of the app's database (keyset pages of 500) and once from the app's documents.jsonl,
 * each into a fresh state database: every document ends `verified`, recorded once and copied
 * once (one `copied` transition each), and a sample read back from S3 equals the legacy
 * store's raw bytes.
 *
 * NSCALE comes from tests/backfill.cmake: 10,000 in the optimised build (issue 9's "10,000
 * small documents from SQL, and the same from JSONL"), 1,500 under CUTOVER_SANITIZE, where
 * cutover itself runs several times slower. s3rver spends about 7 ms of CPU per document (PUT,
 * then HEAD) and it, not cutover nor the test, sets the pace: during the copies it took about
 * half a CPU against a few percent for the example app serving the raw originals, and seeding
 * 10,000 documents through the app's /_control/seed took 4 to 12 s of the test's time.
 * Measured alone on the shared 2-CPU development machine (load 3 to 6 from other work):
 * 10,000 from SQL in 75 to 83 s, from JSONL in 59 to 72 s, the whole test 150 to 172 s;
 * beside the rest of the suite at -j2 it took 204 to 258 s (the sanitizer build's 1,500, 26
 * to 49 s). Its CTest TIMEOUT (900 s) is over three times that.
 */
#include "core/core.h"
#include "storage/s3.h"
#include "tests/bfenv.h"
#include "tests/s3env.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef NSCALE
#define NSCALE 1500
#endif

static void seed(const char *org)
{
    uint64_t t = now_us();
    bfenv_seed(org, NSCALE, 512);
    print_message("seed: %.1f s\n", (double)(now_us() - t) / 1e6);
}

static void write_config(const char *source)
{
    free(E.config);
    E.config = bfenv_config(E.dir, E.db_url, NULL, source);
}

static void run_backfill(const char *what)
{
    char *args = xasprintf("backfill --config '%s' --batch 500 --concurrency 16", E.config);
    char *out = NULL;
    json_t *sum;
    uint64_t t = now_us();
    int rc = bfenv_run(args, "backfill_summary", &out, &sum);
    double secs = (double)(now_us() - t) / 1e6;
    if (rc != 0)
        bfenv_fail_with(what, rc, out);
    print_message("%s: %d documents in %.1f s (%.0f/s)\n", what, NSCALE, secs, NSCALE / secs);
    json_decref(sum);
    free(out);
    free(args);
}

/* All verified, each recorded and copied once, a sample equal to the legacy store's bytes. */
static void check_all(void)
{
    assert_int_equal(bfenv_int(E.pg, "SELECT count(*) FROM cutover.documents WHERE state = "
                                     "'verified' AND origin = 'backfill'"),
                     NSCALE);
    bfenv_assert_once(E.pg, NSCALE);
    PGresult *r = bfenv_q(E.pg, "SELECT storage_key, s3_key FROM cutover.documents ORDER BY "
                                "random() LIMIT 10");
    for (int i = 0; i < PQntuples(r); i++)
        bfenv_assert_same(E.s3, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), NULL);
    PQclear(r);
}

static void test_sql(void **state)
{
    char *org = xasprintf("sc%ld-sql", (long)getpid());
    char *app_db = test_fresh_db("bfscale_app");
    PGconn *app = test_pg_connect(app_db);
    (void)state;

    seed(org);
    char *sql = xasprintf("CREATE TABLE app_documents (storage_key text PRIMARY KEY, org_id "
                          "text);\nINSERT INTO app_documents SELECT '%s/seed-' || lpad(i::text, "
                          "6, '0') || '.bin', '%s' FROM generate_series(0, %d) i",
                          org, org, NSCALE - 1);
    PQclear(bfenv_q(app, sql));
    free(sql);
    char *src = xasprintf("{\"sql\": \"SELECT storage_key AS key, org_id AS org FROM "
                          "app_documents\", \"database_url\": \"%s\"}",
                          app_db);
    write_config(src);
    run_backfill("sql");
    check_all();
    PQfinish(app);
    free(src);
    free(app_db);
    free(org);
}

static void test_jsonl(void **state)
{
    char *org = xasprintf("sc%ld-jsonl", (long)getpid());
    (void)state;

    seed(org);
    char *path = bfenv_jsonl(E.dir, org, NULL, NULL);
    char *src = xasprintf("{\"jsonl\": \"%s\"}", path);
    write_config(src);
    run_backfill("jsonl");
    check_all();
    free(src);
    free(path);
    free(org);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sql, bfenv_setup, bfenv_teardown),
        cmocka_unit_test_setup_teardown(test_jsonl, bfenv_setup, bfenv_teardown),
    };
    E.tag = "bfscale";
    return cmocka_run_group_tests(tests, bfenv_group_setup, bfenv_group_teardown);
}
