/*
 * test_proxy_wait: exchanges that wait for work done on another thread, with the proxy run
 * in-process in front of the fixture app.
 *
 *   - load: thousands of requests parked at once across two loops (at on_request, before
 *     the app), released by a separate thread, then parked again at on_response and
 *     resumed from that thread; every client gets its own answer (the hook, called again
 *     after the resume, tags it with the request's key).
 *   - answers held (PROXY_HOLD) and parked in on_response_body, resumed, then rewritten.
 *   - the client hangs up while its exchange is parked (at on_request, at on_response): the
 *     exchange ends at once, on_done and the observer run once, a late resume does nothing.
 *   - a wait past its deadline: the client gets the app's answer unchanged.
 *   - backpressure: a body hook that queues bytes for a slow writer thread and pauses when
 *     its queue is full; the queue never grows past its mark plus one call's bytes (the
 *     proxy stops reading the client meanwhile), and the app gets the whole body.
 *   - a body pause nobody resumes: past its deadline the handler gets no more bytes and
 *     the app gets the whole body.
 *   - a body hook that gives up (PROXY_BODY_FAIL) is not called again, and the request
 *     reaches the app intact.
 */
#include "fixture.h"

#include "tests/testlib.h"
#include "tests/unit.h"

#include "inproc.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum mode { M_LOAD, M_GONE_REQ, M_GONE_RESP, M_DEADLINE_REQ, M_DEADLINE_RESP, M_BODY, M_HOLD_WAIT };
static _Atomic int mode;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int dones, records, gone_records, reinvoked;
static int per_loop[4];
static proxy_ticket saved; /* the last ticket of the single-request tests */

/* ---- the resumer thread ----------------------------------------------------------------- */

#define QMAX 8192
struct tq {
    proxy_ticket v[QMAX];
    int head, n;
};
static struct tq req_q, ans_q;
static int released, window = 64;
static bool release_requests, stop_resumer;

static void tq_push(struct tq *q, proxy_ticket t)
{
    if (q->n < QMAX) {
        q->v[(q->head + q->n) % QMAX] = t;
        q->n++;
    }
}

static proxy_ticket tq_pop(struct tq *q)
{
    proxy_ticket t = q->v[q->head];
    q->head = (q->head + 1) % QMAX;
    q->n--;
    return t;
}

static void *resumer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (!stop_resumer && !ans_q.n &&
               !(release_requests && req_q.n && released - dones < window)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 10000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&cv, &mu, &ts);
        }
        if (stop_resumer)
            break;
        proxy_ticket t;
        if (ans_q.n) {
            t = tq_pop(&ans_q);
        } else {
            t = tq_pop(&req_q);
            released++;
        }
        pthread_mutex_unlock(&mu);
        proxy_exchange_resume(t); /* never under our lock: the loop may call back into it */
        pthread_mutex_lock(&mu);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

/* ---- the handler -------------------------------------------------------------------------- */

struct wst {
    char key[64];
    bool req_waited, resp_waited, body_waited;
};

static void *w_start(void *arg, proxy_exchange *x, const struct proxy_match *m)
{
    (void)arg;
    (void)x;
    struct wst *st = calloc(1, sizeof(*st));
    snprintf(st->key, sizeof(st->key), "%s", inproc_var(m, "key"));
    return st;
}

static enum proxy_answer_mode w_request(void *arg, void *state, proxy_exchange *x)
{
    struct wst *st = state;
    (void)arg;
    int md = atomic_load(&mode);
    if (md != M_LOAD && md != M_GONE_REQ && md != M_DEADLINE_REQ)
        return PROXY_PASS;
    if (st->req_waited) {
        if (md == M_DEADLINE_REQ) {
            pthread_mutex_lock(&mu);
            reinvoked++;
            pthread_mutex_unlock(&mu);
        }
        return PROXY_PASS;
    }
    st->req_waited = true;
    proxy_ticket t = proxy_exchange_wait(x, md == M_DEADLINE_REQ ? 300 : 60000);
    pthread_mutex_lock(&mu);
    if (md == M_LOAD) {
        tq_push(&req_q, t);
        if (t.loop < 4)
            per_loop[t.loop]++;
        pthread_cond_broadcast(&cv);
    } else {
        saved = t;
    }
    pthread_mutex_unlock(&mu);
    return PROXY_WAIT;
}

static enum proxy_answer_mode w_response(void *arg, void *state, proxy_exchange *x, int status)
{
    struct wst *st = state;
    (void)arg;
    (void)status;
    int md = atomic_load(&mode);
    if (md == M_HOLD_WAIT)
        return PROXY_HOLD;
    if (md != M_LOAD && md != M_GONE_RESP && md != M_DEADLINE_RESP)
        return PROXY_PASS;
    if (st->resp_waited) {
        /* called again after the resume: now the answer may be changed */
        (void)proxy_exchange_set_response_header(x, "X-Key", st->key);
        if (md == M_DEADLINE_RESP) {
            (void)proxy_exchange_set_response_header(x, "X-Changed", "yes");
            pthread_mutex_lock(&mu);
            reinvoked++;
            pthread_mutex_unlock(&mu);
        }
        return PROXY_PASS;
    }
    st->resp_waited = true;
    proxy_ticket t = proxy_exchange_wait(x, md == M_DEADLINE_RESP ? 300 : 60000);
    pthread_mutex_lock(&mu);
    if (md == M_LOAD) {
        tq_push(&ans_q, t);
        pthread_cond_broadcast(&cv);
    } else {
        saved = t;
    }
    pthread_mutex_unlock(&mu);
    return PROXY_WAIT;
}

/* After PROXY_HOLD: waits once, then (called again after the resume) rewrites the body. */
static enum proxy_answer_mode w_response_body(void *arg, void *state, proxy_exchange *x,
                                              struct buf *body)
{
    struct wst *st = state;
    (void)arg;
    if (atomic_load(&mode) != M_HOLD_WAIT)
        return PROXY_PASS;
    if (!st->body_waited) {
        st->body_waited = true;
        proxy_ticket t = proxy_exchange_wait(x, 60000);
        pthread_mutex_lock(&mu);
        tq_push(&ans_q, t);
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        return PROXY_WAIT;
    }
    buf_reset(body);
    if (!buf_puts(body, "{\"key\":\"") || !buf_puts(body, st->key) || !buf_puts(body, "\"}"))
        return PROXY_PASS;
    return PROXY_PASS;
}

static void w_done(void *arg, void *state, const struct proxy_outcome *o)
{
    (void)arg;
    (void)o;
    free(state);
    pthread_mutex_lock(&mu);
    dones++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void w_observe(void *arg, const struct proxy_record *r)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    if (r->route && r->route->kind == ROUTE_SIGNED_URL) {
        records++;
        if (r->client_gone)
            gone_records++;
    }
    pthread_mutex_unlock(&mu);
}

/* ---- the body handler (backpressure, failure) ------------------------------------------ */

#define SPOOL_CAP (8u << 20)     /* the test's queue: room to show an overflow */
#define SPOOL_HIGH (256u << 10)  /* the hook pauses at this mark */
#define SPOOL_LOW (64u << 10)    /* the writer resumes below this */
#define SPOOL_BOUND (512u << 10) /* the mark plus what one call may bring */

static struct spool {
    unsigned char *ring;
    size_t head, len;
    uint64_t given, drained, drained_hash;
    size_t max_len;
    bool paused, overflow;
    int calls_while_paused, pauses;
    proxy_ticket t;
    uint64_t total; /* the writer stops after this many bytes */
    unsigned pause_ms;
} sp = {.pause_ms = 20000};
static _Atomic int fail_calls;

static enum proxy_body_result b_body(void *arg, void *state, proxy_exchange *x, const void *data,
                                     size_t n)
{
    (void)arg;
    (void)state;
    enum proxy_body_result r = PROXY_BODY_OK;
    pthread_mutex_lock(&mu);
    if (sp.paused)
        sp.calls_while_paused++;
    if (sp.len + n > SPOOL_CAP) {
        sp.overflow = true;
    } else {
        const unsigned char *p = data;
        for (size_t i = 0; i < n;) {
            size_t at = (sp.head + sp.len) % SPOOL_CAP;
            size_t k = SPOOL_CAP - at < n - i ? SPOOL_CAP - at : n - i;
            memcpy(sp.ring + at, p + i, k);
            sp.len += k;
            i += k;
        }
    }
    sp.given += n;
    if (sp.len > sp.max_len)
        sp.max_len = sp.len;
    if (sp.len >= SPOOL_HIGH) {
        sp.t = proxy_exchange_wait(x, sp.pause_ms);
        sp.paused = true;
        sp.pauses++;
        r = PROXY_BODY_PAUSE;
    }
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    return r;
}

/* The slow writer: 16 KiB at a time, a pause between, resuming the body below the low
 * mark. */
static void *writer(void *arg)
{
    static unsigned char piece[16384];
    (void)arg;
    pthread_mutex_lock(&mu);
    /* until every byte the hook was given is drained (or was lost to an overflow) */
    while (!(sp.len == 0 && sp.given >= sp.total) && !stop_resumer) {
        if (!sp.len) {
            pthread_cond_wait(&cv, &mu);
            continue;
        }
        size_t k = sp.len < sizeof(piece) ? sp.len : sizeof(piece);
        if (SPOOL_CAP - sp.head < k)
            k = SPOOL_CAP - sp.head;
        memcpy(piece, sp.ring + sp.head, k);
        sp.head = (sp.head + k) % SPOOL_CAP;
        sp.len -= k;
        sp.drained += k;
        sp.drained_hash = fx_hash(sp.drained_hash, piece, k);
        proxy_ticket t = {0};
        if (sp.paused && sp.len <= SPOOL_LOW) {
            sp.paused = false;
            t = sp.t;
        }
        pthread_mutex_unlock(&mu);
        if (t.gen)
            proxy_exchange_resume(t);
        usleep(100); /* a slow disk */
        pthread_mutex_lock(&mu);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

static enum proxy_body_result fail_body(void *arg, void *state, proxy_exchange *x, const void *data,
                                        size_t n)
{
    (void)arg;
    (void)state;
    (void)x;
    (void)data;
    (void)n;
    atomic_fetch_add(&fail_calls, 1);
    return PROXY_BODY_FAIL;
}

static void *b_start(void *arg, proxy_exchange *x, const struct proxy_match *m)
{
    (void)x;
    (void)m;
    return arg; /* a static state: nothing to free */
}

/* ---- set-up ------------------------------------------------------------------------------ */

static struct fx *f;
static proxy *px;
static struct config *cfg;
static int port;
static pthread_t resumer_thread;

static int setup(void **state)
{
    (void)state;
    struct rlimit rl;
    /* two sockets per parked client: as many descriptors as we may have (root may raise
     * the hard limit too) */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 8192) {
        struct rlimit want = {8192, rl.rlim_max > 8192 ? rl.rlim_max : 8192};
        if (setrlimit(RLIMIT_NOFILE, &want) != 0) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    f = fx_start();
    if (!f)
        return -1;
    cfg = inproc_config(fx_port(f), "\"workers\":{\"proxy_loops\":2},", &port);
    if (!cfg)
        return -1;
    cut_err err = CUT_ERR_INIT;
    px = proxy_new(cfg, &err);
    if (!px)
        return -1;
    struct proxy_handler w = {.on_start = w_start,
                              .on_request = w_request,
                              .on_response = w_response,
                              .on_response_body = w_response_body,
                              .on_done = w_done};
    static int fail_state, spool_state;
    struct proxy_handler fb = {
        .arg = &fail_state, .on_start = b_start, .on_request_body = fail_body};
    struct proxy_handler sb = {.arg = &spool_state, .on_start = b_start, .on_request_body = b_body};
    struct proxy_observer o = {.on_exchange = w_observe};
    if (!proxy_add_handler(px, ROUTE_SIGNED_URL, &w, &err) ||
        !proxy_add_handler(px, ROUTE_UPLOAD, &fb, &err) ||
        !proxy_add_handler(px, ROUTE_UPLOAD, &sb, &err) || !proxy_add_observer(px, &o, &err) ||
        !proxy_start(px, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    sp.ring = malloc(SPOOL_CAP);
    sp.drained_hash = FX_HASH_INIT;
    pthread_create(&resumer_thread, NULL, resumer, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pthread_mutex_lock(&mu);
    stop_resumer = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(resumer_thread, NULL);
    proxy_shutdown(px, 5);
    proxy_free(px);
    config_free(cfg);
    fx_stop(f);
    free(sp.ring);
    return 0;
}

struct want {
    int *counter;
    int value;
};

static bool reached(void *arg)
{
    struct want *w = arg;
    pthread_mutex_lock(&mu);
    bool ok = *w->counter >= w->value;
    pthread_mutex_unlock(&mu);
    return ok;
}

static struct proxy_counters counters(void)
{
    struct proxy_counters c;
    proxy_counters(px, &c);
    return c;
}

static bool waits_at_least(void *arg)
{
    return counters().waits >= *(uint64_t *)arg;
}

static bool stale_at_least(void *arg)
{
    return counters().stale_resumes >= *(uint64_t *)arg;
}

static int send_get(const char *path)
{
    char req[256];
    int fd = test_connect(port);
    if (fd < 0)
        return -1;
    int n =
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    struct timeval tv = {60, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* Reads the whole answer (the proxy closes after it) into buf; returns its length. */
static size_t read_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len + 1 >= cap)
            break;
    }
    buf[len] = 0;
    return len;
}

/* ---- the tests ---------------------------------------------------------------------------- */

static void test_load(void **state)
{
    (void)state;
    struct rlimit rl;
    int n = 2000;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)(2 * n + 400))
        n = ((int)rl.rlim_cur - 400) / 2;
    assert_true(n >= 400);
    atomic_store(&mode, M_LOAD);
    pthread_mutex_lock(&mu);
    int done0 = dones;
    released = done0;
    pthread_mutex_unlock(&mu);
    uint64_t w0 = counters().waits;
    int *fds = calloc((size_t)n, sizeof(int));
    char path[64];
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "/json/k%d", i);
        fds[i] = send_get(path);
        assert_true(fds[i] >= 0);
    }
    /* every one of them parked at once, before reaching the app */
    uint64_t want = w0 + (uint64_t)n;
    assert_true(test_wait_until(waits_at_least, &want, 30000));
    pthread_mutex_lock(&mu);
    assert_true(per_loop[0] > 0 && per_loop[1] > 0);
    assert_int_equal(req_q.n, n);
    release_requests = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);

    static char buf[8192];
    int bad = 0;
    for (int i = 0; i < n; i++) {
        read_all(fds[i], buf, sizeof(buf));
        close(fds[i]);
        char tag[64];
        snprintf(tag, sizeof(tag), "X-Key: k%d\r\n", i);
        if (strncmp(buf, "HTTP/1.1 200", 12) != 0 || !strstr(buf, tag) ||
            !strstr(buf, "http://legacy.example/doc/1")) {
            if (bad++ < 3)
                fprintf(stderr, "request %d: %.200s\n", i, buf);
        }
    }
    free(fds);
    assert_int_equal(bad, 0);
    struct want wd = {&dones, done0 + n};
    assert_true(test_wait_until(reached, &wd, 10000));
    struct proxy_counters c = counters();
    assert_true(c.waits >= w0 + 2 * (uint64_t)n); /* parked twice each */
    assert_int_equal(c.timed_out, 0);
    pthread_mutex_lock(&mu);
    release_requests = false;
    pthread_mutex_unlock(&mu);
}

/* Many answers held, parked in on_response_body at once, resumed from the other thread,
 * then rewritten by the hook called again: each client gets its own body. */
static void test_hold_wait(void **state)
{
    (void)state;
    enum { N = 200 };
    int fds[N];
    char path[64];
    static char buf[8192];
    atomic_store(&mode, M_HOLD_WAIT);
    struct proxy_counters c0 = counters();
    for (int i = 0; i < N; i++) {
        snprintf(path, sizeof(path), "/json/h%d", i);
        fds[i] = send_get(path);
        assert_true(fds[i] >= 0);
    }
    int bad = 0;
    for (int i = 0; i < N; i++) {
        size_t n = read_all(fds[i], buf, sizeof(buf));
        close(fds[i]);
        char want[64], cl[64];
        int wl = snprintf(want, sizeof(want), "\r\n\r\n{\"key\":\"h%d\"}", i);
        snprintf(cl, sizeof(cl), "Content-Length: %d\r\n", wl - 4);
        if (strncmp(buf, "HTTP/1.1 200", 12) != 0 || n < (size_t)wl ||
            strcmp(buf + n - wl, want) != 0 || !strstr(buf, cl)) {
            if (bad++ < 3)
                fprintf(stderr, "request %d: %.300s\n", i, buf);
        }
    }
    assert_int_equal(bad, 0);
    struct proxy_counters c1 = counters();
    assert_true(c1.waits >= c0.waits + N);
    assert_int_equal(c1.timed_out, c0.timed_out);
}

/* The client hangs up while its exchange is parked. */
static void gone_case(int md, const char *path)
{
    atomic_store(&mode, md);
    pthread_mutex_lock(&mu);
    int d0 = dones, r0 = records, g0 = gone_records;
    pthread_mutex_unlock(&mu);
    struct proxy_counters c0 = counters();
    int fd = send_get(path);
    assert_true(fd >= 0);
    uint64_t want = c0.waits + 1;
    assert_true(test_wait_until(waits_at_least, &want, 10000));
    close(fd);
    /* the exchange ends now, not at the wait's 60 s deadline */
    struct want wr = {&records, r0 + 1};
    assert_true(test_wait_until(reached, &wr, 10000));
    pthread_mutex_lock(&mu);
    assert_int_equal(dones, d0 + 1);
    assert_int_equal(gone_records, g0 + 1);
    proxy_ticket t = saved;
    pthread_mutex_unlock(&mu);
    struct proxy_counters c1 = counters();
    assert_int_equal(c1.gone_while_waiting, c0.gone_while_waiting + 1);
    /* a late resume, twice: nothing happens */
    proxy_exchange_resume(t);
    proxy_exchange_resume(t);
    uint64_t st = c1.stale_resumes + 2;
    assert_true(test_wait_until(stale_at_least, &st, 10000));
    pthread_mutex_lock(&mu);
    assert_int_equal(dones, d0 + 1);
    assert_int_equal(records, r0 + 1);
    pthread_mutex_unlock(&mu);
    assert_int_equal(counters().resumed, c1.resumed);
}

static void test_client_gone(void **state)
{
    (void)state;
    gone_case(M_GONE_REQ, "/json/gone-before-app");
    gone_case(M_GONE_RESP, "/json/gone-after-app");
    /* the proxy serves on */
    atomic_store(&mode, M_BODY);
    struct test_http r;
    char u[128];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/json/after", port);
    assert_int_equal(test_http("GET", u, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    test_http_free(&r);
}

static void deadline_case(int md, const char *path)
{
    atomic_store(&mode, md);
    pthread_mutex_lock(&mu);
    int re0 = reinvoked;
    pthread_mutex_unlock(&mu);
    struct proxy_counters c0 = counters();
    struct test_http r;
    char u[128];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d%s", port, path);
    assert_int_equal(test_http("GET", u, NULL, NULL, 0, &r), 0);
    /* the app's answer, unchanged */
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"url\":\"http://legacy.example/doc/1\",\"id\":7}");
    char *ch = test_http_header(&r, "X-Changed");
    assert_null(ch);
    test_http_free(&r);
    struct proxy_counters c1 = counters();
    assert_int_equal(c1.timed_out, c0.timed_out + 1);
    pthread_mutex_lock(&mu);
    assert_int_equal(reinvoked, re0);
    proxy_ticket t = saved;
    pthread_mutex_unlock(&mu);
    proxy_exchange_resume(t); /* too late: ignored */
    uint64_t st = c1.stale_resumes + 1;
    assert_true(test_wait_until(stale_at_least, &st, 10000));
    pthread_mutex_lock(&mu);
    assert_int_equal(reinvoked, re0);
    pthread_mutex_unlock(&mu);
}

static void test_deadline(void **state)
{
    (void)state;
    deadline_case(M_DEADLINE_RESP, "/json/late-answer");
    deadline_case(M_DEADLINE_REQ, "/json/late-request");
}

static void test_backpressure(void **state)
{
    (void)state;
    static unsigned char body[16u << 20];
    fx_gen(11, body, sizeof(body));
    atomic_store(&mode, M_BODY);
    atomic_store(&fail_calls, 0);
    pthread_mutex_lock(&mu);
    sp.total = sizeof(body);
    pthread_mutex_unlock(&mu);
    pthread_t wt;
    pthread_create(&wt, NULL, writer, NULL);
    struct proxy_counters c0 = counters();
    struct test_http r;
    char u[128];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/documents", port);
    assert_int_equal(test_http("POST", u, NULL, body, sizeof(body), &r), 0);
    assert_int_equal(r.status, 200);
    test_http_free(&r);
    pthread_join(wt, NULL);

    pthread_mutex_lock(&mu);
    fprintf(stderr, "backpressure: %d pauses, queue at most %zu bytes\n", sp.pauses, sp.max_len);
    assert_false(sp.overflow);
    assert_int_equal(sp.calls_while_paused, 0);
    assert_true(sp.pauses > 1);
    /* what the proxy took from the client and the writer has not taken stays bounded */
    assert_true(sp.max_len <= SPOOL_BOUND);
    assert_int_equal(sp.given, sizeof(body));
    assert_int_equal(sp.drained, sizeof(body));
    assert_true(sp.drained_hash == fx_hash(FX_HASH_INIT, body, sizeof(body)));
    pthread_mutex_unlock(&mu);
    /* the app got it all */
    struct fx_seen seen;
    fx_last(f, &seen);
    assert_int_equal(seen.body_len, sizeof(body));
    assert_true(seen.body_hash == fx_hash(FX_HASH_INIT, body, sizeof(body)));
    /* the failing handler was asked once and never again */
    assert_int_equal(atomic_load(&fail_calls), 1);
    assert_int_equal(counters().timed_out, c0.timed_out);
}

static void test_body_fail(void **state)
{
    (void)state;
    /* the spool handler takes everything at once here: its writer is gone, so it would
     * pause; a small body stays under its mark */
    static unsigned char body[100000];
    fx_gen(5, body, sizeof(body));
    atomic_store(&fail_calls, 0);
    pthread_mutex_lock(&mu);
    sp.head = sp.len = 0;
    sp.given = 0;
    pthread_mutex_unlock(&mu);
    struct test_http r;
    char u[128];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/documents", port);
    assert_int_equal(test_http("POST", u, NULL, body, sizeof(body), &r), 0);
    assert_int_equal(r.status, 200);
    test_http_free(&r);
    assert_int_equal(atomic_load(&fail_calls), 1);
    struct fx_seen seen;
    fx_last(f, &seen);
    assert_int_equal(seen.body_len, sizeof(body));
    assert_true(seen.body_hash == fx_hash(FX_HASH_INIT, body, sizeof(body)));
    pthread_mutex_lock(&mu);
    assert_int_equal(sp.given, sizeof(body)); /* the other handler saw it all */
    pthread_mutex_unlock(&mu);
}

/* A pause nobody resumes: past its deadline the handler gets no more of this body, and
 * the request goes on to the app whole. */
static void test_pause_deadline(void **state)
{
    (void)state;
    static unsigned char body[2u << 20];
    fx_gen(17, body, sizeof(body));
    atomic_store(&mode, M_BODY);
    pthread_mutex_lock(&mu);
    sp.head = sp.len = 0;
    sp.given = 0;
    sp.paused = false;
    sp.calls_while_paused = 0;
    sp.pause_ms = 200;
    pthread_mutex_unlock(&mu);
    struct proxy_counters c0 = counters();
    struct test_http r;
    char u[128];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/documents", port);
    assert_int_equal(test_http("POST", u, NULL, body, sizeof(body), &r), 0);
    assert_int_equal(r.status, 200);
    test_http_free(&r);
    struct fx_seen seen;
    fx_last(f, &seen);
    assert_int_equal(seen.body_len, sizeof(body));
    assert_true(seen.body_hash == fx_hash(FX_HASH_INIT, body, sizeof(body)));
    assert_int_equal(counters().timed_out, c0.timed_out + 1);
    pthread_mutex_lock(&mu);
    assert_int_equal(sp.calls_while_paused, 0);
    assert_true(sp.given >= SPOOL_HIGH && sp.given < sizeof(body));
    proxy_ticket t = sp.t;
    sp.pause_ms = 20000;
    pthread_mutex_unlock(&mu);
    proxy_exchange_resume(t); /* too late: ignored */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load),           cmocka_unit_test(test_hold_wait),
        cmocka_unit_test(test_client_gone),    cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_backpressure),   cmocka_unit_test(test_body_fail),
        cmocka_unit_test(test_pause_deadline),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
