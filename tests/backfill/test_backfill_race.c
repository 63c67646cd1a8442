/*
 * A document uploaded again through cutover while the backfill copies its older bytes: S3
 * must end with the newer bytes, and the document verified against them.
 *
 * `cutover proxy` (dual-write on, the example app upstream, the upload's key from a header)
 * and `cutover backfill` share the fixture's PostgreSQL and s3rver; the legacy store is one in
 * the test (tests/backfill/legacy_fixture.h) whose answer for the document hangs until the test
 * releases it, with the bytes the store had when the request arrived. The sequence:
 *   1. the backfill's GET of the old bytes hangs;
 *   2. the document is uploaded again through the proxy (the store now has the new bytes),
 *      and the proxy's mirror copies and verifies the new generation;
 *   3. the hanging GET is released: the backfill PUTs the old bytes over the new ones, its
 *      completion is refused (the generation changed), the object is checked against the new
 *      generation and, since it differs, the document is copied again.
 * At the end S3 holds the new bytes and the row says verified with their SHA-256 and size.
 */
#include "core/core.h"
#include "storage/s3.h"
#include "tests/backfill/legacy_fixture.h"
#include "tests/s3env.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <libpq-fe.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NEWLEN 5000

static PGconn *pg;
static legacy_fixture *lf;
static struct test_s3 s3env;
static char *key, new_sha[65];
static unsigned char newb[NEWLEN];

static bool held(void *arg)
{
    (void)arg;
    return legacy_fixture_held(lf) == 1;
}

static int sink_buf(void *arg, const void *data, size_t n)
{
    return buf_append(arg, data, n) ? 0 : 1;
}

/* The row is verified with the new bytes' size and SHA-256. */
static bool row_new(void *arg)
{
    const char *p[1] = {key};
    (void)arg;
    PGresult *r = PQexecParams(pg,
                               "SELECT state, size, sha256 FROM cutover.documents WHERE "
                               "storage_key = $1",
                               1, NULL, p, NULL, NULL, 0);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
              strcmp(PQgetvalue(r, 0, 0), "verified") == 0 && atol(PQgetvalue(r, 0, 1)) == NEWLEN &&
              strcmp(PQgetvalue(r, 0, 2), new_sha) == 0;
    PQclear(r);
    return ok;
}

/* ... and S3 holds the new bytes. */
static bool s3_new(void *arg)
{
    struct buf got;
    struct s3_result res;
    cut_err err = CUT_ERR_INIT;
    (void)arg;
    if (!row_new(NULL))
        return false;
    buf_init(&got, 1 << 20);
    bool ok = s3_get(s3env.c, key, sink_buf, &got, &res, &err) == 0 && got.len == NEWLEN &&
              memcmp(got.data, newb, NEWLEN) == 0;
    buf_free(&got);
    return ok && row_new(NULL);
}

static void test_upload_during_backfill_copy(void **state)
{
    char *dir = test_tmpdir("bfrace"), *db_url = test_fresh_db("bfrace"), *out = NULL;
    int port = test_free_port(), aport = test_free_port();
    (void)state;

    test_s3_open(&s3env);
    lf = legacy_fixture_start();
    key = xasprintf("race%ld/hold-3000-1", (long)getpid());
    for (size_t i = 0; i < NEWLEN; i++)
        newb[i] = (unsigned char)('A' + i % 23);
    {
        unsigned char md[32];
        unsigned int l;
        EVP_Digest(newb, NEWLEN, md, &l, EVP_sha256(), NULL);
        for (int i = 0; i < 32; i++)
            snprintf(new_sha + 2 * i, 3, "%02x", md[i]);
    }
    char *jsonl = xasprintf("%s/src.jsonl", dir), *line = xasprintf("{\"key\": \"%s\"}\n", key);
    assert_true(test_write_file(jsonl, line, strlen(line)));
    char *config = xasprintf("%s/cutover.json", dir);
    char *json = xasprintf(
        "{\"listen\": \"127.0.0.1:%d\", \"upstream\": \"%s\",\n"
        " \"admin\": {\"listen\": \"127.0.0.1:%d\"},\n"
        " \"database_url\": \"%s\", \"spool_dir\": \"%s\", \"log\": {\"level\": \"warn\"},\n"
        " \"s3\": {\"endpoint\": \"%s\", \"region\": \"%s\", \"bucket\": \"%s\",\n"
        "        \"path_style\": true, \"access_key_id\": \"%s\", \"secret_access_key\": \"%s\"},\n"
        " \"legacy\": {\"raw_url\": \"http://127.0.0.1:%d/raw/{key}\", \"timeout_s\": 60},\n"
        " \"routes\": [{\"name\": \"upload\", \"kind\": \"upload\", \"method\": \"POST\",\n"
        "   \"path\": \"/documents\", \"key\": {\"header\": \"X-Key\"}, \"s3_key\": \"{key}\"}],\n"
        " \"flags\": {\"dual_write\": true},\n"
        " \"backfill\": {\"source\": {\"jsonl\": \"%s\"}, \"rate\": 0, \"concurrency\": 1}}\n",
        port, testenv("APP_URL"), aport, db_url, dir, testenv("S3_ENDPOINT"), testenv("S3_REGION"),
        testenv("S3_BUCKET"), testenv("S3_ACCESS_KEY"), testenv("S3_SECRET_KEY"),
        legacy_fixture_port(lf), jsonl);
    assert_true(test_write_file(config, json, strlen(json)));
    char *cmd = xasprintf("'%s' migrate-db --config '%s'", testenv_var("CUTOVER_BIN"), config);
    if (test_run(cmd, &out) != 0)
        fail_msg("migrate-db: %s", out);
    pg = PQconnectdb(db_url);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);

    char *plog = xasprintf("%s/proxy.log", dir), *blog = xasprintf("%s/backfill.log", dir);
    char *pargv[] = {(char *)testenv_var("CUTOVER_BIN"), "proxy", "--config", config, NULL};
    pid_t proxy = test_spawn(pargv, NULL, plog);
    char *health = xasprintf("http://127.0.0.1:%d/healthz", aport);
    assert_true(test_wait_http(health, 20000));

    /* 1. the backfill's GET of the old bytes hangs */
    char *bargv[] = {(char *)testenv_var("CUTOVER_BIN"), "backfill", "--config", config, NULL};
    pid_t bf = test_spawn(bargv, NULL, blog);
    assert_true(test_wait_until(held, NULL, 30000));

    /* 2. uploaded again through cutover; the store has the new bytes from now on */
    legacy_fixture_put(lf, key, newb, NEWLEN);
    char *url = xasprintf("http://127.0.0.1:%d/documents", port);
    char *hk = xasprintf("X-Key: %s", key);
    const char *h[] = {hk, "X-Org-Id: race", "Content-Type: application/octet-stream", NULL};
    struct test_http r;
    assert_int_equal(test_http("POST", url, h, newb, NEWLEN, &r), 0);
    if (r.status != 201)
        fail_msg("upload: %ld %s", r.status, r.body ? r.body : r.errbuf);
    test_http_free(&r);
    assert_true(test_wait_until(row_new, NULL, 30000));

    /* 3. the old bytes land after the new ones */
    legacy_fixture_release(lf);
    int st = test_wait_exit(bf, 60000);
    char *log = test_read_file(blog, NULL);
    if (st < 0 || !WIFEXITED(st))
        fail_msg("backfill did not end: %s", log ? log : "");
    print_message("backfill exit %d; the document read %d times from the store\n", WEXITSTATUS(st),
                  legacy_fixture_gets(lf, key));
    if (!test_wait_until(s3_new, NULL, 60000)) {
        char *pl = test_read_file(plog, NULL);
        fprintf(stderr, "backfill log:\n%s\nproxy log:\n%s\n", log ? log : "", pl ? pl : "");
        fail_msg("S3 does not end with the new bytes, verified");
    }
    assert_true(legacy_fixture_gets(lf, key) >= 1);

    st = test_stop(proxy, SIGTERM, 20000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    PQfinish(pg);
    legacy_fixture_free(lf);
    test_s3_close(&s3env);
    test_rmtree(dir);
    free(log);
    free(url);
    free(hk);
    free(health);
    free(plog);
    free(blog);
    free(cmd);
    free(out);
    free(json);
    free(config);
    free(line);
    free(jsonl);
    free(key);
    free(db_url);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upload_during_backfill_copy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
