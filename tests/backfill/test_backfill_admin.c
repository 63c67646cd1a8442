/*
 * The backfill inside the sidecar: `cutover proxy` with a backfill source, driven by
 * POST /admin/backfill on its admin port, against the fixture's PostgreSQL and s3rver and a
 * legacy store in the test (tests/backfill/legacy_fixture.h) whose hold- documents wait until
 * the test releases them, so that the test knows which copies are in flight.
 *
 * - idle: pause → 409 naming the state; an unknown action or a body that is not
 *   {"action": ...} → 400; no token → 401 (the admin port's check).
 * - start → 200 "running" with the progress fields (total, done, bytes, docs_per_s, eta_s...).
 * - pause while four copies hang in the legacy store: "paused" once they end; the store was
 *   asked nothing more after the pause (the runner's mirror stopped claiming), the rest stays
 *   pending.
 * - resume → "running", then every document verified; a last pause → 409 with state "done"
 *   and every document counted verified in the progress.
 */
#include "core/core.h"
#include "tests/backfill/legacy_fixture.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOKEN "bf-admin-token-0123456789"
#define NDOCS 40

static char *dir, *db_url, *config, *admin;
static legacy_fixture *lf;
static PGconn *pg;

static long long q_int(const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(pg));
    long long v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

/* POST /admin/backfill with body; returns the status and the answer in *out (json_decref). */
static long post(const char *body, bool with_token, json_t **out)
{
    struct test_http r;
    char *url = xasprintf("%s/admin/backfill", admin);
    const char *h[] = {"Content-Type: application/json",
                       with_token ? "Authorization: Bearer " TOKEN : NULL, NULL};
    assert_int_equal(test_http("POST", url, h, body, strlen(body), &r), 0);
    long st = r.status;
    if (out) {
        *out = json_loads(r.body ? r.body : "", 0, NULL);
        if (!*out)
            fail_msg("POST %s: %ld, not JSON: %s", body, st, r.body ? r.body : "");
    }
    test_http_free(&r);
    free(url);
    return st;
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    if (!s)
        fail_msg("no string %s in the answer", k);
    return s;
}

/* Whether the runner is in state now, asked with an action that changes nothing there:
 * pause while pausing or paused, resume while running or done (both answer 409). */
static bool is_now(const char *action, const char *state)
{
    json_t *o;
    char *body = xasprintf("{\"action\": \"%s\"}", action);
    post(body, true, &o);
    free(body);
    bool same = strcmp(jstr(o, "state_now"), state) == 0;
    json_decref(o);
    return same;
}

static bool paused(void *arg)
{
    (void)arg;
    return is_now("pause", "paused");
}

static bool four_held(void *arg)
{
    (void)arg;
    return legacy_fixture_held(lf) == 4;
}

static bool all_verified(void *arg)
{
    (void)arg;
    return q_int("SELECT count(*) FROM cutover.documents WHERE state = 'verified'") == NDOCS;
}

static bool done(void *arg)
{
    (void)arg;
    return is_now("resume", "done");
}

static void test_admin_backfill(void **state)
{
    char *out = NULL, *log, *cmd;
    json_t *o;
    struct buf src;
    int port = test_free_port(), aport = test_free_port();
    (void)state;

    dir = test_tmpdir("bfadmin");
    lf = legacy_fixture_start();
    db_url = test_fresh_db("bfadmin");
    /* the first four documents hang until released; the others answer at once */
    buf_init(&src, 0);
    for (int i = 0; i < NDOCS; i++)
        assert_true(buf_printf(&src, "{\"key\": \"adm/%s-900-%02d\"}\n", i < 4 ? "hold" : "ok", i));
    char *jsonl = xasprintf("%s/src.jsonl", dir);
    assert_true(test_write_file(jsonl, src.data, src.len));
    buf_free(&src);
    config = xasprintf("%s/cutover.json", dir);
    char *json = xasprintf(
        "{\"listen\": \"127.0.0.1:%d\", \"upstream\": \"http://127.0.0.1:9\",\n"
        " \"admin\": {\"listen\": \"127.0.0.1:%d\", \"token\": \"" TOKEN "\"},\n"
        " \"database_url\": \"%s\", \"spool_dir\": \"%s\", \"log\": {\"level\": \"warn\"},\n"
        " \"s3\": {\"endpoint\": \"%s\", \"region\": \"%s\", \"bucket\": \"%s\",\n"
        "        \"path_style\": true, \"access_key_id\": \"%s\", \"secret_access_key\": \"%s\"},\n"
        " \"legacy\": {\"raw_url\": \"http://127.0.0.1:%d/raw/{key}\", \"timeout_s\": 60},\n"
        " \"backfill\": {\"source\": {\"jsonl\": \"%s\"}, \"rate\": 0, \"concurrency\": 4}}\n",
        port, aport, db_url, dir, testenv("S3_ENDPOINT"), testenv("S3_REGION"),
        testenv("S3_BUCKET"), testenv("S3_ACCESS_KEY"), testenv("S3_SECRET_KEY"),
        legacy_fixture_port(lf), jsonl);
    assert_true(test_write_file(config, json, strlen(json)));
    cmd = xasprintf("'%s' migrate-db --config '%s'", testenv_var("CUTOVER_BIN"), config);
    if (test_run(cmd, &out) != 0)
        fail_msg("migrate-db: %s", out);
    free(out);
    free(cmd);
    pg = PQconnectdb(db_url);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);

    log = xasprintf("%s/proxy.log", dir);
    char *argv[] = {(char *)testenv_var("CUTOVER_BIN"), "proxy", "--config", config, NULL};
    pid_t pid = test_spawn(argv, NULL, log);
    admin = xasprintf("http://127.0.0.1:%d", aport);
    char *ready = xasprintf("%s/healthz", admin);
    assert_true(test_wait_http(ready, 20000));

    /* idle */
    assert_int_equal(post("{\"action\": \"start\"}", false, NULL), 401);
    assert_int_equal(post("{\"action\": \"pause\"}", true, &o), 409);
    assert_string_equal(jstr(o, "state"), "idle");
    assert_non_null(strstr(jstr(o, "error"), "idle"));
    json_decref(o);
    assert_int_equal(post("{\"action\": \"jump\"}", true, &o), 400);
    json_decref(o);
    assert_int_equal(post("[1]", true, &o), 400);
    json_decref(o);

    /* start: the progress comes with it */
    assert_int_equal(post("{\"action\": \"start\"}", true, &o), 200);
    assert_string_equal(jstr(o, "state"), "running");
    const char *fields[] = {"total",   "done",      "verified",   "failed",
                            "pending", "bytes",     "docs_per_s", "bytes_per_s",
                            "eta_s",   "elapsed_s", NULL};
    for (int i = 0; fields[i]; i++)
        assert_non_null(json_object_get(o, fields[i]));
    json_decref(o);

    /* pause while the four held copies are in flight */
    assert_true(test_wait_until(four_held, NULL, 30000));
    long asked_before = legacy_fixture_total(lf);
    assert_int_equal(post("{\"action\": \"pause\"}", true, &o), 200);
    assert_string_equal(jstr(o, "state"), "paused");
    json_decref(o);
    legacy_fixture_release(lf);
    assert_true(test_wait_until(paused, NULL, 30000));
    long asked = legacy_fixture_total(lf);
    long long pending = q_int("SELECT count(*) FROM cutover.documents WHERE state = 'pending'");
    print_message("paused: the store asked %ld times, %lld documents pending\n", asked, pending);
    assert_int_equal(asked, asked_before); /* nothing claimed since the pause */
    assert_int_equal(
        q_int("SELECT count(*) FROM cutover.documents WHERE state = 'verified'") + pending, NDOCS);

    /* resume: everything ends verified, and the progress says done */
    assert_int_equal(post("{\"action\": \"resume\"}", true, &o), 200);
    assert_string_equal(jstr(o, "state"), "running");
    json_decref(o);
    assert_true(test_wait_until(all_verified, NULL, 60000));
    assert_true(test_wait_until(done, NULL, 30000));
    assert_int_equal(post("{\"action\": \"pause\"}", true, &o), 409);
    assert_string_equal(jstr(o, "state"), "done");
    assert_int_equal(json_integer_value(json_object_get(o, "verified")), NDOCS);
    assert_int_equal(json_integer_value(json_object_get(o, "total")), NDOCS);
    json_decref(o);

    /* GET /admin/status shows the same run, and the backfill's documents */
    {
        struct test_http r;
        char *url = xasprintf("%s/admin/status", admin);
        const char *h[] = {"Authorization: Bearer " TOKEN, NULL};
        assert_int_equal(test_http("GET", url, h, NULL, 0, &r), 0);
        assert_int_equal(r.status, 200);
        o = json_loads(r.body ? r.body : "", 0, NULL);
        assert_non_null(o);
        json_t *run = json_object_get(o, "backfill_runner"), *bf = json_object_get(o, "backfill");
        assert_string_equal(jstr(run, "state"), "done");
        assert_int_equal(json_integer_value(json_object_get(run, "verified")), NDOCS);
        assert_int_equal(json_integer_value(json_object_get(bf, "done")), NDOCS);
        json_decref(o);
        test_http_free(&r);
        free(url);
    }

    int st = test_stop(pid, SIGTERM, 20000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    PQfinish(pg);
    legacy_fixture_free(lf);
    test_rmtree(dir);
    free(ready);
    free(log);
    free(json);
    free(jsonl);
    free(config);
    free(admin);
    free(db_url);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admin_backfill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
