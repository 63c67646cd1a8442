/*
 * proxy_int: what the proxy's own files share (front end, upstream side, exchange
 * lifecycle, admin port, routes, access log). Not for use outside proxy/.
 *
 * The data port is served by a few event loops (`struct px_loop`, one thread each;
 * workers.proxy_loops, default 1). A loop owns a libmicrohttpd daemon (external epoll mode)
 * and a pool of HTTP/1.1 connections to the app (upstream.c, h1parse.c) and waits on both
 * with one epoll set, so a request's client side and app side run on the same thread: no
 * locks on the exchange. The only thing other threads hand a loop is a message in its
 * mailbox (a resume, a command), woken by its eventfd.
 *
 * One `struct proxy_exchange` lives per request, touched only by its loop's thread. Its
 * life has one owner, exchange.c, which holds the state diagram: the front end (server.c)
 * and the upstream side (upstream.c) report what happened to it (request checked, answer
 * head arrived, front end completed...) and exchange.c decides what comes next, runs the
 * hooks, parks and resumes, and recycles the exchange once the front end is done with it,
 * no transfer is attached and no wake-up is queued. A recycled exchange returns to its
 * loop's free list with its buffers (header lists, answer buffer) kept, so a small request
 * allocates nothing of ours once the loop is warm.
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

#define PX_HDRS_MAX (1u << 20) /* ceiling of a header list we build */

/* The front end's phase (server.c). PH_DRAIN: the body went over max_body_bytes; the rest
 * is read and dropped, and the 413 is queued once the body has ended (libmicrohttpd 0.9.75
 * refuses an answer queued while a body is still being read). PH_PARKED: the request
 * waits for a hook before it goes to the app. PH_GONE: the client left while the exchange
 * waited; the next handler call closes the connection. */
enum px_phase {
    PH_NEW = 0,
    PH_REFUSED,
    PH_PARKED,
    PH_BODY,
    PH_WAIT,
    PH_ANSWERED,
    PH_DRAIN,
    PH_GONE
};

/* Which hook a wait belongs to (exchange.c). */
enum px_hook { HK_NONE = 0, HK_REQUEST, HK_BODY, HK_RESPONSE, HK_RESPONSE_BODY };

struct px_conn;   /* server.c: per-connection record for the header deadline */
struct px_upconn; /* upstream.c: one connection to the app */
struct px_loop;

/* The handlers of one route kind. */
struct px_kind {
    struct proxy_handler h[PROXY_MAX_HANDLERS];
    int n;
};

struct proxy_exchange {
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

    /* handlers (exchange.c): those of the matched route's kind, each with its state */
    const struct px_kind *kind;
    void *hstate[PROXY_MAX_HANDLERS];
    bool any_state;
    unsigned body_off; /* bit i: handler i takes no more body bytes */
    unsigned held;     /* bit i: handler i asked PROXY_HOLD */

    /* waits (exchange.c) */
    uint32_t slot; /* 1 + index in the loop's slot table; 0: none yet */
    enum px_hook in_hook;
    int in_hook_i;
    uint64_t prep_gen; /* the ticket the running hook took, 0: none */
    uint64_t prep_deadline;
    enum px_hook ans_wait; /* HK_REQUEST/HK_RESPONSE/HK_RESPONSE_BODY or HK_NONE */
    int ans_i;
    uint64_t ans_gen, ans_deadline;
    unsigned body_paused; /* bit i: handler i paused the body */
    uint64_t body_gen[PROXY_MAX_HANDLERS], body_deadline[PROXY_MAX_HANDLERS];
    bool waiting_linked; /* on the loop's list of exchanges with a wait */
    struct proxy_exchange *wprev, *wlnext;
    bool client_watched; /* client socket in the loop's epoll set (for its hang-up) */
    bool client_gone;
    bool refused;
    const char *why; /* the proxy's reason when it answered itself */
    char why_buf[160];

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

/* A resume posted by another thread: the slot of the exchange and the wait's generation. */
struct px_msg {
    uint32_t slot;
    uint64_t gen;
};

/* A loop's mailbox: messages from other threads, guarded by mu; the loop swaps the array
 * out under the lock and works through it without it. Posting into an empty box writes the
 * loop's eventfd. */
struct px_mailbox {
    pthread_mutex_t mu;
    struct px_msg *v;
    size_t n, cap;
    bool closed; /* the loop has stopped: posts are dropped */
};

/* The loop's table of exchanges that may be waited on: a ticket names a slot. */
struct px_slot {
    struct proxy_exchange *x; /* NULL: free */
    uint32_t next_free;       /* 1 + index, 0: none */
};

/* One event loop: a thread, its epoll set, its libmicrohttpd daemon and its pool of
 * connections to the app. */
struct px_loop {
    proxy *px;
    int idx;
    pthread_t thread;
    bool started;
    int epfd;
    int evfd; /* commands and mailbox from other threads */
    struct MHD_Daemon *mhd;
    int mhd_epfd;
    bool resumed; /* a connection was resumed: the daemon must run */

    /* commands, set by other threads then evfd written */
    atomic_uint cmds;
    atomic_bool quiesced; /* the loop closed its listening socket */

    /* exchanges at rest, ready for the next request (exchange.c) */
    struct proxy_exchange *xfree;
    int nxfree;
    /* scratch for a request's checks: Connection tokens, X-Forwarded-* values */
    struct buf fw_conn, fw_xff, fw_xfp, fw_xfh;

    /* connections of this loop, for the whole-header deadline (server.c) */
    struct px_conn *conns;
    uint64_t next_sweep;
    /* refused connections closing gracefully: their answer sent, the write side shut, what
     * the client still sends read and thrown away until its EOF or a deadline (server.c) */
    struct px_linger *lingers;
    int nlingers;

    /* waits (exchange.c) */
    struct px_mailbox mb;
    struct px_msg *mb_spare; /* the loop's side of the swap */
    size_t mb_spare_cap;
    struct px_slot *slots;
    uint32_t nslots, slot_free;
    uint64_t next_gen;
    struct proxy_exchange *waiting; /* exchanges with a wait, for their deadlines */
    uint64_t next_wait_sweep;
    atomic_uint_fast64_t c_waits, c_resumed, c_timed_out, c_stale, c_gone;

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

/* epoll tags of a loop: the low 32 bits carry an upstream socket or a slot */
#define PX_TAG_MHD (1ull << 32)
#define PX_TAG_CMD (2ull << 32)
#define PX_TAG_CLIENT (3ull << 32)
#define PX_TAG_LINGER (4ull << 32)

struct proxy {
    const struct config *cfg;
    struct px_kind kinds[4]; /* by enum route_kind */
    bool have_handlers;
    struct proxy_observer observers[PROXY_MAX_OBSERVERS];
    int nobservers;
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

    struct px_admin_route admin_routes[PX_MAX_ADMIN];
    size_t nadmin;
    struct px_admin_state *admin_state; /* admin.c: access check, from start to stop */
};

/* ---- exchange.c: the lifecycle --------------------------------------------------------- */

/* A new exchange for a request on l (from the free list when one is there). */
struct proxy_exchange *px_ex_new(struct px_loop *l);
/* Frees l's resting exchanges, slot table and mailbox (the loop has stopped). */
void px_ex_loop_fini(struct px_loop *l);
void px_ex_loop_init(struct px_loop *l);
/* The request passed its checks: matches the route, runs on_start and on_request. Returns
 * true when the request may go to the app now, false when it waits (PH_PARKED; exchange.c
 * calls px_front_request_ready() after the resume). */
bool px_ex_request(struct proxy_exchange *x);
/* Body bytes taken from the client, for the handlers. */
void px_ex_request_body(struct proxy_exchange *x, const char *data, size_t n);
/* The app's answer head is in (upstream.c). Decides pass, hold or wait. */
void px_ex_response(struct proxy_exchange *x);
/* The held answer is complete (upstream.c). Runs on_response_body; the answer is ready
 * unless a handler waits. */
void px_ex_response_body(struct proxy_exchange *x);
/* libmicrohttpd is done with the request (server.c; client_left: it ended early): ends
 * its waits, detaches the transfer, and recycles the exchange when nothing else holds
 * it. */
void px_ex_front_done(struct proxy_exchange *x, bool client_left);
/* The wake-up queued for x ran (upstream.c). */
void px_ex_wake_done(struct proxy_exchange *x);
/* Queues a wake-up of x's front end for the end of this loop turn. */
void px_ex_wake_later(struct proxy_exchange *x);
/* Works through the mailbox (mail: the eventfd fired) and the waits' deadlines. */
void px_ex_run(struct px_loop *l, bool mail, uint64_t now);
/* When px_ex_run next has a deadline to check (UINT64_MAX: none). */
uint64_t px_ex_next_timer(struct px_loop *l);
/* The client socket watched for a waiting exchange hung up. */
void px_ex_client_event(struct px_loop *l, uint32_t slot);
/* Ends every wait of the loop and drops those exchanges' clients (shutdown). */
void px_ex_abort_waits(struct px_loop *l);
/* Sets x->why (the proxy's reason for answering itself). */
void px_ex_why(struct proxy_exchange *x, const char *fmt, ...) CUT_PRINTF(2, 3);

/* ---- server.c: the front end ---------------------------------------------------------- */

/* Resumes the client connection if we suspended it and the front end still owns it. */
void px_wake_front(struct proxy_exchange *x);
/* A parked request may go to the app now (after its hooks' resume). */
void px_front_request_ready(struct proxy_exchange *x);
/* The client left while x waited: close the connection on the next handler call. */
void px_front_drop(struct proxy_exchange *x);
/* The client's socket, -1 when unknown. */
int px_front_fd(const struct proxy_exchange *x);

/* header lists (hdrs.c) */
#define PX_HDRS_FOR(h, line)                                                                       \
    for (char *line = (h)->data; line && line < (h)->data + (h)->len; line += strlen(line) + 1)
/* Appends the line name sep value. Returns false with err set when the list would pass
 * its ceiling (PX_HDRS_MAX); the list is then unchanged. */
bool px_hdrs_add(struct buf *h, const char *name, size_t nlen, const char *sep, size_t slen,
                 const char *value, size_t vlen, cut_err *err) CUT_MUST_USE;
/* Drops, in place, every line for which drop() is true. */
void px_hdrs_filter(struct buf *h, bool (*drop)(const char *line, void *arg), void *arg);

/* ---- upstream.c: everything runs on the exchange's loop thread ------------------------- */

bool px_upstream_init(struct px_loop *l, cut_err *err) CUT_MUST_USE;
void px_upstream_fini(struct px_loop *l);
/* Sends x's request to the app on a pooled or new connection. Returns false with err set
 * when no connection could be had or the request head could not be built (x is then not
 * attached; the caller answers 502). */
bool px_upstream_start(struct proxy_exchange *x, cut_err *err) CUT_MUST_USE;
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

/* route.c: with want_vars false, only m->route is set (nothing allocated) */
bool px_route_match(const struct config *cfg, const char *method, const char *target,
                    bool want_vars, struct proxy_match *m);
void px_match_clear(struct proxy_match *m);

/* admin.c */
bool px_admin_start(proxy *px, cut_err *err);
void px_admin_stop(proxy *px);

/* access_log.c */
void px_access_log(const struct proxy_exchange *x);

#endif
