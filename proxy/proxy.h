/*
 * proxy: the data-port reverse proxy (libmicrohttpd in front, cutover's own HTTP/1.1
 * client to the app behind) and the admin port. This header is what the migration
 * features plug into.
 *
 *   - route match: every request whose method and raw path match a configured route gets a
 *     `struct proxy_match` (the route and its path variables, percent-decoded one segment at
 *     a time from the raw path).
 *   - handlers: a feature registers a `struct proxy_handler` for a route kind (upload,
 *     signed URL, delete); a kind takes up to PROXY_MAX_HANDLERS of them, each with its own
 *     per-request state, called in the order they were added. A handler sees the request
 *     before it goes to the app, its body bytes as they stream, and the app's answer before
 *     the client does (it may edit the headers and status, or hold the whole answer up to
 *     limits.max_json_answer to rewrite its body).
 *   - waiting: a hook that needs work done elsewhere (a database call, a spool write) takes a
 *     ticket with proxy_exchange_wait(), hands it to its worker and answers PROXY_WAIT (or
 *     PROXY_BODY_PAUSE from the body hook). The exchange is parked, its loop goes on with
 *     other requests, and when any thread calls proxy_exchange_resume(ticket) the same hook
 *     is called again on the exchange's loop (or, for a body pause, the body flows again).
 *     A wait that outlives its deadline ends as if the hook had answered PROXY_PASS: the
 *     app's answer goes to the client unchanged (a body pause: the handler gets no more of
 *     this body). A resume that comes late, twice, or after the exchange ended does nothing.
 *   - observers: see every exchange once, when it ends (matched or not, refused, 413,
 *     502/504, client gone) with its route, status, bytes and durations; for metrics and
 *     the rollback window.
 *
 * Every hook runs on the request's event loop thread and must not block. Requests matching
 * no route never reach a handler; with no handler and no observer registered, nothing of
 * this costs anything on the pass-through path, and an observer costs one call per
 * exchange.
 */
#ifndef CUTOVER_PROXY_H
#define CUTOVER_PROXY_H

#include "core/config.h"
#include "core/core.h"

typedef struct proxy proxy;
/* One request/answer in flight. Borrowed: valid only during the hook call that receives
 * it (never keep it; keep a ticket). */
typedef struct proxy_exchange proxy_exchange;

#define PROXY_MAX_VARS CFG_MAX_PATH_VARS
#define PROXY_MAX_HANDLERS 4  /* per route kind */
#define PROXY_MAX_OBSERVERS 4 /* per proxy */
/* The longest a wait may last (proxy_exchange_wait clamps to it). */
#define PROXY_WAIT_MAX_MS 600000u

/* A route matched on the raw path. Strings are owned by the exchange, valid until on_done
 * returns. */
struct proxy_match {
    const struct cfg_route *route; /* borrowed from the configuration */
    size_t nvars;
    const char *var_names[PROXY_MAX_VARS];
    char *var_values[PROXY_MAX_VARS]; /* percent-decoded */
};

enum proxy_answer_mode {
    PROXY_PASS = 0, /* go on: stream the app's answer to the client as it comes */
    PROXY_HOLD = 1, /* on_response only: hold the whole answer for on_response_body */
    PROXY_WAIT = 2, /* park the exchange until proxy_exchange_resume() (needs a ticket) */
};

enum proxy_body_result {
    PROXY_BODY_OK = 0,    /* bytes taken, send more */
    PROXY_BODY_FAIL = 1,  /* this handler gives up on this request: no more body calls for
                           * it; the request still goes to the app untouched */
    PROXY_BODY_PAUSE = 2, /* bytes taken, send no more until proxy_exchange_resume() (needs
                           * a ticket): the client's body is not read meanwhile */
};

/* A handle on a parked exchange that any thread may keep: a value, copied freely. It names
 * the exchange's loop, its slot and the wait's generation, so that a resume that arrives
 * after the wait ended (timed out, the client left, resumed already) is recognised and
 * ignored. Valid until proxy_free(). */
typedef struct proxy_ticket {
    proxy *px;
    uint32_t loop;
    uint32_t slot;
    uint64_t gen; /* 0: no ticket */
} proxy_ticket;

/* What happened, for on_done. */
struct proxy_outcome {
    int status;              /* status sent to the client (0: none, connection dropped) */
    uint64_t request_bytes;  /* body bytes read from the client */
    uint64_t response_bytes; /* body bytes sent to the client */
    bool request_complete;   /* the whole request body reached the app */
    bool upstream_ok;        /* the app answered and its whole answer was read */
};

/* A feature's hooks for one route kind. Every member but the functions' `arg` may be NULL.
 * `state` is what on_start returned for this handler (NULL: this handler sits this request
 * out). Each runs on the request's loop thread. */
struct proxy_handler {
    void *arg; /* borrowed, must outlive the proxy */
    /* After validation, before anything is sent to the app. Returns a new per-request state
     * (owned by the handler, released in on_done) or NULL to ignore the request. */
    void *(*on_start)(void *arg, proxy_exchange *x, const struct proxy_match *m);
    /* Right after every handler's on_start, before the request goes to the app: PROXY_PASS
     * or PROXY_WAIT (the request waits for the resume; then on_request is called again). */
    enum proxy_answer_mode (*on_request)(void *arg, void *state, proxy_exchange *x);
    /* Body bytes in order as they stream to the app; data is borrowed for the call. */
    enum proxy_body_result (*on_request_body)(void *arg, void *state, proxy_exchange *x,
                                              const void *data, size_t n);
    /* The app's final status and headers, before the client sees them. Headers and status
     * may be changed (proxy_exchange_set_*). PROXY_HOLD holds the answer (up to
     * max_json_answer) for on_response_body; PROXY_WAIT parks until the resume, then
     * on_response is called again. */
    enum proxy_answer_mode (*on_response)(void *arg, void *state, proxy_exchange *x, int status);
    /* Only after this handler's PROXY_HOLD: the whole answer in body (ceiling
     * max_json_answer). It may replace body's contents (keep the ceiling) and headers; it
     * returns PROXY_PASS, or PROXY_WAIT to be called again after the resume. Not called
     * when the answer was larger than the ceiling: it then streams unchanged. */
    enum proxy_answer_mode (*on_response_body)(void *arg, void *state, proxy_exchange *x,
                                               struct buf *body);
    /* Once, when the exchange is over (answered, refused, dropped, or the client left while
     * it waited). A worker may still hold a ticket: its resume will be ignored, but any
     * state shared with it is the feature's to keep alive until both are done. */
    void (*on_done)(void *arg, void *state, const struct proxy_outcome *o);
};

/* One exchange as an observer sees it when it ends. Borrowed for the call. */
struct proxy_record {
    const struct cfg_route *route; /* matched route or NULL */
    const char *method;            /* "" when the request line never completed */
    int status;                    /* sent to the client; 0: none (client gone, cut) */
    uint64_t request_bytes;        /* body bytes read from the client */
    uint64_t response_bytes;       /* body bytes sent to the client */
    uint64_t duration_us;          /* first byte of the request to the end */
    uint64_t upstream_us;          /* request sent to the app's answer head; 0: none */
    bool refused;                  /* answered by the proxy: 400, 413, 431... */
    bool upstream_failed;          /* 502/504, or the answer was cut */
    bool client_gone;              /* the client left before the answer was complete */
    const char *why;               /* the proxy's reason when it answered itself, or NULL */
};

struct proxy_observer {
    void *arg; /* borrowed, must outlive the proxy */
    /* Request's loop thread, once per exchange, after the handlers' on_done. */
    void (*on_exchange)(void *arg, const struct proxy_record *r);
};

/* Counters, summed over the loops (proxy_counters()). */
struct proxy_counters {
    uint64_t waits;              /* waits started (PROXY_WAIT, PROXY_BODY_PAUSE) */
    uint64_t resumed;            /* waits ended by proxy_exchange_resume() */
    uint64_t timed_out;          /* waits that reached their deadline */
    uint64_t stale_resumes;      /* resumes that found no such wait (late or duplicate) */
    uint64_t gone_while_waiting; /* exchanges whose client left while they waited */
};

/* Creates the proxy for cfg (borrowed: it must outlive the proxy). Nothing is bound yet.
 * Returns a new proxy (proxy_free()) or NULL with err set. */
proxy *proxy_new(const struct config *cfg, cut_err *err) CUT_MUST_USE;
/* Registers a handler (copied) for every route of that kind. Call before proxy_start().
 * Returns false with err set when the kind is unknown or has PROXY_MAX_HANDLERS already. */
bool proxy_add_handler(proxy *px, enum route_kind kind, const struct proxy_handler *h,
                       cut_err *err) CUT_MUST_USE;
/* Registers an observer (copied). Call before proxy_start(). Returns false with err set
 * when PROXY_MAX_OBSERVERS are there already. */
bool proxy_add_observer(proxy *px, const struct proxy_observer *o, cut_err *err) CUT_MUST_USE;
/* Binds the data and admin ports and starts serving. Returns false with err set. */
bool proxy_start(proxy *px, cut_err *err) CUT_MUST_USE;
/* The data port actually bound (useful with port 0). */
int proxy_port(const proxy *px);
int proxy_admin_port(const proxy *px);
/* Stops accepting, lets in-flight requests finish for up to grace_s seconds, then closes
 * everything. Safe to call once after proxy_start(). Resumes posted afterwards are
 * ignored. */
void proxy_shutdown(proxy *px, int grace_s);
/* Frees everything (NULL accepted). Calls proxy_shutdown(px, 0) if still running. No
 * thread may call proxy_exchange_resume() with this proxy's tickets from then on. */
void proxy_free(proxy *px);
/* Fills c with the counters so far (any thread). */
void proxy_counters(proxy *px, struct proxy_counters *c);

/* ---- inside hooks --------------------------------------------------------------------- */

/* Request header value (first of its name, case-insensitive) or NULL; borrowed, valid
 * during the hook call. */
const char *proxy_exchange_request_header(proxy_exchange *x, const char *name);
/* The value of a route's request-side source (header, query parameter, path variable of the
 * match m) for this exchange: a new string (free()), or NULL when absent or of another kind. */
char *proxy_request_value(proxy_exchange *x, const struct proxy_match *m,
                          const struct cfg_source *src);
const char *proxy_exchange_method(proxy_exchange *x);
/* The raw request target as the client sent it (path and query). */
const char *proxy_exchange_target(proxy_exchange *x);
/* True once the whole request body has been read from the client (at once for a request
 * without a body). An app may answer before that; a feature that needs every byte checks. */
bool proxy_exchange_request_complete(proxy_exchange *x);
/* Response header (first of its name) or NULL; only in on_response/on_response_body. */
const char *proxy_exchange_response_header(proxy_exchange *x, const char *name);
/* Replaces every header of that name with one (value NULL: removes them). Only in
 * on_response/on_response_body. Returns false, nothing changed, when the name is not a
 * token, the value holds a control character, or the answer's header list would pass its
 * ceiling (1 MiB). */
bool proxy_exchange_set_response_header(proxy_exchange *x, const char *name, const char *value);
/* Replaces the status sent to the client. Only in on_response/on_response_body. */
void proxy_exchange_set_status(proxy_exchange *x, int status);

/* ---- waiting ----------------------------------------------------------------------------- */

/* Only inside a hook, which must then answer PROXY_WAIT (on_request, on_response,
 * on_response_body) or PROXY_BODY_PAUSE (on_request_body): returns the ticket that ends
 * this wait. timeout_ms (clamped to 1..PROXY_WAIT_MAX_MS) is the wait's deadline: past
 * it the exchange goes on as if the hook had answered PROXY_PASS (a body pause: as if
 * PROXY_BODY_FAIL), which is logged and counted. A hook that takes a ticket and then
 * answers anything else cancels the wait (a later resume is ignored). */
proxy_ticket proxy_exchange_wait(proxy_exchange *x, unsigned timeout_ms);
/* Any thread: ends the wait t names. Posted to the exchange's loop, which calls the hook
 * that waited again (PROXY_WAIT) or lets the body flow (PROXY_BODY_PAUSE). Whatever the
 * resuming thread wrote into the handler's state before this call is seen by that hook.
 * Harmless when the wait is over, the exchange ended, or the proxy is shutting down. Never
 * blocks on the loop (it takes the loop's mailbox lock briefly). */
void proxy_exchange_resume(proxy_ticket t);

/* ---- admin port ------------------------------------------------------------------------ */

/* One admin request, as handlers see it. Borrowed for the call. */
struct proxy_admin_req {
    const char *method;
    const char *path;     /* percent-decoded path, no query */
    const char *raw_path; /* the path as the client sent it (still percent-encoded) */
    const char *query;    /* raw query string after '?' (not decoded), or NULL */
    const char *body;     /* NUL-terminated, may be empty; at most 1 MiB (more: 413) */
    size_t body_len;
    const char *authorization; /* header value or NULL */
    const char *client;        /* the client's address as text ("?" when unknown) */
    const char *actor;         /* the X-Cutover-Actor header's value, or NULL */
};

/* A handler fills status (preset 200), content type and body (body is a buf with a ceiling
 * set by the caller; the handler appends to it). */
struct proxy_admin_reply {
    int status;
    const char *content_type; /* static string; NULL: application/json */
    struct buf body;
};

/* Runs on the admin port's connection threads: several handlers (the same one too) may run at
 * once, so a handler must be thread-safe. It may block (a database call): the probes and
 * other handlers are served on other threads meanwhile. proxy_shutdown() waits for running
 * handlers, so a handler bounds its own waits (a statement timeout, a deadline). */
typedef void (*proxy_admin_fn)(void *arg, const struct proxy_admin_req *req,
                               struct proxy_admin_reply *reply);

/* Registers a handler for method + path (exact, or a prefix when path ends with '*'), matched
 * on the decoded path. method NULL matches any. Call before proxy_start(). Returns false when
 * the table is full. arg is borrowed and must outlive the proxy. /healthz and /readyz are
 * built in.
 *
 * Every path starting with /admin is checked before its handler runs (and before its body is
 * read), in admin.c only: with admin.token set, `Authorization: Bearer <token>` or 401 (a
 * client address sending admin.max_auth_failures wrong tokens within admin.auth_lockout_s
 * then gets 429 for admin.auth_lockout_s); without a token, 403 unless
 * admin.allow_unauthenticated on a loopback admin.listen. At most 16 /admin handlers run at
 * once (more: 503). Other paths (/metrics, /) are open. */
bool proxy_admin_add(proxy *px, const char *method, const char *path, proxy_admin_fn fn,
                     void *arg) CUT_MUST_USE;

/* Looks up query parameter name in req->query (the first occurrence; names and values are
 * percent-decoded, '+' read as a space). Returns 1 with *value a new string (free(); "" for a
 * bare `name`), 0 when absent, -1 when its encoding is malformed or holds a NUL byte (*value
 * NULL in both cases). */
int proxy_admin_query_get(const struct proxy_admin_req *req, const char *name,
                          char **value) CUT_MUST_USE;

#endif
