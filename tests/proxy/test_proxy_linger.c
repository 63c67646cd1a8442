/*
 * A refused request gets its answer even when the client is still sending: the client sends
 * a smuggling-shaped head (Content-Length with Transfer-Encoding), waits for the 400, then
 * sends more body bytes, as a client streaming an upload does. Closing the socket at once
 * would make the kernel answer those bytes with a reset, and a reset destroys the 400 still
 * in the client's receive buffer. The proxy shuts its write side and drops what it reads
 * until the client's EOF: the client reads the whole 400, then EOF, never a reset.
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
#include <unistd.h>

static void test_refusal_survives_a_client_still_sending(void **state)
{
    struct fx *f = fx_start();
    struct px_run r;
    char url[64];
    (void)state;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", fx_port(f));
    assert_true(px_run_start(&r, url, NULL, NULL));
    for (int round = 0; round < 5; round++) {
        static const char head[] = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n";
        char body[4096], got[8192];
        size_t len = 0;
        int fd = test_connect(r.port);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_true(fd >= 0);
        assert_int_equal(send(fd, head, sizeof(head) - 1, 0), (ssize_t)(sizeof(head) - 1));
        /* the 400 has arrived (not read yet) */
        assert_int_equal(poll(&p, 1, 10000), 1);
        /* the client goes on sending its body */
        memset(body, 'b', sizeof(body));
        send(fd, body, sizeof(body), MSG_NOSIGNAL);
        /* a reset, if one comes, comes at once on loopback: give it the time to */
        p.events = POLLRDHUP;
        poll(&p, 1, 200);
        for (;;) {
            ssize_t n = recv(fd, got + len, sizeof(got) - 1 - len, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                fail_msg("round %d: recv: %s after %zu bytes", round, strerror(errno), len);
            if (n == 0)
                break;
            len += (size_t)n;
        }
        got[len] = 0;
        if (strncmp(got, "HTTP/1.1 400 ", 13) != 0)
            fail_msg("round %d: got '%s'", round, got);
        assert_non_null(strstr(got, "Connection: close"));
        close(fd);
    }
    assert_int_equal(fx_count(f), 0); /* nothing reached the app */
    px_run_free(&r);
    fx_stop(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusal_survives_a_client_still_sending),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
