/*
 * test_proxy_e2e: `cutover proxy` in front of the fixture, driven with libcurl and raw
 * sockets over loopback: pass-through of status and headers (repeated fields, Set-Cookie,
 * hop-by-hop removal), HEAD, 204, 304, streamed chunked answers, upstream keep-alive,
 * 502 and 504, /healthz and /readyz, the header and idle deadlines, the access log (and
 * that it never holds a query string) and graceful shutdown with a request in flight.
 */
#include "fixture.h"

#include "tests/testlib.h"
#include "tests/unit.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct fx *fx;
static struct px_run px;
static char up_url[64];

static char *url(const struct px_run *r, const char *path)
{
    static char u[512];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d%s", r->port, path);
    return u;
}

static int group_setup(void **state)
{
    (void)state;
    fx = fx_start();
    if (!fx)
        return -1;
    snprintf(up_url, sizeof(up_url), "http://127.0.0.1:%d", fx_port(fx));
    return px_run_start(&px, up_url, NULL, "\"upstream_timeout_s\":1") ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    int st = px_run_stop(&px);
    px_run_free(&px);
    fx_stop(fx);
    return st == 0 ? 0 : -1;
}

static int count_lines(const char *headers, const char *name)
{
    int n = 0;
    size_t len = strlen(name);
    for (const char *p = headers; p && *p;) {
        if (strncasecmp(p, name, len) == 0 && p[len] == ':')
            n++;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return n;
}

static void test_pass_through(void **state)
{
    struct test_http r;
    (void)state;
    assert_int_equal(test_http("GET", url(&px, "/any"), NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok");
    assert_int_equal(count_lines(r.headers, "Set-Cookie"), 2);
    assert_int_equal(count_lines(r.headers, "X-Multi"), 2);
    assert_int_equal(count_lines(r.headers, "X-Secret"), 0);   /* named in Connection */
    assert_int_equal(count_lines(r.headers, "Keep-Alive"), 0); /* hop-by-hop */
    test_http_free(&r);
}

static void test_post_body(void **state)
{
    struct test_http r;
    (void)state;
    const char *body = "document-bytes";
    assert_int_equal(test_http("POST", url(&px, "/documents"), NULL, body, strlen(body), &r), 0);
    assert_int_equal(r.status, 200);
    char *len = test_http_header(&r, "X-Body-Len");
    assert_non_null(len);
    assert_int_equal(atoi(len), (int)strlen(body));
    free(len);
    test_http_free(&r);
}

static void test_head_204_304(void **state)
{
    struct test_http r;
    (void)state;
    assert_int_equal(test_http("HEAD", url(&px, "/gen/100?cl=1"), NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    char *cl = test_http_header(&r, "Content-Length");
    assert_non_null(cl);
    assert_string_equal(cl, "100");
    free(cl);
    assert_int_equal(r.body_len, 0);
    test_http_free(&r);
    assert_int_equal(test_http("GET", url(&px, "/status/204"), NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.body_len, 0);
    test_http_free(&r);
    assert_int_equal(test_http("GET", url(&px, "/status/304"), NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 304);
    assert_int_equal(r.body_len, 0);
    test_http_free(&r);
    assert_int_equal(test_http("GET", url(&px, "/status/418"), NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 418);
    test_http_free(&r);
}

static void test_chunked_answer(void **state)
{
    struct test_http r;
    unsigned char want[300000];
    (void)state;
    fx_gen(0, want, sizeof(want));
    assert_int_equal(test_http("GET", url(&px, "/gen/300000"), NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, sizeof(want));
    assert_memory_equal(r.body, want, sizeof(want));
    test_http_free(&r);
}

static void test_upstream_keepalive(void **state)
{
    (void)state;
    int before = fx_connections(fx);
    for (int i = 0; i < 20; i++) {
        struct test_http r;
        assert_int_equal(test_http("GET", url(&px, "/status/200"), NULL, NULL, 0, &r), 0);
        assert_int_equal(r.status, 200);
        test_http_free(&r);
    }
    /* 20 client connections, at most a couple of upstream ones */
    assert_true(fx_connections(fx) - before <= 2);
}

static void test_504(void **state)
{
    struct test_http r;
    (void)state;
    assert_int_equal(test_http("GET", url(&px, "/slow/3000"), NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 504);
    assert_non_null(strstr(r.body, "timed out"));
    test_http_free(&r);
}

static void test_access_log(void **state)
{
    struct test_http r;
    (void)state;
    assert_int_equal(test_http("GET", url(&px, "/logme?token=s3cr3t"), NULL, NULL, 0, &r), 0);
    test_http_free(&r);
    /* the line is written when the request completes, right after the answer */
    for (int i = 0; i < 100 && px_run_log_count(&px, "\"path\":\"/logme\"") == 0; i++)
        usleep(20000);
    assert_int_equal(px_run_log_count(&px, "\"path\":\"/logme\""), 1);
    assert_int_equal(px_run_log_count(&px, "s3cr3t"), 0);
    assert_true(px_run_log_count(&px, "\"upstream_ms\"") >= 1);
}

static void test_admin_probes(void **state)
{
    struct test_http r;
    char u[128];
    (void)state;
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/healthz", px.admin_port);
    assert_int_equal(test_http("GET", u, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    test_http_free(&r);
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/readyz", px.admin_port);
    assert_int_equal(test_http("GET", u, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    test_http_free(&r);
}

/* ---- separate proxies ------------------------------------------------------------------ */

static void test_502_and_not_ready(void **state)
{
    struct px_run dead;
    struct test_http r;
    char u[128];
    (void)state;
    snprintf(u, sizeof(u), "http://127.0.0.1:%d", test_free_port());
    assert_true(px_run_start(&dead, u, NULL, NULL));
    assert_int_equal(test_http("GET", url(&dead, "/x"), NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 502);
    test_http_free(&r);
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/readyz", dead.admin_port);
    assert_int_equal(test_http("GET", u, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 503);
    test_http_free(&r);
    assert_int_equal(px_run_stop(&dead), 0);
    px_run_free(&dead);
}

static uint64_t ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* True when the peer closed fd (EOF or reset) before deadline_ms; sends one byte of
 * `trickle` every 200 ms meanwhile (NULL: sends nothing). */
static bool closed_within(int fd, int deadline_ms, const char *trickle)
{
    uint64_t end = ms_now() + (uint64_t)deadline_ms;
    const char *t = trickle;
    while (ms_now() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) == 1) {
            char b[256];
            ssize_t n = recv(fd, b, sizeof(b), 0);
            if (n <= 0)
                return true;
        }
        if (t && *t && send(fd, t++, 1, MSG_NOSIGNAL) < 0)
            return true;
    }
    return false;
}

static void test_deadlines(void **state)
{
    struct px_run p;
    (void)state;
    assert_true(px_run_start(&p, up_url, NULL, "\"header_timeout_s\":1,\"idle_timeout_s\":1"));
    /* a client that trickles its header, a byte every 200 ms, forever */
    int fd = test_connect(p.port);
    assert_true(fd >= 0);
    uint64_t t0 = ms_now();
    assert_true(
        closed_within(fd, 6000,
                      "GET / HTTP/1.1\r\nHost: x\r\nX-1: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
                      "X-2: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n"));
    assert_true(ms_now() - t0 >= 900);
    close(fd);
    /* an idle client */
    fd = test_connect(p.port);
    assert_true(fd >= 0);
    assert_true(closed_within(fd, 6000, NULL));
    close(fd);
    assert_int_equal(px_run_stop(&p), 0);
    px_run_free(&p);
}

/* A chunked body over the limit is thrown away until it ends (then 413), but only up to a
 * ceiling: a client that goes on sending is cut off rather than keeping the connection busy
 * forever. */
static void test_drain_ceiling(void **state)
{
    static char chunk[65536 + 16];
    const char *head = "POST /drain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    struct timeval tv = {.tv_sec = 5};
    struct px_run p;
    size_t clen;
    bool cut;
    int fd, hl;

    (void)state;
    assert_true(px_run_start(&p, up_url, NULL, "\"max_body_bytes\":1000"));
    fd = test_connect(p.port);
    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    hl = snprintf(chunk, sizeof(chunk), "%x\r\n", 65536);
    memset(chunk + hl, 'z', 65536);
    memcpy(chunk + hl + 65536, "\r\n", 2);
    clen = (size_t)hl + 65536 + 2;
    cut = send(fd, head, strlen(head), MSG_NOSIGNAL) < 0;
    for (int i = 0; i < 128 && !cut; i++) { /* 8 MiB, far past the 1 MiB ceiling */
        for (size_t off = 0; off < clen && !cut;) {
            ssize_t n = send(fd, chunk + off, clen - off, MSG_NOSIGNAL);
            cut = n <= 0;
            off += n > 0 ? (size_t)n : 0;
        }
    }
    if (!cut)
        cut = closed_within(fd, 3000, NULL);
    assert_true(cut);
    close(fd);
    assert_int_equal(px_run_stop(&p), 0);
    px_run_free(&p);
}

static void test_access_log_off(void **state)
{
    struct px_run p;
    struct test_http r;
    (void)state;
    assert_true(px_run_start(&p, up_url, "\"log\":{\"level\":\"info\",\"access\":false}", NULL));
    assert_int_equal(test_http("GET", url(&p, "/quiet"), NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    test_http_free(&r);
    assert_int_equal(px_run_stop(&p), 0);
    assert_int_equal(px_run_log_count(&p, "\"event\":\"access\""), 0);
    px_run_free(&p);
}

struct slow_call {
    const char *u;
    long status;
    size_t len;
};

static void *slow_thread(void *arg)
{
    struct slow_call *c = arg;
    struct test_http r;
    if (test_http("GET", c->u, NULL, NULL, 0, &r) == 0) {
        c->status = r.status;
        c->len = r.body_len;
    }
    test_http_free(&r);
    return NULL;
}

static bool fx_got_one_more(void *arg)
{
    int *want = arg;
    return fx_started(fx) >= *want;
}

static bool refuses_connections(void *arg)
{
    int fd = test_connect(*(int *)arg);
    if (fd >= 0)
        close(fd);
    return fd < 0;
}

static void test_graceful_shutdown(void **state)
{
    struct px_run p;
    pthread_t th;
    (void)state;
    assert_true(px_run_start(&p, up_url, NULL, NULL));
    char u[600];
    snprintf(u, sizeof(u), "%s", url(&p, "/slow/1500"));
    struct slow_call c = {.u = u};
    int want = fx_started(fx) + 1;
    assert_int_equal(pthread_create(&th, NULL, slow_thread, &c), 0);
    assert_true(test_wait_until(fx_got_one_more, &want, 5000));
    kill(p.pid, SIGTERM);
    assert_true(test_wait_until(refuses_connections, &p.port, 3000));
    pthread_join(th, NULL);
    assert_int_equal(c.status, 200);
    assert_int_equal(c.len, 4);
    int st = test_wait_exit(p.pid, 10000);
    p.pid = 0;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    px_run_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pass_through),       cmocka_unit_test(test_post_body),
        cmocka_unit_test(test_head_204_304),       cmocka_unit_test(test_chunked_answer),
        cmocka_unit_test(test_upstream_keepalive), cmocka_unit_test(test_504),
        cmocka_unit_test(test_access_log),         cmocka_unit_test(test_admin_probes),
        cmocka_unit_test(test_502_and_not_ready),  cmocka_unit_test(test_deadlines),
        cmocka_unit_test(test_access_log_off),     cmocka_unit_test(test_graceful_shutdown),
        cmocka_unit_test(test_drain_ceiling),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
