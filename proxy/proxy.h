/*
 * proxy: the data-port reverse proxy (libmicrohttpd in front, libcurl behind) and the admin
 * port. This header is what the migration features plug into:
 *
 *   - route match: every request whose method and raw path match a configured route gets a
 *     `struct proxy_match` (the route and its path variables, percent-decoded one segment at
 *     a time from the raw path). Requests matching no route never reach a hook and cost
 *     nothing beyond the match itself (and nothing at all when no route is configured).
 *   - request-body hook: sees the body's bytes in order as they stream to the app (tee to a
 *     spool file, hashing); runs on the request's event loop, so it must not block.
 *   - response hook: sees the app's status and headers before the client does; may edit
 *     the headers (a Location, say) and may ask to hold the answer (up to
 *     limits.max_json_answer bytes) to rewrite its body once complete.
 *   - background work: proxy_defer() hands a job to a small worker pool without blocking
 *     the request.
 */
#ifndef CUTOVER_PROXY_H
#define CUTOVER_PROXY_H

#include "core/config.h"
#include "core/core.h"

typedef struct proxy proxy;
/* One request/answer in flight. Valid only during the hook call that receives it. */
typedef struct proxy_exchange proxy_exchange;

#define PROXY_MAX_VARS 8

/* A route matched on the raw path. Strings are owned by the exchange, valid until on_done
 * returns. */
struct proxy_match {
    const struct cfg_route *route; /* borrowed from the configuration */
    size_t nvars;
    const char *var_names[PROXY_MAX_VARS];
    char *var_values[PROXY_MAX_VARS]; /* percent-decoded */
};

enum proxy_answer_mode {
    PROXY_PASS = 0, /* stream the app's answer to the client as it comes */
    PROXY_HOLD = 1, /* hold the whole answer (<= max_json_answer) for on_response_body */
};

/* What happened, for on_done. */
struct proxy_outcome {
    int status;              /* status sent to the client (0: none, connection dropped) */
    uint64_t request_bytes;  /* body bytes read from the client */
    uint64_t response_bytes; /* body bytes sent to the client */
    bool request_complete;   /* the whole request body reached the app */
    bool upstream_ok;        /* the app answered and its whole answer was read */
};

/* Hooks. Every member may be NULL. `arg` is passed back to each. The per-request `state`
 * is what on_request returned (NULL: no further hook runs for this request). */
struct proxy_hooks {
    void *arg;
    /* Request's loop thread, after validation, before anything is sent to the app. Returns
     * a new per-request state (owned by the hooks, released in on_done) or NULL to ignore
     * the request. */
    void *(*on_request)(void *arg, proxy_exchange *x, const struct proxy_match *m);
    /* Request's loop thread: body bytes in order as they stream to the app. data is
     * borrowed for the call only. */
    void (*on_request_body)(void *arg, void *state, const void *data, size_t n);
    /* Request's loop thread: the app's final status and headers, before the client sees
     * them. Headers may be changed with proxy_exchange_set_response_header(). */
    enum proxy_answer_mode (*on_response)(void *arg, void *state, proxy_exchange *x, int status);
    /* Request's loop thread, only after PROXY_HOLD: the whole answer in body (ceiling
     * max_json_answer). It may replace body's contents (keep the ceiling) and headers. Not
     * called when the answer was larger than the ceiling: it then streams unchanged. */
    void (*on_response_body)(void *arg, void *state, proxy_exchange *x, struct buf *body);
    /* Any thread, once, when the exchange is over (answered, refused, or dropped). */
    void (*on_done)(void *arg, void *state, const struct proxy_outcome *o);
};

/* Creates the proxy for cfg (borrowed: it must outlive the proxy). Nothing is bound yet.
 * Returns a new proxy (proxy_free()) or NULL with err set. */
proxy *proxy_new(const struct config *cfg, cut_err *err) CUT_MUST_USE;
/* Installs hooks (copied). Call before proxy_start(). */
void proxy_set_hooks(proxy *px, const struct proxy_hooks *hooks);
/* Binds the data and admin ports and starts serving. Returns false with err set. */
bool proxy_start(proxy *px, cut_err *err) CUT_MUST_USE;
/* The data port actually bound (useful with port 0). */
int proxy_port(const proxy *px);
int proxy_admin_port(const proxy *px);
/* Stops accepting, lets in-flight requests finish for up to grace_s seconds, then closes
 * everything. Safe to call once after proxy_start(). */
void proxy_shutdown(proxy *px, int grace_s);
/* Frees everything (NULL accepted). Calls proxy_shutdown(px, 0) if still running. */
void proxy_free(proxy *px);

/* ---- inside hooks --------------------------------------------------------------------- */

/* Request header value (first of its name, case-insensitive) or NULL; borrowed, valid
 * during the hook call. */
const char *proxy_exchange_request_header(proxy_exchange *x, const char *name);
const char *proxy_exchange_method(proxy_exchange *x);
/* The raw request target as the client sent it (path and query). */
const char *proxy_exchange_target(proxy_exchange *x);
/* Response header (first of its name) or NULL; only in on_response/on_response_body. */
const char *proxy_exchange_response_header(proxy_exchange *x, const char *name);
/* Replaces every header of that name with one (value NULL: removes them). Only in
 * on_response/on_response_body. Returns false when the value holds a control character. */
bool proxy_exchange_set_response_header(proxy_exchange *x, const char *name, const char *value);
/* Replaces the status sent to the client. Only in on_response/on_response_body. */
void proxy_exchange_set_status(proxy_exchange *x, int status);

/* ---- background work ------------------------------------------------------------------- */

/* Runs fn(arg) on a worker thread. Returns false (fn not run, arg still the caller's)
 * when the queue is full or the proxy is stopping; never blocks. */
bool proxy_defer(proxy *px, void (*fn)(void *arg), void *arg) CUT_MUST_USE;

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
