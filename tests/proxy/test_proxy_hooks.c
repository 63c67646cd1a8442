/*
 * test_proxy_hooks: the proxy run in-process with hooks installed, as the migration
 * features will use it: a route match with its path variable percent-decoded per segment,
 * the request-body hook seeing every byte in order, the response hook holding a JSON
 * answer and rewriting it and a header, on_done once per exchange, work handed to
 * proxy_defer(), and no hook at all for a request that matches no route.
 */
#include "fixture.h"

#include "proxy/http_check.h"
#include "proxy/proxy.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct seen {
    pthread_mutex_t mu;
    int requests, done, deferred;
    char route[32], key[128];
    uint64_t body_len, body_hash;
    int done_status;
};

static struct seen S = {.mu = PTHREAD_MUTEX_INITIALIZER};
static proxy *px;

struct rstate {
    const struct cfg_route *route;
    uint64_t len, hash;
};

static void *h_request(void *arg, proxy_exchange *x, const struct proxy_match *m)
{
    (void)arg;
    (void)x;
    struct rstate *st = calloc(1, sizeof(*st));
    st->route = m->route;
    st->hash = FX_HASH_INIT;
    pthread_mutex_lock(&S.mu);
    S.requests++;
    snprintf(S.route, sizeof(S.route), "%s", m->route->name);
    S.key[0] = 0;
    for (size_t i = 0; i < m->nvars; i++)
        if (strcmp(m->var_names[i], "key") == 0)
            snprintf(S.key, sizeof(S.key), "%s", m->var_values[i]);
    pthread_mutex_unlock(&S.mu);
    return st;
}

static void h_body(void *arg, void *state, const void *data, size_t n)
{
    struct rstate *st = state;
    (void)arg;
    st->len += n;
    st->hash = fx_hash(st->hash, data, n);
}

static enum proxy_answer_mode h_response(void *arg, void *state, proxy_exchange *x, int status)
{
    struct rstate *st = state;
    (void)arg;
    if (!proxy_exchange_set_response_header(x, "X-Hooked", "yes"))
        return PROXY_PASS;
    return st->route->kind == ROUTE_SIGNED_URL && status == 200 ? PROXY_HOLD : PROXY_PASS;
}

static void h_response_body(void *arg, void *state, proxy_exchange *x, struct buf *body)
{
    (void)arg;
    (void)state;
    const char *old = strstr(body->data ? body->data : "", "http://legacy.example/doc/1");
    if (!old)
        return;
    buf_reset(body);
    if (buf_puts(body, "{\"url\":\"https://bucket.s3.example/doc/1\",\"id\":7}"))
        (void)proxy_exchange_set_response_header(x, "Location", "https://bucket.s3.example/doc/1");
}

static void bump(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&S.mu);
    S.deferred++;
    pthread_mutex_unlock(&S.mu);
}

static void h_done(void *arg, void *state, const struct proxy_outcome *o)
{
    struct rstate *st = state;
    (void)arg;
    pthread_mutex_lock(&S.mu);
    S.done++;
    S.done_status = o->status;
    S.body_len = st->len;
    S.body_hash = st->hash;
    pthread_mutex_unlock(&S.mu);
    free(st);
    if (!proxy_defer(px, bump, NULL))
        abort();
}

static bool done_is(void *arg)
{
    pthread_mutex_lock(&S.mu);
    bool ok = S.done >= *(int *)arg && S.deferred >= *(int *)arg;
    pthread_mutex_unlock(&S.mu);
    return ok;
}

static void test_hooks(void **state)
{
    (void)state;
    struct fx *f = fx_start();
    assert_non_null(f);
    int port = test_free_port(), admin = test_free_port();
    char cfgtext[2048], u[256];
    snprintf(cfgtext, sizeof(cfgtext),
             "{\"listen\":\"127.0.0.1:%d\",\"upstream\":\"http://127.0.0.1:%d\","
             "\"admin\":{\"listen\":\"127.0.0.1:%d\"},\"log\":{\"level\":\"warn\"},"
             "\"s3\":{\"region\":\"eu-west-1\",\"bucket\":\"documents\"},"
             "\"routes\":["
             "{\"name\":\"upload\",\"kind\":\"upload\",\"path\":\"/documents\","
             "\"key\":{\"response_json\":\"/id\"}},"
             "{\"name\":\"signed-url\",\"kind\":\"signed_url\",\"path\":\"/json/{key}\","
             "\"url\":{\"response_json\":\"/url\"}}]}",
             port, fx_port(f), admin);
    struct cfg_problems probs = {0};
    struct config *cfg = config_parse(cfgtext, "test", &probs);
    for (size_t i = 0; i < probs.n; i++)
        fprintf(stderr, "config: %s\n", probs.lines[i]);
    cfg_problems_free(&probs);
    assert_non_null(cfg);

    cut_err err = CUT_ERR_INIT;
    px = proxy_new(cfg, &err);
    assert_non_null(px);
    struct proxy_hooks h = {.on_request = h_request,
                            .on_request_body = h_body,
                            .on_response = h_response,
                            .on_response_body = h_response_body,
                            .on_done = h_done};
    proxy_set_hooks(px, &h);
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

    /* no route: no hook runs */
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/other", port);
    assert_int_equal(test_http("GET", u, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    hk = test_http_header(&r, "X-Hooked");
    assert_null(hk);
    test_http_free(&r);
    pthread_mutex_lock(&S.mu);
    assert_int_equal(S.requests, 2);
    pthread_mutex_unlock(&S.mu);

    proxy_shutdown(px, 5);
    proxy_free(px);
    config_free(cfg);
    fx_stop(f);
}

/* The request's length is kept as a signed 64-bit number: a longer one must be refused,
 * not wrap to a negative length (which would forward the body as chunked). */
static void test_length_fits_int64(void **state)
{
    uint64_t v = 0;
    (void)state;
    assert_true(http_parse_length("9223372036854775807", 19, &v));
    assert_true(v == (uint64_t)INT64_MAX);
    assert_false(http_parse_length("9223372036854775808", 19, &v));
    assert_false(http_parse_length("9999999999999999999", 19, &v));
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_length_fits_int64),
                                       cmocka_unit_test(test_hooks)};
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
