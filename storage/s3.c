/*
 * s3: PutObject, HeadObject, GetObject, DeleteObject, multipart upload and presigned URLs
 * against S3 or an S3-compatible server, with SigV4 (sigv4.c) and libcurl.
 *
 * How a call goes: s3_do() builds the URL and Host from the endpoint and addressing style
 * (virtual-hosted by default, path style on request or when the bucket name cannot be a
 * TLS host name), takes a curl handle from the client's pool (so keep-alive connections
 * are reused across calls and threads without sharing a handle between two threads),
 * signs the headers with the credentials current at that moment, and performs the
 * request. The body comes from a buffer or a file range read with pread, so a retry simply
 * starts again from the range's first byte. Answers: 2xx bodies either go to the caller's
 * sink (GET) or into a capped buffer (the small XML answers of multipart); error bodies
 * into a 64 KiB capped buffer, from which <Code> and <Message> are read.
 *
 * Retries follow the AWS guidance: connection errors, 5xx, 408, 429, SlowDown and
 * RequestTimeout, with "full jitter" (a uniform wait between 0 and base * 2^attempt,
 * capped at 20 s), within max_attempts and the total time budget; other 4xx never.
 * CompleteMultipartUpload may answer 200 with an <Error> body: that is an error too.
 *
 * Why curl handles in a pool and not a curl share: a shared connection cache needs locking
 * callbacks and still cannot hand one connection to two threads; a small pool gives each
 * thread a warm handle with its own connections, which is what a worker pool wants.
 * Secrets stay out of logs: log lines name the method, the key, status and S3 code only.
 */
#include "storage/s3.h"
#include "storage/s3_util.h"
#include "storage/sigv4.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S3_MAX_ERROR_BODY (64 * 1024)
#define S3_MAX_XML_ANSWER (1024 * 1024)
#define S3_MAX_KEY 1024
#define S3_MAX_PARTS 10000
#define S3_POOL_MAX 64
#define S3_BACKOFF_CAP_MS 20000

struct s3_client {
    char *scheme;    /* "http" or "https" */
    char *host;      /* the endpoint's host[:port], as in the Host header */
    char *base_path; /* the endpoint's path, "" or "/prefix" without trailing '/' */
    char *bucket;
    char *region;
    bool path_style;
    char *obj_host;   /* the Host for object requests */
    char *obj_prefix; /* canonical URI prefix: "" (virtual-hosted) or "/bucket" */
    enum sse_mode sse;
    char *kms_key_id;
    uint64_t multipart_threshold;
    uint64_t part_size;
    int max_attempts;
    int retry_base_ms;
    int retry_max_total_ms;
    int timeout_s;
    creds_provider *creds; /* borrowed */
    sigv4_signer *signer;

    pthread_mutex_t pool_mu;
    CURL *pool[S3_POOL_MAX];
    int npool;
};

/* ---- construction ---------------------------------------------------------------------- */

static bool bucket_dns_ok(const char *b)
{
    size_t n = strlen(b);

    if (n < 3 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false; /* dots break TLS host names; upper case is not DNS-safe */
    }
    return b[0] != '-' && b[n - 1] != '-';
}

s3_client *s3_client_new(const struct cfg_s3 *cfg, creds_provider *creds, cut_err *err)
{
    s3_client *c = xcalloc(1, sizeof(*c));
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *endpoint = NULL;
    size_t pl;

    pthread_mutex_init(&c->pool_mu, NULL);
    if (cfg->bucket == NULL || !cfg->bucket[0]) {
        err_set(err, CUT_EINVAL, "s3", "s3.bucket: missing");
        goto fail;
    }
    if (cfg->region == NULL || !cfg->region[0]) {
        err_set(err, CUT_EINVAL, "s3", "s3.region: missing");
        goto fail;
    }
    if (creds == NULL) {
        err_set(err, CUT_EINVAL, "s3", "no credentials provider");
        goto fail;
    }
    endpoint = cfg->endpoint && cfg->endpoint[0]
                   ? xstrdup(cfg->endpoint)
                   : xasprintf("https://s3.%s.amazonaws.com", cfg->region);
    if (curl_url_set(u, CURLUPART_URL, endpoint, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
        err_set(err, CUT_EINVAL, "s3", "s3.endpoint: not an http(s) URL: %s", endpoint);
        goto fail;
    }
    if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
        port = NULL;
    if (curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK)
        path = NULL;
    c->scheme = xstrdup(scheme);
    c->host = port ? xasprintf("%s:%s", host, port) : xstrdup(host);
    c->base_path = xstrdup(path ? path : "");
    pl = strlen(c->base_path);
    while (pl > 0 && c->base_path[pl - 1] == '/')
        c->base_path[--pl] = '\0';
    c->bucket = xstrdup(cfg->bucket);
    c->region = xstrdup(cfg->region);
    c->path_style = cfg->path_style || !bucket_dns_ok(cfg->bucket);
    if (c->path_style) {
        c->obj_host = xstrdup(c->host);
        c->obj_prefix = xasprintf("%s/%s", c->base_path, c->bucket);
    } else {
        c->obj_host = xasprintf("%s.%s", c->bucket, c->host);
        c->obj_prefix = xstrdup(c->base_path);
    }
    c->sse = cfg->sse;
    c->kms_key_id = xstrdup(cfg->kms_key_id);
    c->multipart_threshold = cfg->multipart_threshold ? cfg->multipart_threshold : 64ull << 20;
    c->part_size = cfg->part_size >= (5ull << 20) ? cfg->part_size : 16ull << 20;
    c->max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : 5;
    c->retry_base_ms = cfg->retry_base_ms > 0 ? cfg->retry_base_ms : 100;
    c->retry_max_total_ms = cfg->retry_max_total_ms > 0 ? cfg->retry_max_total_ms : 30000;
    c->timeout_s = cfg->timeout_s > 0 ? cfg->timeout_s : 300;
    c->creds = creds;
    c->signer = sigv4_signer_new(c->region, "s3");
    goto done;
fail:
    s3_client_free(c);
    c = NULL;
done:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_url_cleanup(u);
    free(endpoint);
    return c;
}

void s3_client_free(s3_client *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < c->npool; i++)
        curl_easy_cleanup(c->pool[i]);
    pthread_mutex_destroy(&c->pool_mu);
    sigv4_signer_free(c->signer);
    free(c->scheme);
    free(c->host);
    free(c->base_path);
    free(c->bucket);
    free(c->region);
    free(c->obj_host);
    free(c->obj_prefix);
    free(c->kms_key_id);
    free(c);
}

static CURL *pool_get(s3_client *c)
{
    CURL *h = NULL;

    pthread_mutex_lock(&c->pool_mu);
    if (c->npool > 0)
        h = c->pool[--c->npool];
    pthread_mutex_unlock(&c->pool_mu);
    if (h == NULL && (h = curl_easy_init()) == NULL)
        abort();
    return h;
}

static void pool_put(s3_client *c, CURL *h)
{
    pthread_mutex_lock(&c->pool_mu);
    if (c->npool < S3_POOL_MAX) {
        c->pool[c->npool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->pool_mu);
    if (h)
        curl_easy_cleanup(h);
}

/* ---- one request ----------------------------------------------------------------------- */

struct s3_req {
    const char *method;
    const char *key; /* NULL: the bucket itself */
    const struct sigv4_kv *query;
    size_t nquery;
    const struct sigv4_kv *headers; /* extra headers, all signed */
    size_t nheaders;
    const char *payload_hash; /* hex; NULL: SHA-256 of the empty body */
    /* body: a buffer, or a range of a file */
    const char *body;
    size_t body_len;
    int fd; /* -1: no file */
    uint64_t file_off;
    uint64_t file_len;
    /* 2xx answer body: to a sink, or kept (capped) */
    s3_sink sink;
    void *sink_arg;
    struct buf *keep;
};

struct xfer {
    const struct s3_req *rq;
    struct s3_result *res;
    CURL *h;
    uint64_t sent;
    struct buf errbody;
    bool delivered; /* bytes reached the sink */
    bool sink_stop;
    bool keep_over;
    int fd_errno;
};

static size_t on_read(char *dst, size_t sz, size_t n, void *arg)
{
    struct xfer *x = arg;
    const struct s3_req *rq = x->rq;
    uint64_t total = rq->fd >= 0 ? rq->file_len : rq->body_len;
    size_t want = sz * n;
    ssize_t got;

    if (x->sent >= total)
        return 0;
    if (want > total - x->sent)
        want = (size_t)(total - x->sent);
    if (rq->fd < 0) {
        memcpy(dst, rq->body + x->sent, want);
        x->sent += want;
        return want;
    }
    do {
        got = pread(rq->fd, dst, want, (off_t)(rq->file_off + x->sent));
    } while (got < 0 && errno == EINTR);
    if (got <= 0) {
        x->fd_errno = got < 0 ? errno : EIO;
        return CURL_READFUNC_ABORT;
    }
    x->sent += (uint64_t)got;
    return (size_t)got;
}

static int on_seek(void *arg, curl_off_t off, int origin)
{
    struct xfer *x = arg;

    if (origin != SEEK_SET || off < 0)
        return CURL_SEEKFUNC_CANTSEEK;
    x->sent = (uint64_t)off;
    return CURL_SEEKFUNC_OK;
}

static void copy_value(char *dst, size_t dlen, const char *v, size_t n, bool unquote)
{
    while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
        n--;
    while (n > 0 && *v == ' ') {
        v++;
        n--;
    }
    if (unquote && n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        v++;
        n -= 2;
    }
    if (n >= dlen)
        n = dlen - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
    struct xfer *x = arg;
    struct s3_result *r = x->res;
    size_t len = sz * n;
    const char *colon;
    size_t nl;

    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        r->etag[0] = r->request_id[0] = r->checksum_sha256[0] = r->date[0] = '\0';
        r->content_length = -1;
        return len;
    }
    colon = memchr(p, ':', len);
    if (colon == NULL)
        return len;
    nl = (size_t)(colon - p);
    colon++;
#define HDR(name) (nl == sizeof(name) - 1 && strncasecmp(p, name, nl) == 0)
    if (HDR("etag"))
        copy_value(r->etag, sizeof(r->etag), colon, len - nl - 1, true);
    else if (HDR("x-amz-request-id"))
        copy_value(r->request_id, sizeof(r->request_id), colon, len - nl - 1, false);
    else if (HDR("x-amz-checksum-sha256"))
        copy_value(r->checksum_sha256, sizeof(r->checksum_sha256), colon, len - nl - 1, false);
    else if (HDR("date"))
        copy_value(r->date, sizeof(r->date), colon, len - nl - 1, false);
    else if (HDR("content-length")) {
        char v[32];
        copy_value(v, sizeof(v), colon, len - nl - 1, false);
        r->content_length = strtoll(v, NULL, 10);
    }
#undef HDR
    return len;
}

static size_t on_write(char *p, size_t sz, size_t n, void *arg)
{
    struct xfer *x = arg;
    size_t len = sz * n;
    long status = 0;

    curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300) {
        if (x->rq->sink) {
            x->delivered = true;
            if (x->rq->sink(x->rq->sink_arg, p, len) != 0) {
                x->sink_stop = true;
                return 0;
            }
            return len;
        }
        if (x->rq->keep) {
            if (!buf_append(x->rq->keep, p, len)) {
                x->keep_over = true;
                return 0;
            }
        }
        return len;
    }
    /* An error body: keep the first 64 KiB (enough for <Code> and <Message>), drop the rest. */
    if (!buf_append(&x->errbody, p, len)) {
        size_t room = x->errbody.max - x->errbody.len;
        if (room && !buf_append(&x->errbody, p, room < len ? room : len))
            return len;
    }
    return len;
}

static bool retryable_code(const char *code)
{
    return strcmp(code, "SlowDown") == 0 || strcmp(code, "RequestTimeout") == 0 ||
           strcmp(code, "InternalError") == 0 || strcmp(code, "ServiceUnavailable") == 0 ||
           strcmp(code, "Throttling") == 0 || strcmp(code, "ThrottlingException") == 0 ||
           strcmp(code, "RequestLimitExceeded") == 0 || strcmp(code, "TooManyRequests") == 0;
}

static bool retryable_curl(CURLcode cc)
{
    switch (cc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

static uint64_t rnd_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static const char *status_code_name(long st)
{
    switch (st) {
    case 301:
        return "PermanentRedirect";
    case 400:
        return "BadRequest";
    case 403:
        return "Forbidden";
    case 404:
        return "NotFound";
    case 405:
        return "MethodNotAllowed";
    case 409:
        return "Conflict";
    case 412:
        return "PreconditionFailed";
    case 503:
        return "ServiceUnavailable";
    default:
        return "";
    }
}

/* Builds "scheme://host<uri>[?query]" into out and the canonical URI into uri. */
static int build_target(s3_client *c, const struct s3_req *rq, char *uri, size_t urilen,
                        struct buf *url, cut_err *err)
{
    long n;

    if (rq->key) {
        if (!rq->key[0] || strlen(rq->key) > S3_MAX_KEY) {
            err_set(err, CUT_EINVAL, "s3", "object key is empty or longer than %d bytes",
                    S3_MAX_KEY);
            return -1;
        }
        n = sigv4_encode_path(c->obj_prefix, rq->key, uri, urilen);
    } else {
        /* the bucket itself: "/bucket" in path style, "/" virtual-hosted */
        n = snprintf(uri, urilen, "%s", c->obj_prefix[0] ? c->obj_prefix : "/");
        if (n >= (long)urilen)
            n = -1;
    }
    if (n < 0) {
        err_set(err, CUT_ELIMIT, "s3", "request URI too long");
        return -1;
    }
    buf_reset(url);
    if (!buf_printf(url, "%s://%s%s", c->scheme, c->obj_host, uri))
        goto big;
    for (size_t i = 0; i < rq->nquery; i++) {
        char enc[3 * 256 + 1];
        const char *v = rq->query[i].value;
        if (sigv4_encode(rq->query[i].name, strlen(rq->query[i].name), false, enc, sizeof(enc)) <
                0 ||
            !buf_puts(url, i == 0 ? "?" : "&") || !buf_puts(url, enc))
            goto big;
        if (v) {
            if (sigv4_encode(v, strlen(v), false, enc, sizeof(enc)) < 0 || !buf_puts(url, "=") ||
                !buf_puts(url, enc))
                goto big;
        } else if (!buf_puts(url, "=")) {
            goto big;
        }
    }
    return 0;
big:
    err_set(err, CUT_ELIMIT, "s3", "request URL too long");
    return -1;
}

static int s3_do(s3_client *c, const struct s3_req *rq, struct s3_result *res, cut_err *err)
{
    char uri[3 * S3_MAX_KEY + 256], amz[17], auth[1024], line[8192];
    struct sigv4_kv hv[SIGV4_MAX_HEADERS];
    struct buf url;
    struct xfer x;
    struct curl_slist *hl = NULL;
    struct creds *cr = NULL;
    uint64_t start = now_us(), seed = start ^ (uint64_t)(uintptr_t)&x;
    const char *payload = rq->payload_hash ? rq->payload_hash : SIGV4_EMPTY_SHA256;
    uint64_t upload_len = rq->fd >= 0 ? rq->file_len : rq->body_len;
    bool has_body = rq->body != NULL || rq->fd >= 0 || strcmp(rq->method, "POST") == 0 ||
                    strcmp(rq->method, "PUT") == 0;
    int rc = -1;

    memset(res, 0, sizeof(*res));
    res->content_length = -1;
    buf_init(&url, 16384);
    buf_init(&x.errbody, S3_MAX_ERROR_BODY);
    if (rq->nheaders + 4 > SIGV4_MAX_HEADERS) {
        err_set(err, CUT_ELIMIT, "s3", "too many headers");
        goto out;
    }
    if (build_target(c, rq, uri, sizeof(uri), &url, err) != 0)
        goto out;

    for (int attempt = 0;; attempt++) {
        CURL *h;
        CURLcode cc;
        char ebuf[CURL_ERROR_SIZE] = "";
        size_t nh = 0;
        bool retry = false;
        long status = 0;
        char why[CURL_ERROR_SIZE + 64];

        creds_release(cr);
        cr = NULL;
        if (creds_acquire(c->creds, &cr, err) != 0)
            goto out;
        sigv4_amz_date(time(NULL), amz);
        hv[nh++] = (struct sigv4_kv){"host", c->obj_host};
        hv[nh++] = (struct sigv4_kv){"x-amz-content-sha256", payload};
        hv[nh++] = (struct sigv4_kv){"x-amz-date", amz};
        if (cr->session_token)
            hv[nh++] = (struct sigv4_kv){"x-amz-security-token", cr->session_token};
        for (size_t i = 0; i < rq->nheaders; i++)
            hv[nh++] = rq->headers[i];
        {
            struct sigv4_creds sc = {cr->access_key_id, cr->secret_access_key, cr->session_token};
            struct sigv4_request sr = {rq->method, uri, rq->query, rq->nquery, hv, nh, payload};
            if (sigv4_sign_header(c->signer, &sc, &sr, amz, auth, sizeof(auth), NULL, err) != 0)
                goto out;
        }
        curl_slist_free_all(hl);
        hl = NULL;
        for (size_t i = 0; i < nh; i++) {
            snprintf(line, sizeof(line), "%s: %s", i == 0 ? "Host" : hv[i].name, hv[i].value);
            hl = curl_slist_append(hl, line);
        }
        snprintf(line, sizeof(line), "Authorization: %s", auth);
        hl = curl_slist_append(hl, line);
        hl = curl_slist_append(hl, "Expect:");

        x.sent = 0;
        x.delivered = x.sink_stop = x.keep_over = false;
        x.fd_errno = 0;
        buf_reset(&x.errbody);
        x.rq = rq;
        x.res = res;
        if (rq->keep)
            buf_reset(rq->keep);
        h = pool_get(c);
        x.h = h;
        curl_easy_reset(h);
        curl_easy_setopt(h, CURLOPT_URL, url.data);
        curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)c->timeout_s);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
        if (strcmp(rq->method, "HEAD") == 0) {
            curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        } else if (has_body) {
            curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)upload_len);
            curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
            curl_easy_setopt(h, CURLOPT_READDATA, &x);
            curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
            curl_easy_setopt(h, CURLOPT_SEEKDATA, &x);
            if (strcmp(rq->method, "PUT") != 0)
                curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq->method);
        } else if (strcmp(rq->method, "GET") != 0) {
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq->method);
        }
        cc = curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
        pool_put(c, h);
        res->attempts = attempt + 1;
        res->status = cc == CURLE_OK ? status : 0;
        res->code[0] = res->message[0] = '\0';

        if (x.fd_errno) {
            err_set(err, CUT_EIO, "s3", "%s %s: reading the file: %s", rq->method,
                    rq->key ? rq->key : "", strerror(x.fd_errno));
            goto out;
        }
        if (x.sink_stop) {
            err_set(err, CUT_EIO, "s3", "GET %s: the receiver stopped the transfer", rq->key);
            goto out;
        }
        if (x.keep_over) {
            err_set(err, CUT_ELIMIT, "s3", "%s: answer larger than %zu bytes", rq->method,
                    rq->keep->max);
            goto out;
        }
        if (cc != CURLE_OK) {
            snprintf(why, sizeof(why), "%s", ebuf[0] ? ebuf : curl_easy_strerror(cc));
            retry = retryable_curl(cc) && !x.delivered;
        } else if (status >= 200 && status < 300) {
            /* 200 with an <Error> body (CompleteMultipartUpload) */
            if (rq->keep && rq->keep->len &&
                memmem(rq->keep->data, rq->keep->len, "<Error>", 7) != NULL) {
                s3x_xml_tag(rq->keep->data, rq->keep->len, "Code", res->code, sizeof(res->code));
                s3x_xml_tag(rq->keep->data, rq->keep->len, "Message", res->message,
                            sizeof(res->message));
                snprintf(why, sizeof(why), "%ld with an error body", status);
                retry = retryable_code(res->code);
            } else {
                rc = 0;
                goto out;
            }
        } else {
            s3x_xml_tag(x.errbody.data, x.errbody.len, "Code", res->code, sizeof(res->code));
            s3x_xml_tag(x.errbody.data, x.errbody.len, "Message", res->message,
                        sizeof(res->message));
            if (!res->code[0])
                snprintf(res->code, sizeof(res->code), "%s", status_code_name(status));
            snprintf(why, sizeof(why), "HTTP %ld", status);
            retry = status >= 500 || status == 408 || status == 429 || retryable_code(res->code);
        }
        if (retry && attempt + 1 < c->max_attempts) {
            uint64_t cap_ms = (uint64_t)c->retry_base_ms << (attempt < 20 ? attempt : 20);
            uint64_t wait_ms, spent_ms;
            if (cap_ms > S3_BACKOFF_CAP_MS)
                cap_ms = S3_BACKOFF_CAP_MS;
            wait_ms = rnd_next(&seed) % (cap_ms + 1);
            spent_ms = (now_us() - start) / 1000;
            if (spent_ms + wait_ms < (uint64_t)c->retry_max_total_ms) {
                log_msgf(LOG_WARN, "s3_retry", "%s %s: %s %s; attempt %d, retrying in %lu ms",
                         rq->method, rq->key ? rq->key : "(bucket)", why, res->code, attempt + 1,
                         (unsigned long)wait_ms);
                sleep_ms((long)wait_ms);
                continue;
            }
        }
        if (cc != CURLE_OK) {
            err_set(err, CUT_EHTTP, "s3", "%s %s: %s (after %d attempts)", rq->method,
                    rq->key ? rq->key : "(bucket)", why, attempt + 1);
        } else {
            err_set(err, status == 404 ? CUT_ENOTFOUND : CUT_ES3, "s3",
                    "%s %s: %s %s%s%s (request id %s, %d attempts)", rq->method,
                    rq->key ? rq->key : "(bucket)", why, res->code, res->message[0] ? ": " : "",
                    res->message, res->request_id[0] ? res->request_id : "-", attempt + 1);
        }
        goto out;
    }
out:
    creds_release(cr);
    curl_slist_free_all(hl);
    OPENSSL_cleanse(auth, sizeof(auth));
    buf_free(&url);
    buf_free(&x.errbody);
    return rc;
}

/* ---- operations ------------------------------------------------------------------------ */

/* The SSE headers of the configuration, appended to hv; returns the new count. */
static size_t sse_headers(const s3_client *c, struct sigv4_kv *hv, size_t n)
{
    if (c->sse == SSE_S3) {
        hv[n++] = (struct sigv4_kv){"x-amz-server-side-encryption", "AES256"};
    } else if (c->sse == SSE_KMS) {
        hv[n++] = (struct sigv4_kv){"x-amz-server-side-encryption", "aws:kms"};
        if (c->kms_key_id && c->kms_key_id[0])
            hv[n++] =
                (struct sigv4_kv){"x-amz-server-side-encryption-aws-kms-key-id", c->kms_key_id};
    }
    return n;
}

/* Headers of a PutObject / UploadPart body: Content-MD5, checksum, content type, SSE. */
struct put_hdrs {
    struct sigv4_kv hv[8];
    size_t n;
    char md5_b64[32];
    char sha_b64[48];
    char sha_hex[65];
};

static void put_hdrs_fill(const s3_client *c, struct put_hdrs *p, const unsigned char md5[16],
                          const unsigned char sha[32], const struct s3_put_opts *o, bool object)
{
    p->n = 0;
    s3x_base64(md5, 16, p->md5_b64);
    s3x_base64(sha, 32, p->sha_b64);
    s3x_hex(sha, 32, p->sha_hex);
    p->hv[p->n++] = (struct sigv4_kv){"content-md5", p->md5_b64};
    if (object) {
        p->hv[p->n++] = (struct sigv4_kv){"x-amz-checksum-sha256", p->sha_b64};
        if (o && o->content_type)
            p->hv[p->n++] = (struct sigv4_kv){"content-type", o->content_type};
        p->n = sse_headers(c, p->hv, p->n);
    }
}

static struct s3_req req_init(const char *method, const char *key)
{
    struct s3_req r;

    memset(&r, 0, sizeof(r));
    r.method = method;
    r.key = key;
    r.fd = -1;
    return r;
}

int s3_put_buffer(s3_client *c, const char *key, const void *data, size_t len,
                  const struct s3_put_opts *opts, struct s3_result *res, cut_err *err)
{
    unsigned char md5[16], sha[32];
    struct put_hdrs ph;
    struct s3_req rq = req_init("PUT", key);

    s3x_hash_buf(data, len, (opts && opts->md5) ? NULL : md5, (opts && opts->sha256) ? NULL : sha);
    put_hdrs_fill(c, &ph, (opts && opts->md5) ? opts->md5 : md5,
                  (opts && opts->sha256) ? opts->sha256 : sha, opts, true);
    rq.headers = ph.hv;
    rq.nheaders = ph.n;
    rq.payload_hash = ph.sha_hex;
    rq.body = data ? data : "";
    rq.body_len = len;
    return s3_do(c, &rq, res, err);
}

int s3_multipart_create(s3_client *c, const char *key, const struct s3_put_opts *opts,
                        char *upload_id, size_t idlen, struct s3_result *res, cut_err *err)
{
    struct sigv4_kv hv[4], q[1] = {{"uploads", ""}};
    struct s3_req rq = req_init("POST", key);
    struct buf body;
    size_t n = 0;
    int rc = -1;

    buf_init(&body, S3_MAX_XML_ANSWER);
    if (opts && opts->content_type)
        hv[n++] = (struct sigv4_kv){"content-type", opts->content_type};
    n = sse_headers(c, hv, n);
    rq.headers = hv;
    rq.nheaders = n;
    rq.query = q;
    rq.nquery = 1;
    rq.keep = &body;
    if (s3_do(c, &rq, res, err) != 0)
        goto out;
    if (!s3x_xml_tag(body.data, body.len, "UploadId", upload_id, idlen) || !upload_id[0]) {
        err_set(err, CUT_ES3, "s3", "CreateMultipartUpload %s: no UploadId in the answer", key);
        goto out;
    }
    rc = 0;
out:
    buf_free(&body);
    return rc;
}

int s3_multipart_abort(s3_client *c, const char *key, const char *upload_id, struct s3_result *res,
                       cut_err *err)
{
    struct sigv4_kv q[1] = {{"uploadId", upload_id}};
    struct s3_req rq = req_init("DELETE", key);

    rq.query = q;
    rq.nquery = 1;
    return s3_do(c, &rq, res, err);
}

static int multipart_file(s3_client *c, const char *key, int fd, uint64_t size,
                          const struct s3_put_opts *opts, struct s3_result *res, cut_err *err)
{
    char upload_id[1024], pn[24];
    uint64_t part = c->part_size, nparts;
    struct buf xml, answer;
    int rc = -1;
    bool created = false;

    buf_init(&xml, 0);
    buf_init(&answer, S3_MAX_XML_ANSWER);
    /* at most 10,000 parts: grow the part size (in MiB steps) for very large files */
    while ((size + part - 1) / part > S3_MAX_PARTS)
        part += 1ull << 20;
    nparts = size == 0 ? 1 : (size + part - 1) / part;
    if (s3_multipart_create(c, key, opts, upload_id, sizeof(upload_id), res, err) != 0)
        goto out;
    created = true;
    if (!buf_puts(&xml,
                  "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"))
        abort();
    for (uint64_t i = 0; i < nparts; i++) {
        unsigned char md5[16], sha[32];
        struct put_hdrs ph;
        struct sigv4_kv q[2];
        struct s3_req rq = req_init("PUT", key);
        uint64_t off = i * part, len = size - off < part ? size - off : part;

        if (s3x_hash_fd(fd, off, len, md5, sha, err) != 0)
            goto out;
        put_hdrs_fill(c, &ph, md5, sha, opts, false);
        snprintf(pn, sizeof(pn), "%lu", (unsigned long)(i + 1));
        q[0] = (struct sigv4_kv){"partNumber", pn};
        q[1] = (struct sigv4_kv){"uploadId", upload_id};
        rq.query = q;
        rq.nquery = 2;
        rq.headers = ph.hv;
        rq.nheaders = ph.n;
        rq.payload_hash = ph.sha_hex;
        rq.fd = fd;
        rq.file_off = off;
        rq.file_len = len;
        if (s3_do(c, &rq, res, err) != 0)
            goto out;
        if (!res->etag[0]) {
            err_set(err, CUT_ES3, "s3", "UploadPart %s #%s: no ETag in the answer", key, pn);
            goto out;
        }
        if (!buf_printf(&xml, "<Part><PartNumber>%s</PartNumber><ETag>\"%s\"</ETag></Part>", pn,
                        res->etag))
            abort();
    }
    if (!buf_puts(&xml, "</CompleteMultipartUpload>"))
        abort();
    {
        struct sigv4_kv q[1] = {{"uploadId", upload_id}}, hv[1];
        struct s3_req rq = req_init("POST", key);
        char sha_hex[65];
        unsigned char sha[32];

        s3x_hash_buf(xml.data, xml.len, NULL, sha);
        s3x_hex(sha, 32, sha_hex);
        hv[0] = (struct sigv4_kv){"content-type", "application/xml"};
        rq.query = q;
        rq.nquery = 1;
        rq.headers = hv;
        rq.nheaders = 1;
        rq.body = xml.data;
        rq.body_len = xml.len;
        rq.payload_hash = sha_hex;
        rq.keep = &answer;
        if (s3_do(c, &rq, res, err) != 0)
            goto out;
        if (!res->etag[0])
            s3x_xml_tag(answer.data, answer.len, "ETag", res->etag, sizeof(res->etag));
        /* the XML ETag is quoted ("&quot;...&quot;" decoded to quotes) */
        if (res->etag[0] == '"') {
            size_t l = strlen(res->etag);
            memmove(res->etag, res->etag + 1, l);
            if (l >= 2 && res->etag[l - 2] == '"')
                res->etag[l - 2] = '\0';
        }
    }
    created = false;
    rc = 0;
out:
    if (created) {
        struct s3_result ar;
        cut_err ae = CUT_ERR_INIT;
        if (s3_multipart_abort(c, key, upload_id, &ar, &ae) != 0)
            log_msgf(LOG_WARN, "s3_abort",
                     "AbortMultipartUpload %s failed (%ld %s); "
                     "a bucket lifecycle rule should clean up incomplete uploads",
                     key, ar.status, ar.code);
    }
    buf_free(&xml);
    buf_free(&answer);
    return rc;
}

int s3_put_file(s3_client *c, const char *key, const char *path, const struct s3_put_opts *opts,
                struct s3_result *res, cut_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    int rc = -1;

    memset(res, 0, sizeof(*res));
    res->content_length = -1;
    if (fd < 0 || fstat(fd, &st) != 0) {
        err_set(err, CUT_EIO, "s3", "%s: %s", path, strerror(errno));
        goto out;
    }
    if ((uint64_t)st.st_size >= c->multipart_threshold) {
        rc = multipart_file(c, key, fd, (uint64_t)st.st_size, opts, res, err);
    } else {
        unsigned char md5[16], sha[32];
        struct put_hdrs ph;
        struct s3_req rq = req_init("PUT", key);
        if (opts && opts->md5 && opts->sha256) {
            memcpy(md5, opts->md5, 16);
            memcpy(sha, opts->sha256, 32);
        } else if (s3x_hash_fd(fd, 0, (uint64_t)st.st_size, md5, sha, err) != 0) {
            goto out;
        }
        put_hdrs_fill(c, &ph, md5, sha, opts, true);
        rq.headers = ph.hv;
        rq.nheaders = ph.n;
        rq.payload_hash = ph.sha_hex;
        rq.fd = fd;
        rq.file_len = (uint64_t)st.st_size;
        rc = s3_do(c, &rq, res, err);
    }
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

int s3_head(s3_client *c, const char *key, struct s3_result *res, cut_err *err)
{
    struct sigv4_kv hv[1] = {{"x-amz-checksum-mode", "ENABLED"}};
    struct s3_req rq = req_init("HEAD", key);

    rq.headers = hv;
    rq.nheaders = 1;
    return s3_do(c, &rq, res, err);
}

int s3_get(s3_client *c, const char *key, s3_sink sink, void *arg, struct s3_result *res,
           cut_err *err)
{
    struct s3_req rq = req_init("GET", key);

    rq.sink = sink;
    rq.sink_arg = arg;
    return s3_do(c, &rq, res, err);
}

int s3_delete(s3_client *c, const char *key, struct s3_result *res, cut_err *err)
{
    struct s3_req rq = req_init("DELETE", key);

    return s3_do(c, &rq, res, err);
}

int s3_head_bucket(s3_client *c, struct s3_result *res, cut_err *err)
{
    struct s3_req rq = req_init("HEAD", NULL);

    return s3_do(c, &rq, res, err);
}

long s3_object_url(s3_client *c, const char *key, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "%s://%s", c->scheme, c->obj_host);
    long m;

    if (n < 0 || (size_t)n >= outlen)
        return -1;
    m = sigv4_encode_path(c->obj_prefix, key, out + n, outlen - (size_t)n);
    return m < 0 ? -1 : n + m;
}

long s3_presign(s3_client *c, const char *method, const char *key, long expires_s, time_t at,
                char *out, size_t outlen, cut_err *err)
{
    struct creds *cr = NULL;
    struct sigv4_kv hv[1] = {{"host", c->obj_host}};
    char amz[17];
    long n, q = -1;

    if (strcmp(method, "GET") != 0 && strcmp(method, "PUT") != 0) {
        err_set(err, CUT_EINVAL, "s3", "presign: method must be GET or PUT, not %s", method);
        return -1;
    }
    if (key == NULL || !key[0] || strlen(key) > S3_MAX_KEY) {
        err_set(err, CUT_EINVAL, "s3", "presign: object key empty or longer than %d bytes",
                S3_MAX_KEY);
        return -1;
    }
    n = s3_object_url(c, key, out, outlen);
    if (n < 0 || (size_t)n + 2 >= outlen) {
        err_set(err, CUT_ELIMIT, "s3", "presign: URL longer than %zu bytes", outlen);
        return -1;
    }
    if (creds_acquire(c->creds, &cr, err) != 0)
        return -1;
    sigv4_amz_date(at ? at : time(NULL), amz);
    {
        const char *uri = strstr(out, "://");
        struct sigv4_creds sc = {cr->access_key_id, cr->secret_access_key, cr->session_token};
        struct sigv4_request sr;
        uri = strchr(uri + 3, '/');
        sr = (struct sigv4_request){method, uri, NULL, 0, hv, 1, SIGV4_UNSIGNED_PAYLOAD};
        q = sigv4_presign_query(c->signer, &sc, &sr, amz, expires_s, out + n + 1,
                                outlen - (size_t)n - 1, NULL, err);
        if (q >= 0)
            out[n] = '?';
    }
    creds_release(cr);
    return q < 0 ? -1 : n + 1 + q;
}
