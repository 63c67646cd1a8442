/*
 * test_admin_outage: two `cutover proxy` processes on a private PostgreSQL that the test
 * stops and starts again (never the shared fixture's). It shows: with the database gone,
 * each sidecar keeps its last flags (after its listener lost the connection and a reload
 * failed) and its GET /admin/flags still answers them; PATCH, status, documents and audit
 * answer 503 with a reason within a few seconds; once the database is back, each sidecar
 * listens again and reloads, so a change made while it was not listening is picked up, and a
 * change through one sidecar reaches the other within 1 s again.
 */
#include "tests/admin/sidecar.h"
#include "tests/storage/pg_helpers.h"

#include <math.h>

static char *G_dir, *G_services, *G_db;
static struct sidecar A, B;

static int services_rc(const char *sub)
{
    char *out = NULL;
    char *cmd = xasprintf("'%s/tests/harness/services.sh' %s '%s'",
                          testenv_var("CUTOVER_SOURCE_DIR"), sub, G_services);
    int rc = test_run(cmd, &out);
    if (rc != 0)
        fprintf(stderr, "services.sh %s: exit %d: %s\n", sub, rc, out ? out : "");
    free(out);
    free(cmd);
    return rc;
}

static int group_setup(void **state)
{
    char *env;
    (void)state;
    G_dir = test_tmpdir("adminoutage");
    G_services = xasprintf("%s/services", G_dir);
    if (services_rc("start") != 0)
        return -1;
    /* every testenv() from here on reads the private instance */
    env = xasprintf("%s/env", G_services);
    setenv("CUTOVER_TEST_ENV", env, 1);
    free(env);
    G_db = test_fresh_db("adminoutage");
    sc_init(&A, G_dir, "a", G_db, NULL);
    sc_init(&B, G_dir, "b", G_db, NULL);
    sc_start(&A);
    sc_start(&B);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (PQping(testenv("PG_URL")) != PQPING_OK)
        services_rc("pg-start");
    sc_stop(&A);
    sc_stop(&B);
    services_rc("stop");
    if (!getenv("CUTOVER_TEST_KEEP"))
        test_rmtree(G_dir);
    free(G_services);
    free(G_dir);
    free(G_db);
    return 0;
}

struct seen {
    const struct sidecar *s;
    double want;
};

static double percent_on(const struct sidecar *s)
{
    json_t *f = NULL;
    double p;
    assert_int_equal(sc_call(s, "GET", "/admin/flags", NULL, NULL, &f), 200);
    p = json_number_value(json_object_get(json_object_get(f, "read_from_s3"), "percent"));
    json_decref(f);
    return p;
}

static bool sees_percent(void *arg)
{
    struct seen *w = arg;
    return fabs(percent_on(w->s) - w->want) < 1e-9;
}

struct logged {
    const struct sidecar *s;
    const char *text;
    size_t from; /* only what the log gained after this offset */
};

static bool log_has(void *arg)
{
    struct logged *l = arg;
    size_t n = 0;
    char *log = test_read_file(l->s->log, &n);
    bool hit = log && n > l->from && strstr(log + l->from, l->text) != NULL;
    free(log);
    return hit;
}

static size_t log_size(const struct sidecar *s)
{
    size_t n = 0;
    free(test_read_file(s->log, &n));
    return n;
}

static void patch(const struct sidecar *s, int percent, long want)
{
    char body[96];
    snprintf(body, sizeof(body), "{\"read_from_s3\": {\"percent\": %d}}", percent);
    long st = sc_call(s, "PATCH", "/admin/flags", body, NULL, NULL);
    if (st != want)
        fail_msg("PATCH percent %d: %ld, want %ld", percent, st, want);
}

static void test_flags_survive_outage(void **state)
{
    struct seen wb = {&B, 30}, wa = {&A, 55};
    json_t *o = NULL;
    (void)state;

    patch(&A, 30, 200);
    assert_true(test_wait_until(sees_percent, &wb, 1000));

    size_t la = log_size(&A), lb = log_size(&B);
    assert_int_equal(services_rc("pg-stop"), 0);
    /* each sidecar noticed: its listener lost the connection, and a reload failed */
    for (int i = 0; i < 2; i++) {
        const struct sidecar *s = i ? &B : &A;
        struct logged lost = {s, "flag changes not heard", i ? lb : la};
        struct logged kept = {s, "flags kept as they were", i ? lb : la};
        assert_true(test_wait_until(log_has, &lost, 15000));
        assert_true(test_wait_until(log_has, &kept, 15000));
        assert_true(fabs(percent_on(s) - 30) < 1e-9);
    }

    /* what needs the database answers 503 with a reason, quickly */
    static const char *const calls[][3] = {
        {"PATCH", "/admin/flags", "{\"read_from_s3\": {\"percent\": 40}}"},
        {"GET", "/admin/status", NULL},
        {"GET", "/admin/documents/some%20key", NULL},
        {"GET", "/admin/audit", NULL},
    };
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        double t0 = sc_now_ms();
        long st = sc_call(&B, calls[i][0], calls[i][1], calls[i][2], NULL, &o);
        double dt = sc_now_ms() - t0;
        const char *reason = json_string_value(json_object_get(o, "reason"));
        if (st != 503 || !reason || !*reason || dt > 5000)
            fail_msg("%s %s with the database down: %ld after %.0f ms (%s)", calls[i][0],
                     calls[i][1], st, dt, reason ? reason : "no reason");
        json_decref(o);
    }
    assert_true(fabs(percent_on(&A) - 30) < 1e-9);
    assert_true(fabs(percent_on(&B) - 30) < 1e-9);

    /* back: a change made before the sidecars listen again is picked up by the reload that
     * follows reconnecting */
    la = log_size(&A);
    assert_int_equal(services_rc("pg-start"), 0);
    pgt_exec(G_db, "UPDATE cutover.flags SET value = '{\"percent\": 45}' WHERE name = "
                   "'read_from_s3'");
    for (int i = 0; i < 2; i++) {
        struct seen w = {i ? &B : &A, 45};
        assert_true(test_wait_until(sees_percent, &w, 15000));
    }
    struct logged again = {&A, "listening for flag changes again", la};
    assert_true(test_wait_until(log_has, &again, 15000));
    /* and changes travel within 1 s again */
    double t0 = sc_now_ms();
    patch(&B, 55, 200);
    assert_true(test_wait_until(sees_percent, &wa, 1000));
    fprintf(stderr, "after the outage: a change reached the other sidecar in %.1f ms\n",
            sc_now_ms() - t0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flags_survive_outage),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
