/*
 * test_admin_rollback: the automatic rollback (the flag auto_rollback), against the shared
 * PostgreSQL fixture and s3rver. It shows: two flag stores on one database rolling back at the
 * same moment write exactly one flag change and one audit row (round after round); the
 * window triggers only once the error rate is above max_error_rate with min_samples
 * outcomes, the audit row carrying those figures; and two `cutover proxy` processes whose
 * mirror PUTs fail (s3rver refuses a wrong secret key), the rollback enabled while both
 * windows are over the threshold: read_from_s3.percent becomes 0 on both, with exactly one
 * audit row of actor auto-rollback, shown as last_rollback by GET /admin/status.
 */
#include "flags/flags.h"
#include "tests/admin/sidecar.h"
#include "tests/storage/pg_helpers.h"

#include <curl/curl.h>
#include <math.h>
#include <pthread.h>

static struct config *cfg_with(const char *flags)
{
    struct cfg_problems p = {0};
    char *text = xasprintf("{\"flags\": %s}", flags);
    struct config *cfg = config_parse(text, "test", &p);
    assert_non_null(cfg);
    free(text);
    return cfg;
}

static flags_store *open_store(const char *url, const char *flags)
{
    struct config *cfg = cfg_with(flags);
    cut_err err = CUT_ERR_INIT;
    flags_store *fs = flags_store_new(url, cfg, &err);
    if (fs == NULL)
        fail_msg("flags_store_new: %s", err.msg);
    config_free(cfg);
    assert_int_equal(flags_store_reload(fs, &err), 0);
    return fs;
}

static void set_percent(flags_store *fs, int percent)
{
    char text[64];
    snprintf(text, sizeof(text), "{\"read_from_s3\": {\"percent\": %d}}", percent);
    json_t *patch = json_loads(text, 0, NULL);
    struct flags_change c = {.patch = patch, .actor = "test", .reason = "test"};
    flags_snapshot *now = NULL;
    cut_err err = CUT_ERR_INIT;
    if (flags_store_change(fs, &c, NULL, &now, &err) != 0)
        fail_msg("change: %s", err.msg);
    flags_snapshot_unref(now);
    json_decref(patch);
}

/* ---- exactly one writer ----------------------------------------------------------------- */

struct racer {
    flags_store *fs;
    pthread_barrier_t *go;
    bool done;
    int rc;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    cut_err err = CUT_ERR_INIT;
    pthread_barrier_wait(r->go);
    r->rc = flags_store_rollback(r->fs, "race", &r->done, &err);
    return NULL;
}

static void test_rollback_exactly_once(void **state)
{
    char *url = pgt_migrated_db("rbonce");
    flags_store *a = open_store(url, "{}"), *b = open_store(url, "{}");
    (void)state;

    for (int round = 1; round <= 8; round++) {
        pthread_barrier_t go;
        struct racer ra = {a, &go, false, -1}, rb = {b, &go, false, -1};
        pthread_t ta, tb;
        set_percent(round % 2 ? a : b, 10 * round);
        pthread_barrier_init(&go, NULL, 2);
        pthread_create(&ta, NULL, race, &ra);
        pthread_create(&tb, NULL, race, &rb);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        pthread_barrier_destroy(&go);
        assert_int_equal(ra.rc, 0);
        assert_int_equal(rb.rc, 0);
        if (ra.done == rb.done)
            fail_msg("round %d: %s wrote", round, ra.done ? "both" : "neither");
        assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.audit WHERE actor = "
                                        "'auto-rollback' AND action = 'rollback'"),
                         round);
        assert_int_equal(pgt_count(url, "SELECT (value->>'percent')::int FROM cutover.flags "
                                        "WHERE name = 'read_from_s3'"),
                         0);
    }
    /* at 0 already: nothing written */
    bool done = true;
    cut_err err = CUT_ERR_INIT;
    assert_int_equal(flags_store_rollback(a, "again", &done, &err), 0);
    assert_false(done);
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.audit WHERE actor = "
                                    "'auto-rollback'"),
                     8);
    flags_store_free(a);
    flags_store_free(b);
    free(url);
}

/* ---- the window ------------------------------------------------------------------------- */

struct rolled {
    const char *url;
};

static bool rolled_back(void *arg)
{
    struct rolled *r = arg;
    return pgt_count(r->url, "SELECT count(*) FROM cutover.audit WHERE actor = 'auto-rollback'") >
           0;
}

static void test_window_thresholds(void **state)
{
    char *url = pgt_migrated_db("rbwin");
    flags_store *fs = open_store(
        url, "{\"auto_rollback\": {\"enabled\": true, \"max_error_rate\": 0.2, \"window_s\": "
             "600, \"min_samples\": 10}}");
    cut_err err = CUT_ERR_INIT;
    flags_rollback *rb = flags_rollback_start(fs, &err);
    struct rolled r = {url};
    char *reason;
    (void)state;

    assert_non_null(rb);
    set_percent(fs, 40);
    /* 5 errors alone: 100% but under min_samples; then 20 ok: 5 of 25 = 0.2, not above */
    for (int i = 0; i < 5; i++)
        flags_rollback_record(rb, false, "s3_put");
    for (int i = 0; i < 20; i++)
        flags_rollback_record(rb, true, "s3_put");
    /* one more error: 6 of 26 > 0.2 */
    flags_rollback_record(rb, false, "s3_get");
    assert_true(test_wait_until(rolled_back, &r, 5000));
    reason = pgt_query1(url, "SELECT reason FROM cutover.audit WHERE actor = 'auto-rollback'");
    if (!strstr(reason, "(6 errors of 26 outcomes; s3_put 5, s3_get 1)") ||
        !strstr(reason, "max_error_rate 0.2000 with min_samples 10"))
        fail_msg("reason: %s", reason);
    free(reason);
    flags_snapshot *s = flags_store_current(fs);
    assert_true(flags_read_percent(s) == 0);
    flags_snapshot_unref(s);
    flags_rollback_free(rb);
    flags_store_free(fs);
    free(url);
}

/* ---- two sidecars ----------------------------------------------------------------------- */

static long upload(const struct sidecar *s, const char *key)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    long status = 0;
    char *url = xasprintf("http://127.0.0.1:%d/documents?filename=f.bin", s->port);
    char *hk = xasprintf("X-Storage-Key: %s", key);

    h = curl_slist_append(h, hk);
    h = curl_slist_append(h, "X-Org-Id: rollback");
    h = curl_slist_append(h, "Content-Type: application/octet-stream");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, "some document bytes");
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fwrite);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, stderr);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(url);
    free(hk);
    return status;
}

struct logged {
    const struct sidecar *s;
    const char *text;
};

static bool log_has(void *arg)
{
    struct logged *l = arg;
    char *log = test_read_file(l->s->log, NULL);
    bool hit = log && strstr(log, l->text) != NULL;
    free(log);
    return hit;
}

struct seen {
    const struct sidecar *s;
    double want;
};

static bool sees_percent(void *arg)
{
    struct seen *w = arg;
    json_t *f = NULL;
    bool hit;
    assert_int_equal(sc_call(w->s, "GET", "/admin/flags", NULL, NULL, &f), 200);
    hit = fabs(json_number_value(json_object_get(json_object_get(f, "read_from_s3"), "percent")) -
               w->want) < 1e-9;
    json_decref(f);
    return hit;
}

static void test_two_sidecars_one_rollback(void **state)
{
    char *dir = test_tmpdir("adminrb"), *db = test_fresh_db("adminrb");
    char *extra = xasprintf(
        "\"spool_dir\": \"{dir}\",\n"
        " \"s3\": {\"endpoint\": \"%s\", \"region\": \"%s\", \"bucket\": \"%s\",\n"
        "        \"path_style\": true, \"access_key_id\": \"%s\",\n"
        "        \"secret_access_key\": \"not-the-secret\", \"max_attempts\": 1,\n"
        "        \"retry_base_ms\": 50, \"retry_max_total_ms\": 500, \"timeout_s\": 10},\n"
        " \"routes\": [{\"name\": \"upload\", \"kind\": \"upload\", \"path\": \"/documents\",\n"
        "   \"key\": {\"response_json\": \"/storage_key\"},\n"
        "   \"vars\": {\"org\": {\"header\": \"X-Org-Id\"}}, \"s3_key\": \"rb/{key}\"}],\n"
        " \"workers\": {\"mirror\": 2, \"lease_s\": 5, \"max_attempts\": 1000,\n"
        "             \"max_backoff_s\": 1}",
        testenv("S3_ENDPOINT"), testenv("S3_REGION"), testenv("S3_BUCKET"),
        testenv("S3_ACCESS_KEY"));
    const char *flags = "{\"dual_write\": true, \"auto_rollback\": {\"enabled\": false, "
                        "\"max_error_rate\": 0.5, \"window_s\": 60, \"min_samples\": 3}}";
    struct sidecar A, B;
    json_t *o = NULL;
    (void)state;

    sc_init_with(&A, dir, "a", db, flags, extra);
    sc_init_with(&B, dir, "b", db, flags, extra);
    sc_start(&A);
    sc_start(&B);
    assert_int_equal(
        sc_call(&A, "PATCH", "/admin/flags", "{\"read_from_s3\": {\"percent\": 50}}", NULL, NULL),
        200);
    for (int i = 0; i < 6; i++) {
        char key[32];
        snprintf(key, sizeof(key), "rb-doc-%d", i);
        long st = upload(i % 2 ? &B : &A, key);
        if (st < 200 || st > 299)
            fail_msg("upload %s: %ld", key, st);
    }
    /* both windows over the threshold, the rollback disabled */
    struct logged la = {&A, "auto_rollback is disabled"}, lb = {&B, "auto_rollback is disabled"};
    assert_true(test_wait_until(log_has, &la, 30000));
    assert_true(test_wait_until(log_has, &lb, 30000));
    struct seen sa = {&A, 50}, sb = {&B, 50};
    assert_true(sees_percent(&sa) && sees_percent(&sb));

    /* enabled on both at once (one notification): both decide, one writes */
    assert_int_equal(sc_call(&B, "PATCH", "/admin/flags",
                             "{\"auto_rollback\": {\"enabled\": true}}", NULL, NULL),
                     200);
    sa.want = sb.want = 0;
    assert_true(test_wait_until(sees_percent, &sa, 5000));
    assert_true(test_wait_until(sees_percent, &sb, 5000));
    struct logged ra = {&A, "rolled back"}, rbl = {&B, "rolled back"};
    assert_true(log_has(&ra) || log_has(&rbl));
    assert_int_equal(pgt_count(db, "SELECT count(*) FROM cutover.audit WHERE actor = "
                                   "'auto-rollback'"),
                     1);
    assert_int_equal(sc_call(&A, "GET", "/admin/status", NULL, NULL, &o), 200);
    json_t *last = json_object_get(o, "last_rollback");
    assert_string_equal(json_string_value(json_object_get(last, "action")), "rollback");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(last, "new"), "percent")),
                     0);
    assert_non_null(strstr(json_string_value(json_object_get(last, "reason")), "s3_put"));
    json_decref(o);

    sc_stop(&A);
    sc_stop(&B);
    if (!getenv("CUTOVER_TEST_KEEP"))
        test_rmtree(dir);
    free(dir);
    free(db);
    free(extra);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rollback_exactly_once),
        cmocka_unit_test(test_window_thresholds),
        cmocka_unit_test(test_two_sidecars_one_rollback),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
