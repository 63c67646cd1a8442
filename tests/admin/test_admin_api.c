/*
 * test_admin_api: the admin API on two `cutover proxy` processes sharing one fresh database
 * (the shared PostgreSQL fixture), and the `flags` and `status` commands against them.
 * It shows: 401 without a token and with a wrong one; 400 for each kind of invalid value,
 * naming the field, with nothing written; the cutover gate's 409 with both figures, audited,
 * the forced override audited as forced, and the gate letting a raise through once every
 * document is verified; a change made through one sidecar seen by the other's GET
 * /admin/flags within 1 s (measured); PATCH merging members of object flags; status,
 * documents (keys with spaces, %, unicode, slashes) and audit answers; the commands' output
 * and exit codes.
 */
#include "tests/admin/sidecar.h"
#include "tests/storage/pg_helpers.h"

#include <math.h>

static char *G_dir, *G_db;
static struct sidecar A, B;

static int group_setup(void **state)
{
    (void)state;
    G_dir = test_tmpdir("adminapi");
    G_db = test_fresh_db("adminapi");
    sc_init(&A, G_dir, "a", G_db, "{\"shadow_read\": 0.1}");
    sc_init(&B, G_dir, "b", G_db, NULL);
    sc_start(&A);
    sc_start(&B);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    sc_stop(&A);
    sc_stop(&B);
    if (!getenv("CUTOVER_TEST_KEEP"))
        test_rmtree(G_dir);
    free(G_dir);
    free(G_db);
    return 0;
}

static double percent_of(const json_t *flags)
{
    return json_number_value(json_object_get(json_object_get(flags, "read_from_s3"), "percent"));
}

/* read_from_s3.percent as sidecar s now uses it. */
static double percent_on(const struct sidecar *s)
{
    json_t *f = NULL;
    double p;
    assert_int_equal(sc_call(s, "GET", "/admin/flags", NULL, NULL, &f), 200);
    p = percent_of(f);
    json_decref(f);
    return p;
}

static void set_percent(const struct sidecar *s, int percent, int want_status)
{
    char body[128];
    json_t *o = NULL;
    snprintf(body, sizeof(body), "{\"read_from_s3\": {\"percent\": %d}, \"reason\": \"test\"}",
             percent);
    long st = sc_call(s, "PATCH", "/admin/flags", body, NULL, &o);
    if (st != want_status)
        fail_msg("PATCH percent %d: %ld, want %d", percent, st, want_status);
    json_decref(o);
}

static void reset_documents(const char *values)
{
    char *sql = xasprintf("DELETE FROM cutover.documents; INSERT INTO cutover.documents "
                          "(storage_key, s3_key, state) VALUES %s",
                          values);
    pgt_exec(G_db, sql);
    free(sql);
}

/* ---- access ----------------------------------------------------------------------------- */

static void test_token_required(void **state)
{
    json_t *o = NULL;
    (void)state;
    assert_int_equal(sc_call(&A, "GET", "/admin/flags", NULL, "", NULL), 401);
    assert_int_equal(
        sc_call(&A, "GET", "/admin/status", NULL, "Authorization: Bearer wrong-token", NULL), 401);
    assert_int_equal(sc_call(&B, "PATCH", "/admin/flags", "{\"dual_write\": true}", "", NULL), 401);
    /* nothing was changed by the refused PATCH */
    assert_int_equal(sc_call(&B, "GET", "/admin/flags", NULL, NULL, &o), 200);
    assert_true(json_is_false(json_object_get(o, "dual_write")));
    json_decref(o);
}

/* ---- invalid values --------------------------------------------------------------------- */

static void test_invalid_values_400(void **state)
{
    static const struct {
        const char *body, *field, *reason;
    } cases[] = {
        {"{\"shadow_read\": 2}", "flags.shadow_read", "flags.shadow_read: expected a number"},
        {"{\"dual_write\": \"yes\"}", "flags.dual_write", "flags.dual_write: expected true"},
        {"{\"read_from_s3\": {\"percent\": 101}}", "flags.read_from_s3",
         "flags.read_from_s3: percent: expected a number from 0 to 100"},
        {"{\"read_from_s3\": {\"allow\": [1]}}", "flags.read_from_s3",
         "flags.read_from_s3: allow[0]: expected a string"},
        {"{\"read_from_s3\": {\"percnt\": 5}}", "flags.read_from_s3", "percnt: unknown member"},
        {"{\"auto_rollback\": {\"window_s\": 0}}", "flags.auto_rollback", "window_s"},
        {"{\"auto_rollback\": {\"max_error_rate\": -1}}", "flags.auto_rollback", "max_error_rate"},
        {"{\"cutover_gate\": 1.5}", "flags.cutover_gate", "flags.cutover_gate"},
        {"{\"no_such_flag\": 1}", "flags.no_such_flag", "unknown flag"},
        {"{\"dual_write\": true, \"shadow_read\": -0.5}", "flags.shadow_read", "flags.shadow_read"},
        {"{\"dual_write\": true, \"force\": true}", "reason", "reason"},
        {"{\"dual_write\": true, \"force\": true, \"reason\": \"\"}", "reason", "reason"},
        {"{\"dual_write\": true, \"force\": \"yes\"}", NULL, "force"},
        {"{\"dual_write\": true, \"reason\": 5}", NULL, "reason"},
        {"{}", NULL, "flag"},
        {"[1]", NULL, "body"},
        {"{not json", NULL, "body"},
    };
    long long audit0 = pgt_count(G_db, "SELECT count(*) FROM cutover.audit");
    json_t *o = NULL;
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        long st = sc_call(&A, "PATCH", "/admin/flags", cases[i].body, NULL, &o);
        const char *reason = json_string_value(json_object_get(o, "reason"));
        if (st != 400 || !reason || !strstr(reason, cases[i].reason))
            fail_msg("%s: %ld %s (want 400 naming '%s')", cases[i].body, st,
                     reason ? reason : "(no reason)", cases[i].reason);
        if (cases[i].field)
            assert_string_equal(json_string_value(json_object_get(o, "field")), cases[i].field);
        json_decref(o);
    }
    /* nothing written, and the sidecar's flags unchanged (dual_write is in several cases) */
    assert_int_equal(pgt_count(G_db, "SELECT count(*) FROM cutover.audit"), audit0);
    assert_int_equal(sc_call(&A, "GET", "/admin/flags", NULL, NULL, &o), 200);
    assert_true(json_is_false(json_object_get(o, "dual_write")));
    json_decref(o);
}

/* ---- PATCH semantics and propagation ---------------------------------------------------- */

static void test_patch_merges_and_audits(void **state)
{
    json_t *o = NULL;
    char *v;
    (void)state;
    assert_int_equal(
        sc_call(&A, "PATCH", "/admin/flags",
                "{\"read_from_s3\": {\"allow\": [\"u1\"], \"percent\": 5}, \"reason\": \"r1\"}",
                "Authorization: Bearer " ADMIN_TOKEN, &o),
        200);
    json_decref(o);
    /* a second PATCH naming only percent keeps allow; the answer is the new flags */
    assert_int_equal(sc_call(&A, "PATCH", "/admin/flags",
                             "{\"read_from_s3\": {\"percent\": 7}, \"auto_rollback\": "
                             "{\"min_samples\": 9}, \"reason\": \"r2\"}",
                             NULL, &o),
                     200);
    assert_true(fabs(percent_of(o) - 7) < 1e-9);
    assert_string_equal(json_string_value(json_array_get(
                            json_object_get(json_object_get(o, "read_from_s3"), "allow"), 0)),
                        "u1");
    json_t *ar = json_object_get(o, "auto_rollback");
    assert_int_equal(json_integer_value(json_object_get(ar, "min_samples")), 9);
    assert_int_equal(json_integer_value(json_object_get(ar, "window_s")), 60);
    /* the configuration's shadow_read of sidecar A is what the database holds */
    assert_true(fabs(json_number_value(json_object_get(o, "shadow_read")) - 0.1) < 1e-9);
    json_decref(o);
    /* one audit row per changed flag, with old, new, reason and the actor */
    v = pgt_query1(G_db, "SELECT actor || '|' || action || '|' || (old->>'percent') || '|' || "
                         "(new->>'percent') || '|' || reason FROM cutover.audit WHERE flag = "
                         "'read_from_s3' ORDER BY id DESC LIMIT 1");
    assert_string_equal(v, "admin-api@127.0.0.1|flag_set|5|7|r2");
    free(v);
    assert_int_equal(pgt_count(G_db, "SELECT count(*) FROM cutover.audit WHERE reason = 'r2'"), 2);
}

static void test_actor_header(void **state)
{
    const char *hdrs[] = {"Authorization: Bearer " ADMIN_TOKEN,
                          "X-Cutover-Actor: alice\"; DROP <b>", NULL};
    char *url = xasprintf("http://127.0.0.1:%d/admin/flags", A.admin);
    struct test_http r;
    char *v;
    (void)state;
    assert_int_equal(test_http("PATCH", url, hdrs, "{\"shadow_read\": 0.2}", 20, &r), 0);
    assert_int_equal(r.status, 200);
    test_http_free(&r);
    v = pgt_query1(G_db, "SELECT actor FROM cutover.audit ORDER BY id DESC LIMIT 1");
    assert_string_equal(v, "alice DROP b@127.0.0.1");
    free(v);
    free(url);
}

struct seen {
    const struct sidecar *s;
    double want;
};

static bool sees_percent(void *arg)
{
    struct seen *w = arg;
    return fabs(percent_on(w->s) - w->want) < 1e-9;
}

static void test_change_reaches_other_within_1s(void **state)
{
    double worst = 0;
    (void)state;
    for (int i = 0; i < 6; i++) {
        const struct sidecar *from = i % 2 ? &B : &A, *to = i % 2 ? &A : &B;
        struct seen w = {to, 11 + i};
        double t0 = sc_now_ms(), dt;
        set_percent(from, 11 + i, 200);
        assert_true(test_wait_until(sees_percent, &w, 10000));
        dt = sc_now_ms() - t0;
        if (dt > worst)
            worst = dt;
        if (dt >= 1000)
            fail_msg("change %d reached the other sidecar after %.0f ms", i, dt);
    }
    fprintf(stderr, "propagation: worst of 6 changes %.1f ms (PATCH answered included)\n", worst);
}

/* ---- the cutover gate ------------------------------------------------------------------- */

static void test_gate_refuses_then_force(void **state)
{
    json_t *o = NULL;
    char *v;
    (void)state;
    reset_documents("('g1', 'g1', 'verified'), ('g2', 'g2', 'active'), ('g3', 'g3', 'verified'), "
                    "('g4', 'g4', 'pending'), ('g5', 'g5', 'deleted')");
    set_percent(&A, 50, 200);

    /* 3 verified or active of 4 not deleted: 0.75 < 0.99999 */
    assert_int_equal(sc_call(&A, "PATCH", "/admin/flags",
                             "{\"read_from_s3\": {\"percent\": 100}, \"reason\": \"go\"}", NULL,
                             &o),
                     409);
    assert_string_equal(json_string_value(json_object_get(o, "error")), "cutover_gate");
    assert_int_equal(json_integer_value(json_object_get(o, "verified")), 3);
    assert_int_equal(json_integer_value(json_object_get(o, "total")), 4);
    assert_true(fabs(json_number_value(json_object_get(o, "ratio")) - 0.75) < 1e-9);
    assert_true(fabs(json_number_value(json_object_get(o, "gate")) - 0.99999) < 1e-9);
    assert_non_null(strstr(json_string_value(json_object_get(o, "reason")), "0.750000"));
    json_decref(o);
    assert_true(fabs(percent_on(&A) - 50) < 1e-9);
    struct seen w = {&B, 50};
    assert_true(test_wait_until(sees_percent, &w, 1000));
    v = pgt_query1(G_db, "SELECT action || '|' || (new->>'percent') || '|' || reason FROM "
                         "cutover.audit ORDER BY id DESC LIMIT 1");
    assert_non_null(strstr(v, "gate_refused|100|refused by the cutover gate: consistency "
                              "0.750000 (3 verified of 4)"));
    assert_non_null(strstr(v, "asked: go"));
    free(v);

    /* forced with a reason: through, audited as forced */
    assert_int_equal(sc_call(&A, "PATCH", "/admin/flags",
                             "{\"read_from_s3\": {\"percent\": 100}, \"force\": true, "
                             "\"reason\": \"legacy store is on fire\"}",
                             NULL, &o),
                     200);
    assert_true(fabs(percent_of(o) - 100) < 1e-9);
    json_decref(o);
    v = pgt_query1(G_db, "SELECT action || '|' || (old->>'percent') || '|' || (new->>'percent') "
                         "|| '|' || reason FROM cutover.audit ORDER BY id DESC LIMIT 1");
    assert_string_equal(v, "flag_forced|50|100|legacy store is on fire");
    free(v);

    /* at 100 already: other changes to read_from_s3 do not ask the gate again */
    assert_int_equal(
        sc_call(&A, "PATCH", "/admin/flags", "{\"read_from_s3\": {\"deny\": [\"x\"]}}", NULL, NULL),
        200);
    /* every document verified: the raise passes without force */
    set_percent(&A, 40, 200);
    pgt_exec(G_db, "UPDATE cutover.documents SET state = 'verified' WHERE state = 'pending'");
    set_percent(&B, 100, 200);
    v = pgt_query1(G_db, "SELECT action FROM cutover.audit ORDER BY id DESC LIMIT 1");
    assert_string_equal(v, "flag_set");
    free(v);
    set_percent(&B, 0, 200);
}

/* ---- status, documents, audit ----------------------------------------------------------- */

static void test_status(void **state)
{
    json_t *o = NULL, *d, *c;
    (void)state;
    reset_documents("('s1', 's1', 'pending'), ('s2', 's2', 'mismatch'), ('s3', 's3', 'verified'),"
                    " ('s4', 's4', 'failed'), ('s5', 's5', 'deleted')");
    pgt_exec(G_db, "DELETE FROM cutover.backfill_runs");
    assert_int_equal(sc_call(&B, "GET", "/admin/status", NULL, NULL, &o), 200);
    d = json_object_get(o, "documents");
    assert_int_equal(json_object_size(d), 7);
    assert_int_equal(json_integer_value(json_object_get(d, "pending")), 1);
    assert_int_equal(json_integer_value(json_object_get(d, "mismatch")), 1);
    assert_int_equal(json_integer_value(json_object_get(d, "verified")), 1);
    assert_int_equal(json_integer_value(json_object_get(d, "active")), 0);
    assert_int_equal(json_integer_value(json_object_get(o, "queue_depth")), 3);
    c = json_object_get(o, "consistency");
    assert_int_equal(json_integer_value(json_object_get(c, "verified")), 1);
    assert_int_equal(json_integer_value(json_object_get(c, "total")), 4);
    assert_true(fabs(json_number_value(json_object_get(c, "ratio")) - 0.25) < 1e-9);
    assert_true(json_is_false(json_object_get(c, "gate_open")));
    assert_true(json_is_object(json_object_get(o, "flags")));
    assert_string_equal(json_string_value(json_object_get(o, "flags_source")), "database");
    assert_true(json_is_null(json_object_get(o, "backfill")));
    assert_true(json_is_null(json_object_get(o, "last_rollback")));
    json_decref(o);

    /* backfill documents without a recorded run: their progress, the run's members null */
    pgt_exec(G_db, "UPDATE cutover.documents SET origin = 'backfill' WHERE storage_key = 's1'");
    assert_int_equal(sc_call(&B, "GET", "/admin/status", NULL, NULL, &o), 200);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "backfill"), "waiting")),
                     1);
    assert_true(json_is_null(json_object_get(json_object_get(o, "backfill"), "state")));
    json_decref(o);

    pgt_exec(G_db, "INSERT INTO cutover.backfill_runs (state, total, enqueued) VALUES "
                   "('running', 10, 4); UPDATE cutover.documents SET origin = 'backfill' "
                   "WHERE storage_key IN ('s1', 's3'); "
                   "INSERT INTO cutover.audit (actor, action, flag, reason) VALUES "
                   "('auto-rollback', 'rollback', 'read_from_s3', 'errors 5/50')");
    assert_int_equal(sc_call(&A, "GET", "/admin/status", NULL, NULL, &o), 200);
    json_t *bf = json_object_get(o, "backfill"), *rb = json_object_get(o, "last_rollback");
    assert_string_equal(json_string_value(json_object_get(bf, "state")), "running");
    assert_int_equal(json_integer_value(json_object_get(bf, "total")), 10);
    assert_int_equal(json_integer_value(json_object_get(bf, "enqueued")), 4);
    assert_int_equal(json_integer_value(json_object_get(bf, "documents")), 2);
    assert_int_equal(json_integer_value(json_object_get(bf, "done")), 1);
    assert_int_equal(json_integer_value(json_object_get(bf, "waiting")), 1);
    assert_string_equal(json_string_value(json_object_get(rb, "reason")), "errors 5/50");
    assert_string_equal(json_string_value(json_object_get(rb, "actor")), "auto-rollback");
    json_decref(o);
}

static void test_documents(void **state)
{
    static const struct {
        const char *key, *path;
    } cases[] = {
        {"plain", "plain"},
        {"with space.pdf", "with%20space.pdf"},
        {"100% sure", "100%25%20sure"},
        {"dir/sub/file.txt", "dir/sub/file.txt"},
        {"dir/slash encoded", "dir%2Fslash%20encoded"},
        {"façade-日本.doc", "fa%C3%A7ade-%E6%97%A5%E6%9C%AC.doc"},
        {"q?x=1#y", "q%3Fx=1%23y"},
    };
    json_t *o = NULL;
    (void)state;
    pgt_exec(G_db, "DELETE FROM cutover.documents");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *sql = xasprintf("INSERT INTO cutover.documents (storage_key, s3_key, state, size, "
                              "sha256, last_error, lease_token) VALUES ('%s', 'k/%zu', "
                              "'verified', 42, 'abc', 'e%zu', 'SECRET-LEASE')",
                              cases[i].key, i, i);
        pgt_exec(G_db, sql);
        free(sql);
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *path = xasprintf("/admin/documents/%s", cases[i].path);
        char want[32];
        long st = sc_call(&A, "GET", path, NULL, NULL, &o);
        if (st != 200)
            fail_msg("%s: %ld", path, st);
        assert_string_equal(json_string_value(json_object_get(o, "storage_key")), cases[i].key);
        assert_string_equal(json_string_value(json_object_get(o, "state")), "verified");
        assert_int_equal(json_integer_value(json_object_get(o, "size")), 42);
        assert_string_equal(json_string_value(json_object_get(o, "sha256")), "abc");
        snprintf(want, sizeof(want), "e%zu", i);
        assert_string_equal(json_string_value(json_object_get(o, "last_error")), want);
        assert_non_null(json_object_get(o, "created_at"));
        /* never the lease token (nor any URL) */
        char *text = json_dumps(o, 0);
        assert_null(strstr(text, "SECRET-LEASE"));
        assert_null(strstr(text, "http"));
        free(text);
        json_decref(o);
        free(path);
    }
    assert_int_equal(sc_call(&A, "GET", "/admin/documents/nope", NULL, NULL, &o), 404);
    json_decref(o);
    assert_int_equal(sc_call(&A, "GET", "/admin/documents/bad%zz", NULL, NULL, NULL), 400);
    assert_int_equal(sc_call(&A, "GET", "/admin/documents/nul%00", NULL, NULL, NULL), 400);
    assert_int_equal(sc_call(&A, "GET", "/admin/documents/", NULL, NULL, NULL), 400);
}

static void test_audit(void **state)
{
    json_t *o = NULL;
    long long n = pgt_count(G_db, "SELECT count(*) FROM cutover.audit");
    (void)state;
    assert_true(n > 3);
    assert_int_equal(sc_call(&B, "GET", "/admin/audit", NULL, NULL, &o), 200);
    assert_int_equal(json_array_size(o), n < 50 ? n : 50);
    /* newest first */
    for (size_t i = 1; i < json_array_size(o); i++)
        assert_true(json_integer_value(json_object_get(json_array_get(o, i - 1), "id")) >
                    json_integer_value(json_object_get(json_array_get(o, i), "id")));
    json_t *top = json_array_get(o, 0);
    char *max = pgt_query1(G_db, "SELECT max(id) FROM cutover.audit");
    assert_int_equal(json_integer_value(json_object_get(top, "id")), atoll(max));
    free(max);
    for (const char *const *k =
             (const char *const[]){"at", "actor", "action", "flag", "old", "new", "reason", NULL};
         *k; k++)
        assert_non_null(json_object_get(top, *k));
    json_decref(o);
    assert_int_equal(sc_call(&B, "GET", "/admin/audit?limit=2", NULL, NULL, &o), 200);
    assert_int_equal(json_array_size(o), 2);
    json_decref(o);
    static const char *const bad[] = {"0", "1001", "abc", "5x", "-1", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *p = xasprintf("/admin/audit?limit=%s", bad[i]);
        long st = sc_call(&B, "GET", p, NULL, NULL, &o);
        if (st != 400 || !strstr(json_string_value(json_object_get(o, "reason")), "limit"))
            fail_msg("%s: %ld", p, st);
        json_decref(o);
        free(p);
    }
}

/* ---- the commands ----------------------------------------------------------------------- */

static int cli(const struct sidecar *s, const char *args, char **out)
{
    char *cmd = xasprintf("CUTOVER_ADMIN_TOKEN=%s '%s' %s --config '%s' 2>&1", ADMIN_TOKEN,
                          testenv_var("CUTOVER_BIN"), args, s->config);
    int rc = test_run(cmd, out);
    free(cmd);
    return rc;
}

static void test_cli_flags(void **state)
{
    char *out = NULL, *cmd;
    json_t *o;
    (void)state;
    set_percent(&A, 0, 200);
    pgt_exec(G_db, "UPDATE cutover.documents SET state = 'pending'");

    assert_int_equal(cli(&A, "flags get", &out), 0);
    o = json_loads(out, 0, NULL);
    assert_non_null(o);
    assert_true(json_is_object(json_object_get(o, "read_from_s3")));
    json_decref(o);
    free(out);

    /* dotted name, bare word and JSON values; the answer is the new flags, on both sidecars */
    assert_int_equal(
        cli(&A, "flags set read_from_s3.percent=20 dual_write=true --reason 'cli test'", &out), 0);
    o = json_loads(out, 0, NULL);
    assert_true(fabs(percent_of(o) - 20) < 1e-9);
    assert_true(json_is_true(json_object_get(o, "dual_write")));
    json_decref(o);
    free(out);
    struct seen w = {&B, 20};
    assert_true(test_wait_until(sees_percent, &w, 1000));

    /* the server's reason, exit 1 */
    assert_int_equal(cli(&B, "flags set shadow_read=5", &out), 1);
    assert_non_null(strstr(out, "flags.shadow_read: expected a number from 0 to 1"));
    free(out);
    assert_int_equal(cli(&B, "flags set read_from_s3.percent=100", &out), 1);
    assert_non_null(strstr(out, "cutover gate"));
    free(out);
    assert_int_equal(cli(&B, "flags set dual_write=maybe", &out), 1);
    assert_non_null(strstr(out, "flags.dual_write"));
    free(out);
    /* bad usage, exit 2, nothing asked */
    static const char *const usage[] = {"flags",
                                        "flags frob",
                                        "flags set",
                                        "flags set nope",
                                        "flags set =1",
                                        "flags set a.b.c=1",
                                        "flags set read_from_s3.percent=100 --force",
                                        "flags get extra",
                                        "flags get --bogus"};
    for (size_t i = 0; i < sizeof(usage) / sizeof(usage[0]); i++) {
        int rc = cli(&B, usage[i], &out);
        if (rc != 2)
            fail_msg("'%s': exit %d: %s", usage[i], rc, out ? out : "");
        free(out);
    }
    /* forced with a reason through the command */
    assert_int_equal(
        cli(&B, "flags set read_from_s3.percent=100 --force --reason 'cli force'", &out), 0);
    free(out);
    assert_int_equal(pgt_count(G_db, "SELECT count(*) FROM cutover.audit WHERE action = "
                                     "'flag_forced' AND reason = 'cli force' AND actor LIKE "
                                     "'cli:%@127.0.0.1'"),
                     1);
    /* --admin URL, a wrong token: exit 1 */
    cmd = xasprintf("CUTOVER_ADMIN_TOKEN=nope '%s' flags get --admin http://127.0.0.1:%d 2>&1",
                    testenv_var("CUTOVER_BIN"), A.admin);
    assert_int_equal(test_run(cmd, &out), 1);
    assert_non_null(strstr(out, "401"));
    free(out);
    free(cmd);
    assert_int_equal(cli(&A, "flags --help", &out), 0);
    assert_non_null(strstr(out, "NAME=VALUE"));
    free(out);
    set_percent(&A, 0, 200);
}

static void test_cli_status(void **state)
{
    char *out = NULL;
    json_t *o, *api = NULL;
    (void)state;
    reset_documents("('c1', 'c1', 'pending'), ('c2', 'c2', 'verified'), ('c3', 'c3', 'active')");
    assert_int_equal(cli(&A, "status --json", &out), 0);
    o = json_loads(out, 0, NULL);
    if (!o)
        fail_msg("not JSON: %s", out);
    free(out);
    assert_int_equal(sc_call(&A, "GET", "/admin/status", NULL, NULL, &api), 200);
    /* the same object as the API's */
    assert_true(json_equal(json_object_get(o, "documents"), json_object_get(api, "documents")));
    assert_true(json_equal(json_object_get(o, "consistency"), json_object_get(api, "consistency")));
    assert_true(json_equal(json_object_get(o, "flags"), json_object_get(api, "flags")));
    assert_int_equal(json_integer_value(json_object_get(o, "queue_depth")), 1);
    json_decref(o);
    json_decref(api);

    assert_int_equal(cli(&A, "status", &out), 0);
    assert_non_null(strstr(out, "pending                             1"));
    assert_non_null(strstr(out, "queue depth                         1"));
    assert_non_null(strstr(out, "0.666667  (2 verified of 3)"));
    assert_non_null(strstr(out, "read_from_s3"));
    free(out);
    assert_int_equal(cli(&A, "status --bogus", &out), 2);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_required),
        cmocka_unit_test(test_invalid_values_400),
        cmocka_unit_test(test_patch_merges_and_audits),
        cmocka_unit_test(test_actor_header),
        cmocka_unit_test(test_change_reaches_other_within_1s),
        cmocka_unit_test(test_gate_refuses_then_force),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_documents),
        cmocka_unit_test(test_audit),
        cmocka_unit_test(test_cli_flags),
        cmocka_unit_test(test_cli_status),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
