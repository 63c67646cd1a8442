/*
 * proxy_int: what the proxy's own files share (front end, upstream side, admin port,
 * routes, access log). Not for use outside proxy/.
 *
 * The data port is served by a few event loops (`struct px_loop`, one thread each). A loop
 * owns a libmicrohttpd daemon (external epoll mode) and a pool of HTTP/1.1 connections to
 * the app (upstream.c, h1parse.c) and waits on both with one epoll set, so a request's client side
 * and app side run on the same thread: no locks on the exchange, no cross-thread wake-ups.
 *
 * One `struct proxy_exchange` lives per request, touched only by its loop's thread. It is
 * reference counted (plain int): one reference for the front end (dropped when
 * libmicrohttpd reports the request completed), one while a transfer is attached, one
 * while it waits in the loop's resume list. When the last reference goes, the exchange
 * returns to its loop's free list with its buffers (header lists, answer buffer) kept, so
 * a small request allocates nothing of ours once the loop is warm.
 *
 * Header lists (request fields for the app, answer fields for the client) are lines
 * stored back to back in one `struct buf`, each ended by a NUL: "Name: value", "Name;"
 * (a field sent with an empty value) or "Name:" (a field to leave out). PX_HDRS_FOR walks
 * them; px_hdrs_add appends one; px_hdrs_filter drops some in place.
 */
#ifndef CUTOVER_PROXY_INT_H
#define CUTOVER_PROXY_INT_H

#include "proxy/proxy.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>

#define PX_IN_CAP (256u * 1024u)  /* request bytes buffered between client and app */
#define PX_OUT_CAP (256u * 1024u) /* answer bytes buffered between app and client */
#define PX_DRAIN_MAX (1u << 20)   /* body bytes thrown away before the connection is closed */
#define PX_MAX_ADMIN 32

/* PH_DRAIN: the body went over max_body_bytes; the rest is read and dropped, and the 413
 * is queued once the body has ended (libmicrohttpd 0.9.75 refuses an answer queued while
 * a body is still being read). */
enum px_phase { PH_NEW = 0, PH_REFUSED, PH_BODY, PH_WAIT, PH_ANSWERED, PH_DRAIN };

struct px_conn;   /* server.c: per-connection record for the header deadline */
struct px_upconn; /* upstream.c: one connection to the app */
struct px_loop;

struct proxy_exchange {
    int refs;
    proxy *px;
    struct px_loop *loop;
    struct MHD_Connection *conn;
    struct px_conn *pc;

    /* request: set by the first handler call, then read-only */
    enum px_phase phase;
    char *target; /* raw request target: target_small or a new string */
    char target_small[256];
    const char *method; /* borrowed from libmicrohttpd, valid for the request */
    bool head;
    bool has_body;
    int64_t body_len;                           /* -1: chunked */
    struct buf req_headers;                     /* header lines, see above */
    uint64_t t_start, t_up_start, t_up_headers; /* microseconds */
    struct proxy_match match;
    bool matched;
    void *hook_state;

    /* request body, client → app */
    char *in;
    size_t in_off, in_len;
    bool in_eof;
    bool in_paused; /* the upstream side waits for more request bytes */
    uint64_t in_total;
    uint64_t drained; /* body bytes thrown away after a refusal or an early answer */

    /* answer, app → client */
    int status;
    struct buf resp_headers; /* "Name: value" lines, filtered */
    int64_t resp_len;        /* -1 unknown */
    bool headers_done;       /* final headers seen */
    bool resp_ready;         /* the front end may queue the answer */
    bool hold;
    struct buf out; /* ceiling PX_OUT_CAP, or max_json_answer while holding */
    size_t out_off;
    bool out_eof;
    bool out_paused;     /* the upstream side waits for room in out */
    bool up_failed;      /* transfer ended in error */
    int up_error_status; /* 502/504 when the app never answered */
    const char *up_reason;
    bool up_done;
    uint64_t out_total;
    int sent_status;

    bool suspended; /* libmicrohttpd connection suspended by us */
    bool fe_gone;   /* front end completed: conn must not be touched */

    struct px_upconn *uc;                 /* upstream connection while attached */
    bool retried;                         /* already sent again on a fresh connection */
    struct proxy_exchange *aprev, *anext; /* attached exchanges */
    struct proxy_exchange *wnext;         /* resumes batched per loop turn; free list */
    bool wake_queued;
    char conn_tokens[256]; /* names listed in the answer's Connection */
};

struct px_admin_route {
    const char *method;
    char path[128];
    bool prefix;
    proxy_admin_fn fn;
    void *arg;
};

#define PX_MAX_LOOPS 16

/* One event loop: a thread, its epoll set, its libmicrohttpd daemon and its pool of
 * connections to the app. */
struct px_loop {
    proxy *px;
    int idx;
    pthread_t thread;
    bool started;
    int epfd;
    int evfd; /* commands from other threads (shutdown) */
    struct MHD_Daemon *mhd;
    int mhd_epfd;
    bool resumed; /* a connection was resumed: the daemon must run */

    /* commands, set by other threads then evfd written */
    atomic_uint cmds;
    atomic_bool quiesced; /* the loop closed its listening socket */

    /* exchanges at rest, ready for the next request (server.c) */
    struct proxy_exchange *xfree;
    int nxfree;
    /* scratch for a request's checks: Connection tokens, X-Forwarded-* values */
    struct buf fw_conn, fw_xff, fw_xfp, fw_xfh;

    /* connections of this loop, for the whole-header deadline (server.c) */
    struct px_conn *conns;
    uint64_t next_sweep;

    /* upstream side (upstream.c) */
    bool up_inited;
    bool up_kick;                  /* px_upstream_run has work this turn */
    int64_t up_deadline;           /* us, -1: no timer */
    struct proxy_exchange *active; /* exchanges attached to a connection */
    struct proxy_exchange *wake;   /* fronts to resume after this turn */
    struct px_upconn **fdmap;      /* socket → its connection */
    size_t nfdmap;
    struct px_upconn *idle; /* kept-alive connections at rest, most recent first */
    struct px_upconn *kick; /* requests to send at the end of this turn */
    int nidle;
    struct sockaddr_storage up_addr;
    unsigned up_addrlen;
};

enum px_loop_cmd { LOOP_QUIESCE = 1, LOOP_ABORT_ALL = 2, LOOP_STOP = 4 };

struct proxy {
    const struct config *cfg;
    struct proxy_hooks hooks;
    bool have_hooks;
    struct MHD_Daemon *admin;
    int port, admin_port;
    char *up_host;
    int up_port;
    size_t up_base_len;

    struct px_loop loops[PX_MAX_LOOPS];
    int nloops;

    atomic_long inflight;
    atomic_long nconns; /* client connections, every loop */
    atomic_bool stopping;
    bool running;

    /* background pool (defer.c) */
    struct px_defer *defer;

    struct px_admin_route admin_routes[PX_MAX_ADMIN];
    size_t nadmin;
    struct px_admin_state *admin_state; /* admin.c: access check, from start to stop */
};

/* exchange references */
void px_ex_ref(struct proxy_exchange *x);
void px_ex_unref(struct proxy_exchange *x);
/* Resumes the client connection if we suspended it and the front end still owns it. */
void px_wake_front(struct proxy_exchange *x);

/* header lists (server.c) */
#define PX_HDRS_FOR(h, line)                                                                       \
    for (char *line = (h)->data; line && line < (h)->data + (h)->len; line += strlen(line) + 1)
/* Appends the line name sep value. */
void px_hdrs_add(struct buf *h, const char *name, size_t nlen, const char *sep, size_t slen,
                 const char *value, size_t vlen);
/* Drops, in place, every line for which drop() is true. */
void px_hdrs_filter(struct buf *h, bool (*drop)(const char *line, void *arg), void *arg);

/* upstream.c: everything runs on the exchange's loop thread */
bool px_upstream_init(struct px_loop *l, cut_err *err);
void px_upstream_fini(struct px_loop *l);
/* Sends x's request to the app on a pooled or new connection. */
bool px_upstream_start(struct proxy_exchange *x, cut_err *err);
/* The front end moved a buffer: lets a paused transfer go on. */
void px_upstream_unpause(struct proxy_exchange *x);
/* Ends x's transfer, if any. */
void px_upstream_abort(struct proxy_exchange *x);
/* Aborts every transfer of the loop (shutdown). */
void px_upstream_abort_all(struct px_loop *l);
/* An epoll event on an upstream socket. */
void px_upstream_event(struct px_loop *l, int fd, uint32_t events);
/* Runs the upstream timeouts that are due, resumes fronts. */
void px_upstream_run(struct px_loop *l, uint64_t now);
/* Resumes the fronts queued by the upstream side. */
void px_upstream_flush(struct px_loop *l);

/* route.c */
bool px_route_match(const struct config *cfg, const char *method, const char *target,
                    struct proxy_match *m);
void px_match_clear(struct proxy_match *m);

/* admin.c */
bool px_admin_start(proxy *px, cut_err *err);
void px_admin_stop(proxy *px);

/* defer.c */
struct px_defer *px_defer_new(int threads, size_t queue_max);
void px_defer_free(struct px_defer *d); /* runs what is queued, then joins */

/* access_log.c */
void px_access_log(const struct proxy_exchange *x);

#endif
