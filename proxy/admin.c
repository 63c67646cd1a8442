/*
 * admin: the admin port. A second libmicrohttpd daemon (one poll thread: admin traffic is
 * light) dispatching on a small table of (method, path) → handler, so that later parts add
 * /admin/ handlers with proxy_admin_add() without touching this file. Built in:
 * /healthz (the process is alive and serving) and /readyz (the configuration is loaded and
 * a TCP connection to the upstream succeeds within a second). Request bodies are read into
 * a buffer with a 1 MiB ceiling before the handler runs; larger ones get 413.
 */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ADMIN_MAX_BODY (1024 * 1024)

/* Appends s to a reply. Replies are small and their buffers' ceilings generous; a failed
 * append only shortens that one body. */
static void put(struct buf *b, const char *s)
{
    if (!buf_puts(b, s))
        return;
}

struct admin_call {
    struct buf body;
    bool too_big;
};

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

static void builtin(proxy *px, const struct proxy_admin_req *req, struct proxy_admin_reply *rep)
{
    if (strcmp(req->path, "/healthz") == 0) {
        rep->status = 200;
        put(&rep->body, "{\"status\":\"ok\"}\n");
    } else if (strcmp(req->path, "/readyz") == 0) {
        bool up = upstream_reachable(px);
        rep->status = up ? 200 : 503;
        put(&rep->body, up ? "{\"config\":true,\"upstream\":true}\n"
                           : "{\"config\":true,\"upstream\":false}\n");
    }
}

static enum MHD_Result reply(struct MHD_Connection *conn, struct proxy_admin_reply *rep)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        rep->body.len, rep->body.data ? rep->body.data : (void *)"", MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type",
                            rep->content_type ? rep->content_type : "application/json");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)rep->status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_admin(void *cls, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version, const char *upload_data,
                                size_t *upload_data_size, void **req_cls)
{
    proxy *px = cls;
    struct admin_call *c = *req_cls;
    (void)version;
    if (!c) {
        c = xcalloc(1, sizeof(*c));
        buf_init(&c->body, ADMIN_MAX_BODY);
        *req_cls = c;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!buf_append(&c->body, upload_data, *upload_data_size))
            c->too_big = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    struct proxy_admin_reply rep = {.status = 404, .content_type = NULL};
    buf_init(&rep.body, 8 * 1024 * 1024);
    struct proxy_admin_req req = {
        .method = method,
        .path = url,
        .query = NULL,
        .body = c->body.data ? c->body.data : "",
        .body_len = c->body.len,
        .authorization = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"),
    };
    if (c->too_big) {
        rep.status = 413;
        put(&rep.body, "{\"error\":\"body too large\"}\n");
        goto send;
    }
    for (size_t i = 0; i < px->nadmin; i++) {
        const struct px_admin_route *r = &px->admin_routes[i];
        if (r->method && strcmp(r->method, method) != 0)
            continue;
        if (r->prefix ? strncmp(url, r->path, strlen(r->path)) == 0 : strcmp(url, r->path) == 0) {
            r->fn(r->arg, &req, &rep);
            goto send;
        }
    }
    if (strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0) {
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
            rep.status = 405;
            put(&rep.body, "{\"error\":\"method not allowed\"}\n");
        } else {
            builtin(px, &req, &rep);
        }
        goto send;
    }
    put(&rep.body, "{\"error\":\"not found\"}\n");
send:;
    enum MHD_Result ret = reply(conn, &rep);
    buf_free(&rep.body);
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
    free(c);
    *req_cls = NULL;
}

bool px_admin_start(proxy *px, cut_err *err)
{
    const struct config *cfg = px->cfg;
    struct addrinfo hints = {0}, *res = NULL;
    char ps[16];
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(ps, sizeof(ps), "%d", cfg->admin_port);
    const char *host = cfg->admin_host && *cfg->admin_host ? cfg->admin_host : "127.0.0.1";
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc != 0 || !res) {
        err_set(err, CUT_EINVAL, "admin", "cannot resolve admin address %s: %s", host,
                gai_strerror(rc));
        return false;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    if (res->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    px->admin = MHD_start_daemon(flags, 0, NULL, NULL, on_admin, px, MHD_OPTION_SOCK_ADDR,
                                 res->ai_addr, MHD_OPTION_NOTIFY_COMPLETED, on_admin_done, px,
                                 MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_CONNECTION_LIMIT,
                                 64u, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, MHD_OPTION_END);
    freeaddrinfo(res);
    if (!px->admin) {
        err_set(err, CUT_EIO, "admin", "cannot listen on %s:%d", host, cfg->admin_port);
        return false;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(px->admin, MHD_DAEMON_INFO_BIND_PORT);
    px->admin_port = di ? di->port : cfg->admin_port;
    return true;
}

void px_admin_stop(proxy *px)
{
    if (px->admin) {
        MHD_stop_daemon(px->admin);
        px->admin = NULL;
    }
}
