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
 * 10,000 from SQL in 75 to 83 s, from JSONL in 59 to 72 s, the whole test 150 to 172 s; its
 * CTest TIMEOUT (900 s) leaves room for the suite running beside it at -j2.
 */
#include "core/core.h"
#include "storage/s3.h"
#include "tests/s3env.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef NSCALE
#define NSCALE 1500
#endif

struct env {
    char *dir, *db_url, *config;
    struct test_s3 s3env;
    PGconn *pg;
};
static struct env E;
static int seq;

static PGresult *q(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    return r;
}

static long long q_int(const char *sql)
{
    PGresult *r = q(E.pg, sql);
    long long v = PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    return v;
}

static void seed(const char *org, int count, int size)
{
    struct test_http r;
    char *url = xasprintf("%s/_control/seed", testenv("APP_URL"));
    char *body = xasprintf("{\"count\": %d, \"size\": %d, \"org\": \"%s\"}", count, size, org);
    const char *h[] = {"Content-Type: application/json", NULL};
    uint64_t t = now_us();
    assert_int_equal(test_http("POST", url, h, body, strlen(body), &r), 0);
    print_message("seed: %.1f s\n", (double)(now_us() - t) / 1e6);
    if (r.status != 201)
        fail_msg("seed: %ld %s", r.status, r.body ? r.body : r.errbuf);
    test_http_free(&r);
    free(url);
    free(body);
}

static void write_config(const char *source)
{
    free(E.config);
    E.config = xasprintf("%s/cutover-%d.json", E.dir, ++seq);
    char *json = xasprintf(
        "{\"upstream\": \"%s\", \"database_url\": \"%s\", \"spool_dir\": \"%s\",\n"
        " \"log\": {\"level\": \"warn\"},\n"
        " \"s3\": {\"endpoint\": \"%s\", \"region\": \"%s\", \"bucket\": \"%s\",\n"
        "        \"path_style\": true, \"access_key_id\": \"%s\", \"secret_access_key\": \"%s\"},\n"
        " \"legacy\": {\"raw_url\": \"%s/legacy/raw/{key}\"},\n"
        " \"backfill\": {\"source\": %s, \"rate\": 0, \"concurrency\": 16}}\n",
        testenv("APP_URL"), E.db_url, E.dir, testenv("S3_ENDPOINT"), testenv("S3_REGION"),
        testenv("S3_BUCKET"), testenv("S3_ACCESS_KEY"), testenv("S3_SECRET_KEY"),
        testenv("APP_URL"), source);
    assert_true(test_write_file(E.config, json, strlen(json)));
    free(json);
}

static void run_backfill(const char *what)
{
    char *cmd =
        xasprintf("'%s' backfill --config '%s' --batch 500", testenv_var("CUTOVER_BIN"), E.config);
    char *out = NULL;
    uint64_t t = now_us();
    int rc = test_run(cmd, &out);
    double secs = (double)(now_us() - t) / 1e6;
    if (rc != 0) {
        fprintf(stderr, "backfill: exit %d; its output:\n%s\n", rc, out ? out : "");
        fail_msg("backfill from %s: exit %d", what, rc);
    }
    print_message("%s: %d documents in %.1f s (%.0f/s)\n", what, NSCALE, secs, NSCALE / secs);
    free(out);
    free(cmd);
}

static int sink_buf(void *arg, const void *data, size_t n)
{
    return buf_append(arg, data, n) ? 0 : 1;
}

/* All verified, each recorded and copied once, a sample equal to the legacy store's bytes. */
static void check_all(void)
{
    assert_int_equal(q_int("SELECT count(*) FROM cutover.documents WHERE state = 'verified' AND "
                           "origin = 'backfill'"),
                     NSCALE);
    assert_int_equal(q_int("SELECT count(*) FROM cutover.transitions WHERE to_state = 'copied'"),
                     NSCALE);
    assert_int_equal(q_int("SELECT count(*) FROM cutover.transitions WHERE from_state IS NULL"),
                     NSCALE);
    PGresult *r = q(E.pg, "SELECT storage_key, s3_key FROM cutover.documents ORDER BY "
                          "random() LIMIT 10");
    CURL *c = curl_easy_init();
    for (int i = 0; i < PQntuples(r); i++) {
        struct buf got;
        struct s3_result res;
        struct test_http raw;
        cut_err err = CUT_ERR_INIT;
        buf_init(&got, 1 << 20);
        if (s3_get(E.s3env.c, PQgetvalue(r, i, 1), sink_buf, &got, &res, &err) != 0)
            fail_msg("GET %s from S3: %s", PQgetvalue(r, i, 1), err.msg);
        char *ek = curl_easy_escape(c, PQgetvalue(r, i, 0), 0);
        char *url = xasprintf("%s/legacy/raw/%s", testenv("APP_URL"), ek);
        assert_int_equal(test_http("GET", url, NULL, NULL, 0, &raw), 0);
        assert_int_equal(raw.status, 200);
        assert_int_equal(got.len, raw.body_len);
        assert_memory_equal(got.data, raw.body, got.len);
        test_http_free(&raw);
        curl_free(ek);
        free(url);
        buf_free(&got);
    }
    curl_easy_cleanup(c);
    PQclear(r);
}

static int group_setup(void **state)
{
    (void)state;
    E.dir = test_tmpdir("bfscale");
    test_s3_open(&E.s3env);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    test_s3_close(&E.s3env);
    test_rmtree(E.dir);
    free(E.config);
    return 0;
}

static int setup(void **state)
{
    char *cmd, *out = NULL;
    (void)state;
    E.db_url = test_fresh_db("bfscale");
    write_config("{\"jsonl\": \"/nonexistent\"}");
    cmd = xasprintf("'%s' migrate-db --config '%s'", testenv_var("CUTOVER_BIN"), E.config);
    if (test_run(cmd, &out) != 0)
        fail_msg("migrate-db: %s", out);
    free(cmd);
    free(out);
    E.pg = PQconnectdb(E.db_url);
    assert_int_equal(PQstatus(E.pg), CONNECTION_OK);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    PQfinish(E.pg);
    free(E.db_url);
    E.db_url = NULL;
    return 0;
}

static void test_sql(void **state)
{
    char *org = xasprintf("sc%ld-sql", (long)getpid());
    char *app_db = test_fresh_db("bfscale_app");
    PGconn *app = PQconnectdb(app_db);
    (void)state;

    assert_int_equal(PQstatus(app), CONNECTION_OK);
    seed(org, NSCALE, 512);
    char *sql = xasprintf("CREATE TABLE app_documents (storage_key text PRIMARY KEY, org_id "
                          "text);\nINSERT INTO app_documents SELECT '%s/seed-' || lpad(i::text, "
                          "6, '0') || '.bin', '%s' FROM generate_series(0, %d) i",
                          org, org, NSCALE - 1);
    PQclear(q(app, sql));
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
    char *path = xasprintf("%s/docs.jsonl", E.dir);
    char *app = xasprintf("%s/documents.jsonl", testenv("APP_DATA"));
    char *needle = xasprintf("\"org\":\"%s\"", org);
    struct buf out;
    (void)state;

    seed(org, NSCALE, 512);
    char *all = test_read_file(app, NULL);
    assert_non_null(all);
    buf_init(&out, 0);
    for (char *line = strtok(all, "\n"); line; line = strtok(NULL, "\n"))
        if (strstr(line, needle))
            assert_true(buf_printf(&out, "%s\n", line));
    assert_true(test_write_file(path, out.data, out.len));
    char *src = xasprintf("{\"jsonl\": \"%s\"}", path);
    write_config(src);
    run_backfill("jsonl");
    check_all();
    buf_free(&out);
    free(all);
    free(src);
    free(needle);
    free(app);
    free(path);
    free(org);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sql, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jsonl, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
