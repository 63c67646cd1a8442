/*
 * test_hostile_app: hostile values reaching dual-write from the application and the request,
 * end to end: `cutover proxy` (the fixture's PostgreSQL and s3rver) in front of an app of
 * this test (libmicrohttpd) whose answers the test chooses.
 *
 *   storage keys with a control character, a `..` segment or a leading `/`, and a template
 *   variable (from the query) with a control character or a NUL (%00): the client gets the
 *   app's answer byte for byte; the document is listed `failed` with the reason, never
 *   mirrored, and no row exists for what a NUL would have cut the value to.
 *   a storage key holding \u0000 in the JSON answer: not JSON cutover accepts; nothing
 *   recorded, the client gets the answer.
 *   deeply nested JSON (100000 levels) and a huge answer (8 MiB, over limits.max_json_answer):
 *   the client gets the answer byte for byte, nothing recorded, cutover still serves.
 *   a delete route whose key holds %00 or a control character, with a verified document
 *   named by the prefix before it: the document stays verified and in S3.
 */
#include "core/core.h"
#include "storage/s3.h"
#include "tests/s3env.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <libpq-fe.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the app ------------------------------------------------------------------------------ */

static struct {
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t mu;
    char *body; /* the next answers to POST, with their length */
    size_t len;
} A = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void app_answer(const char *body, size_t len)
{
    pthread_mutex_lock(&A.mu);
    free(A.body);
    A.body = xmalloc(len + 1);
    memcpy(A.body, body, len);
    A.len = len;
    pthread_mutex_unlock(&A.mu);
}

static enum MHD_Result app(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                           const char *version, const char *data, size_t *size, void **req)
{
    struct MHD_Response *resp;
    enum MHD_Result rc;
    unsigned int status = 201;
    (void)cls;
    (void)url;
    (void)version;
    (void)data;
    if (!*req) {
        *req = c;
        return MHD_YES;
    }
    if (*size) {
        *size = 0; /* the body is dropped */
        return MHD_YES;
    }
    if (strcmp(method, "DELETE") == 0) {
        resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        status = 204;
    } else {
        pthread_mutex_lock(&A.mu);
        resp = MHD_create_response_from_buffer(A.len, A.body, MHD_RESPMEM_MUST_COPY);
        pthread_mutex_unlock(&A.mu);
        MHD_add_response_header(resp, "Content-Type", "application/json");
    }
    rc = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* ---- cutover -------------------------------------------------------------------------------- */

static struct {
    char *db_url, *dir, *config, *log;
    int port, admin;
    pid_t pid;
    PGconn *pg;
    struct test_s3 s3;
} E;

static int setup(void **state)
{
    char *spool, *upstream;
    (void)state;

    A.port = test_free_port();
    A.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                           (uint16_t)A.port, NULL, NULL, app, NULL, MHD_OPTION_END);
    assert_non_null(A.d);
    E.db_url = test_fresh_db("hostile");
    E.dir = test_tmpdir("hostile");
    spool = xasprintf("%s/spool", E.dir);
    mkdir(spool, 0700);
    E.config = xasprintf("%s/cutover.json", E.dir);
    E.log = xasprintf("%s/cutover.log", E.dir);
    E.port = test_free_port();
    E.admin = test_free_port();
    upstream = xasprintf("http://127.0.0.1:%d", A.port);
    struct test_proxy_config pc = {
        .port = E.port,
        .admin = E.admin,
        .upstream = upstream,
        .db_url = E.db_url,
        .spool = spool,
        .rest = "\"routes\": [\n"
                "  {\"name\": \"upload\", \"kind\": \"upload\", \"path\": \"/documents\",\n"
                "   \"key\": {\"response_json\": \"/storage_key\"},\n"
                "   \"vars\": {\"p\": {\"query\": \"p\"}},\n"
                "   \"s3_key\": \"hostile/{p}/{key}\"},\n"
                "  {\"name\": \"delete\", \"kind\": \"delete\", \"path\": \"/documents/{key}\",\n"
                "   \"key\": {\"path\": \"key\"}}]"};
    test_proxy_config_write(E.config, &pc);
    free(upstream);
    free(spool);
    test_migrate_db(E.config);
    E.pid = test_start_proxy(E.config, E.log, E.admin);
    E.pg = test_pg_connect(E.db_url);
    test_s3_open(&E.s3);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    bool stopped = test_stop_proxy(E.pid, E.log);
    PQfinish(E.pg);
    test_s3_close(&E.s3);
    MHD_stop_daemon(A.d);
    free(A.body);
    test_rmtree(E.dir);
    free(E.dir);
    free(E.db_url);
    free(E.config);
    free(E.log);
    return stopped ? 0 : -1;
}

/* ---- helpers ---------------------------------------------------------------------------- */

/* The row's column for key, or NULL when there is no row (new string). */
static char *row(const char *col, const char *key)
{
    const char *p[1] = {key};
    char *sql = xasprintf("SELECT %s FROM cutover.documents WHERE storage_key = $1", col);
    PGresult *r = PQexecParams(E.pg, sql, 1, NULL, p, NULL, NULL, 0);
    char *v = NULL;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(E.pg));
    if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        v = xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    free(sql);
    return v;
}

static long rows_total(void)
{
    PGresult *r = PQexec(E.pg, "SELECT count(*) FROM cutover.documents");
    long n = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n;
}

/* Uploads a small body through cutover with the query `query` (may be ""); the app answers
 * `answer` (len bytes), which the client must get byte for byte. */
static void upload_expect_answer(const char *query, const char *answer, size_t len)
{
    struct test_http r;
    char *url = xasprintf("http://127.0.0.1:%d/documents%s", E.port, query);
    app_answer(answer, len);
    assert_int_equal(test_http("POST", url, NULL, "document bytes", 14, &r), 0);
    assert_int_equal(r.status, 201);
    if (r.body_len != len || memcmp(r.body, answer, len) != 0)
        fail_msg("the client got %zu bytes, the app answered %zu (or other bytes)", r.body_len,
                 len);
    test_http_free(&r);
    free(url);
}

/* key's row is failed with a reason containing `why`, and its object is not in S3. */
static void assert_failed(const char *key, const char *why)
{
    char *state = row("state", key), *err = row("last_error", key);
    if (!state || strcmp(state, "failed") != 0)
        fail_msg("%s: state %s, want failed", key, state ? state : "(no row)");
    if (!err || !strstr(err, why))
        fail_msg("%s: last_error '%s' does not say '%s'", key, err ? err : "", why);
    free(state);
    free(err);
}

static void assert_serving(void)
{
    char *url = xasprintf("http://127.0.0.1:%d/readyz", E.admin);
    struct test_http r;
    assert_int_equal(test_http("GET", url, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    test_http_free(&r);
    free(url);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_unmirrorable_keys(void **state)
{
    static const struct {
        const char *answer, *key, *why;
    } cases[] = {
        {"{\"storage_key\": \"ctl/a\\u0001b\"}", "ctl/a\001b", "control character"},
        {"{\"storage_key\": \"ctl/tab\\there\"}", "ctl/tab\there", "control character"},
        {"{\"storage_key\": \"dots/../../etc/passwd\"}", "dots/../../etc/passwd", "'..' segment"},
        {"{\"storage_key\": \"dot/./x\"}", "dot/./x", "'.' or '..' segment"},
        {"{\"storage_key\": \"/leading\"}", "/leading", "starts with '/'"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        upload_expect_answer("?p=ok", cases[i].answer, strlen(cases[i].answer));
        assert_failed(cases[i].key, cases[i].why);
    }
    assert_serving();
}

static void test_unmirrorable_vars(void **state)
{
    static const char a1[] = "{\"storage_key\": \"var/ctl\"}";
    static const char a2[] = "{\"storage_key\": \"var/nul\"}";
    static const char a3[] = "{\"storage_key\": \"var/dots\"}";
    (void)state;
    upload_expect_answer("?p=a%01b", a1, sizeof(a1) - 1);
    assert_failed("var/ctl", "{p}");
    /* a NUL must not cut the value to "a": that would name another object */
    upload_expect_answer("?p=a%00b", a2, sizeof(a2) - 1);
    assert_failed("var/nul", "{p}");
    char *s3 = row("coalesce(s3_key, '')", "var/nul");
    assert_true(!s3 || !strstr(s3, "hostile/a/"));
    free(s3);
    upload_expect_answer("?p=..", a3, sizeof(a3) - 1);
    assert_failed("var/dots", "{p}");
}

static void test_nul_in_json_key(void **state)
{
    static const char a[] = "{\"storage_key\": \"nul\\u0000cut\"}";
    (void)state;
    long before = rows_total();
    upload_expect_answer("?p=ok", a, sizeof(a) - 1);
    assert_int_equal(rows_total(), before);
    char *st = row("state", "nul");
    assert_null(st);
    assert_serving();
}

static void test_deep_and_huge_answers(void **state)
{
    enum { DEPTH = 100000, HUGE = 8 << 20 };
    char *deep = xmalloc(2 * DEPTH + 1), *huge = xmalloc(HUGE + 64);
    size_t n;
    (void)state;
    long before = rows_total();
    memset(deep, '[', DEPTH);
    memset(deep + DEPTH, ']', DEPTH);
    deep[2 * DEPTH] = '\0';
    upload_expect_answer("?p=ok", deep, 2 * DEPTH);
    /* a deep object holding the key at its top level */
    n = (size_t)snprintf(huge, 64, "{\"storage_key\": \"deep\", \"x\": ");
    for (int i = 0; i < DEPTH; i++)
        huge[n++] = '[';
    for (int i = 0; i < DEPTH; i++)
        huge[n++] = ']';
    huge[n++] = '}';
    upload_expect_answer("?p=ok", huge, n);
    /* 8 MiB, over limits.max_json_answer */
    n = (size_t)snprintf(huge, 64, "{\"storage_key\": \"huge\", \"pad\": \"");
    memset(huge + n, 'a', HUGE - n - 2);
    memcpy(huge + HUGE - 2, "\"}", 2);
    upload_expect_answer("?p=ok", huge, HUGE);
    char *st = row("state", "huge");
    assert_true(!st || strcmp(st, "failed") == 0);
    free(st);
    st = row("state", "deep");
    assert_true(!st || strcmp(st, "failed") == 0 || strcmp(st, "pending") == 0 ||
                strcmp(st, "copied") == 0 || strcmp(st, "verified") == 0);
    free(st);
    (void)before;
    free(deep);
    free(huge);
    assert_serving();
}

static bool victim_verified(void *arg)
{
    (void)arg;
    char *st = row("state", "victim");
    bool ok = st && strcmp(st, "verified") == 0;
    free(st);
    return ok;
}

static void test_delete_key_with_nul(void **state)
{
    static const char a[] = "{\"storage_key\": \"victim\"}";
    static const char *const targets[] = {"/documents/victim%00tail", "/documents/victim%01",
                                          "/documents/victim%0d%0a"};
    struct s3_result res;
    cut_err err = CUT_ERR_INIT;
    (void)state;
    upload_expect_answer("?p=ok", a, sizeof(a) - 1);
    if (!test_wait_until(victim_verified, NULL, 30000))
        fail_msg("the victim document was not verified (log %s)", E.log);
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
        struct test_http r;
        char *url = xasprintf("http://127.0.0.1:%d%s", E.port, targets[i]);
        assert_int_equal(test_http("DELETE", url, NULL, NULL, 0, &r), 0);
        /* the app's answer, or a refusal: either way the victim is untouched */
        assert_true(r.status == 204 || r.status == 400);
        test_http_free(&r);
        free(url);
    }
    char *st = row("state", "victim");
    assert_string_equal(st, "verified");
    free(st);
    assert_int_equal(s3_head(E.s3.c, "hostile/ok/victim", &res, &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unmirrorable_keys),   cmocka_unit_test(test_unmirrorable_vars),
        cmocka_unit_test(test_nul_in_json_key),     cmocka_unit_test(test_deep_and_huge_answers),
        cmocka_unit_test(test_delete_key_with_nul),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
