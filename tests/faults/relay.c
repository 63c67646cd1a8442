/*
 * relay: the fault-injecting loopback relay of relay.h. An acceptor thread hands each
 * connection to a thread of its own, which reads the request head (at most HEAD_MAX bytes),
 * then, by the mode at that moment: closes the connection (down), reads the body and answers
 * an S3-shaped XML error (errors), or waits (delay, woken early by relay_stop()) and forwards
 * the request to the server on a new connection, pumping both ways until the server closes.
 */
#include "relay.h"

#include "core/core.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX 65536

struct relay {
    int lfd, port, up_port;
    pthread_t acceptor;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    int active;
    enum relay_mode mode;
    int arg;
    int requests, refused, dropped;
};

struct conn {
    relay *r;
    int fd;
};

static bool write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        c += (size_t)w;
        n -= (size_t)w;
    }
    return true;
}

/* Sends buf with "Connection: close" after its first line. */
static bool send_closing(int fd, const char *buf, size_t n)
{
    static const char cc[] = "Connection: close\r\n";
    const char *eol = memmem(buf, n, "\r\n", 2);
    if (!eol)
        return false;
    size_t first = (size_t)(eol - buf) + 2;
    return write_all(fd, buf, first) && write_all(fd, cc, sizeof(cc) - 1) &&
           write_all(fd, buf + first, n - first);
}

/* Content-Length of the head (0 when absent). */
static unsigned long long content_length(const char *head)
{
    for (const char *l = strstr(head, "\r\n"); l && l[2] != '\r'; l = strstr(l + 2, "\r\n"))
        if (strncasecmp(l + 2, "content-length:", 15) == 0)
            return strtoull(l + 17, NULL, 10);
    return 0;
}

/* Reads and drops `left` body bytes (some may be in the head buffer already). */
static void drain(int fd, unsigned long long left)
{
    char b[16384];
    while (left > 0) {
        ssize_t r = recv(fd, b, left < sizeof(b) ? (size_t)left : sizeof(b), 0);
        if (r <= 0)
            return;
        left -= (unsigned long long)r;
    }
}

static void answer_error(int fd, bool slowdown)
{
    const char *code = slowdown ? "SlowDown" : "InternalError";
    char body[256], *ans;
    snprintf(body, sizeof(body),
             "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code>"
             "<Message>injected by the test relay</Message></Error>",
             code);
    ans = xasprintf("HTTP/1.1 %s\r\nContent-Type: application/xml\r\nContent-Length: %zu\r\n"
                    "Connection: close\r\n\r\n%s",
                    slowdown ? "503 Slow Down" : "500 Internal Server Error", strlen(body), body);
    write_all(fd, ans, strlen(ans));
    free(ans);
}

/* Forwards the request (head and what followed it in buf) and pumps until the server closes;
 * the answer's first line gets "Connection: close" after it. */
static void forward(relay *r, int cfd, const char *buf, size_t n)
{
    int ufd = test_connect(r->up_port);
    struct pollfd p[2] = {{.fd = cfd, .events = POLLIN}, {.fd = ufd, .events = POLLIN}};
    bool client_open = true, first_line = false;
    char *ans = xmalloc(HEAD_MAX);
    size_t an = 0;

    if (ufd < 0 || !send_closing(ufd, buf, n))
        goto out;
    for (;;) {
        p[0].fd = client_open ? cfd : -1;
        if (poll(p, 2, 60000) <= 0)
            break;
        if (client_open && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            char b[16384];
            ssize_t k = recv(cfd, b, sizeof(b), 0);
            if (k <= 0)
                client_open = false;
            else if (!write_all(ufd, b, (size_t)k))
                break;
        }
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t k = recv(ufd, ans + an, HEAD_MAX - an, 0);
            if (k <= 0)
                break;
            if (first_line) {
                if (!write_all(cfd, ans, (size_t)k))
                    break;
                continue;
            }
            an += (size_t)k;
            if (memmem(ans, an, "\r\n", 2)) {
                if (!send_closing(cfd, ans, an))
                    break;
                first_line = true;
                an = 0;
            } else if (an == HEAD_MAX) {
                break;
            }
        }
    }
    shutdown(cfd, SHUT_WR);
out:
    if (ufd >= 0)
        close(ufd);
    free(ans);
}

static void *serve(void *arg)
{
    struct conn *c = arg;
    relay *r = c->r;
    int fd = c->fd;
    char *buf = xmalloc(HEAD_MAX + 1), *end = NULL;
    size_t n = 0;
    enum relay_mode mode;
    int marg, seq;

    free(c);
    pthread_mutex_lock(&r->mu);
    mode = r->mode;
    pthread_mutex_unlock(&r->mu);
    if (mode == RELAY_DOWN) {
        pthread_mutex_lock(&r->mu);
        r->dropped++;
        pthread_mutex_unlock(&r->mu);
        goto out;
    }
    while (!end && n < HEAD_MAX) {
        ssize_t k = recv(fd, buf + n, HEAD_MAX - n, 0);
        if (k <= 0)
            goto out;
        n += (size_t)k;
        buf[n] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (!end)
        goto out;

    pthread_mutex_lock(&r->mu);
    mode = r->mode;
    marg = r->arg;
    seq = ++r->requests;
    if (mode == RELAY_ERRORS && marg > 0 && seq % marg == 0) {
        r->refused++;
        pthread_mutex_unlock(&r->mu);
        size_t have = n - (size_t)(end + 4 - buf);
        unsigned long long cl = content_length(buf);
        drain(fd, cl > have ? cl - have : 0);
        answer_error(fd, (seq / marg) % 2 == 1);
        shutdown(fd, SHUT_WR);
        goto out;
    }
    if (mode == RELAY_DELAY && marg > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += marg / 1000;
        ts.tv_nsec += (long)(marg % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        while (!r->stopping && pthread_cond_timedwait(&r->cv, &r->mu, &ts) == 0)
            ;
    }
    pthread_mutex_unlock(&r->mu);
    forward(r, fd, buf, n);
out:
    pthread_mutex_lock(&r->mu);
    r->active--;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    close(fd);
    free(buf);
    return NULL;
}

static void *acceptor(void *arg)
{
    relay *r = arg;
    for (;;) {
        int fd = accept(r->lfd, NULL, NULL);
        pthread_t t;
        struct conn *c;
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL; /* the listening socket was shut down */
        }
        pthread_mutex_lock(&r->mu);
        if (r->stopping) {
            pthread_mutex_unlock(&r->mu);
            close(fd);
            continue;
        }
        r->active++;
        pthread_mutex_unlock(&r->mu);
        c = xmalloc(sizeof(*c));
        c->r = r;
        c->fd = fd;
        if (pthread_create(&t, NULL, serve, c) != 0) {
            free(c);
            close(fd);
            pthread_mutex_lock(&r->mu);
            r->active--;
            pthread_mutex_unlock(&r->mu);
            continue;
        }
        pthread_detach(t);
    }
}

relay *relay_start(int up_port)
{
    relay *r = xcalloc(1, sizeof(*r));
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    int one = 1;
    r->up_port = up_port;
    r->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(r->lfd >= 0);
    setsockopt(r->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(r->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(r->lfd, (struct sockaddr *)&a, &len), 0);
    assert_int_equal(listen(r->lfd, 128), 0);
    r->port = ntohs(a.sin_port);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    assert_int_equal(pthread_create(&r->acceptor, NULL, acceptor, r), 0);
    return r;
}

int relay_port(const relay *r)
{
    return r->port;
}

void relay_set(relay *r, enum relay_mode mode, int arg)
{
    pthread_mutex_lock(&r->mu);
    r->mode = mode;
    r->arg = arg;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static int get(relay *r, const int *field)
{
    pthread_mutex_lock(&r->mu);
    int v = *field;
    pthread_mutex_unlock(&r->mu);
    return v;
}

int relay_requests(relay *r)
{
    return get(r, &r->requests);
}

int relay_refused(relay *r)
{
    return get(r, &r->refused);
}

int relay_dropped(relay *r)
{
    return get(r, &r->dropped);
}

void relay_stop(relay *r)
{
    struct timespec ts;
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    shutdown(r->lfd, SHUT_RDWR);
    pthread_join(r->acceptor, NULL);
    close(r->lfd);
    /* the connections end with their client (the process under test, stopped before) */
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&r->mu);
    while (r->active > 0)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) != 0)
            break;
    bool idle = r->active == 0;
    pthread_mutex_unlock(&r->mu);
    if (idle) { /* else a connection thread still uses it: left to the process's end */
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
        free(r);
    }
}
