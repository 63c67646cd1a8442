/*
 * upstream: cutover's own HTTP/1.1 client to the app, driven by the loop that also runs
 * the client side (server.c). libcurl is not on this path: its per-transfer cost (two
 * poll() per request, a quarter of the CPU in malloc/free) was what kept the proxy at half
 * of nginx's rate.
 *
 * Connections. Each loop keeps its own pool of keep-alive connections to the app (http://
 * only; server.c refuses any other upstream URL at startup). The app's address is resolved
 * once per loop. A new connection is opened non-blocking with TCP_NODELAY and registered
 * once, edge-triggered, for reading, writing and peer close: no epoll_ctl afterwards, ever.
 * A connection at rest that turns readable was closed by the app (or sent bytes it should
 * not have): it is closed at once, so the pool rarely hands out a dead connection. Reads
 * stop at a short read (the next bytes raise a new edge) except after the app's FIN has
 * been reported, which raises no other: then reading goes on to the EOF.
 *
 * Retry rule. When a reused connection fails (EOF or reset) before any byte of the answer
 * arrived and no byte of the request body was sent, the request is sent again, once, on a
 * fresh connection, provided the app cannot have acted on it already: the method is
 * idempotent (GET, HEAD, OPTIONS, PUT, DELETE), or the request has a non-empty body the
 * app has not received. Otherwise the answer is 502.
 *
 * Request. One buffer per connection holds the request head: the request line with the
 * raw target as the client sent it, the forwarded fields server.c built (hop-by-hop ones
 * removed, X-Forwarded-* added), Host from the upstream URL when the client sent none
 * (HTTP/1.0), and the framing chosen here: Content-Length when the client sent a valid
 * one, else Transfer-Encoding: chunked for a streamed body, nothing for no body. Head,
 * chunk framing and the body bytes the client already sent leave in one writev.
 *
 * Answer. Bytes are read into the connection's buffer (reused between requests) and
 * parsed by h1parse.c without allocation: the head (at most PX_UP_HEAD_MAX bytes and
 * PX_UP_MAX_HEADERS fields, else 502), 1xx answers swallowed, then the body by its
 * framing (none for HEAD/204/304, chunked decoded, Content-Length, or until close). A
 * malformed answer is a 502 when nothing was sent to the client yet, otherwise the client
 * connection is cut. The connection goes back to the pool when the answer is complete,
 * the whole request was sent, nothing follows the answer, and neither side asked to close.
 *
 * Bytes move through the exchange's two bounded buffers as before: the request body from
 * `in` (we wait with in_paused when it is empty), the answer into `out` (we stop reading
 * with out_paused when it is full); each side wakes the other when its buffer moves. The
 * answer's header block is filtered here (hop-by-hop fields and those named in Connection
 * are dropped) and handed to the response hook before the client can see it.
 *
 * Timeouts are checked every PX_UP_SWEEP_US while an exchange is attached: connecting for
 * longer than upstream_connect_timeout_s is a 502; waiting on the app (not on the client)
 * with no progress for upstream_timeout_s is a 504 before the answer's head, a cut
 * connection after it.
 */
#include "proxy/h1parse.h"
#include "proxy/http_check.h"
#include "proxy/proxy_int.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define PX_UP_RBUF (64u * 1024u)      /* read buffer per connection */
#define PX_UP_HEAD_MAX (64u * 1024u)  /* ceiling of an answer's head */
#define PX_UP_MAX_HEADERS 128         /* ceiling of an answer's field count */
#define PX_UP_REQ_HEAD_MAX (1u << 20) /* ceiling of a request head we build */
#define PX_UP_IDLE_MAX 512            /* kept-alive connections at rest per loop */
#define PX_UP_SWEEP_US 100000u

enum rstate { RS_HEAD = 0, RS_BODY, RS_DONE };

struct px_upconn {
    int fd;
    struct px_loop *loop;
    struct proxy_exchange *x; /* NULL while at rest in the pool */
    struct px_upconn *next;   /* idle list */
    struct px_upconn *knext;  /* kick list */
    bool kicked;
    bool connecting;
    bool reused;   /* carried an earlier request */
    bool rd_ready; /* may have bytes to read (edge seen, not drained) */
    bool wr_ready; /* may accept bytes (no EAGAIN since the last EPOLLOUT) */
    bool wr_dead;  /* writing failed: only reading is left */
    bool rdhup;    /* the app closed its side (or reset): reading ends in EOF */
    uint64_t t_connect, t_progress;

    /* request */
    char *head;
    size_t head_len, head_off, head_cap;
    char fr[32]; /* chunk framing waiting to be sent */
    unsigned fr_len, fr_off;
    uint64_t chunk_left; /* body bytes that may go before more framing is needed */
    uint64_t body_sent;
    bool chunk_open, body_end; /* body_end: the body's end (or no body) is composed */

    /* answer */
    char *rbuf;
    size_t rlen, roff;
    size_t pending; /* decoded chunk data at rbuf + roff not yet taken by out */
    enum rstate rs;
    enum h1_framing framing;
    uint64_t body_left;
    struct h1_chunked ck;
    bool got_bytes;
    bool keep;
};

static void up_send(struct px_upconn *uc);
static void up_recv(struct px_upconn *uc);

/* ---- waking the front end ------------------------------------------------------------- */

static void wake_later(struct proxy_exchange *x)
{
    px_ex_wake_later(x);
}

void px_upstream_flush(struct px_loop *l)
{
    while (l->wake) {
        struct proxy_exchange *x = l->wake;
        l->wake = x->wnext;
        x->wnext = NULL;
        px_ex_wake_done(x);
    }
}

/* ---- attached exchanges ----------------------------------------------------------------- */

static void link_active(struct px_loop *l, struct proxy_exchange *x)
{
    x->aprev = NULL;
    x->anext = l->active;
    if (l->active)
        l->active->aprev = x;
    l->active = x;
    if (l->up_deadline < 0)
        l->up_deadline = (int64_t)(now_us() + PX_UP_SWEEP_US);
}

static void unlink_active(struct px_loop *l, struct proxy_exchange *x)
{
    if (x->aprev)
        x->aprev->anext = x->anext;
    else
        l->active = x->anext;
    if (x->anext)
        x->anext->aprev = x->aprev;
    x->aprev = x->anext = NULL;
}

/* ---- connections ------------------------------------------------------------------------ */

static void fd_set_conn(struct px_loop *l, int fd, struct px_upconn *uc)
{
    if ((size_t)fd >= l->nfdmap) {
        size_t n = l->nfdmap ? l->nfdmap : 256;
        while (n <= (size_t)fd)
            n *= 2;
        struct px_upconn **p = xrealloc(l->fdmap, n * sizeof(*p));
        memset(p + l->nfdmap, 0, (n - l->nfdmap) * sizeof(*p));
        l->fdmap = p;
        l->nfdmap = n;
    }
    l->fdmap[fd] = uc;
}

static void conn_close(struct px_upconn *uc)
{
    if (uc->kicked)
        for (struct px_upconn **p = &uc->loop->kick; *p; p = &(*p)->knext)
            if (*p == uc) {
                *p = uc->knext;
                break;
            }
    fd_set_conn(uc->loop, uc->fd, NULL);
    close(uc->fd); /* also leaves the epoll set */
    free(uc->head);
    free(uc->rbuf);
    free(uc);
}

/* A new connection, connecting. NULL with errno set on failure. */
static struct px_upconn *conn_new(struct px_loop *l)
{
    int fd = socket(l->up_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    bool connecting = false;
    if (connect(fd, (struct sockaddr *)&l->up_addr, (socklen_t)l->up_addrlen) != 0) {
        if (errno != EINPROGRESS) {
            int e = errno;
            close(fd);
            errno = e;
            return NULL;
        }
        connecting = true;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                             .data.u64 = (uint64_t)fd};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    struct px_upconn *uc = xcalloc(1, sizeof(*uc));
    uc->fd = fd;
    uc->loop = l;
    uc->connecting = connecting;
    uc->wr_ready = !connecting;
    uc->t_connect = now_us();
    fd_set_conn(l, fd, uc);
    return uc;
}

static void conn_release(struct px_upconn *uc)
{
    struct px_loop *l = uc->loop;
    uc->x = NULL;
    if (!uc->keep || uc->wr_dead || uc->rdhup || uc->rlen != uc->roff ||
        l->nidle >= PX_UP_IDLE_MAX || atomic_load(&l->px->stopping)) {
        conn_close(uc);
        return;
    }
    uc->rlen = uc->roff = 0;
    uc->reused = true;
    uc->next = l->idle;
    l->idle = uc;
    l->nidle++;
}

static void idle_remove(struct px_loop *l, struct px_upconn *uc)
{
    for (struct px_upconn **p = &l->idle; *p; p = &(*p)->next)
        if (*p == uc) {
            *p = uc->next;
            l->nidle--;
            return;
        }
}

/* ---- ending an exchange ----------------------------------------------------------------- */

enum up_end { END_OK = 0, END_ABORT, END_FAIL, END_TIMEOUT, END_BAD_ANSWER };

static void finish(struct proxy_exchange *x, enum up_end how, const char *why)
{
    struct px_upconn *uc = x->uc;

    x->up_done = true;
    if (how != END_OK)
        x->up_failed = true;
    if (!x->headers_done || (x->hold && !x->resp_ready && how != END_OK)) {
        if (how == END_TIMEOUT) {
            x->up_error_status = 504;
            x->up_reason = "upstream timed out";
        } else if (how == END_BAD_ANSWER) {
            x->up_error_status = 502;
            x->up_reason = "upstream answer malformed or too large";
        } else {
            x->up_error_status = 502;
            x->up_reason = "upstream unreachable or failed";
        }
        if (log_enabled(LOG_WARN) && !x->fe_gone && how != END_ABORT)
            log_msgf(LOG_WARN, "upstream_error", "%s: %s", x->up_reason, why ? why : "");
        if (how != END_ABORT)
            px_ex_why(x, "%s: %s", x->up_reason, why ? why : "");
        x->resp_ready = true;
        x->out_eof = true;
    } else if (x->hold && !x->resp_ready) {
        x->out_eof = true;
        px_ex_response_body(x); /* the answer is ready unless a handler waits */
    }
    x->out_eof = true;
    wake_later(x);

    unlink_active(x->loop, x);
    x->uc = NULL;
    if (uc) {
        if (how != END_OK)
            uc->keep = false;
        conn_release(uc);
    }
}

/* ---- the request ------------------------------------------------------------------------ */

static bool head_put(struct px_upconn *uc, const char *s, size_t n)
{
    if (uc->head_len + n > uc->head_cap) {
        size_t cap = uc->head_cap ? uc->head_cap : 2048;
        while (cap < uc->head_len + n)
            cap *= 2;
        if (cap > PX_UP_REQ_HEAD_MAX)
            return false;
        uc->head = xrealloc(uc->head, cap);
        uc->head_cap = cap;
    }
    memcpy(uc->head + uc->head_len, s, n);
    uc->head_len += n;
    return true;
}

#define PUT(s, n)                                                                                  \
    do {                                                                                           \
        if (!head_put(uc, (s), (n)))                                                               \
            return false;                                                                          \
    } while (0)

static bool build_head(struct px_upconn *uc, struct proxy_exchange *x)
{
    proxy *px = x->px;
    bool host = false;
    uc->head_len = uc->head_off = 0;
    PUT(x->method, strlen(x->method));
    PUT(" ", 1);
    PUT(x->target, strlen(x->target));
    PUT(" HTTP/1.1\r\n", 11);
    PX_HDRS_FOR(&x->req_headers, line)
    {
        size_t n = strlen(line);
        const char *colon = memchr(line, ':', n);
        if (!colon) {
            /* "Name;" is how server.c writes a field with an empty value */
            if (n && line[n - 1] == ';') {
                PUT(line, n - 1);
                PUT(":\r\n", 3);
            }
            continue;
        }
        if ((size_t)(colon - line) == n - 1)
            continue; /* "Name:": a field to leave out */
        if (colon - line == 4 && strncasecmp(line, "host", 4) == 0)
            host = true;
        PUT(line, n);
        PUT("\r\n", 2);
    }
    if (!host) {
        const char *hp = px->cfg->upstream + 7;
        PUT("Host: ", 6);
        PUT(hp, strcspn(hp, "/"));
        PUT("\r\n", 2);
    }
    if (x->has_body && x->body_len >= 0) {
        char cl[48];
        int k = snprintf(cl, sizeof(cl), "Content-Length: %lld\r\n\r\n", (long long)x->body_len);
        PUT(cl, (size_t)k);
    } else if (x->has_body) {
        PUT("Transfer-Encoding: chunked\r\n\r\n", 30);
    } else {
        PUT("\r\n", 2);
    }
    return true;
}

static void reset_exchange_state(struct px_upconn *uc)
{
    uc->fr_len = uc->fr_off = 0;
    uc->chunk_left = 0;
    uc->body_sent = 0;
    uc->chunk_open = false;
    uc->rs = RS_HEAD;
    uc->pending = 0;
    uc->got_bytes = false;
    uc->keep = true;
    uc->t_progress = now_us();
}

static bool attach(struct px_loop *l, struct proxy_exchange *x, bool fresh)
{
    struct px_upconn *uc = NULL;
    if (!fresh && l->idle) {
        uc = l->idle;
        l->idle = uc->next;
        l->nidle--;
        uc->next = NULL;
    }
    if (!uc) {
        uc = conn_new(l);
        if (!uc)
            return false;
    }
    reset_exchange_state(uc);
    uc->body_end = !x->has_body;
    if (!build_head(uc, x)) {
        conn_close(uc);
        errno = E2BIG;
        return false;
    }
    uc->x = x;
    x->uc = uc;
    return true;
}

bool px_upstream_start(struct proxy_exchange *x, cut_err *err)
{
    struct px_loop *l = x->loop;
    x->t_up_start = now_us();
    if (!attach(l, x, false)) {
        if (errno == E2BIG)
            err_set(err, CUT_ELIMIT, "upstream", "request head over %u bytes", PX_UP_REQ_HEAD_MAX);
        else
            err_set(err, CUT_EHTTP, "upstream", "cannot connect to the app: %s", strerror(errno));
        return false;
    }
    link_active(l, x);
    /* sent at the end of this loop turn, with the body bytes libmicrohttpd read along
     * with the head: one writev for both */
    struct px_upconn *uc = x->uc;
    if (!uc->connecting && !uc->kicked) {
        uc->kicked = true;
        uc->knext = l->kick;
        l->kick = uc;
        l->up_kick = true;
    }
    return true;
}

static bool idempotent(const char *m)
{
    return !strcmp(m, "GET") || !strcmp(m, "HEAD") || !strcmp(m, "OPTIONS") || !strcmp(m, "PUT") ||
           !strcmp(m, "DELETE");
}

/* The connection failed before the answer began: send again on a fresh one when the
 * retry rule allows, else fail. */
static void conn_failed(struct px_upconn *uc, const char *why)
{
    struct proxy_exchange *x = uc->x;
    bool may_retry = uc->reused && !uc->got_bytes && uc->body_sent == 0 && !x->retried &&
                     (idempotent(x->method) || (x->has_body && x->body_len != 0));
    if (!may_retry) {
        finish(x, uc->got_bytes ? END_BAD_ANSWER : END_FAIL, why);
        return;
    }
    x->retried = true;
    uc->x = NULL;
    x->uc = NULL;
    conn_close(uc);
    if (!attach(x->loop, x, true)) {
        finish(x, END_FAIL, strerror(errno));
        return;
    }
    if (!x->uc->connecting)
        up_send(x->uc);
}

/* Composes the next piece of body framing when the previous one is gone. */
static void next_piece(struct px_upconn *uc, struct proxy_exchange *x, size_t avail)
{
    if (uc->body_end || uc->chunk_left || uc->fr_off < uc->fr_len)
        return;
    if (x->body_len >= 0) {
        uint64_t rest = (uint64_t)x->body_len - uc->body_sent;
        uc->chunk_left = avail < rest ? avail : rest;
        if (rest == 0)
            uc->body_end = true;
        return;
    }
    const char *crlf = uc->chunk_open ? "\r\n" : "";
    int k;
    if (avail) {
        k = snprintf(uc->fr, sizeof(uc->fr), "%s%zx\r\n", crlf, avail);
        uc->chunk_left = avail;
        uc->chunk_open = true;
    } else if (x->in_eof) {
        k = snprintf(uc->fr, sizeof(uc->fr), "%s0\r\n\r\n", crlf);
        uc->body_end = true;
    } else {
        return;
    }
    uc->fr_len = (unsigned)k;
    uc->fr_off = 0;
}

static void up_send(struct px_upconn *uc)
{
    struct proxy_exchange *x = uc->x;
    while (x && uc->wr_ready && !uc->wr_dead && !uc->connecting) {
        size_t avail = x->in_len - x->in_off;
        next_piece(uc, x, avail);
        struct iovec iov[3];
        int n = 0;
        size_t total = 0, data = 0;
        if (uc->head_off < uc->head_len) {
            iov[n].iov_base = uc->head + uc->head_off;
            iov[n++].iov_len = uc->head_len - uc->head_off;
        }
        if (uc->fr_off < uc->fr_len) {
            iov[n].iov_base = uc->fr + uc->fr_off;
            iov[n++].iov_len = uc->fr_len - uc->fr_off;
        }
        data = uc->chunk_left < avail ? (size_t)uc->chunk_left : avail;
        if (data) {
            iov[n].iov_base = x->in + x->in_off;
            iov[n++].iov_len = data;
        }
        if (n == 0) {
            if (!uc->body_end && !x->in_eof)
                x->in_paused = true; /* server.c calls px_upstream_unpause with more */
            return;
        }
        for (int i = 0; i < n; i++)
            total += iov[i].iov_len;
        ssize_t w = writev(uc->fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                uc->wr_ready = false;
                return;
            }
            /* the app closed: read what it may have answered, or fail */
            uc->wr_dead = true;
            uc->rd_ready = true;
            up_recv(uc);
            return;
        }
        uc->t_progress = now_us();
        size_t left = (size_t)w;
        size_t k = uc->head_len - uc->head_off;
        k = k < left ? k : left;
        uc->head_off += k;
        left -= k;
        k = uc->fr_len - uc->fr_off;
        k = k < left ? k : left;
        uc->fr_off += (unsigned)k;
        left -= k;
        if (left) {
            x->in_off += left;
            uc->chunk_left -= left;
            uc->body_sent += left;
            if (x->suspended)
                wake_later(x); /* room for more of the client's body */
        }
        if ((size_t)w < total) {
            uc->wr_ready = false; /* the socket buffer is full: wait for EPOLLOUT */
            return;
        }
    }
}

static bool request_sent(const struct px_upconn *uc)
{
    return uc->head_off == uc->head_len && uc->body_end && uc->fr_off == uc->fr_len &&
           uc->chunk_left == 0;
}

/* ---- the answer ------------------------------------------------------------------------- */

/* Hands answer bytes to the front end; returns how many it took (fewer: out is full). */
static size_t deliver(struct proxy_exchange *x, const char *src, size_t n)
{
    if (x->hold && !x->resp_ready) {
        if (buf_append(&x->out, src, n))
            return n;
        /* larger than the ceiling: give up holding, stream what we have and the rest */
        x->hold = false;
        x->out.max = x->out.len > PX_OUT_CAP ? x->out.len : PX_OUT_CAP;
        x->resp_ready = true;
        wake_later(x);
    }
    if (x->out_off && x->out.len - x->out_off + n > x->out.max - x->out.len) {
        memmove(x->out.data, x->out.data + x->out_off, x->out.len - x->out_off);
        x->out.len -= x->out_off;
        x->out_off = 0;
        x->out.data[x->out.len] = 0;
    }
    size_t room = x->out.max - x->out.len;
    size_t take = n < room ? n : room;
    if (take && !buf_append(&x->out, src, take))
        take = 0;
    if (take < n)
        x->out_paused = true;
    if (take && x->suspended && x->resp_ready)
        wake_later(x);
    return take;
}

static bool named_in_connection(const char *line, void *arg)
{
    const struct proxy_exchange *x = arg;
    return http_list_has(x->conn_tokens, line, strcspn(line, ":"));
}

static void drop_connection_named(struct proxy_exchange *x)
{
    px_hdrs_filter(&x->resp_headers, named_in_connection, x);
}

static void headers_complete(struct proxy_exchange *x)
{
    if (x->conn_tokens[0])
        drop_connection_named(x);
    x->t_up_headers = now_us();
    px_ex_response(x); /* the handlers: pass, hold or wait */
}

/* Copies the final answer's fields into the exchange, filtered. Returns false with err
 * set when the answer's Connection fields name more than conn_tokens holds (the fields
 * they name could not be removed, so the answer is not passed on). */
static bool take_fields(struct proxy_exchange *x, const struct h1_header *h, size_t n, cut_err *err)
{
    for (size_t i = 0; i < n; i++) {
        const char *name = h[i].name;
        size_t nlen = h[i].nlen, vlen = h[i].vlen;
        if (nlen == 14 && strncasecmp(name, "content-length", 14) == 0)
            continue;
        if (nlen == 10 && strncasecmp(name, "connection", 10) == 0) {
            size_t have = strlen(x->conn_tokens);
            if (have + vlen + 2 >= sizeof(x->conn_tokens)) {
                err_set(err, CUT_ELIMIT, "upstream", "Connection fields name too many fields");
                return false;
            }
            if (have)
                x->conn_tokens[have++] = ',';
            memcpy(x->conn_tokens + have, h[i].value, vlen);
            x->conn_tokens[have + vlen] = 0;
            continue;
        }
        if (http_is_hop_by_hop(name, nlen))
            continue;
        if (!px_hdrs_add(&x->resp_headers, name, nlen, ": ", 2, h[i].value, vlen, err))
            return false;
    }
    return true;
}

/* The answer is complete. */
static void answer_done(struct px_upconn *uc)
{
    uc->rs = RS_DONE;
    if (!request_sent(uc))
        uc->keep = false; /* the app answered before the whole request: close */
    finish(uc->x, END_OK, NULL);
}

/* Works through the bytes in rbuf. Returns false when the exchange ended (uc may be
 * gone) or when out is full. */
static bool process(struct px_upconn *uc)
{
    struct proxy_exchange *x = uc->x;
    while (uc->roff < uc->rlen ||
           (uc->rs == RS_BODY && uc->framing == H1_BODY_LENGTH && uc->body_left == 0)) {
        const char *p = uc->rbuf + uc->roff;
        size_t avail = uc->rlen - uc->roff;
        if (uc->rs == RS_HEAD) {
            struct h1_header hdrs[PX_UP_MAX_HEADERS];
            struct h1_response r;
            int rc = h1_parse_response(p, avail, PX_UP_HEAD_MAX, hdrs, PX_UP_MAX_HEADERS, &r);
            if (rc == H1_INCOMPLETE)
                return true;
            if (rc < 0) {
                finish(x, END_BAD_ANSWER,
                       rc == H1_TOO_BIG ? "answer head too large" : "malformed answer head");
                return false;
            }
            uc->roff += (size_t)rc;
            if (r.status < 200) {
                if (r.status == 101) {
                    finish(x, END_BAD_ANSWER, "unexpected 101");
                    return false;
                }
                continue; /* 100 Continue and other interim answers: swallowed */
            }
            x->status = r.status;
            x->resp_len = r.framing == H1_BODY_LENGTH ? r.content_length : -1;
            cut_err err = CUT_ERR_INIT;
            if (!take_fields(x, hdrs, r.nheaders, &err)) {
                finish(x, END_BAD_ANSWER, err.msg);
                return false;
            }
            uc->keep = r.minor >= 1 ? !r.conn_close : (r.conn_keep_alive && !r.conn_close);
            uc->framing = h1_status_has_body(r.status, x->head) ? r.framing : H1_BODY_NONE;
            if (uc->framing == H1_BODY_UNTIL_EOF)
                uc->keep = false;
            uc->body_left = (uint64_t)(r.content_length > 0 ? r.content_length : 0);
            h1_chunked_init(&uc->ck);
            uc->rs = RS_BODY;
            headers_complete(x);
            if (uc->framing == H1_BODY_NONE) {
                answer_done(uc);
                return false;
            }
            continue;
        }
        if (uc->rs != RS_BODY)
            return true;
        switch (uc->framing) {
        case H1_BODY_LENGTH:
        case H1_BODY_UNTIL_EOF: {
            size_t n = avail;
            if (uc->framing == H1_BODY_LENGTH && (uint64_t)n > uc->body_left)
                n = (size_t)uc->body_left;
            size_t t = n ? deliver(x, p, n) : 0;
            uc->roff += t;
            if (uc->framing == H1_BODY_LENGTH) {
                uc->body_left -= t;
                if (uc->body_left == 0) {
                    answer_done(uc);
                    return false;
                }
            }
            if (t < n)
                return false; /* out is full */
            break;
        }
        case H1_BODY_CHUNKED: {
            if (uc->pending) {
                size_t t = deliver(x, p, uc->pending);
                uc->roff += t;
                uc->pending -= t;
                if (uc->pending)
                    return false;
                break;
            }
            size_t off, dlen;
            long used = h1_chunked_step(&uc->ck, p, avail, &off, &dlen);
            if (used < 0) {
                finish(x, END_BAD_ANSWER, "malformed chunked answer");
                return false;
            }
            if (dlen) {
                uc->roff += off;
                uc->pending = dlen;
            } else {
                uc->roff += (size_t)used;
            }
            if (h1_chunked_done(&uc->ck)) {
                answer_done(uc);
                return false;
            }
            break;
        }
        default:
            return true;
        }
    }
    return true;
}

/* The app closed its side (or reset it). */
static void on_eof(struct px_upconn *uc, const char *why)
{
    struct proxy_exchange *x = uc->x;
    if (uc->rs == RS_BODY && uc->framing == H1_BODY_UNTIL_EOF && uc->pending == 0 &&
        uc->roff == uc->rlen && !why) {
        uc->keep = false;
        answer_done(uc);
    } else if (uc->rs == RS_HEAD) {
        conn_failed(uc, why ? why : "connection closed by the app");
    } else {
        finish(x, END_BAD_ANSWER, why ? why : "answer cut short");
    }
}

static void up_recv(struct px_upconn *uc)
{
    while (uc->x) {
        struct proxy_exchange *x = uc->x;
        if (uc->roff < uc->rlen && !process(uc))
            return;
        if (uc->x != x || x->out_paused)
            return;
        if (!uc->rd_ready)
            return;
        if (!uc->rbuf)
            uc->rbuf = xmalloc(PX_UP_RBUF);
        if (uc->roff == uc->rlen) {
            uc->roff = uc->rlen = 0;
        } else if (uc->roff && uc->rlen == PX_UP_RBUF) {
            memmove(uc->rbuf, uc->rbuf + uc->roff, uc->rlen - uc->roff);
            uc->rlen -= uc->roff;
            uc->roff = 0;
        }
        size_t want = PX_UP_RBUF - uc->rlen;
        if (want == 0) {
            /* a head that does not fit: process() has refused it already */
            finish(x, END_BAD_ANSWER, "answer head too large");
            return;
        }
        ssize_t r = recv(uc->fd, uc->rbuf + uc->rlen, want, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                uc->rd_ready = false;
                return;
            }
            on_eof(uc, strerror(errno));
            return;
        }
        if (r == 0) {
            uc->rd_ready = false;
            on_eof(uc, NULL);
            return;
        }
        if ((size_t)r < want && !uc->rdhup)
            uc->rd_ready = false; /* drained for now: the next bytes raise a new edge; not
                                   * so after the app's FIN, which raises none: read on */
        uc->got_bytes = true;
        uc->rlen += (size_t)r;
        uc->t_progress = now_us();
        if (!process(uc))
            return;
    }
}

/* ---- events ----------------------------------------------------------------------------- */

void px_upstream_event(struct px_loop *l, int fd, uint32_t events)
{
    struct px_upconn *uc = fd >= 0 && (size_t)fd < l->nfdmap ? l->fdmap[fd] : NULL;
    if (!uc)
        return;
    if (!uc->x) {
        /* at rest: the app closed it, or sent bytes nobody asked for */
        bool dead = events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);
        if (!dead && (events & EPOLLIN)) {
            /* an edge raised by the last answer may arrive after it was read: look */
            char c;
            dead = !(recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) < 0 &&
                     (errno == EAGAIN || errno == EWOULDBLOCK));
        }
        if (dead) {
            idle_remove(l, uc);
            conn_close(uc);
        }
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        uc->rd_ready = true;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        uc->rdhup = true;
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
        uc->wr_ready = true;
    if (uc->connecting && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr) {
            finish(uc->x, END_FAIL, strerror(soerr));
            return;
        }
        uc->connecting = false;
    }
    if (uc->connecting)
        return;
    /* an attached exchange's front end is alive (px_ex_front_done detaches first), so x
     * outlives anything below; uc may not */
    struct proxy_exchange *x = uc->x;
    if (uc->wr_ready)
        up_send(uc);
    if (x->uc == uc && uc->rd_ready)
        up_recv(uc);
}

void px_upstream_unpause(struct proxy_exchange *x)
{
    struct px_upconn *uc = x->uc;
    if (!uc || uc->connecting)
        return;
    up_send(uc);
    if (x->uc == uc && !x->out_paused)
        up_recv(uc);
}

void px_upstream_abort(struct proxy_exchange *x)
{
    if (x->uc)
        finish(x, END_ABORT, NULL);
}

void px_upstream_abort_all(struct px_loop *l)
{
    while (l->active)
        finish(l->active, END_ABORT, NULL);
    px_upstream_flush(l);
}

void px_upstream_run(struct px_loop *l, uint64_t now)
{
    l->up_kick = false;
    while (l->kick) {
        struct px_upconn *uc = l->kick;
        l->kick = uc->knext;
        uc->kicked = false;
        struct proxy_exchange *x = uc->x;
        if (!x)
            continue;
        up_send(uc);
        if (x->uc == uc && uc->rd_ready)
            up_recv(uc);
    }
    if (l->up_deadline >= 0 && (uint64_t)l->up_deadline <= now) {
        const struct cfg_limits *lim = &l->px->cfg->limits;
        uint64_t cto = (uint64_t)lim->upstream_connect_timeout_s * 1000000u;
        uint64_t uto = (uint64_t)lim->upstream_timeout_s * 1000000u;
        struct proxy_exchange *x = l->active, *nx;
        for (; x; x = nx) {
            nx = x->anext;
            struct px_upconn *uc = x->uc;
            if (!uc)
                continue;
            if (uc->connecting) {
                if (now > uc->t_connect && now - uc->t_connect > cto)
                    finish(x, END_FAIL, "connect timed out");
            } else if (x->in_paused || x->out_paused) {
                uc->t_progress = now; /* waiting on the client, not on the app */
            } else if (now > uc->t_progress && now - uc->t_progress > uto) {
                finish(x, END_TIMEOUT, "no progress");
            }
        }
        l->up_deadline = l->active ? (int64_t)(now + PX_UP_SWEEP_US) : -1;
    }
    px_upstream_flush(l);
}

bool px_upstream_init(struct px_loop *l, cut_err *err)
{
    proxy *px = l->px;
    struct addrinfo hints = {0}, *res = NULL;
    char ps[16];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(ps, sizeof(ps), "%d", px->up_port);
    int rc = getaddrinfo(px->up_host, ps, &hints, &res);
    if (rc != 0 || !res || res->ai_addrlen > sizeof(l->up_addr)) {
        err_set(err, CUT_EINVAL, "upstream", "cannot resolve %s: %s", px->up_host,
                rc ? gai_strerror(rc) : "no address");
        if (res)
            freeaddrinfo(res);
        return false;
    }
    memcpy(&l->up_addr, res->ai_addr, res->ai_addrlen);
    l->up_addrlen = (unsigned)res->ai_addrlen;
    freeaddrinfo(res);
    l->up_deadline = -1;
    l->up_inited = true;
    return true;
}

void px_upstream_fini(struct px_loop *l)
{
    px_upstream_abort_all(l);
    while (l->idle) {
        struct px_upconn *uc = l->idle;
        l->idle = uc->next;
        conn_close(uc);
    }
    l->nidle = 0;
    free(l->fdmap);
    l->fdmap = NULL;
    l->nfdmap = 0;
    l->up_inited = false;
}
