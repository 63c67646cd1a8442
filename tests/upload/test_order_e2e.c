/*
 * Dual-write's order end to end (issue 8): `cutover proxy` in front of the example app, with the
 * fixture's PostgreSQL and s3rver. An upload answered before a delete of the same key, whose
 * record reaches the database only after the delete's, must not bring the document back.
 *
 * Made deterministic with a lock held by the test's own connection, no timing: SHARE on
 * cutover.transitions, which every record's statement needs in ROW EXCLUSIVE mode. The upload's
 * record blocks on it before it touches the document (its one statement takes its tables'
 * locks before it runs); the client gets the app's answer when the record's wait ends
 * (record_wait_ms). Then the delete: its recorder locks the document's row and blocks on the
 * same table lock. Both waits are seen in pg_stat_activity; the test's transaction ends; the
 * upload's record now has to wait for the delete's row lock, so it is written after the delete.
 * Without the answers' sequence the upload was applied over the delete (a new generation,
 * copied to S3 again): the document the app deleted reappeared.
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

static struct test_dw E;
static PGconn *Lock; /* the test's lock on cutover.transitions */

static PGresult *q(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    return r;
}

static char *row_value(const char *col, const char *key)
{
    const char *p[1] = {key};
    char *sql = xasprintf("SELECT %s FROM cutover.documents WHERE storage_key = $1", col);
    PGresult *r = q(E.pg, sql, 1, p);
    char *v = PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) ? xstrdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    free(sql);
    return v;
}

static int setup(void **state)
{
    (void)state;
    test_dw_start(&E, "dworder", 1, NULL, NULL);
    Lock = test_pg_connect(E.db_url);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    PQfinish(Lock);
    return test_dw_stop(&E) ? 0 : -1;
}

/* Uploads data as the document named key (X-Storage-Key) through cutover; asserts 201. */
static void upload(const char *key, const void *data, size_t len)
{
    char *url = xasprintf("http://127.0.0.1:%d/documents?filename=order.bin", E.port);
    char *org = xasprintf("X-Org-Id: %s", E.org);
    char *sk = xasprintf("X-Storage-Key: %s", key);
    const char *h[] = {org, sk, "Content-Type: application/octet-stream", NULL};
    struct test_http r;
    assert_int_equal(test_http("POST", url, h, data, len, &r), 0);
    if (r.status != 201)
        fail_msg("upload %s: HTTP %ld %s", key, r.status, r.body ? r.body : "");
    test_http_free(&r);
    free(sk);
    free(org);
    free(url);
}

static void delete_doc(const char *key)
{
    char *url = xasprintf("http://127.0.0.1:%d/documents/%s", E.port, key);
    struct test_http r;
    assert_int_equal(test_http("DELETE", url, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 204);
    test_http_free(&r);
    free(url);
}

static bool verified(void *arg)
{
    char *st = row_value("state", arg);
    bool v = st && strcmp(st, "verified") == 0;
    free(st);
    return v;
}

/* How many of cutover's statements wait for a lock (the test's connections never do). */
static int lock_waiters(void)
{
    PGresult *r = q(E.pg,
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'",
                    0, NULL);
    int n = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n;
}

static bool waiters_1(void *arg)
{
    (void)arg;
    return lock_waiters() == 1;
}

static bool waiters_2(void *arg)
{
    (void)arg;
    return lock_waiters() == 2;
}

static bool logged(void *arg)
{
    char *log = test_read_file(E.log, NULL);
    bool yes = log && strstr(log, arg) != NULL;
    free(log);
    return yes;
}

static bool object_gone(void *arg)
{
    char *s3_key = xasprintf("documents/%s/%s", E.org, (const char *)arg);
    struct s3_result res;
    cut_err err = CUT_ERR_INIT;
    bool gone = s3_head(E.s3env.c, s3_key, &res, &err) != 0 && err.code == CUT_ENOTFOUND;
    free(s3_key);
    return gone;
}

static void test_upload_recorded_after_delete(void **state)
{
    char *key = xasprintf("%s-upload-then-delete", E.org);
    unsigned char v1[2000], v2[3000];
    (void)state;

    memset(v1, '1', sizeof(v1));
    memset(v2, '2', sizeof(v2));
    upload(key, v1, sizeof(v1));
    assert_true(test_wait_until(verified, key, 30000));

    PQclear(q(Lock, "BEGIN", 0, NULL));
    PQclear(q(Lock, "LOCK TABLE cutover.transitions IN SHARE MODE", 0, NULL));
    /* answered by the app; its record waits for the table (the client gets its answer when
     * the record's wait ends) */
    upload(key, v2, sizeof(v2));
    assert_true(test_wait_until(waiters_1, NULL, 20000));
    /* answered after the upload; its recorder holds the row and waits for the table too */
    delete_doc(key);
    assert_true(test_wait_until(waiters_2, NULL, 20000));
    PQclear(q(Lock, "COMMIT", 0, NULL));

    if (!test_wait_until(logged, "\"upload_superseded\"", 20000)) {
        char *st = row_value("state || ' generation ' || generation", key);
        test_dump_file("cutover's log", E.log);
        fail_msg("the upload answered before the delete was not superseded: row %s", st);
    }
    char *st = row_value("state || ' ' || generation", key);
    assert_string_equal(st, "deleted 1");
    free(st);
    /* the object the delete left to the mirror goes, and nothing copies it back */
    assert_true(test_wait_until(object_gone, key, 30000));
    st = row_value("state || ' ' || generation", key);
    assert_string_equal(st, "deleted 1");
    free(st);
    free(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upload_recorded_after_delete),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
