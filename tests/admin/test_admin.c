/*
 * test_admin: the admin port run in-process (the proxy with a configuration from
 * config_parse()) with handlers registered as the admin API will register them. It shows:
 * the bearer token on every /admin path (none, another scheme, wrong, a prefix of the right
 * one, the right one plus a byte, the right one; a percent-encoded /admin path too), each
 * refusal logged without the token; repeated wrong tokens from one address answered 429 with
 * Retry-After, even with the right token, while other addresses go on, and the lockout
 * ending; the no-token rule both ways (403 naming admin.token; open with
 * admin.allow_unauthenticated on loopback; a token still required when one is set; the field
 * refused with a public admin.listen); query strings and the raw path reaching the handler
 * and the query helper's decoding; a handler that blocks while /healthz, /readyz, /metrics
 * and other handlers answer, and the ceiling of handlers running at once; bodies over 1 MiB
 * answered 413 (by Content-Length before the body, or chunked after it), and the token
 * checked before any body.
 */
#include "proxy/proxy.h"
#include "tests/proxy/fixture.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define TOKEN "adm-7f3c9e2a41b85d60c1e4"
#define BEARER "Authorization: Bearer " TOKEN

static struct fx *upstream;
static char *log_path;

/* ---- one request, with the knobs these tests need --------------------------------------- */

struct opts {
    const char *auth; /* a whole "Authorization: ..." line, or NULL */
    const char *from; /* source address (127.0.0.x), or NULL */
    const void *body;
    size_t len;
    bool chunked; /* send the body chunked, without Content-Length */
    bool expect;  /* send Expect: 100-continue and wait for it */
    long timeout_s;
};

struct sink {
    char *p;
    size_t len;
};

static size_t sink_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct sink *g = ud;
    size_t n = size * nmemb;
    g->p = realloc(g->p, g->len + n + 1);
    memcpy(g->p + g->len, ptr, n);
    g->len += n;
    g->p[g->len] = '\0';
    return n;
}

struct src {
    const char *p;
    size_t left;
};

static size_t src_cb(char *buf, size_t size, size_t nitems, void *ud)
{
    struct src *s = ud;
    size_t n = size * nitems;
    if (n > s->left)
        n = s->left;
    if (n > 65536)
        n = 65536;
    memcpy(buf, s->p, n);
    s->p += n;
    s->left -= n;
    return n;
}

static long req(const char *method, int port, const char *path, const struct opts *o,
                struct test_http *out)
{
    static const struct opts none = {0};
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    struct sink b = {0}, hd = {0};
    struct src s = {0};
    char url[2048], iface[64];

    if (!o)
        o = &none;
    memset(out, 0, sizeof(*out));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, o->timeout_s ? o->timeout_s : 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FORBID_REUSE, 1L);
    if (o->from) {
        snprintf(iface, sizeof(iface), "host!%s", o->from);
        curl_easy_setopt(c, CURLOPT_INTERFACE, iface);
    }
    if (o->auth)
        h = curl_slist_append(h, o->auth);
    if (o->body) {
        s.p = o->body;
        s.left = o->len;
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, src_cb);
        curl_easy_setopt(c, CURLOPT_READDATA, &s);
        if (o->chunked)
            h = curl_slist_append(h, "Transfer-Encoding: chunked");
        else
            curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)o->len);
        h = curl_slist_append(h, o->expect ? "Expect: 100-continue" : "Expect:");
        curl_easy_setopt(c, CURLOPT_EXPECT_100_TIMEOUT_MS, 30000L);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, sink_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &hd);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, out->errbuf);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    else
        fprintf(stderr, "%s %s: %s\n", method, path, out->errbuf);
    out->body = b.p ? b.p : strdup("");
    out->body_len = b.len;
    out->headers = hd.p ? hd.p : strdup("");
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return out->status;
}

/* The status of a request whose answer is not looked at further. */
static long status_of(const char *method, int port, const char *path, const struct opts *o)
{
    struct test_http r;
    long st = req(method, port, path, o, &r);
    test_http_free(&r);
    return st;
}

/* ---- handlers --------------------------------------------------------------------------- */

/* Echoes what the handler saw as JSON, with the query helper's answer for q, empty, bad and
 * missing ("<absent>" / "<malformed>"). */
static void h_echo(void *arg, const struct proxy_admin_req *rq, struct proxy_admin_reply *rep)
{
    static const char *const names[] = {"q", "empty", "bad", "missing"};
    (void)arg;
    json_t *o =
        json_pack("{s:s,s:s,s:s,s:s?,s:I}", "method", rq->method, "path", rq->path, "raw_path",
                  rq->raw_path, "query", rq->query, "body_len", (json_int_t)rq->body_len);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char *v = NULL;
        int r = proxy_admin_query_get(rq, names[i], &v);
        char key[32];
        snprintf(key, sizeof(key), "param_%s", names[i]);
        json_object_set_new(o, key, json_string(r == 1 ? v : r == 0 ? "<absent>" : "<malformed>"));
        free(v);
    }
    char *s = json_dumps(o, JSON_COMPACT);
    rep->status = 200;
    if (!buf_puts(&rep->body, s))
        rep->status = 500;
    free(s);
    json_decref(o);
}

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, left;
    bool release;
} slow = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, false};

/* Blocks, as a handler waiting on a database would, until the test releases it. */
static void h_slow(void *arg, const struct proxy_admin_req *rq, struct proxy_admin_reply *rep)
{
    (void)arg;
    (void)rq;
    pthread_mutex_lock(&slow.mu);
    slow.entered++;
    while (!slow.release)
        pthread_cond_wait(&slow.cv, &slow.mu);
    slow.left++;
    pthread_mutex_unlock(&slow.mu);
    rep->status = 200;
    if (!buf_puts(&rep->body, "{\"slow\":true}"))
        rep->status = 500;
}

static void h_metrics(void *arg, const struct proxy_admin_req *rq, struct proxy_admin_reply *rep)
{
    (void)arg;
    (void)rq;
    rep->status = 200;
    rep->content_type = "text/plain; version=0.0.4";
    if (!buf_puts(&rep->body, "cutover_up 1\n"))
        rep->status = 500;
}

/* ---- a proxy with an admin port --------------------------------------------------------- */

struct run {
    struct config *cfg;
    proxy *px;
    int admin;
};

/* Parses a configuration whose "admin" object holds admin_members, starts the proxy with the
 * handlers above. */
static void run_start(struct run *r, const char *admin_members)
{
    char text[2048];
    struct cfg_problems probs = {0};
    cut_err err = CUT_ERR_INIT;

    snprintf(text, sizeof(text),
             "{\"listen\":\"127.0.0.1:0\",\"upstream\":\"http://127.0.0.1:%d\","
             "\"admin\":{\"listen\":\"127.0.0.1:0\"%s%s},\"log\":{\"access\":false}}",
             fx_port(upstream), *admin_members ? "," : "", admin_members);
    r->cfg = config_parse(text, "test", &probs);
    for (size_t i = 0; i < probs.n; i++)
        fprintf(stderr, "config: %s\n", probs.lines[i]);
    cfg_problems_free(&probs);
    assert_non_null(r->cfg);
    r->px = proxy_new(r->cfg, &err);
    assert_non_null(r->px);
    assert_true(proxy_admin_add(r->px, NULL, "/admin/echo", h_echo, NULL));
    assert_true(proxy_admin_add(r->px, NULL, "/admin/docs/*", h_echo, NULL));
    assert_true(proxy_admin_add(r->px, "GET", "/admin/slow", h_slow, NULL));
    assert_true(proxy_admin_add(r->px, "GET", "/metrics", h_metrics, NULL));
    if (!proxy_start(r->px, &err))
        fail_msg("proxy_start: %s", err.msg);
    r->admin = proxy_admin_port(r->px);
}

static void run_stop(struct run *r)
{
    proxy_shutdown(r->px, 1);
    proxy_free(r->px);
    config_free(r->cfg);
}

static void assert_header_starts(const struct test_http *r, const char *name, const char *prefix)
{
    char *v = test_http_header(r, name);
    if (!v || strncmp(v, prefix, strlen(prefix)) != 0)
        fail_msg("header %s: expected \"%s...\", got \"%s\"", name, prefix, v ? v : "(none)");
    free(v);
}

/* The "reason" of a JSON error body; a new string, or fails the test. */
static char *reason_of(const struct test_http *r)
{
    json_error_t e;
    json_t *o = json_loads(r->body, 0, &e);
    const char *s = json_string_value(json_object_get(o, "reason"));
    if (!s)
        fail_msg("no reason in the body: %s", r->body);
    char *out = strdup(s);
    json_decref(o);
    return out;
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_token(void **state)
{
    struct run r;
    struct test_http a;
    (void)state;
    run_start(&r, "\"token\":\"" TOKEN "\",\"max_auth_failures\":4,\"auth_lockout_s\":600");

    /* no token: 401 with a challenge and a reason */
    assert_int_equal(req("GET", r.admin, "/admin/echo", NULL, &a), 401);
    assert_header_starts(&a, "WWW-Authenticate", "Bearer");
    char *why = reason_of(&a);
    assert_non_null(strstr(why, "Bearer"));
    free(why);
    test_http_free(&a);
    /* another scheme, an empty bearer */
    struct opts basic = {.auth = "Authorization: Basic YWRtaW46YWRtaW4="};
    assert_int_equal(status_of("GET", r.admin, "/admin/echo", &basic), 401);
    struct opts empty = {.auth = "Authorization: Bearer "};
    assert_int_equal(status_of("GET", r.admin, "/admin/echo", &empty), 401);

    /* wrong, a prefix of the right one, the right one plus a byte: 401 invalid_token */
    static const char *const wrong[] = {"Authorization: Bearer nope",
                                        "Authorization: Bearer adm-7f3c9e2a41b85d60c1e",
                                        "Authorization: Bearer " TOKEN "x"};
    for (size_t i = 0; i < 3; i++) {
        struct opts o = {.auth = wrong[i]};
        assert_int_equal(req("GET", r.admin, "/admin/echo", &o, &a), 401);
        assert_header_starts(&a, "WWW-Authenticate", "Bearer");
        char *v = test_http_header(&a, "WWW-Authenticate");
        assert_non_null(strstr(v, "invalid_token"));
        free(v);
        test_http_free(&a);
    }

    /* the right one, in any case of the scheme; a prefix route; the decoded path is guarded */
    struct opts ok = {.auth = BEARER};
    assert_int_equal(status_of("GET", r.admin, "/admin/echo", &ok), 200);
    struct opts lower = {.auth = "authorization: bearer   " TOKEN "  "};
    assert_int_equal(status_of("POST", r.admin, "/admin/echo", &lower), 200);
    assert_int_equal(status_of("GET", r.admin, "/admin/docs/x", NULL), 401);
    assert_int_equal(status_of("GET", r.admin, "/admin/docs/x", &ok), 200);
    assert_int_equal(status_of("GET", r.admin, "/%61dmin/echo", NULL), 401);
    assert_int_equal(status_of("GET", r.admin, "/admin/unknown", NULL), 401);
    assert_int_equal(status_of("GET", r.admin, "/admin/unknown", &ok), 404);
    assert_int_equal(status_of("DELETE", r.admin, "/admin/slow", &ok), 405);

    /* open paths: no token asked */
    assert_int_equal(status_of("GET", r.admin, "/healthz", NULL), 200);
    assert_int_equal(status_of("GET", r.admin, "/readyz", NULL), 200);
    assert_int_equal(status_of("GET", r.admin, "/metrics", NULL), 200);

    /* every refusal is logged, and no token ever is */
    char *log = test_read_file(log_path, NULL);
    assert_non_null(log);
    assert_non_null(strstr(log, "\"event\":\"admin_refused\""));
    assert_non_null(strstr(log, "\"reason\":\"wrong token\""));
    assert_non_null(strstr(log, "\"reason\":\"no bearer token\""));
    assert_null(strstr(log, "adm-7f3c9e2a41b85d60c1e"));
    assert_null(strstr(log, "nope"));
    assert_null(strstr(log, "YWRtaW46YWRtaW4="));
    free(log);
    run_stop(&r);
}

/* Wrong tokens from one address: after max_auth_failures, 429 with Retry-After even with the
 * right token, for that address only; then the lockout ends. */
static void test_lockout(void **state)
{
    struct run r;
    struct test_http a;
    struct opts bad2 = {.auth = "Authorization: Bearer guess", .from = "127.0.0.2"};
    struct opts ok2 = {.auth = BEARER, .from = "127.0.0.2"};
    struct opts ok3 = {.auth = BEARER, .from = "127.0.0.3"};
    struct opts none2 = {.from = "127.0.0.2"};
    (void)state;
    run_start(&r, "\"token\":\"" TOKEN "\",\"max_auth_failures\":3,\"auth_lockout_s\":600");

    /* a missing token is not a guess: it does not count */
    for (int i = 0; i < 5; i++)
        assert_int_equal(status_of("GET", r.admin, "/admin/echo", &none2), 401);
    assert_int_equal(status_of("GET", r.admin, "/admin/echo", &ok2), 200);
    /* a right token clears the count: 2 wrong, right, 2 wrong is not a lockout */
    for (int i = 0; i < 2; i++)
        assert_int_equal(status_of("GET", r.admin, "/admin/echo", &bad2), 401);
    assert_int_equal(status_of("GET", r.admin, "/admin/echo", &ok2), 200);
    for (int i = 0; i < 2; i++)
        assert_int_equal(status_of("GET", r.admin, "/admin/echo", &bad2), 401);
    assert_int_equal(status_of("GET", r.admin, "/admin/echo", &ok2), 200);
    /* three in a row: locked */
    for (int i = 0; i < 3; i++)
        assert_int_equal(status_of("GET", r.admin, "/admin/echo", &bad2), 401);
    assert_int_equal(req("GET", r.admin, "/admin/echo", &ok2, &a), 429);
    char *ra = test_http_header(&a, "Retry-After");
    assert_non_null(ra);
    long secs = strtol(ra, NULL, 10);
    assert_true(secs > 500 && secs <= 600);
    free(ra);
    test_http_free(&a);
    assert_int_equal(status_of("GET", r.admin, "/admin/echo", &bad2), 429);
    /* nobody else is slowed: another address, the open paths from the locked one */
    assert_int_equal(status_of("GET", r.admin, "/admin/echo", &ok3), 200);
    assert_int_equal(status_of("GET", r.admin, "/healthz", &none2), 200);
    assert_int_equal(status_of("GET", r.admin, "/metrics", &none2), 200);
    char *log = test_read_file(log_path, NULL);
    assert_non_null(strstr(log, "\"status\":429,\"client\":\"127.0.0.2\""));
    free(log);
    run_stop(&r);

    /* a short lockout ends: the right token from the address works again */
    run_start(&r, "\"token\":\"" TOKEN "\",\"max_auth_failures\":1,\"auth_lockout_s\":1");
    struct opts bad4 = {.auth = "Authorization: Bearer guess", .from = "127.0.0.4"};
    struct opts ok4 = {.auth = BEARER, .from = "127.0.0.4"};
    assert_int_equal(status_of("GET", r.admin, "/admin/echo", &bad4), 401);
    long st = 0;
    for (int i = 0; i < 300 && st != 200; i++) {
        st = status_of("GET", r.admin, "/admin/echo", &ok4);
        if (st != 200) {
            assert_int_equal(st, 429);
            usleep(20000);
        }
    }
    assert_int_equal(st, 200);
    run_stop(&r);
}

static void test_no_token(void **state)
{
    struct run r;
    struct test_http a;
    (void)state;

    /* no token and nothing else: every /admin path refused, naming the field */
    run_start(&r, "");
    assert_int_equal(req("GET", r.admin, "/admin/echo", NULL, &a), 403);
    char *why = reason_of(&a);
    assert_non_null(strstr(why, "admin.token"));
    free(why);
    test_http_free(&a);
    struct opts some = {.auth = "Authorization: Bearer anything"};
    assert_int_equal(status_of("GET", r.admin, "/admin/echo", &some), 403);
    assert_int_equal(status_of("GET", r.admin, "/healthz", NULL), 200);
    assert_int_equal(status_of("GET", r.admin, "/metrics", NULL), 200);
    run_stop(&r);

    /* explicitly open on loopback */
    run_start(&r, "\"allow_unauthenticated\":true");
    assert_int_equal(status_of("GET", r.admin, "/admin/echo", NULL), 200);
    run_stop(&r);

    /* a token set wins over allow_unauthenticated */
    run_start(&r, "\"allow_unauthenticated\":true,\"token\":\"" TOKEN "\"");
    assert_int_equal(status_of("GET", r.admin, "/admin/echo", NULL), 401);
    struct opts ok = {.auth = BEARER};
    assert_int_equal(status_of("GET", r.admin, "/admin/echo", &ok), 200);
    run_stop(&r);

    /* open on every interface is a configuration error naming the field */
    struct cfg_problems probs = {0};
    struct config *cfg = config_parse(
        "{\"admin\":{\"listen\":\"0.0.0.0:9090\",\"allow_unauthenticated\":true}}", "t", &probs);
    assert_null(cfg);
    assert_true(probs.n >= 1);
    assert_non_null(strstr(probs.lines[0], "admin.allow_unauthenticated: "));
    cfg_problems_free(&probs);
}

static void test_query(void **state)
{
    struct run r;
    struct test_http a;
    json_error_t e;
    struct opts ok = {.auth = BEARER};
    (void)state;
    run_start(&r, "\"token\":\"" TOKEN "\"");

    assert_int_equal(req("GET", r.admin, "/admin/echo?q=a%20b%2Bc+d&empty&bad=%zz&x=1", &ok, &a),
                     200);
    json_t *o = json_loads(a.body, 0, &e);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "query")),
                        "q=a%20b%2Bc+d&empty&bad=%zz&x=1");
    assert_string_equal(json_string_value(json_object_get(o, "path")), "/admin/echo");
    assert_string_equal(json_string_value(json_object_get(o, "param_q")), "a b+c d");
    assert_string_equal(json_string_value(json_object_get(o, "param_empty")), "");
    assert_string_equal(json_string_value(json_object_get(o, "param_bad")), "<malformed>");
    assert_string_equal(json_string_value(json_object_get(o, "param_missing")), "<absent>");
    json_decref(o);
    test_http_free(&a);

    /* no query: NULL; the path decoded, the raw path as sent */
    assert_int_equal(req("GET", r.admin, "/admin/docs/a%2Fb%20c", &ok, &a), 200);
    o = json_loads(a.body, 0, &e);
    assert_non_null(o);
    assert_true(json_is_null(json_object_get(o, "query")));
    assert_string_equal(json_string_value(json_object_get(o, "path")), "/admin/docs/a/b c");
    assert_string_equal(json_string_value(json_object_get(o, "raw_path")), "/admin/docs/a%2Fb%20c");
    json_decref(o);
    test_http_free(&a);
    run_stop(&r);
}

/* The query helper alone. */
static void test_query_helper(void **state)
{
    struct proxy_admin_req rq = {.query = "a=1&b=x%3Dy&a=2&c&d=&e=%00&f=%4&g+h=i+j&=k"};
    char *v = NULL;
    (void)state;
    assert_int_equal(proxy_admin_query_get(&rq, "a", &v), 1);
    assert_string_equal(v, "1"); /* the first one */
    free(v);
    assert_int_equal(proxy_admin_query_get(&rq, "b", &v), 1);
    assert_string_equal(v, "x=y");
    free(v);
    assert_int_equal(proxy_admin_query_get(&rq, "c", &v), 1);
    assert_string_equal(v, "");
    free(v);
    assert_int_equal(proxy_admin_query_get(&rq, "d", &v), 1);
    assert_string_equal(v, "");
    free(v);
    assert_int_equal(proxy_admin_query_get(&rq, "e", &v), -1);
    assert_null(v);
    assert_int_equal(proxy_admin_query_get(&rq, "f", &v), -1);
    assert_int_equal(proxy_admin_query_get(&rq, "g h", &v), 1);
    assert_string_equal(v, "i j");
    free(v);
    assert_int_equal(proxy_admin_query_get(&rq, "", &v), 1);
    assert_string_equal(v, "k");
    free(v);
    assert_int_equal(proxy_admin_query_get(&rq, "z", &v), 0);
    assert_null(v);
    rq.query = NULL;
    assert_int_equal(proxy_admin_query_get(&rq, "a", &v), 0);
}

struct slow_call {
    pthread_t t;
    int port;
    long status;
};

static void *slow_thread(void *arg)
{
    struct slow_call *s = arg;
    struct opts ok = {.auth = BEARER, .timeout_s = 120};
    s->status = status_of("GET", s->port, "/admin/slow", &ok);
    return NULL;
}

static int target_entered;
static bool slow_entered(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&slow.mu);
    bool ok = slow.entered >= target_entered;
    pthread_mutex_unlock(&slow.mu);
    return ok;
}

/* A handler that blocks (until this test releases it) stalls neither the probes, nor
 * /metrics, nor other handlers; the 17th /admin handler at once is refused 503, and the
 * probes still answer. */
static void test_slow_handler(void **state)
{
    enum { N = 16 };
    struct run r;
    struct slow_call calls[N + 1];
    struct opts quick = {.timeout_s = 10};
    struct opts ok = {.auth = BEARER, .timeout_s = 10};
    (void)state;
    run_start(&r, "\"token\":\"" TOKEN "\"");

    memset(calls, 0, sizeof(calls));
    calls[0].port = r.admin;
    assert_int_equal(pthread_create(&calls[0].t, NULL, slow_thread, &calls[0]), 0);
    target_entered = 1;
    assert_true(test_wait_until(slow_entered, NULL, 10000));
    assert_int_equal(status_of("GET", r.admin, "/healthz", &quick), 200);
    assert_int_equal(status_of("GET", r.admin, "/readyz", &quick), 200);
    assert_int_equal(status_of("GET", r.admin, "/metrics", &quick), 200);
    assert_int_equal(status_of("GET", r.admin, "/admin/echo", &ok), 200);
    pthread_mutex_lock(&slow.mu);
    assert_int_equal(slow.left, 0); /* all of that while the slow one was still blocked */
    pthread_mutex_unlock(&slow.mu);

    /* fill the ceiling of /admin handlers running at once */
    for (int i = 1; i < N; i++) {
        calls[i].port = r.admin;
        assert_int_equal(pthread_create(&calls[i].t, NULL, slow_thread, &calls[i]), 0);
    }
    target_entered = N;
    assert_true(test_wait_until(slow_entered, NULL, 20000));
    struct test_http a;
    assert_int_equal(req("GET", r.admin, "/admin/echo", &ok, &a), 503);
    assert_header_starts(&a, "Retry-After", "1");
    test_http_free(&a);
    assert_int_equal(status_of("GET", r.admin, "/healthz", &quick), 200);
    assert_int_equal(status_of("GET", r.admin, "/readyz", &quick), 200);
    assert_int_equal(status_of("GET", r.admin, "/metrics", &quick), 200);

    pthread_mutex_lock(&slow.mu);
    assert_int_equal(slow.left, 0);
    slow.release = true;
    pthread_cond_broadcast(&slow.cv);
    pthread_mutex_unlock(&slow.mu);
    for (int i = 0; i < N; i++) {
        pthread_join(calls[i].t, NULL);
        assert_int_equal(calls[i].status, 200);
    }
    /* and once they are done, handlers run again */
    assert_int_equal(status_of("GET", r.admin, "/admin/echo", &ok), 200);
    run_stop(&r);
}

static void test_body_limit(void **state)
{
    struct run r;
    struct test_http a;
    json_error_t e;
    size_t big = (1u << 20) + 1, max = 1u << 20, chunked = (3u << 20) / 2;
    char *body = malloc(chunked);
    (void)state;
    memset(body, 'x', chunked);
    run_start(&r, "\"token\":\"" TOKEN "\"");

    /* exactly 1 MiB reaches the handler */
    struct opts at_max = {.auth = BEARER, .body = body, .len = max};
    assert_int_equal(req("POST", r.admin, "/admin/echo", &at_max, &a), 200);
    json_t *o = json_loads(a.body, 0, &e);
    assert_int_equal(json_integer_value(json_object_get(o, "body_len")), max);
    json_decref(o);
    test_http_free(&a);
    /* one byte more, announced: 413 before the body is sent */
    struct opts over = {.auth = BEARER, .body = body, .len = big, .expect = true};
    assert_int_equal(req("POST", r.admin, "/admin/echo", &over, &a), 413);
    char *why = reason_of(&a);
    assert_non_null(strstr(why, "1 MiB"));
    free(why);
    test_http_free(&a);
    /* chunked past the ceiling: read, dropped, 413 */
    struct opts ch = {.auth = BEARER, .body = body, .len = chunked, .chunked = true};
    assert_int_equal(status_of("POST", r.admin, "/admin/echo", &ch), 413);
    /* without the token the body is never read: 401 first */
    struct opts anon = {.body = body, .len = big, .expect = true};
    assert_int_equal(status_of("POST", r.admin, "/admin/echo", &anon), 401);
    /* the port still serves */
    assert_int_equal(status_of("GET", r.admin, "/healthz", NULL), 200);
    free(body);
    run_stop(&r);
}

/* Sends raw bytes on a new connection, reads until the server closes it (or 10 s pass);
 * returns what was read (new string). */
static char *raw_exchange(int port, const char *bytes, bool half_close)
{
    int fd = test_connect(port);
    struct sink got = {0};
    char chunk[4096];
    struct timeval tv = {10, 0};
    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(write(fd, bytes, strlen(bytes)), (ssize_t)strlen(bytes));
    if (half_close)
        shutdown(fd, SHUT_WR);
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n <= 0)
            break;
        sink_cb(chunk, 1, (size_t)n, &got);
    }
    close(fd);
    return got.p ? got.p : strdup("");
}

/* Requests libmicrohttpd refuses itself, or that end before their headers do: the port keeps
 * serving, and the sanitizer build shows that no request state leaks. */
static void test_malformed(void **state)
{
    struct run r;
    (void)state;
    run_start(&r, "\"token\":\"" TOKEN "\"");
    char *got =
        raw_exchange(r.admin, "GET /admin/echo?x=1 HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n", false);
    assert_non_null(strstr(got, "HTTP/1.1 400"));
    free(got);
    got = raw_exchange(r.admin, "GET /admin/echo?x=1 HTTP/1.1\r\nHost: a\r\n", true);
    free(got);
    static char huge[70000];
    memset(huge, 0, sizeof(huge));
    strcpy(huge, "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: ");
    memset(huge + strlen(huge), 'a', 66000);
    strcat(huge, "\r\n\r\n");
    got = raw_exchange(r.admin, huge, false);
    assert_non_null(strstr(got, "HTTP/1.1 431"));
    free(got);
    assert_int_equal(status_of("GET", r.admin, "/healthz", NULL), 200);
    run_stop(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_helper), cmocka_unit_test(test_token),
        cmocka_unit_test(test_lockout),      cmocka_unit_test(test_no_token),
        cmocka_unit_test(test_query),        cmocka_unit_test(test_slow_handler),
        cmocka_unit_test(test_body_limit),   cmocka_unit_test(test_malformed),
    };
    char *dir = test_tmpdir("admin");
    log_path = xasprintf("%s/log", dir);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return 1;
    log_set_fd(fd);
    log_set_level(LOG_INFO);
    unsetenv("CUTOVER_ADMIN_TOKEN");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    upstream = fx_start();
    if (!upstream)
        return 1;
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fx_stop(upstream);
    curl_global_cleanup();
    close(fd);
    test_rmtree(dir);
    free(dir);
    free(log_path);
    return rc;
}
