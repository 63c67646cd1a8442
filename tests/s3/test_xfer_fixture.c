/*
 * test_xfer_fixture: the transfer engine and the legacy fetcher against stand-ins run
 * inside this test with libmicrohttpd (no external services):
 *   - 200 PUTs on one engine thread (32 in flight) to an S3 stand-in that answers 503
 *     SlowDown to the first attempt of every third key and 200 with the body's MD5 as ETag
 *     otherwise: all succeed, the 503'd keys took 2 attempts and the others 1, every
 *     completion ran on the one engine thread, and while a key waited out its backoff (a
 *     fixed 1 s here) more requests of other keys reached the stand-in than the engine can
 *     have in flight, so the engine kept working instead of sleeping;
 *   - an ETag that is not the MD5 of the bytes sent fails the copy (CUT_ECONFLICT);
 *   - a blocking call from a completion callback (the engine thread) is refused;
 *   - the legacy fetcher: the body and its hashes, the key encoded as one path segment, the
 *     configured header sent, and each failure told apart: 404, 500, timeout, no answer,
 *     over the ceiling (announced and counted), a body shorter than announced, 401; no
 *     message carries the header's secret value.
 */
#include "storage/legacy.h"
#include "storage/s3.h"
#include "storage/xfer.h"
#include "tests/s3/legacy_stub.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <microhttpd.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NKEYS 200
#define ACTIVE 32
#define BACKOFF_MS 1000

/* ---- the S3 stand-in ------------------------------------------------------------------- */

struct s3stub {
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t mu;
    bool seen[NKEYS];
    int arrivals[4 * NKEYS]; /* key number of each request, in arrival order */
    int narrivals;
};

struct rq {
    EVP_MD_CTX *md5;
};

static void rq_done(void *cls, struct MHD_Connection *c, void **ctx,
                    enum MHD_RequestTerminationCode t)
{
    struct rq *r = *ctx;

    (void)cls;
    (void)c;
    (void)t;
    if (r) {
        EVP_MD_CTX_free(r->md5);
        free(r);
    }
    *ctx = NULL;
}

static enum MHD_Result s3_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **ctx)
{
    struct s3stub *s = cls;
    struct rq *r = *ctx;
    struct MHD_Response *resp;
    const char *k = strrchr(url, '/');
    int num = -1, status = 200;
    char body[256] = "", etag[40] = "\"00000000000000000000000000000000\"";
    enum MHD_Result ret;

    (void)version;
    if (k && strncmp(k, "/k-", 3) == 0)
        num = atoi(k + 3);
    if (r == NULL) {
        r = xcalloc(1, sizeof(*r));
        r->md5 = EVP_MD_CTX_new();
        EVP_DigestInit_ex(r->md5, EVP_md5(), NULL);
        *ctx = r;
        pthread_mutex_lock(&s->mu);
        if (s->narrivals < 4 * NKEYS)
            s->arrivals[s->narrivals++] = num;
        pthread_mutex_unlock(&s->mu);
        return MHD_YES;
    }
    if (*size) {
        EVP_DigestUpdate(r->md5, data, *size);
        *size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "PUT") == 0 && num >= 0 && num < NKEYS) {
        pthread_mutex_lock(&s->mu);
        if (num % 3 == 0 && !s->seen[num]) {
            status = 503;
            snprintf(body, sizeof(body),
                     "<Error><Code>SlowDown</Code><Message>Reduce your rate.</Message></Error>");
        }
        s->seen[num] = true;
        pthread_mutex_unlock(&s->mu);
    }
    if (status == 200 && (k == NULL || strncmp(k, "/bad-etag", 9) != 0)) {
        unsigned char d[16];
        unsigned int l;
        EVP_DigestFinal_ex(r->md5, d, &l);
        for (int i = 0; i < 16; i++)
            sprintf(etag + 1 + 2 * i, "%02x", d[i]);
        etag[33] = '"';
        etag[34] = '\0';
    }
    resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
    if (status == 200)
        MHD_add_response_header(resp, "ETag", etag);
    ret = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static struct s3stub *s3stub_start(void)
{
    struct s3stub *s = xcalloc(1, sizeof(*s));

    pthread_mutex_init(&s->mu, NULL);
    s->d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG, 0,
        NULL, NULL, s3_handler, s, MHD_OPTION_NOTIFY_COMPLETED, rq_done, s, MHD_OPTION_END);
    assert_non_null(s->d);
    s->port = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT)->port;
    return s;
}

static void s3stub_free(struct s3stub *s)
{
    MHD_stop_daemon(s->d);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

struct client {
    struct cfg_s3 cfg;
    char endpoint[64];
    creds_provider *cp;
    s3_client *c;
};

static void client_open(struct client *k, int port)
{
    cut_err err = CUT_ERR_INIT;

    memset(k, 0, sizeof(*k));
    snprintf(k->endpoint, sizeof(k->endpoint), "http://127.0.0.1:%d", port);
    k->cfg.endpoint = k->endpoint;
    k->cfg.region = "eu-west-1";
    k->cfg.bucket = "bucket";
    k->cfg.path_style = true;
    k->cfg.max_attempts = 3;
    k->cfg.retry_base_ms = BACKOFF_MS;
    k->cfg.retry_max_total_ms = 60000;
    k->cfg.timeout_s = 30;
    k->cfg.access_key_id = "AKIDTEST";
    k->cfg.secret_access_key = "secret";
    k->cp = creds_provider_new(&k->cfg, &err);
    assert_non_null(k->cp);
    k->c = s3_client_new(&k->cfg, k->cp, &err);
    assert_non_null(k->c);
}

static void client_close(struct client *k)
{
    s3_client_free(k->c);
    creds_provider_free(k->cp);
}

/* ---- 200 PUTs with retries ------------------------------------------------------------- */

struct put_run {
    pthread_mutex_t mu;
    int done;
    pthread_t threads[NKEYS];
    int attempts[NKEYS];
    int code[NKEYS];
    bool md5_ok[NKEYS];
    unsigned char want_md5[NKEYS][16];
};

struct put_ctx {
    struct put_run *run;
    int i;
};

static void put_done(void *arg, const struct xfer_outcome *o, const cut_err *err)
{
    struct put_ctx *c = arg;
    struct put_run *run = c->run;

    pthread_mutex_lock(&run->mu);
    run->threads[c->i] = pthread_self();
    run->attempts[c->i] = o->s3.attempts;
    run->code[c->i] = err->code;
    run->md5_ok[c->i] = o->hashed && memcmp(o->md5, run->want_md5[c->i], 16) == 0;
    run->done++;
    pthread_mutex_unlock(&run->mu);
}

static bool all_done(void *arg)
{
    struct put_run *run = arg;
    bool d;

    pthread_mutex_lock(&run->mu);
    d = run->done == NKEYS;
    pthread_mutex_unlock(&run->mu);
    return d;
}

static void test_retries_do_not_stall_the_engine(void **state)
{
    struct s3stub *s = s3stub_start();
    struct client k;
    struct xfer_engine_opts eo = {.max_active = ACTIVE, .no_jitter = true};
    struct put_run *run = xcalloc(1, sizeof(*run));
    struct put_ctx ctx[NKEYS];
    char keys[NKEYS][16], *bodies[NKEYS];
    cut_err err = CUT_ERR_INIT;
    xfer_engine *e;
    struct xfer_stats st;
    int first = -1, second = -1, others = 0;

    (void)state;
    client_open(&k, s->port);
    e = xfer_engine_new(k.c, &eo, &err);
    assert_non_null(e);
    pthread_mutex_init(&run->mu, NULL);
    for (int i = 0; i < NKEYS; i++) {
        size_t n = 1000 + (size_t)i * 37;
        unsigned int l;
        bodies[i] = xmalloc(n);
        legacy_stub_bytes(keys[i], (uint64_t)i, bodies[i], n);
        snprintf(keys[i], sizeof(keys[i]), "k-%03d", i);
        EVP_Digest(bodies[i], n, run->want_md5[i], &l, EVP_md5(), NULL);
        ctx[i] = (struct put_ctx){run, i};
        /* no hashes given: sent as UNSIGNED-PAYLOAD, the ETag checked against the MD5 */
        struct xfer_src src = {.kind = XFER_SRC_BUFFER, .data = bodies[i], .len = n};
        struct xfer_sink dst = {.kind = XFER_SINK_S3, .key = keys[i]};
        if (xfer_copy(e, &src, &dst, put_done, &ctx[i], &err) != 0)
            fail_msg("submit: %s", err.msg);
    }
    assert_true(test_wait_until(all_done, run, 60000));
    for (int i = 0; i < NKEYS; i++) {
        if (run->code[i] != CUT_OK)
            fail_msg("key %d failed with code %d", i, run->code[i]);
        assert_int_equal(run->attempts[i], i % 3 == 0 ? 2 : 1);
        assert_true(run->md5_ok[i]);
        assert_true(pthread_equal(run->threads[i], run->threads[0]));
    }
    assert_false(pthread_equal(run->threads[0], pthread_self()));
    xfer_engine_stats(e, &st);
    assert_int_equal(st.completed, NKEYS);
    assert_int_equal(st.retries, (NKEYS + 2) / 3);
    assert_true(st.active_peak <= ACTIVE);

    /* key 0 got its 503 first of all; while it waited 1 s, the engine went on: more
     * requests of other keys arrived than it can have in flight at once */
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->narrivals; i++) {
        if (s->arrivals[i] == 0) {
            if (first < 0)
                first = i;
            else if (second < 0)
                second = i;
        } else if (first >= 0 && second < 0) {
            others++;
        }
    }
    pthread_mutex_unlock(&s->mu);
    assert_true(first >= 0 && second > first);
    if (others <= ACTIVE)
        fail_msg("only %d requests of other keys while key 0 backed off", others);

    xfer_engine_free(e);
    for (int i = 0; i < NKEYS; i++)
        free(bodies[i]);
    pthread_mutex_destroy(&run->mu);
    free(run);
    client_close(&k);
    s3stub_free(s);
}

struct one {
    pthread_mutex_t mu;
    bool done;
    int code;
    int refused_code;
    xfer_engine *e;
    char msg[512];
};

static void one_done(void *arg, const struct xfer_outcome *o, const cut_err *err)
{
    struct one *w = arg;

    (void)o;
    pthread_mutex_lock(&w->mu);
    w->code = err->code;
    snprintf(w->msg, sizeof(w->msg), "%s", err->msg);
    w->done = true;
    pthread_mutex_unlock(&w->mu);
}

static void blocking_from_callback(void *arg, const struct xfer_outcome *o, const cut_err *err)
{
    struct one *w = arg;
    struct s3_req rq = s3_req_init("HEAD", "other");
    struct s3_result r;
    cut_err e2 = CUT_ERR_INIT;

    if (xfer_s3_call(w->e, &rq, &r, &e2) == 0)
        w->refused_code = 0;
    else
        w->refused_code = e2.code;
    one_done(arg, o, err);
}

static bool one_is_done(void *arg)
{
    struct one *w = arg;
    bool d;

    pthread_mutex_lock(&w->mu);
    d = w->done;
    pthread_mutex_unlock(&w->mu);
    return d;
}

static void test_etag_mismatch_and_engine_thread(void **state)
{
    struct s3stub *s = s3stub_start();
    struct client k;
    struct one w = {.mu = PTHREAD_MUTEX_INITIALIZER};
    struct xfer_src src = {.kind = XFER_SRC_BUFFER, .data = "hello", .len = 5};
    struct xfer_sink dst = {.kind = XFER_SINK_S3, .key = "bad-etag.txt"};
    cut_err err = CUT_ERR_INIT;
    xfer_engine *e;

    (void)state;
    client_open(&k, s->port);
    e = xfer_engine_new(k.c, NULL, &err);
    assert_non_null(e);
    assert_int_equal(xfer_copy(e, &src, &dst, one_done, &w, &err), 0);
    assert_true(test_wait_until(one_is_done, &w, 30000));
    assert_int_equal(w.code, CUT_ECONFLICT);
    assert_non_null(strstr(w.msg, "ETag"));

    w.done = false;
    w.e = e;
    w.refused_code = -1;
    assert_int_equal(xfer_head(e, "k-001", blocking_from_callback, &w, &err), 0);
    assert_true(test_wait_until(one_is_done, &w, 30000));
    assert_int_equal(w.refused_code, CUT_EINVAL);
    xfer_engine_free(e);
    client_close(&k);
    s3stub_free(s);
}

/* ---- the legacy fetcher ---------------------------------------------------------------- */

#define SECRET "sekrit-9f2c"

struct collect {
    struct buf b;
};

static int collect_sink(void *arg, const void *p, size_t n)
{
    struct collect *c = arg;

    return buf_append(&c->b, p, n) ? 0 : 1;
}

static legacy_store *store_for(int port, const char *secret, int attempts)
{
    char *url = xasprintf("http://127.0.0.1:%d/raw/{key}", port);
    struct cfg_header h = {"X-Api-Key", (char *)secret};
    struct cfg_legacy cfg = {url, &h, 1, 0};
    struct legacy_opts o = {.timeout_s = 1, .max_bytes = 1 << 20, .max_attempts = attempts};
    cut_err err = CUT_ERR_INIT;
    legacy_store *st = legacy_new(&cfg, &o, &err);

    assert_non_null(st);
    free(url);
    return st;
}

static void expect_fail(legacy_store *st, xfer_engine *e, const char *key, int code,
                        enum legacy_fail fail, long status, int attempts)
{
    struct legacy_result r;
    cut_err err = CUT_ERR_INIT;

    assert_int_equal(legacy_fetch(st, e, key, NULL, NULL, &r, &err), -1);
    if (err.code != code || r.fail != fail)
        fail_msg("%s: code %d fail %d (%s), want code %d fail %d", key, err.code, r.fail, err.msg,
                 code, fail);
    assert_int_equal(r.status, status);
    assert_int_equal(r.attempts, attempts);
    assert_null(strstr(err.msg, SECRET));
}

static void test_legacy_fetcher(void **state)
{
    struct legacy_stub *ls = legacy_stub_start(SECRET);
    legacy_store *st = store_for(legacy_stub_port(ls), SECRET, 2);
    legacy_store *wrong = store_for(legacy_stub_port(ls), "not-the-key", 2);
    int closed_port = test_free_port();
    legacy_store *nobody = store_for(closed_port, SECRET, 1);
    cut_err err = CUT_ERR_INIT;
    xfer_engine *e = xfer_engine_new(NULL, NULL, &err);
    struct legacy_result r;
    struct collect col;
    char *want = xmalloc(70000), *url;

    (void)state;
    assert_non_null(e);
    /* a document: every byte, the configured header sent */
    buf_init(&col.b, 1 << 20);
    if (legacy_fetch(st, e, "doc-70000", collect_sink, &col, &r, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(r.fail, LEGACY_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.bytes, 70000);
    assert_int_equal(r.content_length, 70000);
    legacy_stub_bytes("doc-70000", 0, want, 70000);
    assert_int_equal(col.b.len, 70000);
    assert_memory_equal(col.b.data, want, 70000);
    buf_free(&col.b);

    /* the key is one path segment: '/' and ' ' are encoded, and decoded by the store */
    url = legacy_url(st, "doc-10/with space", &err);
    assert_non_null(url);
    assert_non_null(strstr(url, "/raw/doc-10%2Fwith%20space"));
    free(url);
    assert_int_equal(legacy_fetch(st, e, "doc-10/with space", NULL, NULL, &r, &err), 0);
    assert_int_equal(r.bytes, 10);

    expect_fail(st, e, "missing-1", CUT_ENOTFOUND, LEGACY_NOT_FOUND, 404, 1);
    expect_fail(st, e, "broken-1", CUT_EHTTP, LEGACY_HTTP_STATUS, 500, 2);
    expect_fail(st, e, "slow-1", CUT_EHTTP, LEGACY_TIMEOUT, 0, 2);
    /* these three answered 200, then the body was refused or broke */
    expect_fail(st, e, "huge-1", CUT_ELIMIT, LEGACY_TOO_LARGE, 200, 1);
    expect_fail(st, e, "chunked-3000000", CUT_ELIMIT, LEGACY_TOO_LARGE, 200, 1);
    expect_fail(st, e, "short-1", CUT_EHTTP, LEGACY_SHORT, 200, 1); /* bytes were handed on */
    expect_fail(wrong, e, "doc-10", CUT_EHTTP, LEGACY_HTTP_STATUS, 401, 1);
    expect_fail(nobody, e, "doc-10", CUT_EHTTP, LEGACY_UNREACHABLE, 0, 1);

    xfer_engine_free(e);
    legacy_free(st);
    legacy_free(wrong);
    legacy_free(nobody);
    legacy_stub_free(ls);
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_legacy_fetcher),
        cmocka_unit_test(test_etag_mismatch_and_engine_thread),
        cmocka_unit_test(test_retries_do_not_stall_the_engine),
    };

    return cmocka_run_group_tests_name("xfer_fixture", tests, NULL, NULL);
}
