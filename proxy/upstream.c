/*
 * upstream: forwarding to the app with libcurl's multi socket API, driven by the loop that
 * also runs the client side (server.c). Each loop has its own multi handle, so connections
 * to the app are kept alive and reused per loop, and its own pool of easy handles, kept
 * configured between requests: only the per-request options are set again.
 *
 * curl's sockets go into the loop's epoll set. Sockets that curl opens through our
 * open-socket callback stay registered for reading while curl keeps the connection (our
 * close-socket callback forgets them), so reusing a kept-alive connection costs no
 * epoll_ctl; writing is watched only while curl waits to write. Any other socket (a
 * resolver's, say) follows curl's wishes exactly.
 *
 * Bytes move through the exchange's two bounded buffers: the read callback drains what the
 * client sent (pausing when it is empty), the write callback fills the answer buffer
 * (pausing when it is full); each side wakes the other when its buffer moves. The answer's
 * header block is filtered here (hop-by-hop fields and those named in Connection are
 * dropped) and handed to the response hook before the client can see it.
 */
#include "proxy/http_check.h"
#include "proxy/proxy_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* fd_reg flags, per curl socket */
#define FR_REG 1    /* in the loop's epoll set */
#define FR_OWN 2    /* opened by open_socket: stays registered while curl keeps it */
#define FR_IN 4     /* curl waits for reading */
#define FR_OUT 8    /* curl waits for writing */
#define FR_EIN 16   /* registered for EPOLLIN */
#define FR_EOUT 32  /* registered for EPOLLOUT */
#define FR_MUTED 64 /* own socket readable while curl did not wait for it: EPOLLIN off */

/* ---- waking the front end ------------------------------------------------------------- */

/* Resuming a client connection costs libmicrohttpd a turn; doing it once per loop turn
 * instead of once per callback lets a small answer's header and body reach the client in
 * one go. */
static void wake_later(struct proxy_exchange *x)
{
    struct px_loop *l = x->loop;
    if (x->wake_queued)
        return;
    x->wake_queued = true;
    px_ex_ref(x);
    x->wnext = l->wake;
    l->wake = x;
}

void px_upstream_flush(struct px_loop *l)
{
    while (l->wake) {
        struct proxy_exchange *x = l->wake;
        l->wake = x->wnext;
        x->wnext = NULL;
        x->wake_queued = false;
        px_wake_front(x);
        px_ex_unref(x);
    }
}

/* ---- curl callbacks (upstream thread) ------------------------------------------------- */

static size_t on_read(char *dst, size_t size, size_t nitems, void *arg)
{
    struct proxy_exchange *x = arg;
    size_t max = size * nitems, n;
    size_t avail = x->in_len - x->in_off;
    if (avail) {
        n = avail < max ? avail : max;
        memcpy(dst, x->in + x->in_off, n);
        x->in_off += n;
        if (x->suspended)
            wake_later(x);
    } else if (x->in_eof || x->fe_gone) {
        n = x->fe_gone && !x->in_eof ? CURL_READFUNC_ABORT : 0;
    } else {
        x->in_paused = true;
        n = CURL_READFUNC_PAUSE;
    }
    return n;
}

static size_t on_write(char *src, size_t size, size_t nmemb, void *arg)
{
    struct proxy_exchange *x = arg;
    size_t n = size * nmemb;
    size_t ret = n;
    if (x->fe_gone) {
        ret = 0;
        goto out;
    }
    if (x->hold && !x->resp_ready) {
        if (buf_append(&x->out, src, n))
            goto out;
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
    if (!buf_append(&x->out, src, n)) {
        x->out_paused = true;
        ret = CURL_WRITEFUNC_PAUSE;
        goto out;
    }
    if (x->suspended)
        wake_later(x);
out:
    return ret;
}

static void drop_connection_named(struct proxy_exchange *x)
{
    struct curl_slist *keep = NULL;
    for (struct curl_slist *h = x->resp_headers; h; h = h->next) {
        size_t nlen = strcspn(h->data, ":");
        if (!http_list_has(x->conn_tokens, h->data, nlen))
            keep = curl_slist_append(keep, h->data);
    }
    curl_slist_free_all(x->resp_headers);
    x->resp_headers = keep;
}

static void headers_complete(struct proxy_exchange *x)
{
    proxy *px = x->px;
    if (x->conn_tokens[0])
        drop_connection_named(x);
    x->t_up_headers = now_us();
    bool hold = false;
    if (x->hook_state && px->hooks.on_response) {
        enum proxy_answer_mode m =
            px->hooks.on_response(px->hooks.arg, x->hook_state, x, x->status);
        size_t max = px->cfg->limits.max_json_answer;
        hold = m == PROXY_HOLD && !x->head && !(x->status == 204 || x->status == 304) &&
               (x->resp_len < 0 || (uint64_t)x->resp_len <= max);
    }
    x->headers_done = true;
    if (hold) {
        x->hold = true;
        x->out.max = px->cfg->limits.max_json_answer;
    } else {
        x->resp_ready = true;
        wake_later(x);
    }
}

static size_t on_header(char *line, size_t size, size_t nitems, void *arg)
{
    struct proxy_exchange *x = arg;
    size_t n = size * nitems;
    size_t len = n;
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        const char *sp = memchr(line, ' ', len);
        x->status = sp ? atoi(sp + 1) : 0;
        curl_slist_free_all(x->resp_headers);
        x->resp_headers = NULL;
        x->resp_len = -1;
        x->conn_tokens[0] = 0;
        return n;
    }
    if (len == 0) {
        if (x->status >= 200 && !x->headers_done)
            headers_complete(x);
        return n; /* end of a 1xx block: the final status line follows */
    }
    if (x->status < 200 || x->headers_done)
        return n; /* fields of an interim answer, or trailers */
    if (line[0] == ' ' || line[0] == '\t')
        return n; /* obs-fold from the app: dropped */
    const char *colon = memchr(line, ':', len);
    if (!colon)
        return n;
    size_t nlen = (size_t)(colon - line);
    const char *v = colon + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vlen = (size_t)(end - v);
    if (!http_is_token(line, nlen) || !http_value_ok(v, vlen))
        return n; /* never pass a malformed field on to the client */
    if (nlen == 14 && strncasecmp(line, "content-length", 14) == 0) {
        uint64_t cl;
        if (http_parse_length(v, vlen, &cl))
            x->resp_len = (int64_t)cl;
        return n;
    }
    if (nlen == 10 && strncasecmp(line, "connection", 10) == 0) {
        size_t have = strlen(x->conn_tokens);
        if (have + vlen + 2 < sizeof(x->conn_tokens)) {
            if (have)
                x->conn_tokens[have++] = ',';
            memcpy(x->conn_tokens + have, v, vlen);
            x->conn_tokens[have + vlen] = 0;
        }
        return n;
    }
    if (http_is_hop_by_hop(line, nlen))
        return n;
    char stack[512];
    size_t need = nlen + vlen + 3;
    char *l = need <= sizeof(stack) ? stack : xmalloc(need);
    memcpy(l, line, nlen);
    memcpy(l + nlen, ": ", 2);
    memcpy(l + nlen + 2, v, vlen);
    l[nlen + 2 + vlen] = 0;
    struct curl_slist *nl = curl_slist_append(x->resp_headers, l);
    if (l != stack)
        free(l);
    if (!nl)
        return 0;
    x->resp_headers = nl;
    return n;
}

/* ---- curl's sockets and timer ------------------------------------------------------------ */

static unsigned char *fd_slot(struct px_loop *l, int fd)
{
    if (fd < 0)
        return NULL;
    if ((size_t)fd >= l->nfd_reg) {
        size_t n = l->nfd_reg ? l->nfd_reg : 256;
        while (n <= (size_t)fd)
            n *= 2;
        unsigned char *p = realloc(l->fd_reg, n);
        if (!p)
            abort();
        memset(p + l->nfd_reg, 0, n - l->nfd_reg);
        l->fd_reg = p;
        l->nfd_reg = n;
    }
    return &l->fd_reg[fd];
}

/* Makes the socket's epoll registration match what curl waits for. A socket of our own
 * keeps EPOLLIN between transfers, so that reusing a kept-alive connection (send, then
 * wait to read) costs no epoll_ctl; it only loses it when it turns readable while curl is
 * not reading (the app closed it, or curl paused the transfer). */
static void sync_reg(struct px_loop *l, int fd, unsigned char *r)
{
    bool own = *r & FR_OWN;
    bool in = (*r & FR_IN) || (own && !(*r & FR_MUTED));
    bool out = *r & FR_OUT;
    if (!own && !in && !out) {
        if (*r & FR_REG)
            epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
        *r = 0;
        return;
    }
    unsigned char have = *r & (FR_EIN | FR_EOUT);
    unsigned char want = (unsigned char)((in ? FR_EIN : 0) | (out ? FR_EOUT : 0));
    if ((*r & FR_REG) && have == want)
        return;
    struct epoll_event ev = {.events = (in ? (uint32_t)(EPOLLIN | EPOLLRDHUP) : 0u) |
                                       (out ? (uint32_t)EPOLLOUT : 0u),
                             .data.u64 = (uint64_t)fd};
    int rc;
    if (*r & FR_REG) {
        rc = epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev);
        if (rc != 0 && errno == ENOENT)
            rc = epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
    } else {
        rc = epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
        if (rc != 0 && errno == EEXIST)
            rc = epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev);
    }
    *r = (unsigned char)((*r & ~(FR_EIN | FR_EOUT | FR_REG)) | (rc == 0 ? (FR_REG | want) : 0));
}

static curl_socket_t open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct px_loop *l = arg;
    (void)purpose;
    int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    unsigned char *r = fd_slot(l, fd);
    *r = FR_OWN;
    sync_reg(l, fd, r);
    return fd;
}

static int close_socket(void *arg, curl_socket_t fd)
{
    struct px_loop *l = arg;
    unsigned char *r = fd_slot(l, fd);
    if (r)
        *r = 0; /* closing the socket removes its registration */
    return close(fd);
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *arg, void *socketp)
{
    struct px_loop *l = arg;
    (void)e;
    (void)socketp;
    unsigned char *r = fd_slot(l, fd);
    if (!r)
        return 0;
    unsigned char want = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        want |= FR_IN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        want |= FR_OUT;
    *r = (unsigned char)((*r & ~(FR_IN | FR_OUT)) | want);
    if (want & FR_IN)
        *r &= (unsigned char)~FR_MUTED;
    sync_reg(l, fd, r);
    return 0;
}

static int on_timer(CURLM *m, long timeout_ms, void *arg)
{
    struct px_loop *l = arg;
    (void)m;
    l->curl_deadline = timeout_ms < 0 ? -1 : (int64_t)(now_us() + (uint64_t)timeout_ms * 1000u);
    return 0;
}

/* ---- transfers ------------------------------------------------------------------------ */

static void link_active(struct px_loop *l, struct proxy_exchange *x)
{
    x->aprev = NULL;
    x->anext = l->active;
    if (l->active)
        l->active->aprev = x;
    l->active = x;
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

/* A new easy handle with every option that does not change between requests. */
static CURL *new_easy(struct px_loop *l)
{
    const struct cfg_limits *lim = &l->px->cfg->limits;
    CURL *e = curl_easy_init();
    if (!e)
        abort();
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 64L * 1024);
    curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 64L * 1024);
    curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, (long)lim->upstream_connect_timeout_s);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)lim->upstream_timeout_s);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, l);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, l);
    return e;
}

bool px_upstream_start(struct proxy_exchange *x, cut_err *err)
{
    struct px_loop *l = x->loop;
    proxy *px = l->px;
    (void)err;
    CURL *e = l->nfree ? l->free_easy[--l->nfree] : new_easy(l);
    size_t blen = strlen(px->cfg->upstream), tlen = strlen(x->target);
    char stackurl[1024];
    char *url = blen + tlen < sizeof(stackurl) ? stackurl : xmalloc(blen + tlen + 1);
    memcpy(url, px->cfg->upstream, blen);
    memcpy(url + blen, x->target, tlen + 1);
    curl_easy_setopt(e, CURLOPT_URL, url);
    if (url != stackurl)
        free(url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->req_headers);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_READDATA, x);
    if (x->head) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
        curl_easy_setopt(e, CURLOPT_UPLOAD, 0L);
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
        curl_easy_setopt(e, CURLOPT_UPLOAD, x->has_body ? 1L : 0L);
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, x->method);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)(x->has_body ? x->body_len : -1));
    }
    x->easy = e;
    x->t_up_start = now_us();
    px_ex_ref(x); /* the transfer's reference */
    link_active(l, x);
    if (curl_multi_add_handle(l->multi, e) != CURLM_OK)
        abort();
    return true;
}

static void recycle(struct px_loop *l, CURL *e)
{
    curl_multi_remove_handle(l->multi, e);
    if (l->nfree < PX_FREE_EASY_MAX) {
        curl_easy_setopt(e, CURLOPT_PRIVATE, NULL);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
        l->free_easy[l->nfree++] = e;
    } else {
        curl_easy_cleanup(e);
    }
}

static void finish(struct px_loop *l, struct proxy_exchange *x, CURLcode rc)
{
    proxy *px = l->px;
    CURL *e = x->easy;
    long connect_us = 0;
    curl_easy_getinfo(e, CURLINFO_PRETRANSFER_TIME_T, &connect_us); /* 0: never connected */

    x->up_done = true;
    if (rc != CURLE_OK)
        x->up_failed = true;
    if (!x->headers_done || (x->hold && !x->resp_ready && rc != CURLE_OK)) {
        if (rc == CURLE_OPERATION_TIMEDOUT && connect_us > 0) {
            x->up_error_status = 504;
            x->up_reason = "upstream timed out";
        } else {
            x->up_error_status = 502;
            x->up_reason = "upstream unreachable or failed";
        }
        if (log_enabled(LOG_WARN) && !x->fe_gone)
            log_msgf(LOG_WARN, "upstream_error", "%s: %s", x->up_reason, curl_easy_strerror(rc));
        x->resp_ready = true;
    } else if (x->hold && !x->resp_ready) {
        if (px->hooks.on_response_body)
            px->hooks.on_response_body(px->hooks.arg, x->hook_state, x, &x->out);
        x->resp_len = (int64_t)x->out.len;
        x->resp_ready = true;
    }
    x->out_eof = true;
    wake_later(x);

    unlink_active(l, x);
    x->easy = NULL;
    recycle(l, e);
    px_ex_unref(x);
}

void px_upstream_unpause(struct proxy_exchange *x)
{
    if (x->easy) {
        curl_easy_pause(x->easy, CURLPAUSE_CONT);
        /* curl marks the transfer to run now without telling the timer callback: run its
         * timers on this loop turn, keeping the deadline it last reported */
        x->loop->curl_kick = true;
    }
}

void px_upstream_abort(struct proxy_exchange *x)
{
    if (x->easy)
        finish(x->loop, x, CURLE_ABORTED_BY_CALLBACK);
}

void px_upstream_abort_all(struct px_loop *l)
{
    while (l->active)
        finish(l, l->active, CURLE_ABORTED_BY_CALLBACK);
    px_upstream_flush(l);
}

static void collect(struct px_loop *l)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(l->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct proxy_exchange *x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (x)
            finish(l, x, m->data.result);
    }
}

void px_upstream_event(struct px_loop *l, int fd, uint32_t events)
{
    unsigned char *r = fd_slot(l, fd);
    if (!r)
        return;
    if (!(*r & FR_IN) && (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP | EPOLLERR)) && (*r & FR_OWN)) {
        /* a kept-alive connection at rest turned readable: curl finds out when it next
         * checks it; stop listening until then */
        *r |= FR_MUTED;
        sync_reg(l, fd, r);
    }
    if (!(*r & (FR_IN | FR_OUT)))
        return;
    int bits = 0;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP))
        bits |= CURL_CSELECT_IN;
    if (events & EPOLLOUT)
        bits |= CURL_CSELECT_OUT;
    if (events & EPOLLERR)
        bits |= CURL_CSELECT_ERR;
    int running;
    curl_multi_socket_action(l->multi, fd, bits, &running);
}

void px_upstream_run(struct px_loop *l, uint64_t now)
{
    for (int i = 0; i < 4; i++) {
        bool due = l->curl_deadline >= 0 && (uint64_t)l->curl_deadline <= now;
        if (!due && !l->curl_kick)
            break;
        int running;
        if (due)
            l->curl_deadline = -1; /* curl reports the next one if it differs */
        l->curl_kick = false;
        curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    collect(l);
    px_upstream_flush(l);
}

bool px_upstream_init(struct px_loop *l, cut_err *err)
{
    l->curl_deadline = -1;
    l->multi = curl_multi_init();
    if (!l->multi) {
        err_set(err, CUT_EIO, "upstream", "curl_multi_init failed");
        return false;
    }
    curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, 1024L);
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l);
    return true;
}

void px_upstream_fini(struct px_loop *l)
{
    px_upstream_abort_all(l);
    for (int i = 0; i < l->nfree; i++)
        curl_easy_cleanup(l->free_easy[i]);
    l->nfree = 0;
    if (l->multi)
        curl_multi_cleanup(l->multi); /* closes the kept-alive connections */
    l->multi = NULL;
    free(l->fd_reg);
    l->fd_reg = NULL;
    l->nfd_reg = 0;
}
