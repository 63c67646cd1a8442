/*
 * test_rollback_s3down: the automatic rollback when S3 goes away, measured. On a PRIVATE
 * instance of the services (its own PostgreSQL, s3rver and example app; the shared fixture is
 * never stopped), two `cutover proxy` processes on one database before the example app, with
 * dual-write, shadow_read 1, read_from_s3.percent 100 and auto_rollback on. A few documents
 * are uploaded through the first sidecar and copied until verified in S3; reads through both
 * are compared as matches. Then s3rver is killed (SIGKILL: an outage, not a drain) at t0, and
 * signed-URL reads are driven on both sidecars, a few every 100 ms: each one's shadow fetch of
 * the S3 presigned URL fails (class s3_error) and feeds that sidecar's window. It asserts:
 *   both sidecars' GET /admin/flags show read_from_s3.percent 0 within 5 s of t0;
 *   exactly one audit row of actor auto-rollback, whose reason carries the error count, the
 *     samples and a rate above max_error_rate with at least min_samples;
 *   every read during all of it answered 200 with a URL (S3's before, the app's after): the
 *     clients never see the fault.
 * It prints the time from the fault to percent 0 on each sidecar.
 *
 * The thresholds: max_error_rate 0.2 tolerates a stray failed fetch among healthy reads;
 * min_samples 5 is reached within a few hundred ms at this read rate, yet is more than the
 * matches made before the fault, so the trigger is the rate over mixed figures, not a lone
 * error; window_s 30 covers the whole test, so those matches are still in the window.
 */
#include "tests/admin/sidecar.h"
#include "tests/storage/pg_helpers.h"

#include <curl/curl.h>
#include <math.h>
#include <signal.h>
#include <time.h>

#define NDOCS 4

static struct {
    char *dir, *services, *db, *org;
    char *keys[NDOCS];
    struct sidecar s[2];
} E;

static int services_rc(const char *sub)
{
    char *out = NULL;
    char *cmd = xasprintf("'%s/tests/harness/services.sh' %s '%s'",
                          testenv_var("CUTOVER_SOURCE_DIR"), sub, E.services);
    int rc = test_run(cmd, &out);
    if (rc != 0)
        fprintf(stderr, "services.sh %s: exit %d: %s\n", sub, rc, out ? out : "");
    free(out);
    free(cmd);
    return rc;
}

static long upload(const struct sidecar *s, const char *key, const void *data, size_t len)
{
    char *ek = curl_easy_escape(NULL, key, 0);
    char *url = xasprintf("http://127.0.0.1:%d/documents?filename=x", s->port);
    char *hk = xasprintf("X-Storage-Key: %s", ek), *ho = xasprintf("X-Org-Id: %s", E.org);
    const char *h[] = {hk, ho, "Content-Type: application/octet-stream", NULL};
    struct test_http r = {0};
    long st = 0;
    if (test_http("POST", url, h, data, len, &r) == 0)
        st = r.status;
    test_http_free(&r);
    curl_free(ek);
    free(url);
    free(hk);
    free(ho);
    return st;
}

static bool all_verified(void *arg)
{
    (void)arg;
    return pgt_count(E.db, "SELECT count(*) FROM cutover.documents WHERE state = 'verified'") >=
           NDOCS;
}

enum url_kind { URL_NONE, URL_S3, URL_APP };

/* A read of GET /documents/{key}/url through s: which URL the client got (URL_NONE: no 200
 * answer with a URL of either kind). */
static enum url_kind read_url(const struct sidecar *s, const char *key)
{
    char *ek = curl_easy_escape(NULL, key, 0);
    char *url = xasprintf("http://127.0.0.1:%d/documents/%s/url", s->port, ek);
    const char *h[] = {"X-User-Id: user-1", NULL};
    struct test_http r = {0};
    enum url_kind k = URL_NONE;
    json_t *j = NULL;
    const char *u;

    if (test_http("GET", url, h, NULL, 0, &r) == 0 && r.status == 200 &&
        (j = json_loadb(r.body, r.body_len, 0, NULL)) != NULL &&
        (u = json_string_value(json_object_get(j, "url"))) != NULL) {
        if (strncmp(u, testenv("S3_ENDPOINT"), strlen(testenv("S3_ENDPOINT"))) == 0 &&
            strstr(u, "X-Amz-Signature="))
            k = URL_S3;
        else if (strncmp(u, testenv("APP_URL"), strlen(testenv("APP_URL"))) == 0)
            k = URL_APP;
    }
    if (k == URL_NONE)
        fprintf(stderr, "read of %s through :%d: status %ld\n", key, s->port, r.status);
    json_decref(j);
    test_http_free(&r);
    curl_free(ek);
    free(url);
    return k;
}

/* read_from_s3.percent in s's GET /admin/flags, or -1. */
static double percent(const struct sidecar *s)
{
    json_t *f = NULL;
    double p = -1;
    if (sc_call(s, "GET", "/admin/flags", NULL, NULL, &f) == 200) {
        json_t *v = json_object_get(json_object_get(f, "read_from_s3"), "percent");
        if (json_is_number(v))
            p = json_number_value(v);
    }
    json_decref(f);
    return p;
}

/* A figure of s's GET /admin/shadow at "stats.<name>", or -1. */
static long long shadow_stat(const struct sidecar *s, const char *name)
{
    json_t *j = NULL;
    long long n = -1;
    if (sc_call(s, "GET", "/admin/shadow?limit=1", NULL, NULL, &j) == 200) {
        json_t *v = json_object_get(json_object_get(j, "stats"), name);
        if (json_is_integer(v))
            n = json_integer_value(v);
    }
    json_decref(j);
    return n;
}

struct matched {
    int i;
    long long want;
};

/* Reads one document through sidecar i and says whether it was answered with S3's URL and
 * the sidecar's matches reached want. */
static bool read_until_matches(void *arg)
{
    struct matched *m = arg;
    enum url_kind k = read_url(&E.s[m->i], E.keys[0]);
    assert_int_not_equal(k, URL_NONE);
    return k == URL_S3 && shadow_stat(&E.s[m->i], "matches") >= m->want;
}

static int setup(void **state)
{
    static const char *extra =
        "\"spool_dir\": \"{dir}\",\n"
        " \"s3\": {\"endpoint\": \"%s\", \"region\": \"%s\", \"bucket\": \"%s\",\n"
        "        \"path_style\": true, \"access_key_id\": \"%s\", \"secret_access_key\": \"%s\",\n"
        "        \"timeout_s\": 5},\n"
        " \"routes\": [\n"
        "  {\"name\": \"upload\", \"kind\": \"upload\", \"path\": \"/documents\",\n"
        "   \"key\": {\"response_json\": \"/storage_key\"}, \"s3_key\": \"rb/{key}\"},\n"
        "  {\"name\": \"signed-url\", \"kind\": \"signed_url\", \"path\": "
        "\"/documents/{key}/url\",\n"
        "   \"url\": {\"response_json\": \"/url\"}, \"sticky\": {\"header\": \"X-User-Id\"}}],\n"
        " \"shadow\": {\"concurrency\": 4, \"timeout_s\": 5},\n"
        " \"workers\": {\"mirror\": 2, \"max_backoff_s\": 1}";
    static const char *flags =
        "{\"dual_write\": true, \"shadow_read\": 1, \"read_from_s3\": {\"percent\": 100},\n"
        " \"auto_rollback\": {\"enabled\": true, \"max_error_rate\": 0.2, \"window_s\": 30,\n"
        "                   \"min_samples\": 5}}";
    char *env, *more;
    (void)state;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    E.dir = test_tmpdir("rbs3down");
    E.services = xasprintf("%s/services", E.dir);
    if (services_rc("start") != 0)
        return -1;
    /* every testenv() from here on reads the private instance */
    env = xasprintf("%s/env", E.services);
    setenv("CUTOVER_TEST_ENV", env, 1);
    free(env);
    E.db = test_fresh_db("rbs3down");
    E.org = xasprintf("rbs3down-%d", (int)getpid());
    more = xasprintf(extra, testenv("S3_ENDPOINT"), testenv("S3_REGION"), testenv("S3_BUCKET"),
                     testenv("S3_ACCESS_KEY"), testenv("S3_SECRET_KEY"));
    sc_init_with(&E.s[0], E.dir, "a", E.db, flags, more);
    sc_init_with(&E.s[1], E.dir, "b", E.db, flags, more);
    free(more);
    sc_start(&E.s[0]);
    sc_start(&E.s[1]);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sc_stop(&E.s[0]);
    sc_stop(&E.s[1]);
    services_rc("stop");
    if (!getenv("CUTOVER_TEST_KEEP"))
        test_rmtree(E.dir);
    for (int i = 0; i < NDOCS; i++)
        free(E.keys[i]);
    free(E.org);
    free(E.db);
    free(E.services);
    free(E.dir);
    curl_global_cleanup();
    return 0;
}

static void test_s3_down_rolls_back_on_both(void **state)
{
    double t0, at[2] = {-1, -1}, end;
    int reads = 0, s3_urls = 0, app_urls = 0;
    char *reason;
    unsigned long long errors = 0, samples = 0;
    double rate = 0;
    (void)state;

    /* documents uploaded through A, copied and verified in S3 */
    for (int i = 0; i < NDOCS; i++) {
        unsigned char data[3000];
        for (size_t k = 0; k < sizeof(data); k++)
            data[k] = (unsigned char)((k * 37u + (unsigned)i * 11u) & 0xff);
        E.keys[i] = xasprintf("%s/doc %d.bin", E.org, i);
        if (upload(&E.s[0], E.keys[i], data, sizeof(data)) != 201)
            fail_msg("upload of %s failed", E.keys[i]);
    }
    if (!test_wait_until(all_verified, NULL, 60000))
        fail_msg("the uploads were not verified within 60 s");
    /* healthy: both sidecars hand out S3 URLs and their shadow compares match */
    for (int i = 0; i < 2; i++) {
        struct matched m = {i, 2};
        if (!test_wait_until(read_until_matches, &m, 20000))
            fail_msg("sidecar %d: no matches", i);
        assert_int_equal(percent(&E.s[i]), 100);
    }
    assert_int_equal(pgt_count(E.db, "SELECT count(*) FROM cutover.audit WHERE actor = "
                                     "'auto-rollback'"),
                     0);

    /* the fault */
    assert_int_equal(kill((pid_t)atol(testenv("S3_PID")), SIGKILL), 0);
    t0 = sc_now_ms();
    end = t0 + 5000;
    while ((at[0] < 0 || at[1] < 0) && sc_now_ms() < end) {
        struct timespec pace = {0, 30 * 1000 * 1000}; /* a pace, not a wait for a state */
        for (int i = 0; i < 2; i++) {
            enum url_kind k = read_url(&E.s[i], E.keys[reads % NDOCS]);
            reads++;
            if (k == URL_NONE)
                fail_msg("read %d through sidecar %d was not answered with a URL", reads, i);
            k == URL_S3 ? s3_urls++ : app_urls++;
        }
        for (int i = 0; i < 2; i++)
            if (at[i] < 0 && percent(&E.s[i]) == 0)
                at[i] = sc_now_ms() - t0;
        nanosleep(&pace, NULL);
    }
    print_message("rollback: fault to percent 0 on sidecar A: %.0f ms, B: %.0f ms (%d reads "
                  "meanwhile, %d S3 URLs, %d app URLs)\n",
                  at[0], at[1], reads, s3_urls, app_urls);
    if (at[0] < 0 || at[1] < 0)
        fail_msg("read_from_s3.percent not 0 on both within 5 s (A %.0f, B %.0f: A at %g, B at "
                 "%g)",
                 at[0], at[1], percent(&E.s[0]), percent(&E.s[1]));

    /* rolled back: the clients get the app's URLs, and are still answered */
    for (int n = 0; n < 3; n++)
        for (int i = 0; i < 2; i++)
            assert_int_equal(read_url(&E.s[i], E.keys[n]), URL_APP);

    /* one rollback, with the figures that triggered it */
    assert_int_equal(pgt_count(E.db, "SELECT count(*) FROM cutover.audit WHERE actor = "
                                     "'auto-rollback'"),
                     1);
    reason = pgt_query1(E.db, "SELECT reason FROM cutover.audit WHERE actor = 'auto-rollback'");
    assert_non_null(reason);
    const char *p = strstr(reason, "S3 error rate ");
    if (!p ||
        sscanf(p, "S3 error rate %lf over the last 30 s (%llu errors of %llu outcomes;", &rate,
               &errors, &samples) != 3 ||
        !strstr(reason, "; shadow ") ||
        !strstr(reason, "above max_error_rate 0.2000 with min_samples 5"))
        fail_msg("reason: %s", reason);
    assert_true(samples >= 5 && errors >= 1 && errors <= samples);
    assert_true(fabs(rate - (double)errors / (double)samples) < 1e-3);
    assert_true(rate > 0.2);
    print_message("rollback reason: %s\n", reason);
    free(reason);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_s3_down_rolls_back_on_both),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
