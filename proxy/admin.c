/*
 * admin: the admin port. A second libmicrohttpd daemon dispatching on a small table of
 * (method, path) → handler, so that later parts add handlers with proxy_admin_add() without
 * touching this file. Built in: /healthz (the process is alive and serving) and /readyz (the
 * configuration is loaded and a TCP connection to the upstream succeeds within a second).
 *
 * Threads: one per connection (libmicrohttpd's thread-per-connection mode, at most
 * ADMIN_MAX_CONNS connections). A handler runs on its connection's thread and may block (a
 * database call; the readiness probe's connect): every other connection, the probes' and
 * /metrics' among them, has a thread of its own and never waits for it. At most
 * ADMIN_MAX_RUNNING /admin/ handlers run at once; one more is answered 503 straight away, so
 * slow handlers cannot hold every connection and a probe always finds one free. Handlers
 * outside /admin (/metrics, the dashboard) are not counted: a stuck database does not turn
 * them away.
 *
 * Access: every path starting with /admin is checked by admin_authorize(), here and nowhere
 * else, on the request's first call, before its body is read:
 *   - no token configured: 403 naming admin.token, unless admin.allow_unauthenticated is set
 *     and the port is bound to a loopback address (the configuration refuses the field with
 *     any other admin.listen, and the start checks the address actually bound);
 *   - a token configured: `Authorization: Bearer <token>` is required, whatever
 *     allow_unauthenticated says. The presented token and the configured one are compared as
 *     SHA-256 digests with CRYPTO_memcmp, so neither their contents nor their lengths show in
 *     the time taken. No token: 401. A wrong one: 401, counted against the client's address;
 *     after admin.max_auth_failures wrong tokens within admin.auth_lockout_s, that address
 *     gets 429 with Retry-After, even with the right token, until admin.auth_lockout_s has
 *     passed. Nobody sleeps: other addresses are served as before. A right token clears its
 *     address's count. Addresses live in a fixed table (ADMIN_CLIENTS); when it is full, the
 *     entry touched longest ago is reused.
 * Every refusal is logged (client address, method, path without the query, reason); the
 * token never is.
 *
 * Request bodies are read into a buffer with a 1 MiB ceiling before the handler runs; larger
 * ones get 413 (before the body is read when Content-Length says so). The raw request target
 * is kept from the request line (libmicrohttpd's URI callback, bounded by its per-connection
 * memory) so that handlers see the query string and the path as the client sent them.
 */
#include "proxy/proxy_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define ADMIN_MAX_BODY (1024 * 1024)
#define ADMIN_MAX_REPLY (8 * 1024 * 1024)
#define ADMIN_MAX_CONNS 64u
#define ADMIN_MAX_RUNNING 16
#define ADMIN_CLIENTS 256

/* One client address and its wrong tokens. IPv4 addresses are kept v4-mapped. */
struct admin_client {
    bool used;
    unsigned char addr[16];
    int failures;
    uint64_t window_start; /* us: first failure of the current count */
    uint64_t locked_until; /* us; 0: not locked */
    uint64_t touched;      /* us */
};

struct px_admin_state {
    bool have_token;
    bool open; /* no token, allow_unauthenticated, bound to loopback */
    unsigned char token_sha[SHA256_DIGEST_LENGTH];
    int max_failures;
    uint64_t lockout_us;
    atomic_int running; /* /admin/ handlers running now */
    pthread_mutex_t mu; /* clients */
    struct admin_client clients[ADMIN_CLIENTS];
};

/* One request, made by the URI callback, freed by the completion callback. */
struct admin_call {
    char *target; /* raw request target as sent: new string */
    char *query;  /* points into target after '?', or NULL */
    bool started; /* the first access-handler call is done */
    bool admin;   /* the path is under /admin: counted in `running` */
    struct buf body;
    bool too_big;
    size_t dropped; /* body bytes thrown away after the ceiling */
};

/* What is sent back: a handler's reply plus the headers only this file sets. */
struct admin_answer {
    struct proxy_admin_reply rep;
    const char *www_authenticate; /* static or NULL */
    char retry_after[24];         /* "" or seconds */
};

/* Appends s to a reply. Replies are small and their buffers' ceilings generous; a failed
 * append only shortens that one body. */
static void put(struct buf *b, const char *s)
{
    if (!buf_puts(b, s))
        return;
}

/* A JSON error body {"error": code, "reason": reason}. */
static void put_error(struct admin_answer *a, int status, const char *code, const char *reason)
{
    a->rep.status = status;
    buf_reset(&a->rep.body);
    if (!buf_printf(&a->rep.body, "{\"error\":\"%s\",\"reason\":\"", code) ||
        !buf_json_escape(&a->rep.body, reason, strlen(reason)) || !buf_puts(&a->rep.body, "\"}\n"))
        return;
}

bool proxy_admin_add(proxy *px, const char *method, const char *path, proxy_admin_fn fn, void *arg)
{
    size_t n = strlen(path);
    if (px->nadmin >= PX_MAX_ADMIN || n >= sizeof(px->admin_routes[0].path))
        return false;
    struct px_admin_route *r = &px->admin_routes[px->nadmin++];
    r->method = method;
    r->prefix = n > 0 && path[n - 1] == '*';
    memcpy(r->path, path, r->prefix ? n - 1 : n);
    r->path[r->prefix ? n - 1 : n] = 0;
    r->fn = fn;
    r->arg = arg;
    return true;
}

/* '+' as a space, then %XX. Returns a new string, or NULL when an escape is malformed or
 * decodes to a NUL byte. */
static char *query_decode(const char *s, size_t n)
{
    char *raw = xstrndup(s, n), *out = xmalloc(n + 1);
    for (char *p = raw; *p; p++)
        if (*p == '+')
            *p = ' ';
    long len = pct_decode(raw, n, out, n + 1);
    free(raw);
    if (len < 0 || strlen(out) != (size_t)len) {
        free(out);
        return NULL;
    }
    return out;
}

int proxy_admin_query_get(const struct proxy_admin_req *req, const char *name, char **value)
{
    const char *p = req->query;
    *value = NULL;
    while (p && *p) {
        size_t n = strcspn(p, "&");
        const char *eq = memchr(p, '=', n);
        size_t klen = eq ? (size_t)(eq - p) : n;
        char *key = query_decode(p, klen);
        bool hit = key && strcmp(key, name) == 0;
        free(key);
        if (hit) {
            *value = eq ? query_decode(eq + 1, n - klen - 1) : xstrdup("");
            return *value ? 1 : -1;
        }
        p += n;
        if (*p == '&')
            p++;
    }
    return 0;
}

static bool upstream_reachable(const proxy *px)
{
    struct addrinfo hints = {0}, *res = NULL;
    char ps[16];
    bool ok = false;
    int fd = -1;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(ps, sizeof(ps), "%d", px->up_port);
    if (getaddrinfo(px->up_host, ps, &hints, &res) != 0 || !res)
        goto out;
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto out;
    if (connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
        ok = true;
        goto out;
    }
    if (errno != EINPROGRESS)
        goto out;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, 1000) != 1)
        goto out;
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    ok = getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0;
out:
    if (fd >= 0)
        close(fd);
    if (res)
        freeaddrinfo(res);
    return ok;
}

static void builtin(proxy *px, const char *path, struct proxy_admin_reply *rep)
{
    if (strcmp(path, "/healthz") == 0) {
        rep->status = 200;
        put(&rep->body, "{\"status\":\"ok\"}\n");
    } else if (strcmp(path, "/readyz") == 0) {
        bool up = upstream_reachable(px);
        rep->status = up ? 200 : 503;
        put(&rep->body, up ? "{\"config\":true,\"upstream\":true}\n"
                           : "{\"config\":true,\"upstream\":false}\n");
    }
}

/* ---- access ---------------------------------------------------------------------------- */

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}

/* The client's address as 16 bytes (IPv4 v4-mapped) and as text. Unknown: all zero, "?". */
static void client_address(struct MHD_Connection *conn, unsigned char key[16], char *text,
                           size_t tlen)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    memset(key, 0, 16);
    snprintf(text, tlen, "?");
    if (sa && sa->sa_family == AF_INET) {
        const struct in_addr *a = &((const struct sockaddr_in *)sa)->sin_addr;
        key[10] = key[11] = 0xff;
        memcpy(key + 12, a, 4);
        inet_ntop(AF_INET, a, text, (socklen_t)tlen);
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        memcpy(key, a, 16);
        inet_ntop(AF_INET6, a, text, (socklen_t)tlen);
    }
}

/* Under st->mu: addr's entry, or NULL when it has none and create is false. A new entry
 * takes a free slot, else the one touched longest ago. */
static struct admin_client *client_slot(struct px_admin_state *st, const unsigned char addr[16],
                                        uint64_t now, bool create)
{
    struct admin_client *victim = NULL;
    for (size_t i = 0; i < ADMIN_CLIENTS; i++) {
        struct admin_client *e = &st->clients[i];
        if (e->used && memcmp(e->addr, addr, 16) == 0) {
            e->touched = now;
            return e;
        }
        if (!victim || (victim->used && (!e->used || e->touched < victim->touched)))
            victim = e;
    }
    if (!create)
        return NULL;
    memset(victim, 0, sizeof(*victim));
    victim->used = true;
    memcpy(victim->addr, addr, 16);
    victim->touched = now;
    return victim;
}

/* The bearer token of an Authorization value ("Bearer" in any case, then spaces), without
 * surrounding blanks; NULL when there is none. *len is its length. */
static const char *bearer_token(const char *v, size_t *len)
{
    if (!v)
        return NULL;
    while (*v == ' ' || *v == '\t')
        v++;
    if (strncasecmp(v, "Bearer", 6) != 0 || (v[6] != ' ' && v[6] != '\t'))
        return NULL;
    v += 6;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    *len = n;
    return n ? v : NULL;
}

static void log_refusal(int status, const char *client, const char *method, const char *path,
                        const char *reason, int failures)
{
    struct buf b;
    size_t plen = strlen(path);
    buf_init(&b, 4096);
    if (buf_printf(&b, "\"status\":%d,\"client\":\"", status) &&
        buf_json_escape(&b, client, strlen(client)) && buf_puts(&b, "\",\"method\":\"") &&
        buf_json_escape(&b, method, strnlen(method, 32)) && buf_puts(&b, "\",\"path\":\"") &&
        buf_json_escape(&b, path, plen > 512 ? 512 : plen) &&
        buf_printf(&b, "\",\"reason\":\"%s\",\"failures\":%d", reason, failures))
        log_line(LOG_WARN, "admin_refused", "admin request refused", b.data);
    buf_free(&b);
}

/* The one access check of /admin paths. Returns true when the request may go on; false with
 * the refusal filled in a. */
static bool admin_authorize(proxy *px, struct MHD_Connection *conn, const char *method,
                            const char *path, struct admin_answer *a)
{
    struct px_admin_state *st = px->admin_state;
    unsigned char addr[16], md[SHA256_DIGEST_LENGTH];
    char client[INET6_ADDRSTRLEN + 1];
    const char *tok;
    size_t tlen = 0;
    int failures = 0;
    uint64_t now = now_us(), wait_s = 0;
    bool ok = false;

    if (!st->have_token) {
        if (st->open)
            return true;
        client_address(conn, addr, client, sizeof(client));
        put_error(a, 403, "forbidden",
                  "no admin token is configured: set admin.token (or $CUTOVER_ADMIN_TOKEN); "
                  "admin.allow_unauthenticated serves /admin/ without one on a loopback "
                  "admin.listen only");
        log_refusal(403, client, method, path, "no admin.token configured", 0);
        return false;
    }
    client_address(conn, addr, client, sizeof(client));
    tok = bearer_token(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"), &tlen);
    if (tok)
        SHA256((const unsigned char *)tok, tlen, md);

    pthread_mutex_lock(&st->mu);
    struct admin_client *e = client_slot(st, addr, now, false);
    if (e && e->locked_until > now) {
        wait_s = (e->locked_until - now + 999999) / 1000000;
        failures = e->failures;
    } else if (e && e->locked_until) {
        e->used = false; /* the lockout is over: a fresh count */
        e = NULL;
    }
    if (!wait_s && tok) {
        ok = CRYPTO_memcmp(md, st->token_sha, sizeof(md)) == 0;
        if (ok && e) {
            e->used = false;
        } else if (!ok) {
            e = client_slot(st, addr, now, true);
            if (e->failures == 0 || now - e->window_start > st->lockout_us) {
                e->failures = 0;
                e->window_start = now;
            }
            failures = ++e->failures;
            if (failures >= st->max_failures)
                e->locked_until = now + st->lockout_us;
        }
    }
    pthread_mutex_unlock(&st->mu);

    if (ok)
        return true;
    if (wait_s) {
        char reason[128];
        snprintf(reason, sizeof(reason),
                 "too many wrong tokens from this address; retry after %llu s",
                 (unsigned long long)wait_s);
        put_error(a, 429, "too_many_requests", reason);
        snprintf(a->retry_after, sizeof(a->retry_after), "%llu", (unsigned long long)wait_s);
        log_refusal(429, client, method, path, "locked out after wrong tokens", failures);
    } else if (!tok) {
        put_error(a, 401, "unauthorized",
                  "an Authorization: Bearer token is required on /admin/ (admin.token)");
        a->www_authenticate = "Bearer realm=\"cutover-admin\"";
        log_refusal(401, client, method, path, "no bearer token", 0);
    } else {
        put_error(a, 401, "unauthorized", "the bearer token is not valid");
        a->www_authenticate = "Bearer realm=\"cutover-admin\", error=\"invalid_token\"";
        log_refusal(401, client, method, path, "wrong token", failures);
    }
    return false;
}

/* ---- requests -------------------------------------------------------------------------- */

static enum MHD_Result reply(struct MHD_Connection *conn, struct admin_answer *a)
{
    struct proxy_admin_reply *rep = &a->rep;
    struct MHD_Response *r = MHD_create_response_from_buffer(
        rep->body.len, rep->body.data ? rep->body.data : (void *)"", MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type",
                            rep->content_type ? rep->content_type : "application/json");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    if (a->www_authenticate)
        MHD_add_response_header(r, "WWW-Authenticate", a->www_authenticate);
    if (a->retry_after[0])
        MHD_add_response_header(r, "Retry-After", a->retry_after);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)rep->status, r);
    MHD_destroy_response(r);
    return ret;
}

static struct admin_call *call_new(const char *uri)
{
    struct admin_call *c = xcalloc(1, sizeof(*c));
    c->target = xstrdup(uri ? uri : "");
    char *q = strchr(c->target, '?');
    if (q) {
        *q = 0;
        c->query = q + 1;
        q = strchr(c->query, '#');
        if (q)
            *q = 0;
    }
    buf_init(&c->body, ADMIN_MAX_BODY);
    return c;
}

/* libmicrohttpd's URI callback: the request line's target, before it is split and decoded.
 * Its return value is the request's *req_cls. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)conn;
    return call_new(uri);
}

/* Runs the handler for path, or a built-in, or answers 404/405. */
static void dispatch(proxy *px, struct admin_call *c, const char *url, const char *method,
                     struct MHD_Connection *conn, struct admin_answer *a)
{
    struct px_admin_state *st = px->admin_state;
    const struct px_admin_route *hit = NULL;
    bool path_known = false;

    for (size_t i = 0; i < px->nadmin && !hit; i++) {
        const struct px_admin_route *r = &px->admin_routes[i];
        if (r->prefix ? strncmp(url, r->path, strlen(r->path)) != 0 : strcmp(url, r->path) != 0)
            continue;
        path_known = true;
        if (!r->method || strcmp(r->method, method) == 0)
            hit = r;
    }
    if (hit) {
        if (c->admin && atomic_fetch_add(&st->running, 1) >= ADMIN_MAX_RUNNING) {
            atomic_fetch_sub(&st->running, 1);
            put_error(a, 503, "busy", "too many admin requests running; retry shortly");
            snprintf(a->retry_after, sizeof(a->retry_after), "1");
            return;
        }
        unsigned char addr[16];
        char client[INET6_ADDRSTRLEN + 1];
        client_address(conn, addr, client, sizeof(client));
        struct proxy_admin_req req = {
            .method = method,
            .path = url,
            .raw_path = c->target,
            .query = c->query,
            .body = c->body.data ? c->body.data : "",
            .body_len = c->body.len,
            .authorization = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"),
            .client = client,
            .actor = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Cutover-Actor"),
        };
        a->rep.status = 200;
        hit->fn(hit->arg, &req, &a->rep);
        if (c->admin)
            atomic_fetch_sub(&st->running, 1);
        return;
    }
    if (strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0) {
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
            put_error(a, 405, "method_not_allowed", "GET or HEAD");
        else
            builtin(px, url, &a->rep);
        return;
    }
    if (path_known)
        put_error(a, 405, "method_not_allowed", "no handler for this method on this path");
    else
        put_error(a, 404, "not_found", "no such path");
}

static enum MHD_Result on_admin(void *cls, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version, const char *upload_data,
                                size_t *upload_data_size, void **req_cls)
{
    proxy *px = cls;
    struct admin_call *c = *req_cls;
    struct admin_answer a = {.rep = {.status = 404, .content_type = NULL}};
    (void)version;
    if (!c)
        *req_cls = c = call_new(NULL);
    buf_init(&a.rep.body, ADMIN_MAX_REPLY);
    if (!c->started) {
        /* the request's first call: headers only; refusals go out before any body byte */
        c->started = true;
        c->admin = strncmp(url, "/admin", 6) == 0;
        if (c->admin && !admin_authorize(px, conn, method, url, &a))
            goto send;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        char *end = NULL;
        if (cl && strtoull(cl, &end, 10) > ADMIN_MAX_BODY && end != cl) {
            put_error(&a, 413, "body_too_large", "an admin request body is at most 1 MiB");
            goto send;
        }
        buf_free(&a.rep.body);
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!c->too_big && !buf_append(&c->body, upload_data, *upload_data_size))
            c->too_big = true;
        if (c->too_big) {
            c->dropped += *upload_data_size;
            if (c->dropped > ADMIN_MAX_BODY) { /* a body nobody reads: close */
                buf_free(&a.rep.body);
                return MHD_NO;
            }
        }
        *upload_data_size = 0;
        buf_free(&a.rep.body);
        return MHD_YES;
    }
    if (c->too_big)
        put_error(&a, 413, "body_too_large", "an admin request body is at most 1 MiB");
    else
        dispatch(px, c, url, method, conn, &a);
send:;
    enum MHD_Result ret = reply(conn, &a);
    buf_free(&a.rep.body);
    return ret;
}

static void on_admin_done(void *cls, struct MHD_Connection *conn, void **req_cls,
                          enum MHD_RequestTerminationCode toe)
{
    struct admin_call *c = *req_cls;
    (void)cls;
    (void)conn;
    (void)toe;
    if (!c)
        return;
    buf_free(&c->body);
    free(c->target);
    free(c);
    *req_cls = NULL;
}

bool px_admin_start(proxy *px, cut_err *err)
{
    const struct config *cfg = px->cfg;
    struct addrinfo hints = {0}, *res = NULL;
    struct px_admin_state *st;
    char ps[16];
    bool ok = false;

    st = px->admin_state = xcalloc(1, sizeof(*st));
    pthread_mutex_init(&st->mu, NULL);
    atomic_init(&st->running, 0);
    st->have_token = cfg->admin_token && *cfg->admin_token;
    if (st->have_token)
        SHA256((const unsigned char *)cfg->admin_token, strlen(cfg->admin_token), st->token_sha);
    st->max_failures = cfg->admin_max_auth_failures > 0 ? cfg->admin_max_auth_failures : 5;
    st->lockout_us =
        (uint64_t)(cfg->admin_auth_lockout_s > 0 ? cfg->admin_auth_lockout_s : 60) * 1000000u;

    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(ps, sizeof(ps), "%d", cfg->admin_port);
    const char *host = cfg->admin_host && *cfg->admin_host ? cfg->admin_host : "127.0.0.1";
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc != 0 || !res) {
        err_set(err, CUT_EINVAL, "admin", "cannot resolve admin address %s: %s", host,
                gai_strerror(rc));
        goto out;
    }
    if (!st->have_token && cfg->admin_allow_unauthenticated) {
        if (!is_loopback(res->ai_addr)) {
            err_set(err, CUT_EINVAL, "admin",
                    "admin.allow_unauthenticated: admin.listen %s is not a loopback address", host);
            goto out;
        }
        st->open = true;
        log_msgf(LOG_WARN, "admin_open",
                 "no admin token: /admin/ is served without one (admin.allow_unauthenticated, "
                 "loopback %s only)",
                 host);
    } else if (!st->have_token) {
        log_msgf(LOG_WARN, "admin_no_token",
                 "no admin token: every /admin/ call is refused (set admin.token or "
                 "$CUTOVER_ADMIN_TOKEN)");
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL;
    if (res->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    px->admin = MHD_start_daemon(
        flags, 0, NULL, NULL, on_admin, px, MHD_OPTION_SOCK_ADDR, res->ai_addr,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, px, MHD_OPTION_NOTIFY_COMPLETED, on_admin_done, px,
        MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_CONNECTION_LIMIT, ADMIN_MAX_CONNS,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, MHD_OPTION_END);
    if (!px->admin) {
        err_set(err, CUT_EIO, "admin", "cannot listen on %s:%d", host, cfg->admin_port);
        goto out;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(px->admin, MHD_DAEMON_INFO_BIND_PORT);
    px->admin_port = di ? di->port : cfg->admin_port;
    ok = true;
out:
    if (res)
        freeaddrinfo(res);
    return ok;
}

void px_admin_stop(proxy *px)
{
    if (px->admin) {
        MHD_stop_daemon(px->admin);
        px->admin = NULL;
    }
    if (px->admin_state) {
        pthread_mutex_destroy(&px->admin_state->mu);
        free(px->admin_state);
        px->admin_state = NULL;
    }
}
