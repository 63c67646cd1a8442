/*
 * test_shadow: shadow reads end to end. A `cutover proxy` process on a fresh database of the
 * shared PostgreSQL, with s3rver, in front of a fixture of this test that plays both the app
 * (GET /documents/{key}/url answers {"url": delivery URL}, /redirect answers 302 Location) and
 * the legacy store's signed delivery (GET /delivery/{key}?sig=...), which can be told to alter
 * a document's bytes as it delivers them, or to hang every delivery until released, and counts
 * deliveries in flight (and the most at once). Documents are put in S3 and recorded `verified`
 * with their SHA-256 and size, as a copy would have left them.
 *
 *   matching documents (JSON and redirect routes): compared, no mismatch, no row.
 *   a pending document is skipped as not_copied, an unknown one as unknown, no fetch made.
 *   the legacy delivery altered: class legacy_transformed, counted, one row with the original's
 *     checksum, the legacy's (different) checksum and size, S3's (the original's); no rollback.
 *   a legacy store that hangs: the read whose shadow fetch hangs, and later reads, are answered
 *     while the hang holds; with concurrency 2 the fixture never sees more than 2 deliveries
 *     at once, the reads beyond are skipped as busy; released, the compares end as matches.
 *   a token bucket of 1 byte/s (a second sidecar): the first read is compared, the next ones
 *     are skipped as rate.
 *   the S3 object overwritten behind cutover's back: class s3, one row, and with auto_rollback
 *     on (min_samples 2, max_error_rate 0.01) read_from_s3.percent goes to 0 with one audit row
 *     of actor auto-rollback.
 *   no delivery signature, presigned signature or credential in the sidecar's log or the table.
 * It also prints the client's read latency with shadow_read 0 and 1 (not asserted: timing).
 */
#include "core/core.h"
#include "core/metrics.h"
#include "storage/s3.h"
#include "storage/shadow.h"
#include "tests/admin/sidecar.h"
#include "tests/s3env.h"
#include "tests/storage/pg_helpers.h"

#include <curl/curl.h>
#include <microhttpd.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIG_SECRET "sig-SHADOWSECRET-7f3a"
#define NDOC 5
#define DOC_SIZE 4096

enum { D_MATCH, D_LEGACY, D_S3, D_PENDING, D_SPACE };

struct doc {
    char *key, *s3_key;
    unsigned char data[DOC_SIZE];
    bool altered;
};

static struct {
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool hang;
    int in_flight, peak, deliveries;
} F = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static struct {
    char *dir, *db;
    struct test_s3 s3;
    struct doc docs[NDOC];
    struct sidecar sc;
} E;

/* ---- the fixture: app and legacy delivery ------------------------------------------------- */

static struct doc *find_doc(const char *key)
{
    for (int i = 0; i < NDOC; i++)
        if (strcmp(E.docs[i].key, key) == 0)
            return &E.docs[i];
    return NULL;
}

static enum MHD_Result send_buf(struct MHD_Connection *c, unsigned status, const void *p, size_t n,
                                const char *type, const char *location)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)p, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ret;
    MHD_add_response_header(r, "Content-Type", type);
    if (location)
        MHD_add_response_header(r, "Location", location);
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result delivery(struct MHD_Connection *c, const char *key)
{
    const char *sig = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "sig");
    struct doc *d = find_doc(key);
    static const char trailer[] = "\n%% optimised by delivery %%\n";
    unsigned char *out;
    size_t n;
    enum MHD_Result ret;

    if (!sig || strcmp(sig, SIG_SECRET) != 0)
        return send_buf(c, 403, "denied", 6, "text/plain", NULL);
    pthread_mutex_lock(&F.mu);
    F.deliveries++;
    F.in_flight++;
    if (F.in_flight > F.peak)
        F.peak = F.in_flight;
    while (F.hang)
        pthread_cond_wait(&F.cv, &F.mu);
    F.in_flight--;
    pthread_mutex_unlock(&F.mu);
    if (!d)
        return send_buf(c, 404, "none", 4, "text/plain", NULL);
    n = DOC_SIZE + (d->altered ? sizeof(trailer) - 1 : 0);
    out = xmalloc(n);
    memcpy(out, d->data, DOC_SIZE);
    if (d->altered)
        memcpy(out + DOC_SIZE, trailer, sizeof(trailer) - 1);
    ret = send_buf(c, 200, out, n, "application/octet-stream", NULL);
    free(out);
    return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_len, void **con_cls)
{
    static const char pre[] = "/documents/";
    size_t n = strlen(url);
    (void)cls, (void)method, (void)version, (void)upload, (void)upload_len, (void)con_cls;

    if (strncmp(url, "/delivery/", 10) == 0)
        return delivery(c, url + 10);
    if (strncmp(url, pre, sizeof(pre) - 1) == 0) {
        bool json = n > 4 && strcmp(url + n - 4, "/url") == 0;
        bool redirect = n > 9 && strcmp(url + n - 9, "/redirect") == 0;
        if (json || redirect) {
            char *key = xstrndup(url + sizeof(pre) - 1,
                                 n - (sizeof(pre) - 1) - (json ? 4 : 9)); /* MHD decoded it */
            char *ek = curl_easy_escape(NULL, key, 0);
            char *link =
                xasprintf("http://127.0.0.1:%d/delivery/%s?sig=%s", F.port, ek, SIG_SECRET);
            enum MHD_Result ret;
            if (json) {
                char *body = xasprintf("{\"url\": \"%s\", \"expires_at\": 1}", link);
                ret = send_buf(c, 200, body, strlen(body), "application/json", NULL);
                free(body);
            } else {
                ret = send_buf(c, 302, "", 0, "text/plain", link);
            }
            curl_free(ek);
            free(link);
            free(key);
            return ret;
        }
    }
    return send_buf(c, 404, "nope", 4, "text/plain", NULL);
}

static void fixture_hang(bool on)
{
    pthread_mutex_lock(&F.mu);
    F.hang = on;
    if (!on)
        pthread_cond_broadcast(&F.cv);
    pthread_mutex_unlock(&F.mu);
}

static int fixture_get(int *field)
{
    pthread_mutex_lock(&F.mu);
    int v = *field;
    pthread_mutex_unlock(&F.mu);
    return v;
}

/* ---- documents ---------------------------------------------------------------------------- */

static void sha_hex(const unsigned char *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void put_s3(const char *key, const void *data, size_t n)
{
    struct s3_result res;
    cut_err err = CUT_ERR_INIT;
    if (s3_put_buffer(E.s3.c, key, data, n, NULL, &res, &err) != 0)
        fail_msg("put %s: %s", key, err.msg);
}

static void make_docs(void)
{
    static const char *const names[NDOC] = {"match.bin", "legacy.bin", "s3.bin", "pending.bin",
                                            "with space+plus.bin"};
    for (int i = 0; i < NDOC; i++) {
        struct doc *d = &E.docs[i];
        char hex[65], *sql;
        d->key = xasprintf("shadow-%d %s", (int)getpid(), names[i]);
        d->s3_key = xasprintf("shadow/%d/%s", (int)getpid(), names[i]);
        for (size_t k = 0; k < DOC_SIZE; k++)
            d->data[k] = (unsigned char)((k * 131u + (unsigned)i * 7u) ^ (k >> 5));
        sha_hex(d->data, DOC_SIZE, hex);
        put_s3(d->s3_key, d->data, DOC_SIZE);
        sql = xasprintf("INSERT INTO cutover.documents (storage_key, s3_key, state, size, sha256, "
                        "verified_at) VALUES ('%s', '%s', '%s', %d, '%s', now())",
                        d->key, d->s3_key, i == D_PENDING ? "pending" : "verified", DOC_SIZE, hex);
        pgt_exec(E.db, sql);
        free(sql);
    }
}

/* ---- the sidecar ---------------------------------------------------------------------------- */

static void sidecar_start(struct sidecar *s, const char *name, const char *shadow_cfg)
{
    char *json;

    memset(s, 0, sizeof(*s));
    s->dir = xasprintf("%s/%s", E.dir, name);
    mkdir(s->dir, 0700);
    s->config = xasprintf("%s/cutover.json", s->dir);
    s->log = xasprintf("%s/cutover.log", s->dir);
    s->port = test_free_port();
    s->admin = test_free_port();
    json = xasprintf(
        "{\"listen\": \"127.0.0.1:%d\", \"upstream\": \"http://127.0.0.1:%d\",\n"
        " \"admin\": {\"listen\": \"127.0.0.1:%d\", \"token\": \"%s\"},\n"
        " \"database_url\": \"%s\", \"spool_dir\": \"%s\",\n"
        " \"log\": {\"level\": \"info\", \"access\": true},\n"
        " \"s3\": {\"endpoint\": \"%s\", \"region\": \"%s\", \"bucket\": \"%s\",\n"
        "        \"path_style\": true, \"access_key_id\": \"%s\", \"secret_access_key\": \"%s\"},\n"
        " \"routes\": [\n"
        "  {\"name\": \"signed-url\", \"kind\": \"signed_url\", \"path\": "
        "\"/documents/{key}/url\",\n"
        "   \"url\": {\"response_json\": \"/url\"}, \"sticky\": {\"header\": \"X-User-Id\"}},\n"
        "  {\"name\": \"redirect\", \"kind\": \"signed_url\", \"path\": "
        "\"/documents/{key}/redirect\",\n"
        "   \"url\": {\"response_header\": \"Location\"}}],\n"
        " \"shadow\": %s,\n"
        " \"flags\": {\"shadow_read\": 1, \"read_from_s3\": {\"percent\": 50},\n"
        "   \"auto_rollback\": {\"enabled\": true, \"max_error_rate\": 0.01, \"window_s\": 300,\n"
        "                     \"min_samples\": 2}}}\n",
        s->port, F.port, s->admin, ADMIN_TOKEN, E.db, s->dir, testenv("S3_ENDPOINT"),
        testenv("S3_REGION"), testenv("S3_BUCKET"), testenv("S3_ACCESS_KEY"),
        testenv("S3_SECRET_KEY"), shadow_cfg);
    assert_true(test_write_file(s->config, json, strlen(json)));
    free(json);
    sc_start(s);
}

/* GET of a signed-URL route through s; the status (0: no answer within 10 s). */
static long read_doc(const struct sidecar *s, const char *key, bool redirect)
{
    CURL *c = curl_easy_init();
    char *ek = curl_easy_escape(c, key, 0);
    char *url = xasprintf("http://127.0.0.1:%d/documents/%s/%s", s->port, ek,
                          redirect ? "redirect" : "url");
    struct curl_slist *h = curl_slist_append(NULL, "X-User-Id: user-1");
    FILE *devnull = fopen("/dev/null", "w");
    long status = 0;

    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, devnull);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    fclose(devnull);
    curl_slist_free_all(h);
    curl_free(ek);
    free(url);
    curl_easy_cleanup(c);
    return status;
}

/* A figure of GET /admin/shadow's answer at a path of members ("stats.mismatches.s3"), or -1. */
static long long shadow_figure(const struct sidecar *s, const char *path)
{
    json_t *j = NULL, *v;
    char *p = xstrdup(path), *save = NULL;
    long long n = -1;

    if (sc_call(s, "GET", "/admin/shadow?limit=100", NULL, NULL, &j) == 200) {
        v = j;
        for (char *t = strtok_r(p, ".", &save); t && v; t = strtok_r(NULL, ".", &save))
            v = json_object_get(v, t);
        if (json_is_integer(v))
            n = json_integer_value(v);
        else if (json_is_array(v))
            n = (long long)json_array_size(v);
    }
    json_decref(j);
    free(p);
    return n;
}

struct want {
    const struct sidecar *s;
    const char *path;
    long long at_least;
};

static bool figure_reached(void *arg)
{
    struct want *w = arg;
    return shadow_figure(w->s, w->path) >= w->at_least;
}

static void wait_figure(const struct sidecar *s, const char *path, long long at_least)
{
    struct want w = {s, path, at_least};
    if (!test_wait_until(figure_reached, &w, 20000))
        fail_msg("%s stayed at %lld (wanted %lld)", path, shadow_figure(s, path), at_least);
}

static long long mismatches_total(const struct sidecar *s)
{
    static const char *const cls[] = {"s3", "legacy_transformed", "both", "s3_error",
                                      "legacy_error"};
    long long n = 0;
    for (size_t i = 0; i < sizeof(cls) / sizeof(cls[0]); i++) {
        char path[64];
        snprintf(path, sizeof(path), "stats.mismatches.%s", cls[i]);
        n += shadow_figure(s, path);
    }
    return n;
}

/* ---- scenarios ---------------------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    E.dir = test_tmpdir("shadow");
    E.db = pgt_migrated_db("shadow");
    test_s3_open(&E.s3);
    F.port = test_free_port();
    F.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                               MHD_USE_ERROR_LOG,
                           (uint16_t)F.port, NULL, NULL, handler, NULL,
                           MHD_OPTION_CONNECTION_TIMEOUT, 60u, MHD_OPTION_END);
    if (!F.d)
        fail_msg("the fixture did not start");
    make_docs();
    sidecar_start(&E.sc, "main", "{\"concurrency\": 2, \"timeout_s\": 30}");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fixture_hang(false);
    sc_stop(&E.sc);
    MHD_stop_daemon(F.d);
    test_s3_close(&E.s3);
    test_rmtree(E.dir);
    return 0;
}

static void test_matching_documents(void **state)
{
    char *ek = curl_easy_escape(NULL, E.docs[D_MATCH].key, 0);
    char *url = xasprintf("http://127.0.0.1:%d/documents/%s/url", E.sc.port, ek);
    const char *h[] = {"X-User-Id: user-1", NULL};
    double end = sc_now_ms() + 15000;
    bool s3 = false;
    int n = 0;
    (void)state;

    /* user-1 is in at 50% (bucket 3119): once the sidecar's state cache listens, the client
     * gets an S3 URL, and the shadow read still fetches the app's own URL (the fixture's
     * delivery counts it). One read at a time, each waiting for its compare. */
    while (!s3 && sc_now_ms() < end) {
        struct test_http r;
        assert_int_equal(test_http("GET", url, h, NULL, 0, &r), 0);
        assert_int_equal(r.status, 200);
        s3 = strstr(r.body, "X-Amz-Signature=") != NULL;
        test_http_free(&r);
        wait_figure(&E.sc, "stats.compares", ++n);
    }
    assert_true(s3);
    assert_int_equal(fixture_get(&F.deliveries), n);
    curl_free(ek);
    free(url);
    assert_int_equal(read_doc(&E.sc, E.docs[D_SPACE].key, true), 302);
    wait_figure(&E.sc, "stats.compares", n + 1);
    assert_int_equal(shadow_figure(&E.sc, "stats.matches"), n + 1);
    assert_int_equal(mismatches_total(&E.sc), 0);
    assert_int_equal(pgt_count(E.db, "SELECT count(*) FROM cutover.shadow_mismatches"), 0);
    assert_int_equal(fixture_get(&F.deliveries), n + 1);
}

static void test_not_copied_skipped(void **state)
{
    int before = fixture_get(&F.deliveries);
    long long compares = shadow_figure(&E.sc, "stats.compares");
    (void)state;
    assert_int_equal(read_doc(&E.sc, E.docs[D_PENDING].key, false), 200);
    wait_figure(&E.sc, "stats.skipped.not_copied", 1);
    assert_int_equal(read_doc(&E.sc, "no such document", false), 200);
    wait_figure(&E.sc, "stats.skipped.unknown", 1);
    assert_int_equal(fixture_get(&F.deliveries), before); /* nothing fetched for them */
    assert_int_equal(shadow_figure(&E.sc, "stats.compares"), compares);
}

static void test_legacy_transformed(void **state)
{
    struct doc *d = &E.docs[D_LEGACY];
    char hex[65], *q, *v;
    (void)state;

    d->altered = true;
    assert_int_equal(read_doc(&E.sc, d->key, false), 200);
    wait_figure(&E.sc, "stats.mismatches.legacy_transformed", 1);
    wait_figure(&E.sc, "stats.recorded", 1);
    assert_int_equal(shadow_figure(&E.sc, "stats.mismatches.s3"), 0);
    assert_int_equal(shadow_figure(&E.sc, "mismatches_by_class.legacy_transformed"), 1);
    assert_int_equal(shadow_figure(&E.sc, "mismatches"), 1);
    sha_hex(d->data, DOC_SIZE, hex);
    q = xasprintf("SELECT class || ' ' || expected_sha256 || ' ' || expected_size || ' ' || "
                  "legacy_status || ' ' || legacy_size || ' ' || (legacy_sha256 <> "
                  "expected_sha256) || ' ' || s3_status || ' ' || s3_size || ' ' || s3_sha256 "
                  "FROM cutover.shadow_mismatches WHERE storage_key = '%s'",
                  d->key);
    v = pgt_query1(E.db, q);
    char *want =
        xasprintf("legacy_transformed %s 4096 200 %d true 200 4096 %s", hex, DOC_SIZE + 29, hex);
    assert_non_null(v);
    assert_string_equal(v, want);
    free(want);
    free(v);
    free(q);
    /* not held against S3: the rollout stays */
    v = pgt_query1(E.db, "SELECT value->>'percent' FROM cutover.flags WHERE name = "
                         "'read_from_s3'");
    assert_string_equal(v, "50");
    free(v);
    d->altered = false;
}

struct fig {
    int *field, want;
};

static bool fixture_reached(void *arg)
{
    struct fig *f = arg;
    return fixture_get(f->field) >= f->want;
}

static void test_hang_never_delays_and_bounds_hold(void **state)
{
    long long compares = shadow_figure(&E.sc, "stats.compares");
    long long busy = shadow_figure(&E.sc, "stats.skipped.busy");
    struct fig one = {&F.in_flight, 1}, two = {&F.in_flight, 2};
    double t0, t1;
    (void)state;

    fixture_hang(true);
    /* this read's own shadow fetch will hang for as long as the test says: it is answered */
    t0 = sc_now_ms();
    assert_int_equal(read_doc(&E.sc, E.docs[D_MATCH].key, false), 200);
    t1 = sc_now_ms();
    assert_true(test_wait_until(fixture_reached, &one, 20000));
    /* while that delivery hangs, another read is answered too */
    assert_int_equal(read_doc(&E.sc, E.docs[D_MATCH].key, true), 302);
    assert_true(test_wait_until(fixture_reached, &two, 20000));
    print_message("reads answered while the legacy store hangs (first in %.1f ms)\n", t1 - t0);
    /* two compares hold both slots: every further read is answered and skipped as busy */
    for (int i = 0; i < 6; i++)
        assert_int_equal(read_doc(&E.sc, E.docs[D_SPACE].key, false), 200);
    assert_int_equal(shadow_figure(&E.sc, "stats.skipped.busy"), busy + 6);
    assert_int_equal(shadow_figure(&E.sc, "stats.in_flight"), 2);
    assert_int_equal(fixture_get(&F.in_flight), 2);
    fixture_hang(false);
    wait_figure(&E.sc, "stats.compares", compares + 2);
    assert_int_equal(fixture_get(&F.peak), 2); /* never above the bound */
    assert_true(shadow_figure(&E.sc, "stats.peak") <= 2);
    assert_int_equal(mismatches_total(&E.sc), 1); /* only the legacy_transformed one */
}

static void test_rate_bound(void **state)
{
    struct sidecar slow;
    (void)state;
    sidecar_start(&slow, "slow", "{\"concurrency\": 4, \"bytes_per_s\": 1}");
    assert_int_equal(read_doc(&slow, E.docs[D_MATCH].key, false), 200);
    wait_figure(&slow, "stats.compares", 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(read_doc(&slow, E.docs[D_MATCH].key, false), 200);
    wait_figure(&slow, "stats.skipped.rate", 3);
    assert_int_equal(shadow_figure(&slow, "stats.compares"), 1);
    sc_stop(&slow);
}

static bool percent_zero(void *arg)
{
    char *v = pgt_query1(E.db, "SELECT value->>'percent' FROM cutover.flags WHERE name = "
                               "'read_from_s3'");
    bool zero = v && strcmp(v, "0") == 0;
    (void)arg;
    free(v);
    return zero;
}

static void test_s3_fault_rolls_back(void **state)
{
    struct doc *d = &E.docs[D_S3];
    unsigned char other[DOC_SIZE];
    char *v;
    (void)state;

    memcpy(other, d->data, DOC_SIZE);
    other[100] ^= 0x5a; /* same size, other bytes: overwritten behind cutover's back */
    put_s3(d->s3_key, other, DOC_SIZE);
    assert_int_equal(read_doc(&E.sc, d->key, false), 200);
    wait_figure(&E.sc, "stats.mismatches.s3", 1);
    wait_figure(&E.sc, "mismatches_by_class.s3", 1);
    v = pgt_query1(E.db, "SELECT class || ' ' || (s3_sha256 <> expected_sha256) || ' ' || "
                         "(legacy_sha256 = expected_sha256) FROM cutover.shadow_mismatches "
                         "WHERE class = 's3'");
    assert_non_null(v);
    assert_string_equal(v, "s3 true true");
    free(v);
    /* S3's fault feeds the window: the rollout is rolled back, once */
    if (!test_wait_until(percent_zero, NULL, 10000))
        fail_msg("read_from_s3.percent did not go to 0");
    assert_int_equal(
        pgt_count(E.db, "SELECT count(*) FROM cutover.audit WHERE actor = 'auto-rollback'"), 1);
}

struct flag_want {
    const struct sidecar *s;
    double v;
};

static bool flag_seen(void *arg)
{
    struct flag_want *w = arg;
    json_t *j = NULL;
    bool ok = sc_call(w->s, "GET", "/admin/shadow?limit=1", NULL, NULL, &j) == 200 &&
              json_is_number(json_object_get(j, "shadow_read")) &&
              json_number_value(json_object_get(j, "shadow_read")) == w->v;
    json_decref(j);
    return ok;
}

/* Waits until the sidecar uses shadow_read v. */
static void wait_flag(const struct sidecar *s, double v)
{
    struct flag_want w = {s, v};
    if (!test_wait_until(flag_seen, &w, 5000))
        fail_msg("shadow_read did not become %g", v);
}

/* Reads of a matching document, N of them, timed one by one: *p50 and *p99 in ms. */
static void time_reads(double *p50, double *p99)
{
    enum { N = 300 };
    double t[N];
    for (int i = 0; i < N; i++) {
        double a = sc_now_ms();
        assert_int_equal(read_doc(&E.sc, E.docs[D_MATCH].key, false), 200);
        t[i] = sc_now_ms() - a;
    }
    for (int i = 1; i < N; i++) /* insertion sort: N is small */
        for (int j = i; j > 0 && t[j - 1] > t[j]; j--) {
            double x = t[j];
            t[j] = t[j - 1];
            t[j - 1] = x;
        }
    *p50 = t[N / 2];
    *p99 = t[N * 99 / 100];
}

/* Not a benchmark: the client's read latency with shadow reads off; on with both slots held by
 * hung compares (every read takes the read path's whole shadow work: the pick, the hold of
 * the JSON answer, its parse, the submission, then is skipped as busy, with no background
 * fetch competing for the machine's CPUs); and on with compares running. Printed only. */
static void test_overhead(void **state)
{
    struct fig two = {&F.in_flight, 2};
    double p50[3], p99[3];
    (void)state;

    assert_int_equal(sc_call(&E.sc, "PATCH", "/admin/flags",
                             "{\"shadow_read\": 0, \"reason\": \"overhead: off\"}", NULL, NULL),
                     200);
    wait_flag(&E.sc, 0);
    time_reads(&p50[0], &p99[0]);
    assert_int_equal(sc_call(&E.sc, "PATCH", "/admin/flags",
                             "{\"shadow_read\": 1, \"reason\": \"overhead: on\"}", NULL, NULL),
                     200);
    wait_flag(&E.sc, 1);
    fixture_hang(true);
    assert_int_equal(read_doc(&E.sc, E.docs[D_MATCH].key, false), 200);
    assert_int_equal(read_doc(&E.sc, E.docs[D_MATCH].key, false), 200);
    assert_true(test_wait_until(fixture_reached, &two, 20000));
    time_reads(&p50[1], &p99[1]);
    fixture_hang(false);
    time_reads(&p50[2], &p99[2]);
    print_message("client read latency, ms (300 reads each, a new connection per read): "
                  "shadow_read 0: p50 %.3f p99 %.3f | 1, slots full (read path only): p50 %.3f "
                  "p99 %.3f | 1, compares running: p50 %.3f p99 %.3f\n",
                  p50[0], p99[0], p50[1], p99[1], p50[2], p99[2]);
}

/* The value of one sample line of /metrics ("name{labels}"), or -1. */
static double metric(const struct sidecar *s, const char *sample)
{
    struct test_http r;
    char *url = xasprintf("http://127.0.0.1:%d/metrics", s->admin);
    double v = -1;
    assert_int_equal(test_http("GET", url, NULL, NULL, 0, &r), 0);
    for (char *p = r.body; p && (p = strstr(p, sample)) != NULL; p++)
        if ((p == r.body || p[-1] == '\n') && p[strlen(sample)] == ' ') {
            v = strtod(p + strlen(sample) + 1, NULL);
            break;
        }
    test_http_free(&r);
    free(url);
    return v;
}

static void test_metrics(void **state)
{
    (void)state;
    /* the label values are the classes' and reasons' names, in the enums' order */
    for (int i = 0; i < SHADOW_NCLASSES; i++)
        assert_int_equal(
            metrics_label_index(MET_SHADOW_MISMATCHES, 0, shadow_class_name((enum shadow_class)i)),
            i);
    for (int i = 0; i < SHADOW_NSKIPS; i++)
        assert_int_equal(
            metrics_label_index(MET_SHADOW_SKIPPED, 0, shadow_skip_name((enum shadow_skip)i)), i);
    assert_true(metric(&E.sc, "cutover_shadow_mismatches_total{class=\"legacy_transformed\"}") ==
                1);
    assert_true(metric(&E.sc, "cutover_shadow_mismatches_total{class=\"s3\"}") == 1);
    assert_true(metric(&E.sc, "cutover_shadow_compares_total") ==
                (double)shadow_figure(&E.sc, "stats.compares"));
    assert_true(metric(&E.sc, "cutover_shadow_skipped_total{reason=\"busy\"}") ==
                (double)shadow_figure(&E.sc, "stats.skipped.busy"));
    assert_true(metric(&E.sc, "cutover_shadow_skipped_total{reason=\"not_copied\"}") == 1);
}

static void test_no_secrets(void **state)
{
    char *log = test_read_file(E.sc.log, NULL);
    (void)state;
    assert_non_null(log);
    assert_null(strstr(log, SIG_SECRET));
    assert_null(strstr(log, "X-Amz-Signature"));
    assert_null(strstr(log, "X-Amz-Credential"));
    assert_null(strstr(log, testenv("S3_SECRET_KEY")));
    assert_non_null(strstr(log, "shadow_mismatch"));
    free(log);
    assert_int_equal(pgt_count(E.db, "SELECT count(*) FROM cutover.shadow_mismatches t "
                                     "WHERE t::text LIKE '%http%' OR t::text LIKE '%sig%' "
                                     "OR t::text LIKE '%Amz%'"),
                     0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matching_documents),
        cmocka_unit_test(test_not_copied_skipped),
        cmocka_unit_test(test_legacy_transformed),
        cmocka_unit_test(test_hang_never_delays_and_bounds_hold),
        cmocka_unit_test(test_rate_bound),
        cmocka_unit_test(test_s3_fault_rolls_back),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_overhead),
        cmocka_unit_test(test_no_secrets),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
