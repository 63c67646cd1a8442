/*
 * upstream: forwarding to the app with libcurl's multi interface on one event thread.
 * The front end (server.c) posts commands (start, unpause, abort) to a queue and wakes the
 * thread with curl_multi_wakeup(); the thread owns every easy handle, so curl is only ever
 * called from here. Connections to the app are kept alive and reused by the multi handle's
 * connection cache; easy handles are recycled from a small free list.
 *
 * Bytes move through the exchange's two bounded buffers: the read callback drains what the
 * client sent (pausing when it is empty), the write callback fills the answer buffer
 * (pausing when it is full); each side wakes the other when its buffer moves. The answer's
 * header block is filtered here (hop-by-hop fields and those named in Connection are
 * dropped) and handed to the response hook before the client can see it.
 */
#include "proxy/http_check.h"
#include "proxy/proxy_int.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FREE_EASY_MAX 64
#define RESP_MAX_FIELDS 256
#define RESP_MAX_HEADER_BYTES (64 * 1024)

struct px_upstream {
    proxy *px;
    CURLM *multi;
    pthread_t thread;
    pthread_mutex_t mu;
    struct proxy_exchange *qhead, *qtail; /* under mu */
    bool stop;                            /* under mu */
    bool abort_all;                       /* under mu */
    struct proxy_exchange *active;        /* thread only */
    struct proxy_exchange *wake;          /* thread only: fronts to resume after this turn */
    CURL *free_easy[FREE_EASY_MAX];
    int nfree;
};

/* ---- waking the front end ------------------------------------------------------------- */

/* Resuming a client connection costs the front end a loop turn; doing it once per upstream
 * loop turn (after curl_multi_perform) instead of once per callback lets a small answer's
 * header and body reach the client in one go. */
static void wake_later(struct proxy_exchange *x)
{
    struct px_upstream *up = x->px->up;
    if (x->wake_queued)
        return;
    x->wake_queued = true;
    px_ex_ref(x);
    x->wnext = up->wake;
    up->wake = x;
}

static void wake_now(struct px_upstream *up)
{
    while (up->wake) {
        struct proxy_exchange *x = up->wake;
        up->wake = x->wnext;
        x->wnext = NULL;
        x->wake_queued = false;
        pthread_mutex_lock(&x->mu);
        px_wake_front(x);
        pthread_mutex_unlock(&x->mu);
        px_ex_unref(x);
    }
}

/* ---- curl callbacks (upstream thread) ------------------------------------------------- */

static size_t on_read(char *dst, size_t size, size_t nitems, void *arg)
{
    struct proxy_exchange *x = arg;
    size_t max = size * nitems, n;
    pthread_mutex_lock(&x->mu);
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
    pthread_mutex_unlock(&x->mu);
    return n;
}

static size_t on_write(char *src, size_t size, size_t nmemb, void *arg)
{
    struct proxy_exchange *x = arg;
    size_t n = size * nmemb;
    size_t ret = n;
    pthread_mutex_lock(&x->mu);
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
    pthread_mutex_unlock(&x->mu);
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
    pthread_mutex_lock(&x->mu);
    x->headers_done = true;
    if (hold) {
        x->hold = true;
        x->out.max = px->cfg->limits.max_json_answer;
    } else {
        x->resp_ready = true;
        wake_later(x);
    }
    pthread_mutex_unlock(&x->mu);
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
    char *l = xasprintf("%.*s: %.*s", (int)nlen, line, (int)vlen, v);
    struct curl_slist *nl = curl_slist_append(x->resp_headers, l);
    free(l);
    if (!nl)
        return 0;
    x->resp_headers = nl;
    return n;
}

/* ---- the thread ----------------------------------------------------------------------- */

static void link_active(struct px_upstream *up, struct proxy_exchange *x)
{
    x->aprev = NULL;
    x->anext = up->active;
    if (up->active)
        up->active->aprev = x;
    up->active = x;
}

static void unlink_active(struct px_upstream *up, struct proxy_exchange *x)
{
    if (x->aprev)
        x->aprev->anext = x->anext;
    else
        up->active = x->anext;
    if (x->anext)
        x->anext->aprev = x->aprev;
    x->aprev = x->anext = NULL;
}

static void attach(struct px_upstream *up, struct proxy_exchange *x)
{
    proxy *px = up->px;
    const struct cfg_limits *l = &px->cfg->limits;
    CURL *e = up->nfree ? up->free_easy[--up->nfree] : curl_easy_init();
    if (!e)
        abort();
    char *url = xasprintf("%s%s", px->cfg->upstream, x->target);
    curl_easy_setopt(e, CURLOPT_URL, url);
    free(url);
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->req_headers);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 64L * 1024);
    curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, (long)l->upstream_connect_timeout_s);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)l->upstream_timeout_s);
    if (x->head) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, x->method);
        if (x->has_body) {
            curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 64L * 1024);
            curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->body_len);
            curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
            curl_easy_setopt(e, CURLOPT_READDATA, x);
        }
    }
    x->easy = e;
    x->t_up_start = now_us();
    px_ex_ref(x); /* the transfer's reference */
    link_active(up, x);
    if (curl_multi_add_handle(up->multi, e) != CURLM_OK)
        abort();
}

static void recycle(struct px_upstream *up, CURL *e)
{
    curl_multi_remove_handle(up->multi, e);
    if (up->nfree < FREE_EASY_MAX) {
        curl_easy_reset(e);
        up->free_easy[up->nfree++] = e;
    } else {
        curl_easy_cleanup(e);
    }
}

static void finish(struct px_upstream *up, struct proxy_exchange *x, CURLcode rc)
{
    proxy *px = up->px;
    CURL *e = x->easy;
    long connect_us = 0;
    curl_easy_getinfo(e, CURLINFO_PRETRANSFER_TIME_T, &connect_us); /* 0: never connected */

    pthread_mutex_lock(&x->mu);
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
        pthread_mutex_unlock(&x->mu);
        /* the front end waits for resp_ready and touches nothing meanwhile */
        if (px->hooks.on_response_body)
            px->hooks.on_response_body(px->hooks.arg, x->hook_state, x, &x->out);
        pthread_mutex_lock(&x->mu);
        x->resp_len = (int64_t)x->out.len;
        x->resp_ready = true;
    }
    x->out_eof = true;
    wake_later(x);
    pthread_mutex_unlock(&x->mu);

    unlink_active(up, x);
    x->easy = NULL;
    recycle(up, e);
    px_ex_unref(x);
}

static void run_commands(struct px_upstream *up)
{
    pthread_mutex_lock(&up->mu);
    struct proxy_exchange *list = up->qhead;
    up->qhead = up->qtail = NULL;
    bool all = up->abort_all;
    up->abort_all = false;
    pthread_mutex_unlock(&up->mu);

    while (list) {
        struct proxy_exchange *x = list;
        pthread_mutex_lock(&up->mu);
        list = x->qnext;
        x->qnext = NULL;
        unsigned cmds = x->cmds;
        x->cmds = 0;
        x->queued = false;
        pthread_mutex_unlock(&up->mu);

        if (cmds & CMD_ABORT) {
            if (x->easy)
                finish(up, x, CURLE_ABORTED_BY_CALLBACK);
        } else {
            if ((cmds & CMD_START) && !x->easy && !x->up_done)
                attach(up, x);
            if ((cmds & (CMD_UNPAUSE_READ | CMD_UNPAUSE_WRITE)) && x->easy)
                curl_easy_pause(x->easy, CURLPAUSE_CONT);
        }
        px_ex_unref(x); /* the queue's reference */
    }
    if (all)
        while (up->active)
            finish(up, up->active, CURLE_ABORTED_BY_CALLBACK);
    wake_now(up);
}

static void *upstream_main(void *arg)
{
    struct px_upstream *up = arg;
    for (;;) {
        pthread_mutex_lock(&up->mu);
        bool stop = up->stop;
        pthread_mutex_unlock(&up->mu);
        if (stop)
            break;
        run_commands(up);
        int running = 0;
        curl_multi_perform(up->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(up->multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            struct proxy_exchange *x = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            if (x)
                finish(up, x, m->data.result);
        }
        wake_now(up);
        curl_multi_poll(up->multi, NULL, 0, 1000, NULL);
    }
    run_commands(up);
    while (up->active)
        finish(up, up->active, CURLE_ABORTED_BY_CALLBACK);
    wake_now(up);
    return NULL;
}

struct px_upstream *px_upstream_new(proxy *px, cut_err *err)
{
    struct px_upstream *up = xcalloc(1, sizeof(*up));
    up->px = px;
    pthread_mutex_init(&up->mu, NULL);
    up->multi = curl_multi_init();
    if (!up->multi) {
        err_set(err, CUT_EIO, "upstream", "curl_multi_init failed");
        goto fail;
    }
    curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS, 1024L);
    if (pthread_create(&up->thread, NULL, upstream_main, up) != 0) {
        err_set(err, CUT_EIO, "upstream", "cannot start the upstream thread");
        goto fail;
    }
    return up;
fail:
    if (up->multi)
        curl_multi_cleanup(up->multi);
    pthread_mutex_destroy(&up->mu);
    free(up);
    return NULL;
}

void px_upstream_free(struct px_upstream *up)
{
    if (!up)
        return;
    pthread_mutex_lock(&up->mu);
    up->stop = true;
    pthread_mutex_unlock(&up->mu);
    curl_multi_wakeup(up->multi);
    pthread_join(up->thread, NULL);
    for (int i = 0; i < up->nfree; i++)
        curl_easy_cleanup(up->free_easy[i]);
    curl_multi_cleanup(up->multi);
    pthread_mutex_destroy(&up->mu);
    free(up);
}

bool px_upstream_start(struct proxy_exchange *x, cut_err *err)
{
    (void)err;
    px_upstream_post(x, CMD_START);
    return true;
}

void px_upstream_post(struct proxy_exchange *x, unsigned cmd)
{
    struct px_upstream *up = x->px->up;
    pthread_mutex_lock(&up->mu);
    x->cmds |= cmd;
    if (!x->queued) {
        x->queued = true;
        px_ex_ref(x);
        x->qnext = NULL;
        if (up->qtail)
            up->qtail->qnext = x;
        else
            up->qhead = x;
        up->qtail = x;
    }
    pthread_mutex_unlock(&up->mu);
    curl_multi_wakeup(up->multi);
}

void px_upstream_abort_all(struct px_upstream *up)
{
    pthread_mutex_lock(&up->mu);
    up->abort_all = true;
    pthread_mutex_unlock(&up->mu);
    curl_multi_wakeup(up->multi);
}
