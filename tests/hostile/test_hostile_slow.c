/*
 * test_hostile_slow: slow clients against `cutover proxy` in front of the proxy fixture.
 *
 *   slowloris: 40 connections trickle their request header a byte at a time, for ever. While
 *   they are all open, a normal client is served (GET and a POST with a body); each of them
 *   is closed by limits.header_timeout_s (3 s here), all within a bounded time.
 *
 *   slow bodies: 20 connections send a header announcing 100000 body bytes, 10 bytes of it,
 *   and nothing more. While they are open a normal client is served; each of them is closed
 *   by limits.idle_timeout_s (3 s here), and the app never gets a request from them... or
 *   gets one cut short: never a complete body.
 *
 * The bound is generous (20 s) so that a loaded machine does not fail the test; what fails
 * it is a connection never closed, or a normal client not served while they hang on.
 */
#include "tests/proxy/fixture.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LORIS 40
#define SLOW_BODIES 20
#define BOUND_MS 20000

static struct fx *fx;
static struct px_run px;

static uint64_t ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int setup(void **state)
{
    char up[64];
    (void)state;
    fx = fx_start();
    if (!fx)
        return -1;
    snprintf(up, sizeof(up), "http://127.0.0.1:%d", fx_port(fx));
    return px_run_start(&px, up, NULL, "\"header_timeout_s\":3,\"idle_timeout_s\":3") ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int st = px_run_stop(&px);
    px_run_free(&px);
    fx_stop(fx);
    return st == 0 ? 0 : -1;
}

/* The connection was closed by the peer (EOF, reset, or a refusal followed by EOF). */
static bool closed_by_peer(int fd)
{
    char b[4096];
    for (;;) {
        ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);
        if (n == 0)
            return true;
        if (n < 0)
            return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
    }
}

/* A normal client: a GET and a POST with a body, both answered 200 through the proxy. */
static void normal_client_served(void)
{
    char url[128];
    struct test_http r;
    static const char body[] = "a normal client's body";
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/normal", px.port);
    assert_int_equal(test_http("GET", url, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    test_http_free(&r);
    assert_int_equal(test_http("POST", url, NULL, body, sizeof(body) - 1, &r), 0);
    assert_int_equal(r.status, 200);
    test_http_free(&r);
}

/* Keeps trickling `next` (a byte each round, when not NULL) on every open fd until all are
 * closed by the proxy or BOUND_MS passes; calls served() once, with all still open. Returns
 * how many are still open at the end. */
static int hold_open(int *fd, int n, const char *trickle, void (*served)(void))
{
    size_t pos[LORIS] = {0};
    int open = n;
    bool done_served = false;
    uint64_t t0 = ms_now();
    while (open > 0 && ms_now() - t0 < BOUND_MS) {
        for (int i = 0; i < n; i++) {
            if (fd[i] < 0)
                continue;
            if (closed_by_peer(fd[i])) {
                close(fd[i]);
                fd[i] = -1;
                open--;
                continue;
            }
            if (trickle) {
                size_t len = strlen(trickle);
                if (send(fd[i], trickle + pos[i] % len, 1, MSG_NOSIGNAL) == 1)
                    pos[i]++;
            }
        }
        if (!done_served) {
            /* all still open: none reached its timeout yet */
            if (open != n)
                fail_msg("%d of %d slow connections closed before a normal client was tried",
                         n - open, n);
            served();
            done_served = true;
        }
        poll(NULL, 0, 100);
    }
    for (int i = 0; i < n; i++)
        if (fd[i] >= 0)
            close(fd[i]);
    return open;
}

static void test_slowloris(void **state)
{
    int fd[LORIS];
    /* the header never ends: the trickle goes round a header line for ever */
    static const char head[] = "GET /loris HTTP/1.1\r\nHost: x\r\n";
    static const char trickle[] = "X-Loris: aaaaaaaaaaaaaaaa\r\n";
    (void)state;
    int before = fx_started(fx);
    for (int i = 0; i < LORIS; i++) {
        fd[i] = test_connect(px.port);
        assert_true(fd[i] >= 0);
        assert_int_equal(send(fd[i], head, sizeof(head) - 1, MSG_NOSIGNAL), sizeof(head) - 1);
    }
    int left = hold_open(fd, LORIS, trickle, normal_client_served);
    if (left)
        fail_msg("%d slowloris connections still open after %d ms", left, BOUND_MS);
    /* none of them reached the app: only the normal client's two requests did */
    assert_int_equal(fx_started(fx) - before, 2);
    assert_true(px_run_log_count(&px, "\"level\":\"error\"") == 0);
}

static void test_slow_bodies(void **state)
{
    int fd[SLOW_BODIES];
    static const char req[] = "POST /slowbody HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                              "\r\n0123456789";
    (void)state;
    for (int i = 0; i < SLOW_BODIES; i++) {
        fd[i] = test_connect(px.port);
        assert_true(fd[i] >= 0);
        assert_int_equal(send(fd[i], req, sizeof(req) - 1, MSG_NOSIGNAL), sizeof(req) - 1);
    }
    int left = hold_open(fd, SLOW_BODIES, NULL, normal_client_served);
    if (left)
        fail_msg("%d stalled bodies still open after %d ms", left, BOUND_MS);
    /* the app never got one of those bodies whole */
    struct fx_seen s;
    fx_last(fx, &s);
    assert_true(strcmp(s.target, "/slowbody") != 0 || s.body_len < 100000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slowloris),
        cmocka_unit_test(test_slow_bodies),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
