/*
 * test_proxy_hooks: the proxy run in-process with handlers and observers registered, as the
 * migration features will use it: a route match with its path variable percent-decoded per
 * segment, the request-body hook seeing every byte in order, the response hook holding a
 * JSON answer and rewriting it and a header, on_done once per exchange, no handler at all
 * for a request that matches no route; two features' handlers on one route, each with its
 * own state; an observer seeing every exchange (matched, unmatched, refused 400 and 431,
 * 413, 502 when the app cannot be reached) with its route, status, bytes and durations.
 */
#include "fixture.h"

#include "tests/testlib.h"
#include "tests/unit.h"

#include "inproc.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* ---- one feature: the original hooks --------------------------------------------------- */

struct seen {
    int requests, done;
    char route[32], key[128];
    uint64_t body_len, body_hash;
    int done_status;
};

static struct seen S;

struct rstate {
    const struct cfg_route *route;
    uint64_t len, hash;
};

static void *h_start(void *arg, proxy_exchange *x, const struct proxy_match *m)
{
    (void)arg;
    (void)x;
    struct rstate *st = calloc(1, sizeof(*st));
    st->route = m->route;
    st->hash = FX_HASH_INIT;
    pthread_mutex_lock(&mu);
    S.requests++;
    snprintf(S.route, sizeof(S.route), "%s", m->route->name);
    snprintf(S.key, sizeof(S.key), "%s", inproc_var(m, "key"));
    pthread_mutex_unlock(&mu);
    return st;
}

static enum proxy_body_result h_body(void *arg, void *state, proxy_exchange *x, const void *data,
                                     size_t n)
{
    struct rstate *st = state;
    (void)arg;
    (void)x;
    st->len += n;
    st->hash = fx_hash(st->hash, data, n);
    return PROXY_BODY_OK;
}

static enum proxy_answer_mode h_response(void *arg, void *state, proxy_exchange *x, int status)
{
    struct rstate *st = state;
    (void)arg;
    if (!proxy_exchange_set_response_header(x, "X-Hooked", "yes"))
        return PROXY_PASS;
    return st->route->kind == ROUTE_SIGNED_URL && status == 200 ? PROXY_HOLD : PROXY_PASS;
}

static enum proxy_answer_mode h_response_body(void *arg, void *state, proxy_exchange *x,
                                              struct buf *body)
{
    (void)arg;
    (void)state;
    const char *old = strstr(body->data ? body->data : "", "http://legacy.example/doc/1");
    if (!old)
        return PROXY_PASS;
    buf_reset(body);
    if (buf_puts(body, "{\"url\":\"https://bucket.s3.example/doc/1\",\"id\":7}"))
        (void)proxy_exchange_set_response_header(x, "Location", "https://bucket.s3.example/doc/1");
    return PROXY_PASS;
}

static void h_done(void *arg, void *state, const struct proxy_outcome *o)
{
    struct rstate *st = state;
    (void)arg;
    pthread_mutex_lock(&mu);
    S.done++;
    S.done_status = o->status;
    S.body_len = st->len;
    S.body_hash = st->hash;
    pthread_mutex_unlock(&mu);
    free(st);
}

static bool done_is(void *arg)
{
    pthread_mutex_lock(&mu);
    bool ok = S.done >= *(int *)arg;
    pthread_mutex_unlock(&mu);
    return ok;
}

static void test_hooks(void **state)
{
    (void)state;
    struct fx *f = fx_start();
    assert_non_null(f);
    int port;
    char u[256];
    struct config *cfg = inproc_config(fx_port(f), "", &port);
    assert_non_null(cfg);

    cut_err err = CUT_ERR_INIT;
    proxy *px = proxy_new(cfg, &err);
    assert_non_null(px);
    struct proxy_handler h = {.on_start = h_start,
                              .on_request_body = h_body,
                              .on_response = h_response,
                              .on_response_body = h_response_body,
                              .on_done = h_done};
    assert_true(proxy_add_handler(px, ROUTE_UPLOAD, &h, &err));
    assert_true(proxy_add_handler(px, ROUTE_SIGNED_URL, &h, &err));
    assert_true(proxy_start(px, &err));

    /* upload route: every body byte seen by the hook, in order */
    static unsigned char body[200000];
    fx_gen(0, body, sizeof(body));
    struct test_http r;
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/documents", port);
    assert_int_equal(test_http("POST", u, NULL, body, sizeof(body), &r), 0);
    assert_int_equal(r.status, 200);
    char *hk = test_http_header(&r, "X-Hooked");
    assert_non_null(hk);
    free(hk);
    test_http_free(&r);
    int want = 1;
    assert_true(test_wait_until(done_is, &want, 5000));
    assert_string_equal(S.route, "upload");
    assert_int_equal(S.body_len, sizeof(body));
    assert_true(S.body_hash == fx_hash(FX_HASH_INIT, body, sizeof(body)));

    /* signed-url route: the app's JSON answer rewritten, Location replaced, key decoded */
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/json/a%%2Fb%%20c?sig=1", port);
    assert_int_equal(test_http("GET", u, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"url\":\"https://bucket.s3.example/doc/1\",\"id\":7}");
    char *loc = test_http_header(&r, "Location");
    assert_non_null(loc);
    assert_string_equal(loc, "https://bucket.s3.example/doc/1");
    free(loc);
    test_http_free(&r);
    want = 2;
    assert_true(test_wait_until(done_is, &want, 5000));
    assert_string_equal(S.route, "signed-url");
    assert_string_equal(S.key, "a/b c");
    assert_int_equal(S.done_status, 200);

    /* no route, or a route kind with no handler: no hook runs */
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/other", port);
    assert_int_equal(test_http("GET", u, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    hk = test_http_header(&r, "X-Hooked");
    assert_null(hk);
    test_http_free(&r);
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/documents/k1", port);
    assert_int_equal(test_http("DELETE", u, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    test_http_free(&r);
    pthread_mutex_lock(&mu);
    assert_int_equal(S.requests, 2);
    pthread_mutex_unlock(&mu);

    proxy_shutdown(px, 5);
    proxy_free(px);
    config_free(cfg);
    fx_stop(f);
}

/* ---- two features and an observer ------------------------------------------------------- */

/* Feature A hashes the upload's body and tags the answer; feature B counts the body's calls
 * and bytes and sets its own header. Each keeps its own state. */
struct feat {
    const char *name; /* the handler's arg */
    char tag;
    uint64_t bytes, hash;
    int calls;
    int status_seen;
};

struct feat_log {
    int done;
    struct feat last; /* copy of the state at on_done */
};

static struct feat_log FA, FB;
static int state_mixups; /* a handler called with another handler's state */

static void *f_start(void *arg, proxy_exchange *x, const struct proxy_match *m)
{
    (void)x;
    (void)m;
    struct feat *st = calloc(1, sizeof(*st));
    st->name = arg;
    st->tag = ((const char *)arg)[0];
    st->hash = FX_HASH_INIT;
    return st;
}

static enum proxy_body_result f_body(void *arg, void *state, proxy_exchange *x, const void *data,
                                     size_t n)
{
    struct feat *st = state;
    (void)x;
    if (st->name != arg)
        state_mixups++;
    st->calls++;
    st->bytes += n;
    if (st->tag == 'A')
        st->hash = fx_hash(st->hash, data, n);
    return PROXY_BODY_OK;
}

static enum proxy_answer_mode f_response(void *arg, void *state, proxy_exchange *x, int status)
{
    struct feat *st = state;
    (void)arg;
    st->status_seen = status;
    (void)proxy_exchange_set_response_header(x, st->tag == 'A' ? "X-Feature-A" : "X-Feature-B",
                                             st->name);
    return PROXY_PASS;
}

static void f_done(void *arg, void *state, const struct proxy_outcome *o)
{
    struct feat *st = state;
    (void)o;
    pthread_mutex_lock(&mu);
    struct feat_log *fl = st->tag == 'A' ? &FA : &FB;
    if (st->name != arg)
        state_mixups++;
    fl->done++;
    fl->last = *st;
    pthread_mutex_unlock(&mu);
    free(st);
}

#define MAX_RECS 64
struct rec {
    char route[32]; /* "" when none */
    char method[16];
    int status;
    uint64_t req_bytes, resp_bytes, dur_us, up_us;
    bool refused, upstream_failed, client_gone;
    char why[160];
};
static struct rec recs[MAX_RECS];
static int nrecs;

static void obs(void *arg, const struct proxy_record *r)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    if (nrecs < MAX_RECS) {
        struct rec *c = &recs[nrecs++];
        snprintf(c->route, sizeof(c->route), "%s", r->route ? r->route->name : "");
        snprintf(c->method, sizeof(c->method), "%s", r->method);
        c->status = r->status;
        c->req_bytes = r->request_bytes;
        c->resp_bytes = r->response_bytes;
        c->dur_us = r->duration_us;
        c->up_us = r->upstream_us;
        c->refused = r->refused;
        c->upstream_failed = r->upstream_failed;
        c->client_gone = r->client_gone;
        snprintf(c->why, sizeof(c->why), "%s", r->why ? r->why : "");
    }
    pthread_mutex_unlock(&mu);
}

static bool nrecs_is(void *arg)
{
    pthread_mutex_lock(&mu);
    bool ok = nrecs >= *(int *)arg;
    pthread_mutex_unlock(&mu);
    return ok;
}

static struct rec last_rec(int want)
{
    assert_true(test_wait_until(nrecs_is, &want, 5000));
    pthread_mutex_lock(&mu);
    assert_int_equal(nrecs, want); /* exactly one record per exchange */
    struct rec r = recs[nrecs - 1];
    pthread_mutex_unlock(&mu);
    return r;
}

/* Sends raw bytes on a new connection and returns the status of the answer (0: none). */
static int raw_status(int port, const char *req, size_t len)
{
    int fd = test_connect(port);
    char buf[512];
    if (fd < 0)
        return 0;
    if (write(fd, req, len) != (ssize_t)len) {
        close(fd);
        return 0;
    }
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 12)
        return 0;
    buf[n] = 0;
    return atoi(buf + 9);
}

static void test_features_and_observer(void **state)
{
    (void)state;
    struct fx *f = fx_start();
    assert_non_null(f);
    int port;
    char u[256];
    struct config *cfg = inproc_config(
        fx_port(f), "\"limits\":{\"max_body_bytes\":300000,\"max_header_bytes\":8192},", &port);
    assert_non_null(cfg);
    cut_err err = CUT_ERR_INIT;
    proxy *px = proxy_new(cfg, &err);
    assert_non_null(px);
    static char name_a[] = "A-hash", name_b[] = "B-count";
    struct proxy_handler ha = {.arg = name_a,
                               .on_start = f_start,
                               .on_request_body = f_body,
                               .on_response = f_response,
                               .on_done = f_done};
    struct proxy_handler hb = ha;
    hb.arg = name_b;
    struct proxy_observer o = {.on_exchange = obs};
    assert_true(proxy_add_handler(px, ROUTE_UPLOAD, &ha, &err));
    assert_true(proxy_add_handler(px, ROUTE_UPLOAD, &hb, &err));
    assert_true(proxy_add_observer(px, &o, &err));
    /* the registration's ceilings are errors, not crashes */
    assert_true(proxy_add_handler(px, ROUTE_UPLOAD, &hb, &err));
    assert_true(proxy_add_handler(px, ROUTE_UPLOAD, &hb, &err));
    assert_false(proxy_add_handler(px, ROUTE_UPLOAD, &hb, &err));
    assert_int_equal(err.code, CUT_ELIMIT);
    err_clear(&err);
    assert_false(proxy_add_handler(px, (enum route_kind)9, &hb, &err));
    err_clear(&err);
    assert_true(proxy_start(px, &err));

    /* one upload, two features: each sees the whole body with its own state */
    static unsigned char body[150000];
    fx_gen(3, body, sizeof(body));
    struct test_http r;
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/documents", port);
    assert_int_equal(test_http("POST", u, NULL, body, sizeof(body), &r), 0);
    assert_int_equal(r.status, 200);
    char *a = test_http_header(&r, "X-Feature-A"), *b = test_http_header(&r, "X-Feature-B");
    assert_non_null(a);
    assert_non_null(b);
    assert_string_equal(a, "A-hash");
    assert_string_equal(b, "B-count");
    free(a);
    free(b);
    size_t resp_len = r.body_len;
    test_http_free(&r);
    struct rec rc = last_rec(1);
    pthread_mutex_lock(&mu);
    /* four handlers registered on upload (A, B, B, B): A once, B three times */
    assert_int_equal(FA.done, 1);
    assert_int_equal(FB.done, 3);
    assert_int_equal(FA.last.bytes, sizeof(body));
    assert_true(FA.last.hash == fx_hash(FX_HASH_INIT, body, sizeof(body)));
    assert_int_equal(FB.last.bytes, sizeof(body));
    assert_true(FB.last.hash == FX_HASH_INIT); /* B does not hash: its own state */
    assert_true(FB.last.calls >= 1);
    assert_int_equal(FA.last.status_seen, 200);
    assert_int_equal(state_mixups, 0);
    pthread_mutex_unlock(&mu);
    assert_string_equal(rc.route, "upload");
    assert_string_equal(rc.method, "POST");
    assert_int_equal(rc.status, 200);
    assert_int_equal(rc.req_bytes, sizeof(body));
    assert_int_equal(rc.resp_bytes, resp_len);
    assert_true(rc.dur_us > 0);
    assert_true(rc.up_us > 0);
    assert_true(rc.dur_us >= rc.up_us);
    assert_false(rc.refused || rc.upstream_failed || rc.client_gone);

    /* unmatched: seen, with no route */
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/other", port);
    assert_int_equal(test_http("GET", u, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    test_http_free(&r);
    rc = last_rec(2);
    assert_string_equal(rc.route, "");
    assert_int_equal(rc.status, 200);

    /* matched by a route kind nobody handles: seen with its route */
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/json/k", port);
    assert_int_equal(test_http("GET", u, NULL, NULL, 0, &r), 0);
    test_http_free(&r);
    rc = last_rec(3);
    assert_string_equal(rc.route, "signed-url");

    /* refused 400: Content-Length with Transfer-Encoding */
    static const char smuggle[] = "POST /documents HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_int_equal(raw_status(port, smuggle, sizeof(smuggle) - 1), 400);
    rc = last_rec(4);
    assert_int_equal(rc.status, 400);
    assert_true(rc.refused);
    assert_true(rc.why[0] != 0);

    /* refused 431: a header over the limit */
    static char big[12000];
    int n = snprintf(big, sizeof(big), "GET /other HTTP/1.1\r\nHost: a\r\nX-Big: ");
    memset(big + n, 'b', 9000);
    memcpy(big + n + 9000, "\r\n\r\n", 4);
    assert_int_equal(raw_status(port, big, (size_t)n + 9004), 431);
    rc = last_rec(5);
    assert_int_equal(rc.status, 431);
    assert_true(rc.refused);

    /* 413: a body over max_body_bytes, on the upload route */
    static unsigned char huge[400000];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/documents", port);
    assert_int_equal(test_http("POST", u, NULL, huge, sizeof(huge), &r), 0);
    assert_int_equal(r.status, 413);
    test_http_free(&r);
    rc = last_rec(6);
    assert_int_equal(rc.status, 413);
    assert_true(rc.refused);
    assert_string_equal(rc.route, "upload");

    proxy_shutdown(px, 5);
    proxy_free(px);
    config_free(cfg);

    /* 502: no connection to the app can even be started (the kernel refuses a TCP connect
     * to a broadcast address at once), so px_upstream_start() itself fails and says why */
    cfg = inproc_config_url("http://255.255.255.255:9", "", &port);
    assert_non_null(cfg);
    px = proxy_new(cfg, &err);
    assert_non_null(px);
    assert_true(proxy_add_observer(px, &o, &err));
    assert_true(proxy_start(px, &err));
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/documents", port);
    assert_int_equal(test_http("POST", u, NULL, "abc", 3, &r), 0);
    assert_int_equal(r.status, 502);
    test_http_free(&r);
    rc = last_rec(7);
    assert_int_equal(rc.status, 502);
    assert_true(rc.upstream_failed);
    assert_false(rc.refused);
    assert_string_equal(rc.route, "upload");
    assert_non_null(strstr(rc.why, "cannot connect to the app"));
    proxy_shutdown(px, 5);
    proxy_free(px);
    config_free(cfg);

    /* 502 again, the app refusing the connection (found out later, on the loop) */
    cfg = inproc_config(test_free_port(), "", &port);
    assert_non_null(cfg);
    px = proxy_new(cfg, &err);
    assert_non_null(px);
    assert_true(proxy_add_observer(px, &o, &err));
    assert_true(proxy_start(px, &err));
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/other", port);
    assert_int_equal(test_http("GET", u, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 502);
    test_http_free(&r);
    rc = last_rec(8);
    assert_int_equal(rc.status, 502);
    assert_true(rc.upstream_failed);
    assert_string_equal(rc.route, "");
    proxy_shutdown(px, 5);
    proxy_free(px);
    config_free(cfg);
    fx_stop(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_hooks),
                                       cmocka_unit_test(test_features_and_observer)};
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
