/*
 * server: the data port. libmicrohttpd reads requests; every request is checked in its
 * first handler call and then streamed to the app by cutover's own HTTP/1.1 client
 * (upstream.c, with the answer parser in h1parse.c).
 *
 * Concurrency model, chosen for speed: a few event loops (struct px_loop, a thread each,
 * like nginx's workers; workers.proxy_loops, default one, 0 for one per CPU). A loop owns a
 * libmicrohttpd daemon in external epoll mode and a pool of keep-alive connections to the app, and
 * waits on both with one epoll set: the daemon's own epoll descriptor, the app connections
 * (registered once, edge- triggered), an eventfd for commands and the mailbox of resumes from other
 * threads (exchange.c), and the sockets of clients whose exchange waits (for their hang-up). The
 * daemons all listen on the same port (SO_REUSEPORT), so the kernel spreads connections between
 * loops; each loop keeps its own connections to the app. A request lives on one loop from
 * start to end, so the client side and the app side never need a lock or a cross-thread
 * wake-up: the exchange is handed between them by direct calls (its lifecycle is
 * exchange.c's), and resuming a suspended
 * client connection is a flag that makes the loop run the daemon again, not a system call.
 *
 * Why: the first design (one libmicrohttpd thread, one curl thread) spent its time in
 * system calls: suspend/resume with an inter-thread wake-up each, curl_multi_wakeup, and
 * a poll() over every app connection per turn. With libcurl on the loop, curl's own
 * liveness checks (two poll() per request) and its allocations were the limit. Now a small
 * request costs the client's read and write, one writev and one read on the app's
 * connection, and a share of an epoll_wait; the client connection is not even suspended
 * when the answer arrives within one loop turn (the handler is called again on the next
 * run and only then suspends), and a complete small answer is queued as one buffer so
 * that its header and body leave in one write. A request without a body allocates
 * nothing of ours once a loop is warm (with a handler on its route, the path variables;
 * with a body, the request buffer): exchanges come from the loop's free list with their header
 * lists and answer buffer, the checks' scratch buffers belong to the loop, a short target is copied
 * into the exchange, and a complete small answer is handed to libmicrohttpd without a copy (what is
 * left is libmicrohttpd's response and its header entries).
 *
 * No thread ever blocks on a peer: when the client sends faster than the app reads, or
 * the app answers faster than the client reads, the side with nothing to do is paused
 * (libmicrohttpd's suspend/resume; the upstream side stops reading or writing) and resumed
 * when its bounded buffer moves. The answer is queued on a later handler call, never the
 * first one, because libmicrohttpd 0.9.75 closes the connection after an answer queued in
 * the first call: that is reserved for refusals, which are answered with Connection: close
 * so that nothing pipelined behind them is served.
 *
 * libmicrohttpd times out idle connections only, so the whole-header deadline is kept
 * here: each loop keeps a list of its connections and, every 250 ms, shuts down the
 * socket of any whose request header has not been complete in time.
 */
#include "proxy/http_check.h"
#include "proxy/proxy_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SWEEP_US 250000u
/* A refused connection is not closed at once: a client still sending its body would get a
 * reset that destroys the answer in its receive buffer before it reads it (RFC 9112 §9.6).
 * Its write side is shut after the answer, and what it sends is read and dropped until its
 * EOF, for at most this long and this many bytes, for at most PX_MAX_LINGER connections a
 * loop. */
#define PX_LINGER_US 2000000u
#define PX_LINGER_BYTES (256u * 1024u)
#define PX_MAX_LINGER 256

struct px_linger {
    int fd;
    uint64_t deadline;
    size_t drained;
};

struct px_conn {
    int fd;
    int linger_fd;   /* a duplicate taken when the request was refused, or -1 */
    bool in_request; /* header complete, a request is being served */
    bool killed;
    uint64_t deadline; /* us; for the header of the next request */
    struct px_conn *prev, *next;
};

void px_wake_front(struct proxy_exchange *x)
{
    if (x->suspended && !x->fe_gone) {
        x->suspended = false;
        MHD_resume_connection(x->conn);
        x->loop->resumed = true; /* no wake-up in external mode: the loop runs the daemon */
    }
}

static void suspend_front(struct proxy_exchange *x)
{
    if (x->suspended)
        return;
    x->suspended = true;
    MHD_suspend_connection(x->conn);
}

int px_front_fd(const struct proxy_exchange *x)
{
    return x->pc && !x->fe_gone ? x->pc->fd : -1;
}

void px_front_drop(struct proxy_exchange *x)
{
    if (x->fe_gone)
        return;
    x->phase = PH_GONE;
    if (x->suspended) {
        x->suspended = false;
        MHD_resume_connection(x->conn);
    }
    x->loop->resumed = true; /* the daemon runs, calls the handler, which closes */
}

/* ---- graceful close of refused connections ----------------------------------------------- */

static void linger_end(struct px_loop *l, int i)
{
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, l->lingers[i].fd, NULL);
    close(l->lingers[i].fd);
    l->lingers[i] = l->lingers[--l->nlingers];
}

/* libmicrohttpd has sent the refusal and lets the connection go; fd is our duplicate, so the
 * socket stays open until we close it. */
static void linger_start(struct px_loop *l, int fd)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP,
                             .data.u64 = PX_TAG_LINGER | (uint32_t)fd};
    shutdown(fd, SHUT_WR);
    if (!l->lingers)
        l->lingers = xcalloc(PX_MAX_LINGER, sizeof(*l->lingers));
    if (l->nlingers >= PX_MAX_LINGER || epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        return;
    }
    l->lingers[l->nlingers++] = (struct px_linger){fd, now_us() + PX_LINGER_US, 0};
}

static void linger_event(struct px_loop *l, int fd)
{
    char sink[16384];
    for (int i = 0; i < l->nlingers; i++) {
        if (l->lingers[i].fd != fd)
            continue;
        for (;;) {
            ssize_t n = read(fd, sink, sizeof(sink));
            if (n > 0) {
                l->lingers[i].drained += (size_t)n;
                if (l->lingers[i].drained <= PX_LINGER_BYTES)
                    continue;
            } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                return;
            }
            linger_end(l, i); /* EOF, an error, or enough */
            return;
        }
    }
}

static void linger_sweep(struct px_loop *l, uint64_t now)
{
    for (int i = l->nlingers - 1; i >= 0; i--)
        if (now > l->lingers[i].deadline)
            linger_end(l, i);
}

static void linger_fini(struct px_loop *l)
{
    while (l->nlingers)
        linger_end(l, l->nlingers - 1);
    free(l->lingers);
    l->lingers = NULL;
}

/* ---- connection registry and the header deadline --------------------------------------- */

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct px_loop *l = cls;
    proxy *px = l->px;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct px_conn *pc = xcalloc(1, sizeof(*pc));
        pc->fd = ci ? ci->connect_fd : -1;
        pc->linger_fd = -1;
        pc->deadline = now_us() + (uint64_t)px->cfg->limits.header_timeout_s * 1000000u;
        pc->next = l->conns;
        if (l->conns)
            l->conns->prev = pc;
        l->conns = pc;
        *socket_ctx = pc;
        atomic_fetch_add(&px->nconns, 1);
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && *socket_ctx) {
        struct px_conn *pc = *socket_ctx;
        if (pc->linger_fd >= 0)
            linger_start(l, pc->linger_fd);
        if (pc->prev)
            pc->prev->next = pc->next;
        else
            l->conns = pc->next;
        if (pc->next)
            pc->next->prev = pc->prev;
        free(pc);
        *socket_ctx = NULL;
        atomic_fetch_sub(&px->nconns, 1);
    }
}

/* Accept policy: the connection limit holds across every loop's daemon. */
static enum MHD_Result accept_ok(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    proxy *px = cls;
    (void)addr;
    (void)addrlen;
    return atomic_load(&px->nconns) < (long)px->cfg->limits.max_connections ? MHD_YES : MHD_NO;
}

/* Shuts down the socket of every connection whose request header is late. */
static void sweep(struct px_loop *l, uint64_t now)
{
    for (struct px_conn *pc = l->conns; pc; pc = pc->next) {
        if (!pc->in_request && !pc->killed && pc->fd >= 0 && now > pc->deadline) {
            /* the socket stays open until libmicrohttpd closes it on the EOF this causes,
             * so the descriptor cannot be reused under us */
            shutdown(pc->fd, SHUT_RDWR);
            pc->killed = true;
            log_line(LOG_DEBUG, "header_timeout", "client header not complete in time", NULL);
        }
    }
}

static void conn_mark(proxy *px, struct px_conn *pc, bool in_request)
{
    if (!pc)
        return;
    pc->in_request = in_request;
    if (!in_request) {
        const struct cfg_limits *l = &px->cfg->limits;
        pc->deadline =
            now_us() + ((uint64_t)l->idle_timeout_s + (uint64_t)l->header_timeout_s) * 1000000u;
    }
}

/* ---- first call: checks ---------------------------------------------------------------- */

struct field_walk {
    struct http_check *chk;
    struct buf *conn_tokens; /* Connection values, comma-joined (the loop's scratch) */
    struct buf *xff, *xfp, *xfh;
    const char *host;
    bool has_accept;
    struct buf *list;
    bool too_big;
    cut_err err;
};

static enum MHD_Result walk_check(void *cls, enum MHD_ValueKind kind, const char *key,
                                  size_t key_size, const char *value, size_t value_size)
{
    struct field_walk *w = cls;
    (void)kind;
    if (!value)
        value = "", value_size = 0;
    http_check_field(w->chk, key, key_size, value, value_size);
    if (key_size == 10 && strncasecmp(key, "connection", 10) == 0) {
        if ((w->conn_tokens->len && !buf_puts(w->conn_tokens, ",")) ||
            !buf_append(w->conn_tokens, value, value_size))
            w->too_big = true;
    }
    return MHD_YES;
}

static void join(struct buf *b, const char *v, size_t n, bool *too_big)
{
    if ((b->len && !buf_puts(b, ", ")) || !buf_append(b, v, n))
        *too_big = true;
}

static void add_line(struct field_walk *w, const char *name, size_t nlen, const char *v,
                     size_t vlen)
{
    /* "Name:" (empty value) is left out of the request by upstream.c; "Name;" sends it
     * empty */
    bool ok;
    if (vlen)
        ok = px_hdrs_add(w->list, name, nlen, ": ", 2, v, vlen, &w->err);
    else
        ok = px_hdrs_add(w->list, name, nlen, ";", 1, "", 0, &w->err);
    if (!ok)
        w->too_big = true;
}

static enum MHD_Result walk_build(void *cls, enum MHD_ValueKind kind, const char *key,
                                  size_t key_size, const char *value, size_t value_size)
{
    struct field_walk *w = cls;
    (void)kind;
    if (!value)
        value = "", value_size = 0;
    if (http_is_hop_by_hop(key, key_size))
        return MHD_YES;
    if (w->conn_tokens->len && http_list_has(w->conn_tokens->data, key, key_size))
        return MHD_YES;
    if (key_size == 15 && strncasecmp(key, "x-forwarded-for", 15) == 0) {
        join(w->xff, value, value_size, &w->too_big);
        return MHD_YES;
    }
    if (key_size == 17 && strncasecmp(key, "x-forwarded-proto", 17) == 0) {
        join(w->xfp, value, value_size, &w->too_big);
        return MHD_YES;
    }
    if (key_size == 16 && strncasecmp(key, "x-forwarded-host", 16) == 0) {
        join(w->xfh, value, value_size, &w->too_big);
        return MHD_YES;
    }
    if (key_size == 4 && strncasecmp(key, "host", 4) == 0)
        w->host = value;
    if (key_size == 6 && strncasecmp(key, "accept", 6) == 0)
        w->has_accept = true;
    add_line(w, key, key_size, value, value_size);
    return MHD_YES;
}

static void client_ip(struct MHD_Connection *conn, char *out, size_t n)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, n, "unknown");
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)n);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)n);
}

static enum MHD_Result send_plain(struct MHD_Connection *conn, int status, const char *reason,
                                  bool close)
{
    char body[256];
    int n = snprintf(body, sizeof(body), "%s\n", reason);
    struct MHD_Response *r =
        MHD_create_response_from_buffer((size_t)n, body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "text/plain; charset=utf-8");
    if (close)
        MHD_add_response_header(r, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result refuse(struct proxy_exchange *x, int status, const char *reason)
{
    /* keep the socket for a graceful close (see PX_LINGER_US) */
    if (x->pc && x->pc->fd >= 0 && x->pc->linger_fd < 0)
        x->pc->linger_fd = fcntl(x->pc->fd, F_DUPFD_CLOEXEC, 0);
    x->phase = PH_REFUSED;
    x->sent_status = status;
    x->refused = true;
    px_ex_why(x, "%s", reason);
    /* observers see a refused request with its route too (nothing decoded) */
    if (x->px->nobservers && !x->matched && x->method && x->px->cfg->nroutes)
        x->matched = px_route_match(x->px->cfg, x->method, x->target, false, &x->match);
    if (log_enabled(LOG_DEBUG))
        log_line(LOG_DEBUG, "refused", reason, NULL);
    return send_plain(x->conn, status, reason, true);
}

/* Hands the request to the app; when no connection can be had, the 502 is queued once the
 * body is in (read and dropped meanwhile). */
static void start_upstream(struct proxy_exchange *x)
{
    cut_err err = CUT_ERR_INIT;
    x->phase = PH_BODY;
    if (px_upstream_start(x, &err))
        return;
    log_msgf(LOG_WARN, "upstream_error", "upstream unavailable: %s", err.msg);
    px_ex_why(x, "upstream unavailable: %s", err.msg);
    x->up_done = x->up_failed = true;
    x->up_error_status = 502;
    x->up_reason = "upstream unavailable";
    x->out_eof = true;
    x->resp_ready = true;
}

static enum MHD_Result first_call(struct proxy_exchange *x, const char *method, const char *version)
{
    proxy *px = x->px;
    const struct config *cfg = px->cfg;
    struct http_check chk;
    struct field_walk w;
    enum MHD_Result ret = MHD_NO;
    char ip[INET6_ADDRSTRLEN + 1];

    struct px_loop *l = x->loop;
    memset(&w, 0, sizeof(w));
    err_clear(&w.err);
    w.chk = &chk;
    w.conn_tokens = &l->fw_conn;
    w.xff = &l->fw_xff;
    w.xfp = &l->fw_xfp;
    w.xfh = &l->fw_xfh;
    w.list = &x->req_headers;
    buf_reset(w.conn_tokens);
    buf_reset(w.xff);
    buf_reset(w.xfp);
    buf_reset(w.xfh);
    x->method = method;
    x->head = strcmp(method, "HEAD") == 0;
    conn_mark(px, x->pc, true);

    http_check_begin(&chk, &cfg->limits, method, x->target, version);
    MHD_get_connection_values_n(x->conn, MHD_HEADER_KIND, walk_check, &w);
    int status = http_check_end(&chk);
    if (status) {
        ret = refuse(x, status, chk.reason);
        goto out;
    }
    if (w.too_big) {
        ret = refuse(x, 431, "request header fields too large");
        goto out;
    }

    x->has_body = chk.chunked || chk.ncl > 0;
    x->body_len = chk.chunked ? -1 : (int64_t)chk.content_length;

    MHD_get_connection_values_n(x->conn, MHD_HEADER_KIND, walk_build, &w);
    client_ip(x->conn, ip, sizeof(ip));
    join(w.xff, ip, strlen(ip), &w.too_big);
    join(w.xfp, "http", 4, &w.too_big);
    if (w.host)
        join(w.xfh, w.host, strlen(w.host), &w.too_big);
    if (w.too_big) {
        ret = refuse(x, 431, "request header fields too large");
        goto out;
    }
    add_line(&w, "X-Forwarded-For", 15, w.xff->data, w.xff->len);
    add_line(&w, "X-Forwarded-Proto", 17, w.xfp->data, w.xfp->len);
    if (w.xfh->len)
        add_line(&w, "X-Forwarded-Host", 16, w.xfh->data, w.xfh->len);
    /* fields a client library would add on its own: none of them came from the client
     * (upstream.c leaves both out) */
    if (!px_hdrs_add(w.list, "Expect", 6, ":", 1, "", 0, &w.err) ||
        (!w.has_accept && !px_hdrs_add(w.list, "Accept", 6, ":", 1, "", 0, &w.err))) {
        ret = refuse(x, 431, "request header fields too large");
        goto out;
    }

    ret = MHD_YES;
    if (!px_ex_request(x)) {
        x->phase = PH_PARKED; /* exchange.c calls px_front_request_ready() */
        goto out;
    }
    start_upstream(x);
out:
    return ret;
}

void px_front_request_ready(struct proxy_exchange *x)
{
    if (x->fe_gone)
        return;
    start_upstream(x);
    px_wake_front(x);
}

/* ---- body and answer ---------------------------------------------------------------------- */

static enum MHD_Result take_body(struct proxy_exchange *x, const char *data, size_t *size)
{
    proxy *px = x->px;
    size_t take;

    if (x->body_paused) {
        /* a handler cannot keep up: the client's body waits in its socket until the
         * resume (exchange.c wakes the front) */
        suspend_front(x);
        return MHD_YES;
    }
    if (x->up_done) {
        /* the app already answered (or failed): the rest of the body is read and dropped */
        take = *size;
    } else {
        if (x->in_off == x->in_len)
            x->in_off = x->in_len = 0;
        else if (x->in_off > PX_IN_CAP / 2) {
            memmove(x->in, x->in + x->in_off, x->in_len - x->in_off);
            x->in_len -= x->in_off;
            x->in_off = 0;
        }
        if (!x->in)
            x->in = xmalloc(PX_IN_CAP);
        take = PX_IN_CAP - x->in_len;
        if (take > *size)
            take = *size;
        memcpy(x->in + x->in_len, data, take);
        x->in_len += take;
        if (take && x->in_paused) {
            x->in_paused = false;
            px_upstream_unpause(x);
        }
        if (take < *size)
            suspend_front(x);
    }

    x->in_total += take;
    *size -= take;
    if (take && x->any_state) {
        px_ex_request_body(x, data, take);
        if (x->body_paused)
            suspend_front(x);
    }
    if (px->cfg->limits.max_body_bytes && x->in_total > px->cfg->limits.max_body_bytes) {
        /* the answer can only be queued once the body has ended: drop the rest until then */
        px_upstream_abort(x);
        x->phase = PH_DRAIN;
        x->sent_status = 413;
        x->refused = true;
        *size = 0;
    }
    return MHD_YES;
}

static ssize_t read_answer(void *cls, uint64_t pos, char *out, size_t max)
{
    struct proxy_exchange *x = cls;
    ssize_t n;
    (void)pos;

    size_t avail = x->out.len - x->out_off;
    if (avail) {
        if (avail > max)
            avail = max;
        memcpy(out, x->out.data + x->out_off, avail);
        x->out_off += avail;
        if (x->out_off == x->out.len) {
            buf_reset(&x->out);
            x->out_off = 0;
        }
        n = (ssize_t)avail;
        x->out_total += avail;
        if (x->out_paused) {
            x->out_paused = false;
            px_upstream_unpause(x);
        }
    } else if (x->out_eof) {
        n = x->up_failed ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
        /* libmicrohttpd closes a connection whose answer failed only on its next run, and
         * nothing on its epoll set may come to trigger one: run it again now */
        if (x->up_failed)
            x->loop->resumed = true;
    } else {
        suspend_front(x);
        n = 0;
    }
    return n;
}

static bool no_body_status(int s)
{
    return s == 204 || s == 304 || (s >= 100 && s < 200);
}

static enum MHD_Result queue_answer(struct proxy_exchange *x)
{
    struct MHD_Response *r;
    if (x->up_error_status) {
        x->sent_status = x->up_error_status;
        px_ex_why(x, "%s", x->up_reason);
        return send_plain(x->conn, x->up_error_status, x->up_reason, false);
    }
    if (no_body_status(x->status) || (x->head && x->resp_len < 0)) {
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else if (!x->head && x->out_eof && !x->up_failed && x->out_off == 0 &&
               x->resp_len == (int64_t)x->out.len) {
        /* the whole answer is here: libmicrohttpd sends header and body in one write */
        /* no copy: out stays as it is until the exchange ends, after the answer is sent */
        r = MHD_create_response_from_buffer(x->out.len, x->out.data, MHD_RESPMEM_PERSISTENT);
        x->out_total = x->out.len;
    } else {
        /* libmicrohttpd allocates a block of this size per answer: no larger than needed */
        size_t block = 64 * 1024;
        if (x->resp_len >= 0 && (uint64_t)x->resp_len < block)
            block = x->resp_len > 256 ? (size_t)x->resp_len : 256;
        r = MHD_create_response_from_callback(x->resp_len < 0 ? MHD_SIZE_UNKNOWN
                                                              : (uint64_t)x->resp_len,
                                              block, read_answer, x, NULL);
    }
    if (!r)
        return MHD_NO;
    PX_HDRS_FOR(&x->resp_headers, h)
    {
        char *colon = strchr(h, ':');
        if (!colon)
            continue;
        *colon = 0;
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        MHD_add_response_header(r, h, v);
        *colon = ':';
    }
    x->sent_status = x->status;
    x->phase = PH_ANSWERED;
    enum MHD_Result ret = MHD_queue_response(x->conn, (unsigned)x->status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result body_done(struct proxy_exchange *x)
{
    if (!x->in_eof) {
        x->in_eof = true;
        if (x->in_paused) {
            x->in_paused = false;
            px_upstream_unpause(x);
        }
    }
    if (!x->resp_ready) {
        /* the answer is usually a loop turn away: libmicrohttpd calls again on its next
         * run, and suspending (two epoll_ctl) is only worth it when that turn was not
         * enough */
        if (x->phase == PH_WAIT)
            suspend_front(x);
        x->phase = PH_WAIT;
        return MHD_YES;
    }
    return queue_answer(x);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    struct proxy_exchange *x = *req_cls;
    (void)cls;
    (void)url;
    if (!x)
        return send_plain(conn, 500, "internal error", true);
    switch (x->phase) {
    case PH_NEW:
        return first_call(x, method, version);
    case PH_PARKED:
        /* a hook waits: nothing is read until the resume (px_front_request_ready) */
        suspend_front(x);
        return MHD_YES;
    case PH_GONE:
        return MHD_NO; /* the client left while the exchange waited: close */
    case PH_REFUSED:
    case PH_ANSWERED:
    case PH_DRAIN:
        /* a body nobody will read is thrown away, up to a ceiling: past it the connection
         * is closed, so a client cannot keep one busy forever */
        if (*upload_data_size) {
            x->drained += *upload_data_size;
            *upload_data_size = 0;
            return x->drained > PX_DRAIN_MAX ? MHD_NO : MHD_YES;
        }
        if (x->phase != PH_DRAIN)
            return MHD_YES;
        return refuse(x, 413, "request body larger than the proxy's limit");
    case PH_BODY:
    case PH_WAIT:
        if (*upload_data_size)
            return take_body(x, upload_data, upload_data_size);
        return body_done(x);
    }
    return MHD_NO;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct px_loop *l = cls;
    proxy *px = l->px;
    struct proxy_exchange *x = px_ex_new(l);
    x->conn = conn;
    if (!uri)
        uri = "";
    size_t ulen = strlen(uri);
    if (ulen < sizeof(x->target_small)) {
        memcpy(x->target_small, uri, ulen + 1);
        x->target = x->target_small;
    } else {
        x->target = xstrndup(uri, ulen);
    }
    x->t_start = now_us();
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    x->pc = ci ? ci->socket_context : NULL;
    atomic_fetch_add(&px->inflight, 1);
    return x;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct px_loop *l = cls;
    proxy *px = l->px;
    struct proxy_exchange *x = *req_cls;
    (void)conn;
    if (!x)
        return;
    *req_cls = NULL;
    conn_mark(px, x->pc, false);
    if (px->cfg->access_log && x->phase != PH_NEW)
        px_access_log(x);
    atomic_fetch_sub(&px->inflight, 1);
    px_ex_front_done(x, toe != MHD_REQUEST_TERMINATED_COMPLETED_OK);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    if (!log_enabled(LOG_DEBUG))
        return;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    log_line(LOG_DEBUG, "mhd", msg, NULL);
}

/* ---- public ----------------------------------------------------------------------------- */

static bool parse_upstream(proxy *px, cut_err *err)
{
    const char *u = px->cfg->upstream;
    if (!u || strncmp(u, "http://", 7) != 0) {
        err_set(err, CUT_EINVAL, "proxy", "upstream must be an http:// URL: %s", u ? u : "(none)");
        return false;
    }
    const char *hp = u + 7;
    size_t n = strcspn(hp, "/");
    char *tmp = xstrndup(hp, n);
    bool ok;
    if (strchr(tmp, ':')) {
        ok = parse_host_port(tmp, &px->up_host, &px->up_port);
    } else {
        px->up_host = xstrdup(tmp);
        px->up_port = 80;
        ok = true;
    }
    free(tmp);
    if (!ok)
        err_set(err, CUT_EINVAL, "proxy", "upstream: bad host:port in %s", u);
    return ok;
}

proxy *proxy_new(const struct config *cfg, cut_err *err)
{
    proxy *px = xcalloc(1, sizeof(*px));
    px->cfg = cfg;
    atomic_init(&px->inflight, 0);
    atomic_init(&px->nconns, 0);
    atomic_init(&px->stopping, false);
    for (int i = 0; i < PX_MAX_LOOPS; i++) {
        struct px_loop *l = &px->loops[i];
        pthread_mutex_init(&l->mb.mu, NULL);
        l->mb.closed = true; /* opened by loop_init */
        l->epfd = l->evfd = -1;
    }
    if (!parse_upstream(px, err)) {
        proxy_free(px);
        return NULL;
    }
    return px;
}

int proxy_port(const proxy *px)
{
    return px->port;
}

int proxy_admin_port(const proxy *px)
{
    return px->admin_port;
}

static bool resolve(const char *host, int port, struct sockaddr_storage *ss, cut_err *err)
{
    struct addrinfo hints = {0}, *res = NULL;
    char ps[16];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(ps, sizeof(ps), "%d", port);
    int rc = getaddrinfo(host && *host ? host : NULL, ps, &hints, &res);
    if (rc != 0 || !res) {
        err_set(err, CUT_EINVAL, "proxy", "cannot resolve listen address %s: %s", host ? host : "*",
                gai_strerror(rc));
        return false;
    }
    memset(ss, 0, sizeof(*ss));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return true;
}

/* ---- the event loops ------------------------------------------------------------------ */

static void loop_post(struct px_loop *l, unsigned cmd)
{
    uint64_t one = 1;
    atomic_fetch_or(&l->cmds, cmd);
    if (write(l->evfd, &one, sizeof(one)) < 0) {
        /* the counter cannot overflow here; nothing else can fail */
    }
}

static int ms_until(uint64_t t, uint64_t now)
{
    if (t <= now)
        return 0;
    uint64_t ms = (t - now + 999) / 1000;
    return ms > 1000 ? 1000 : (int)ms;
}

static void *loop_main(void *arg)
{
    struct px_loop *l = arg;
    struct epoll_event ev[64];
    bool run_mhd = true;

    thread_setup("loop", false);
    for (;;) {
        uint64_t now = now_us();
        int timeout = 1000;
        if (run_mhd || l->wake || l->up_kick)
            timeout = 0;
        if (l->up_deadline >= 0)
            timeout = ms_until((uint64_t)l->up_deadline, now) < timeout
                          ? ms_until((uint64_t)l->up_deadline, now)
                          : timeout;
        MHD_UNSIGNED_LONG_LONG mt;
        if (timeout && MHD_get_timeout(l->mhd, &mt) == MHD_YES &&
            mt < (MHD_UNSIGNED_LONG_LONG)timeout)
            timeout = (int)mt;
        if (ms_until(l->next_sweep, now) < timeout)
            timeout = ms_until(l->next_sweep, now);
        uint64_t wt = px_ex_next_timer(l);
        if (wt != UINT64_MAX && ms_until(wt, now) < timeout)
            timeout = ms_until(wt, now);

        int n = epoll_wait(l->epfd, ev, 64, timeout);
        unsigned cmds = 0;
        bool mhd_ready = run_mhd, mail = false;
        for (int i = 0; i < n; i++) {
            uint64_t tag = ev[i].data.u64;
            if (tag == PX_TAG_MHD) {
                mhd_ready = true;
            } else if (tag == PX_TAG_CMD) {
                uint64_t v;
                if (read(l->evfd, &v, sizeof(v)) < 0) {
                    /* nothing pending: another read got it */
                }
                cmds |= atomic_exchange(&l->cmds, 0u);
                mail = true;
            } else if ((tag & ~0xffffffffull) == PX_TAG_CLIENT) {
                px_ex_client_event(l, (uint32_t)tag);
            } else if ((tag & ~0xffffffffull) == PX_TAG_LINGER) {
                linger_event(l, (int)(uint32_t)tag);
            } else {
                px_upstream_event(l, (int)tag, ev[i].events);
            }
        }
        now = now_us();
        px_ex_run(l, mail, now);
        px_upstream_run(l, now);
        if (cmds & LOOP_QUIESCE) {
            MHD_socket ls = MHD_quiesce_daemon(l->mhd);
            if (ls != MHD_INVALID_SOCKET)
                close(ls);
            atomic_store(&l->quiesced, true);
        }
        if (cmds & LOOP_ABORT_ALL) {
            px_ex_abort_waits(l);
            px_upstream_abort_all(l);
        }
        if (cmds & LOOP_STOP)
            break;
        /* libmicrohttpd runs when its epoll set has something, when a connection was
         * resumed (its wake-up makes the set readable), or when a timeout is due */
        if (!mhd_ready && MHD_get_timeout(l->mhd, &mt) == MHD_YES && mt == 0)
            mhd_ready = true;
        run_mhd = false;
        for (int turn = 0; turn < 4 && (mhd_ready || l->resumed); turn++) {
            mhd_ready = false;
            l->resumed = false;
            MHD_run(l->mhd);
            /* requests it read go to the app in this same turn */
            px_upstream_run(l, now_us());
        }
        run_mhd = l->resumed;
        if (now >= l->next_sweep) {
            sweep(l, now);
            linger_sweep(l, now);
            l->next_sweep = now + SWEEP_US;
        }
    }
    /* stop: nothing may stay suspended when the daemon stops */
    px_ex_abort_waits(l);
    px_upstream_abort_all(l);
    MHD_run(l->mhd);
    MHD_stop_daemon(l->mhd);
    l->mhd = NULL;
    linger_fini(l);
    px_upstream_fini(l);
    return NULL;
}

static bool loop_init(proxy *px, struct px_loop *l, int idx, const struct sockaddr *sa,
                      cut_err *err)
{
    const struct cfg_limits *lim = &px->cfg->limits;
    l->px = px;
    l->idx = idx;
    buf_init(&l->fw_conn, 4096);
    buf_init(&l->fw_xff, 8192);
    buf_init(&l->fw_xfp, 1024);
    buf_init(&l->fw_xfh, 4096);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    atomic_init(&l->cmds, 0u);
    atomic_init(&l->quiesced, false);
    if (l->epfd < 0 || l->evfd < 0) {
        err_set(err, CUT_EIO, "proxy", "cannot create an event loop");
        return false;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = PX_TAG_CMD};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->evfd, &ev) != 0) {
        err_set(err, CUT_EIO, "proxy", "cannot create an event loop");
        return false;
    }
    if (!px_upstream_init(l, err))
        return false;
    px_ex_loop_init(l);

    /* libmicrohttpd's per-connection pool must be larger than our header limit so that our
     * 431 (with a reason) is what a too-large header gets; it is also cleared between
     * requests and costs resident memory per idle connection, so no larger than that */
    size_t pool = lim->max_header_bytes + 16 * 1024;
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO;
    if (sa->sa_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    l->mhd = MHD_start_daemon(flags, 0, accept_ok, px, on_request, l, MHD_OPTION_SOCK_ADDR, sa,
                              MHD_OPTION_URI_LOG_CALLBACK, on_uri, l, MHD_OPTION_NOTIFY_COMPLETED,
                              on_completed, l, MHD_OPTION_NOTIFY_CONNECTION, on_connection, l,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)lim->idle_timeout_s,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)lim->max_connections,
                              MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, MHD_OPTION_LISTEN_BACKLOG_SIZE,
                              1024, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
    if (!l->mhd) {
        err_set(err, CUT_EIO, "proxy", "cannot listen on %s:%d",
                px->cfg->listen_host ? px->cfg->listen_host : "*", px->cfg->listen_port);
        return false;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(l->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    l->mhd_epfd = di ? di->epoll_fd : -1;
    ev.data.u64 = PX_TAG_MHD;
    if (l->mhd_epfd < 0 || epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->mhd_epfd, &ev) != 0) {
        err_set(err, CUT_EIO, "proxy", "cannot watch libmicrohttpd's epoll set");
        return false;
    }
    l->next_sweep = now_us() + SWEEP_US;
    return true;
}

/* Frees a loop whose thread never ran (or has returned). */
static void loop_free(struct px_loop *l)
{
    if (l->mhd) {
        MHD_stop_daemon(l->mhd);
        l->mhd = NULL;
    }
    if (l->up_inited)
        px_upstream_fini(l);
    linger_fini(l);
    px_ex_loop_fini(l);
    buf_free(&l->fw_conn);
    buf_free(&l->fw_xff);
    buf_free(&l->fw_xfp);
    buf_free(&l->fw_xfh);
    if (l->epfd > 0)
        close(l->epfd);
    if (l->evfd > 0)
        close(l->evfd);
    l->epfd = l->evfd = -1;
}

static int loop_count(int configured)
{
    long n = configured > 0 ? configured : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    return n > PX_MAX_LOOPS ? PX_MAX_LOOPS : (int)n;
}

bool proxy_start(proxy *px, cut_err *err)
{
    const struct config *cfg = px->cfg;
    struct sockaddr_storage ss;
    bool ok = false;

    if (!resolve(cfg->listen_host, cfg->listen_port, &ss, err))
        goto out;
    px->nloops = loop_count(cfg->workers.proxy_loops);
    for (int i = 0; i < px->nloops; i++) {
        /* the first daemon binds (maybe port 0); the others share its port (SO_REUSEPORT)
         * and the kernel spreads new connections between them */
        if (!loop_init(px, &px->loops[i], i, (struct sockaddr *)&ss, err))
            goto out;
        if (i == 0) {
            const union MHD_DaemonInfo *di =
                MHD_get_daemon_info(px->loops[0].mhd, MHD_DAEMON_INFO_BIND_PORT);
            px->port = di ? di->port : cfg->listen_port;
            if (ss.ss_family == AF_INET6)
                ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)px->port);
            else
                ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)px->port);
        }
    }
    for (int i = 0; i < px->nloops; i++) {
        if (pthread_create(&px->loops[i].thread, NULL, loop_main, &px->loops[i]) != 0) {
            err_set(err, CUT_EIO, "proxy", "cannot start an event loop");
            goto out;
        }
        px->loops[i].started = true;
    }
    if (!px_admin_start(px, err))
        goto out;
    px->running = true;
    log_msgf(LOG_INFO, "listening", "proxy on port %d (%d loops), admin on port %d, upstream %s",
             px->port, px->nloops, px->admin_port, cfg->upstream);
    ok = true;
out:
    if (!ok) {
        px->running = true;
        proxy_shutdown(px, 0);
    }
    return ok;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void proxy_shutdown(proxy *px, int grace_s)
{
    if (!px->running)
        return;
    px->running = false;
    /* stop accepting: each loop closes its listening socket */
    for (int i = 0; i < px->nloops; i++)
        if (px->loops[i].started)
            loop_post(&px->loops[i], LOOP_QUIESCE);
    for (int i = 0; i < px->nloops; i++) {
        uint64_t d = now_us() + 2000000u;
        while (px->loops[i].started && !atomic_load(&px->loops[i].quiesced) && now_us() < d)
            sleep_ms(1);
    }
    uint64_t deadline = now_us() + (uint64_t)(grace_s > 0 ? grace_s : 0) * 1000000u;
    while (atomic_load(&px->inflight) > 0 && now_us() < deadline)
        sleep_ms(20);
    long left = atomic_load(&px->inflight);
    if (left > 0)
        log_msgf(LOG_WARN, "shutdown", "%ld requests still in flight after the grace period", left);
    /* end every transfer, which resumes their connections, and give the loops a moment */
    for (int i = 0; i < px->nloops; i++)
        if (px->loops[i].started)
            loop_post(&px->loops[i], LOOP_ABORT_ALL);
    uint64_t d2 = now_us() + 2000000u;
    while (atomic_load(&px->inflight) > 0 && now_us() < d2)
        sleep_ms(10);
    atomic_store(&px->stopping, true);
    px_admin_stop(px);
    for (int i = 0; i < px->nloops; i++) {
        struct px_loop *l = &px->loops[i];
        if (l->started) {
            loop_post(l, LOOP_STOP);
            pthread_join(l->thread, NULL);
            l->started = false;
        }
        loop_free(l);
    }
    px->nloops = 0;
}

void proxy_free(proxy *px)
{
    if (!px)
        return;
    proxy_shutdown(px, 0);
    for (int i = 0; i < PX_MAX_LOOPS; i++) {
        free(px->loops[i].mb.v);
        pthread_mutex_destroy(&px->loops[i].mb.mu);
    }
    free(px->up_host);
    free(px);
}

/* ---- exchange accessors for hooks ----------------------------------------------------- */

const char *proxy_exchange_request_header(proxy_exchange *x, const char *name)
{
    return MHD_lookup_connection_value(x->conn, MHD_HEADER_KIND, name);
}

const char *proxy_exchange_method(proxy_exchange *x)
{
    return x->method;
}

bool proxy_exchange_request_complete(proxy_exchange *x)
{
    return !x->has_body || x->in_eof;
}

const char *proxy_exchange_target(proxy_exchange *x)
{
    return x->target;
}

static bool line_is(const char *line, const char *name)
{
    size_t n = strlen(name);
    return strncasecmp(line, name, n) == 0 && line[n] == ':';
}

const char *proxy_exchange_response_header(proxy_exchange *x, const char *name)
{
    PX_HDRS_FOR(&x->resp_headers, h)
    if (line_is(h, name)) {
        const char *v = h + strlen(name) + 1;
        while (*v == ' ')
            v++;
        return v;
    }
    return NULL;
}

static bool drop_named(const char *line, void *arg)
{
    return line_is(line, arg);
}

bool proxy_exchange_set_response_header(proxy_exchange *x, const char *name, const char *value)
{
    if (!http_is_token(name, strlen(name)) || (value && !http_value_ok(value, strlen(value))))
        return false;
    cut_err err = CUT_ERR_INIT;
    if (value && x->resp_headers.len + strlen(name) + strlen(value) + 3 > PX_HDRS_MAX)
        return false;
    px_hdrs_filter(&x->resp_headers, drop_named, (void *)name);
    return !value ||
           px_hdrs_add(&x->resp_headers, name, strlen(name), ": ", 2, value, strlen(value), &err);
}

void proxy_exchange_set_status(proxy_exchange *x, int status)
{
    if (status >= 200 && status <= 599)
        x->status = status;
}
