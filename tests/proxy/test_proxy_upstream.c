/*
 * test_proxy_upstream: `cutover proxy` (one event loop) in front of a scripted app that
 * answers with raw bytes, to test the upstream client on what a well-behaved fixture never
 * sends: interim answers, chunk extensions and trailers, bodies delimited by close,
 * malformed or oversized heads (502), a cut chunked body, Connection: close, and
 * connections the app closes while they are kept alive (the retry rule of upstream.c).
 *
 * The app reads each request (head, then a Content-Length body) and answers by its path:
 * /r/N sends rows[N].answer; /d/... answers "ok"; /x/... answers "ok" on a new connection
 * and drops the request unanswered on one that served a request before; /i/... answers
 * "ok" and closes the connection 50 ms later without saying so (and counts it).
 */
#include "fixture.h"

#include "tests/testlib.h"
#include "tests/unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct row {
    const char *name;
    const char *answer; /* raw bytes; NULL: a generated oversized head */
    bool close;         /* the app closes after answering */
    long status;        /* to the client; 0: the client connection is cut */
    const char *body;   /* expected body when status != 0 */
};

static const struct row rows[] = {
    {"chunked with extensions and trailers",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=1;b=\"x\"\r\nhello\r\n6\r\n "
     "world\r\n0;end\r\nX-Trailer: 1\r\n\r\n",
     false, 200, "hello world"},
    {"100 Continue swallowed",
     "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, 200,
     "ok"},
    {"103 then 201",
     "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: "
     "1\r\n\r\nc",
     false, 201, "c"},
    {"body until close", "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil close", true, 200, "until close"},
    {"HTTP/1.0 with length", "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold", true, 200, "old"},
    {"bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nlf", false, 200, "lf"},
    {"Connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye",
     true, 200, "bye"},
    {"empty chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false, 200,
     ""},
    {"differing Content-Length",
     "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", true, 502, NULL},
    {"Content-Length and chunked",
     "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: "
     "chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
     true, 502, NULL},
    {"Transfer-Encoding gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx", true, 502,
     NULL},
    {"Content-Length not a number", "HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok", true, 502,
     NULL},
    {"obs-fold", "HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok", true, 502,
     NULL},
    {"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", true, 502, NULL},
    {"not HTTP", "SSH-2.0-OpenSSH_9.2\r\n\r\n", true, 502, NULL},
    {"101 never asked for", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", true, 502,
     NULL},
    {"status 600", "HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n", true, 502, NULL},
    {"Connection naming more fields than can be removed",
     "HTTP/1.1 200 OK\r\nConnection: "
     "x-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, "
     "x-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb, "
     "x-ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\r\n"
     "Connection: x-secret\r\nX-Secret: 1\r\nContent-Length: 2\r\n\r\nok",
     true, 502, NULL},
    {"head over the ceiling", NULL, true, 502, NULL},
    {"closed before any answer", "", true, 502, NULL},
    {"bad chunk size after the head",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n", true, 0, NULL},
    {"Content-Length body cut short", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", true, 0,
     NULL},
};
#define NROWS (sizeof(rows) / sizeof(rows[0]))

static int app_fd = -1, app_port;
static atomic_int app_conns;
static atomic_int app_idle_closed; /* /i/ connections the app has closed */
static struct px_run px;

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Reads one request (head and Content-Length body) into buf; returns false at EOF. */
static bool read_request(int fd, char *buf, size_t cap, char *target, size_t tcap)
{
    size_t len = 0;
    char *end = NULL;
    while (!(end = strstr(buf, "\r\n\r\n"))) {
        if (len + 1 >= cap)
            return false;
        ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r <= 0)
            return false;
        len += (size_t)r;
        buf[len] = 0;
    }
    size_t head = (size_t)(end + 4 - buf);
    long cl = 0;
    for (char *p = buf; p < end; p = strstr(p, "\r\n") + 2)
        if (strncasecmp(p, "content-length:", 15) == 0)
            cl = atol(p + 15);
    long have = (long)(len - head);
    while (have < cl) {
        char tmp[4096];
        ssize_t r = recv(fd, tmp, sizeof(tmp), 0);
        if (r <= 0)
            return false;
        have += r;
    }
    sscanf(buf, "%*s %1023s", target);
    (void)tcap;
    memset(buf, 0, cap);
    return true;
}

static void *app_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char *buf = calloc(1, 65536);
    char target[1024];
    int n = 0;
    while (read_request(fd, buf, 65536, target, sizeof(target))) {
        n++;
        if (strncmp(target, "/x/", 3) == 0 && n > 1)
            break; /* dropped unanswered */
        if (strncmp(target, "/d/", 3) == 0 || strncmp(target, "/x/", 3) == 0) {
            send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 40);
            continue;
        }
        if (strncmp(target, "/i/", 3) == 0) {
            send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 40);
            sleep_ms(50);
            close(fd);
            atomic_fetch_add(&app_idle_closed, 1);
            free(buf);
            return NULL;
        }
        size_t i = strncmp(target, "/r/", 3) == 0 ? (size_t)atoi(target + 3) : NROWS;
        if (i >= NROWS)
            break;
        if (rows[i].answer) {
            send_all(fd, rows[i].answer, strlen(rows[i].answer));
        } else {
            size_t big = 80 * 1024;
            char *h = malloc(big);
            memset(h, 'a', big);
            memcpy(h, "HTTP/1.1 200 OK\r\nX-Big: ", 24);
            memcpy(h + big - 4, "\r\n\r\n", 4);
            send_all(fd, h, big);
            free(h);
        }
        if (rows[i].close)
            break;
    }
    free(buf);
    close(fd);
    return NULL;
}

static void *app_main(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(app_fd, NULL, NULL);
        if (c < 0)
            return NULL;
        atomic_fetch_add(&app_conns, 1);
        pthread_t t;
        pthread_create(&t, NULL, app_conn, (void *)(intptr_t)c);
        pthread_detach(t);
    }
}

static int group_setup(void **state)
{
    (void)state;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    app_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (app_fd < 0 || bind(app_fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(app_fd, 64) != 0 || getsockname(app_fd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    app_port = ntohs(a.sin_port);
    pthread_t t;
    pthread_create(&t, NULL, app_main, NULL);
    pthread_detach(t);
    char up[64];
    snprintf(up, sizeof(up), "http://127.0.0.1:%d", app_port);
    return px_run_start(&px, up, "\"workers\":{\"proxy_loops\":1}", "\"upstream_timeout_s\":2")
               ? 0
               : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    int st = px_run_stop(&px);
    px_run_free(&px);
    shutdown(app_fd, SHUT_RDWR);
    close(app_fd);
    return st == 0 ? 0 : -1;
}

static long get(const char *method, const char *path, const char *body, struct test_http *r)
{
    char u[256];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d%s", px.port, path);
    int rc = test_http(method, u, NULL, body, body ? strlen(body) : 0, r);
    return rc == 0 ? r->status : 0;
}

static void test_rows(void **state)
{
    (void)state;
    int failed = 0;
    for (size_t i = 0; i < NROWS; i++) {
        char path[32];
        struct test_http r;
        snprintf(path, sizeof(path), "/r/%zu", i);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        long st = get("GET", path, NULL, &r);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (t1.tv_sec - t0.tv_sec > 3) {
            /* a cut answer must reach the client at once, not when a timer fires */
            fprintf(stderr, "row %zu (%s): took %lds\n", i, rows[i].name,
                    (long)(t1.tv_sec - t0.tv_sec));
            failed++;
        }
        bool ok = st == rows[i].status && (!rows[i].body || (r.body_len == strlen(rows[i].body) &&
                                                             !strcmp(r.body, rows[i].body)));
        if (ok && st == 200 && strstr(r.headers, "Transfer-Encoding: chunked") == NULL &&
            strstr(r.headers, "Content-Length") == NULL &&
            strstr(r.headers, "Connection: close") == NULL)
            ok = false; /* every streamed answer is framed for the client */
        if (!ok) {
            fprintf(stderr, "row %zu (%s): status %ld body '%s' (%s)\n", i, rows[i].name, st,
                    r.body, r.errbuf);
            failed++;
        }
        test_http_free(&r);
        /* the proxy is still fine afterwards */
        st = get("GET", "/d/after", NULL, &r);
        test_http_free(&r);
        if (st != 200) {
            fprintf(stderr, "row %zu (%s): the next request got %ld\n", i, rows[i].name, st);
            failed++;
        }
    }
    assert_int_equal(failed, 0);
}

static void test_head_and_reuse(void **state)
{
    (void)state;
    struct test_http r;
    int before = atomic_load(&app_conns);
    /* HEAD with a Content-Length and no body; the connection is kept (/d/ drops only the
     * second request of a connection, which the retry then covers) */
    assert_int_equal(get("HEAD", "/r/1", NULL, &r), 200);
    assert_int_equal(r.body_len, 0);
    test_http_free(&r);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(get("GET", "/r/0", NULL, &r), 200);
        assert_string_equal(r.body, "hello world");
        test_http_free(&r);
    }
    /* five requests, kept alive: one new connection at most */
    assert_true(atomic_load(&app_conns) - before <= 1);
}

static bool idle_closed(void *arg)
{
    return atomic_load(&app_idle_closed) >= *(int *)arg;
}

static void test_retry_rule(void **state)
{
    (void)state;
    struct test_http r;
    /* the pool's most recent connection is a live, used one */
    assert_int_equal(get("GET", "/d/warm", NULL, &r), 200);
    test_http_free(&r);
    /* a GET on a reused connection the app drops: sent again on a fresh one */
    int before = atomic_load(&app_conns);
    assert_int_equal(get("GET", "/x/1", NULL, &r), 200);
    assert_string_equal(r.body, "ok");
    test_http_free(&r);
    assert_int_equal(atomic_load(&app_conns) - before, 1);
    /* a POST without a body: the app may have acted on it, never sent twice */
    assert_int_equal(get("GET", "/d/warm", NULL, &r), 200);
    test_http_free(&r);
    before = atomic_load(&app_conns);
    assert_int_equal(get("POST", "/x/2", NULL, &r), 502);
    test_http_free(&r);
    assert_int_equal(atomic_load(&app_conns) - before, 0);
    /* a POST whose body went out with its head: not sent twice either */
    assert_int_equal(get("GET", "/d/warm", NULL, &r), 200);
    test_http_free(&r);
    assert_int_equal(get("POST", "/x/3", "body", &r), 502);
    test_http_free(&r);
    /* a connection the app closes while at rest is noticed and not used. The next request
     * is a POST without a body, which the retry rule never sends twice: only the proxy's
     * dropping of the dead connection at rest gets it a 200 */
    int closed = atomic_load(&app_idle_closed);
    assert_int_equal(get("GET", "/i/1", NULL, &r), 200);
    test_http_free(&r);
    closed++;
    assert_true(test_wait_until(idle_closed, &closed, 5000));
    before = atomic_load(&app_conns);
    assert_int_equal(get("POST", "/i/2", NULL, &r), 200);
    test_http_free(&r);
    assert_int_equal(atomic_load(&app_conns) - before, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_head_and_reuse),
        cmocka_unit_test(test_retry_rule),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
