/*
 * s3: the S3 client's configuration, request building and signing (SigV4, sigv4.c), and
 * the blocking calls, which are thin wrappers over the transfer engine (xfer.c).
 *
 * How a call goes: the wrapper describes the request (struct s3_req: method, key, query,
 * headers, payload hash, body, where the answer goes) and hands it to the client's engine,
 * then waits on a condition variable. On the engine's thread, s3_req_target() builds the
 * URL and canonical URI from the endpoint and addressing style (virtual-hosted by default,
 * path style on request or when the bucket name cannot be a TLS host name) and, for every
 * attempt, s3_req_sign() signs the headers with the credentials current at that moment.
 * The engine owns the connections (one libcurl multi handle, so keep-alive connections are
 * reused across calls and threads), the retries and their backoff timers.
 *
 * Retries follow the AWS guidance: connection errors, 5xx, 408, 429, SlowDown and
 * RequestTimeout, with "full jitter" (a uniform wait between 0 and base * 2^attempt,
 * capped at 20 s), within max_attempts and the total time budget; other 4xx never. The
 * rules live here (s3_retryable_answer / s3_retryable_curl); the waiting is the engine's.
 * Secrets stay out of logs: log lines name the method, the key, status and S3 code only.
 *
 * Presigning keeps its last URLs (PRESIGN_SLOTS, one per hash of the key): a presigned URL is
 * a function of the credentials, method, key, expiry and the second it is signed in, so a
 * second read of a hot document within the same second gets the very same bytes without
 * signing again. A slot holds a reference to its credentials, so they cannot change under it.
 */
#include "storage/s3.h"
#include "storage/s3_util.h"
#include "storage/sigv4.h"
#include "storage/xfer.h"

#include <curl/curl.h>

#define PRESIGN_SLOTS 64
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S3_MAX_XML_ANSWER (1024 * 1024)
#define S3_MAX_KEY 1024

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
    struct s3_limits lim;
    creds_provider *creds; /* borrowed */
    sigv4_signer *signer;

    pthread_mutex_t eng_mu;
    xfer_engine *eng; /* started at the first blocking call */

    pthread_mutex_t pre_mu; /* guards pre */
    struct presigned {
        struct creds *cr; /* a reference; NULL: empty */
        time_t at;
        long expires_s;
        bool put;
        char *key, *url; /* grown as needed, kept across reuses */
        size_t key_cap, url_cap, url_len;
    } pre[PRESIGN_SLOTS];
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

    pthread_mutex_init(&c->eng_mu, NULL);
    pthread_mutex_init(&c->pre_mu, NULL);
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
    c->lim.multipart_threshold = cfg->multipart_threshold ? cfg->multipart_threshold : 64ull << 20;
    c->lim.part_size = cfg->part_size >= (5ull << 20) ? cfg->part_size : 16ull << 20;
    c->lim.max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : 5;
    c->lim.retry_base_ms = cfg->retry_base_ms > 0 ? cfg->retry_base_ms : 100;
    c->lim.retry_max_total_ms = cfg->retry_max_total_ms > 0 ? cfg->retry_max_total_ms : 30000;
    c->lim.timeout_s = cfg->timeout_s > 0 ? cfg->timeout_s : 300;
    c->lim.etag_is_md5 = cfg->sse != SSE_KMS;
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
    xfer_engine_free(c->eng);
    pthread_mutex_destroy(&c->eng_mu);
    pthread_mutex_destroy(&c->pre_mu);
    for (size_t i = 0; i < PRESIGN_SLOTS; i++) {
        creds_release(c->pre[i].cr);
        free(c->pre[i].key);
        free(c->pre[i].url);
    }
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

const struct s3_limits *s3_client_limits(const s3_client *c)
{
    return &c->lim;
}

xfer_engine *s3_client_engine(s3_client *c, cut_err *err)
{
    xfer_engine *e;

    pthread_mutex_lock(&c->eng_mu);
    if (c->eng == NULL)
        c->eng = xfer_engine_new(c, NULL, err);
    e = c->eng;
    pthread_mutex_unlock(&c->eng_mu);
    return e;
}

/* ---- one request ----------------------------------------------------------------------- */

struct s3_req s3_req_init(const char *method, const char *key)
{
    struct s3_req r;

    memset(&r, 0, sizeof(r));
    r.method = method;
    r.key = key;
    r.fd = -1;
    return r;
}

bool s3_retryable_answer(long status, const char *code)
{
    return status >= 500 || status == 408 || status == 429 || strcmp(code, "SlowDown") == 0 ||
           strcmp(code, "RequestTimeout") == 0 || strcmp(code, "InternalError") == 0 ||
           strcmp(code, "ServiceUnavailable") == 0 || strcmp(code, "Throttling") == 0 ||
           strcmp(code, "ThrottlingException") == 0 || strcmp(code, "RequestLimitExceeded") == 0 ||
           strcmp(code, "TooManyRequests") == 0;
}

bool s3_retryable_curl(int cc)
{
    switch ((CURLcode)cc) {
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

const char *s3_status_code_name(long st)
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

int s3_req_target(s3_client *c, const struct s3_req *rq, char *uri, size_t urilen, struct buf *url,
                  cut_err *err)
{
    long n;

    if (rq->nheaders + 4 > SIGV4_MAX_HEADERS) {
        err_set(err, CUT_ELIMIT, "s3", "too many headers");
        return -1;
    }
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

int s3_req_sign(s3_client *c, const struct s3_req *rq, const char *uri, struct curl_slist **out,
                cut_err *err)
{
    char amz[17], auth[1024], line[8192];
    struct sigv4_kv hv[SIGV4_MAX_HEADERS];
    struct creds *cr = NULL;
    struct curl_slist *hl = NULL;
    const char *payload = rq->payload_hash ? rq->payload_hash : SIGV4_EMPTY_SHA256;
    size_t nh = 0;
    int rc = -1;

    *out = NULL;
    if (rq->nheaders + 4 > SIGV4_MAX_HEADERS) {
        err_set(err, CUT_ELIMIT, "s3", "too many headers");
        goto out;
    }
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
    for (size_t i = 0; i < nh; i++) {
        snprintf(line, sizeof(line), "%s: %s", i == 0 ? "Host" : hv[i].name, hv[i].value);
        hl = curl_slist_append(hl, line);
    }
    snprintf(line, sizeof(line), "Authorization: %s", auth);
    hl = curl_slist_append(hl, line);
    hl = curl_slist_append(hl, "Expect:");
    if (hl == NULL)
        abort();
    *out = hl;
    hl = NULL;
    rc = 0;
out:
    curl_slist_free_all(hl);
    creds_release(cr);
    OPENSSL_cleanse(auth, sizeof(auth));
    OPENSSL_cleanse(line, sizeof(line));
    return rc;
}

/* ---- operations ------------------------------------------------------------------------ */

size_t s3_sse_headers(const s3_client *c, struct sigv4_kv *hv, size_t n)
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

void s3_put_hdrs_fill(const s3_client *c, struct s3_put_hdrs *p, const unsigned char *md5,
                      const unsigned char *sha, const char *content_type,
                      const char *content_disposition, bool object)
{
    p->n = 0;
    if (md5) {
        s3x_base64(md5, 16, p->md5_b64);
        p->hv[p->n++] = (struct sigv4_kv){"content-md5", p->md5_b64};
    }
    if (sha) {
        s3x_base64(sha, 32, p->sha_b64);
        s3x_hex(sha, 32, p->sha_hex);
    } else {
        snprintf(p->sha_hex, sizeof(p->sha_hex), "%s", SIGV4_UNSIGNED_PAYLOAD);
    }
    if (object) {
        if (sha)
            p->hv[p->n++] = (struct sigv4_kv){"x-amz-checksum-sha256", p->sha_b64};
        if (content_type)
            p->hv[p->n++] = (struct sigv4_kv){"content-type", content_type};
        if (content_disposition)
            p->hv[p->n++] = (struct sigv4_kv){"content-disposition", content_disposition};
        p->n = s3_sse_headers(c, p->hv, p->n);
    }
}

static void res_reset(struct s3_result *res)
{
    memset(res, 0, sizeof(*res));
    res->content_length = -1;
}

/* One request on the client's engine, the caller waiting. */
static int s3_call(s3_client *c, const struct s3_req *rq, struct s3_result *res, cut_err *err)
{
    xfer_engine *e = s3_client_engine(c, err);

    res_reset(res);
    if (e == NULL)
        return -1;
    return xfer_s3_call(e, rq, res, err);
}

static int s3_copy(s3_client *c, const struct xfer_src *src, const char *key,
                   const struct s3_put_opts *opts, struct s3_result *res, cut_err *err)
{
    xfer_engine *e = s3_client_engine(c, err);
    struct xfer_sink dst = {.kind = XFER_SINK_S3, .key = key};
    struct xfer_outcome o;
    int rc;

    res_reset(res);
    if (e == NULL)
        return -1;
    dst.content_type = opts ? opts->content_type : NULL;
    rc = xfer_copy_wait(e, src, &dst, &o, err);
    *res = o.s3;
    return rc;
}

int s3_put_buffer(s3_client *c, const char *key, const void *data, size_t len,
                  const struct s3_put_opts *opts, struct s3_result *res, cut_err *err)
{
    unsigned char md5[16], sha[32];
    struct xfer_src src = {.kind = XFER_SRC_BUFFER, .data = data ? data : "", .len = len};

    /* a buffer is hashed here, on the caller's thread, so the PUT is signed and carries
     * Content-MD5 and the checksum */
    s3x_hash_buf(data ? data : "", len, (opts && opts->md5) ? NULL : md5,
                 (opts && opts->sha256) ? NULL : sha);
    src.md5 = (opts && opts->md5) ? opts->md5 : md5;
    src.sha256 = (opts && opts->sha256) ? opts->sha256 : sha;
    return s3_copy(c, &src, key, opts, res, err);
}

int s3_put_file(s3_client *c, const char *key, const char *path, const struct s3_put_opts *opts,
                struct s3_result *res, cut_err *err)
{
    struct xfer_src src = {.kind = XFER_SRC_FILE, .path = path};

    if (opts && opts->md5 && opts->sha256) {
        src.md5 = opts->md5;
        src.sha256 = opts->sha256;
    }
    return s3_copy(c, &src, key, opts, res, err);
}

int s3_multipart_create(s3_client *c, const char *key, const struct s3_put_opts *opts,
                        char *upload_id, size_t idlen, struct s3_result *res, cut_err *err)
{
    struct sigv4_kv hv[4], q[1] = {{"uploads", ""}};
    struct s3_req rq = s3_req_init("POST", key);
    struct buf body;
    size_t n = 0;
    int rc = -1;

    buf_init(&body, S3_MAX_XML_ANSWER);
    if (opts && opts->content_type)
        hv[n++] = (struct sigv4_kv){"content-type", opts->content_type};
    n = s3_sse_headers(c, hv, n);
    rq.headers = hv;
    rq.nheaders = n;
    rq.query = q;
    rq.nquery = 1;
    rq.keep = &body;
    if (s3_call(c, &rq, res, err) != 0)
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
    struct s3_req rq = s3_req_init("DELETE", key);

    rq.query = q;
    rq.nquery = 1;
    return s3_call(c, &rq, res, err);
}

int s3_head(s3_client *c, const char *key, struct s3_result *res, cut_err *err)
{
    struct sigv4_kv hv[1] = {{"x-amz-checksum-mode", "ENABLED"}};
    struct s3_req rq = s3_req_init("HEAD", key);

    rq.headers = hv;
    rq.nheaders = 1;
    return s3_call(c, &rq, res, err);
}

int s3_get(s3_client *c, const char *key, s3_sink sink, void *arg, struct s3_result *res,
           cut_err *err)
{
    struct s3_req rq = s3_req_init("GET", key);

    rq.sink = sink;
    rq.sink_arg = arg;
    return s3_call(c, &rq, res, err);
}

int s3_delete(s3_client *c, const char *key, struct s3_result *res, cut_err *err)
{
    struct s3_req rq = s3_req_init("DELETE", key);

    return s3_call(c, &rq, res, err);
}

int s3_head_bucket(s3_client *c, struct s3_result *res, cut_err *err)
{
    struct s3_req rq = s3_req_init("HEAD", NULL);

    return s3_call(c, &rq, res, err);
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

static uint32_t key_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static long presign(s3_client *c, const char *method, const char *key, long expires_s, time_t at,
                    char *out, size_t outlen, bool wait, cut_err *err)
{
    struct creds *cr = NULL;
    struct sigv4_kv hv[1] = {{"host", c->obj_host}};
    struct presigned *slot;
    struct creds *old;
    bool put = method[0] == 'P';
    size_t klen;
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
    if (wait ? creds_acquire(c->creds, &cr, err) != 0 : creds_peek(c->creds, &cr, err) != 0)
        return wait ? -1 : S3_NO_CREDS;
    if (!at)
        at = time(NULL);
    klen = strlen(key);
    slot = &c->pre[key_hash(key, klen) % PRESIGN_SLOTS];
    pthread_mutex_lock(&c->pre_mu);
    if (slot->cr == cr && slot->at == at && slot->expires_s == expires_s && slot->put == put &&
        strcmp(slot->key, key) == 0 && slot->url_len < outlen) {
        memcpy(out, slot->url, slot->url_len + 1);
        q = (long)slot->url_len;
    }
    pthread_mutex_unlock(&c->pre_mu);
    if (q >= 0) {
        creds_release(cr);
        return q;
    }
    n = s3_object_url(c, key, out, outlen);
    if (n < 0 || (size_t)n + 2 >= outlen) {
        err_set(err, CUT_ELIMIT, "s3", "presign: URL longer than %zu bytes", outlen);
        creds_release(cr);
        return -1;
    }
    sigv4_amz_date(at, amz);
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
    if (q < 0) {
        creds_release(cr);
        return -1;
    }
    q += n + 1;
    pthread_mutex_lock(&c->pre_mu);
    old = slot->cr;
    slot->cr = cr; /* the slot takes our reference */
    slot->at = at;
    slot->expires_s = expires_s;
    slot->put = put;
    if (slot->key_cap < klen + 1)
        slot->key = xrealloc(slot->key, slot->key_cap = klen + 1);
    memcpy(slot->key, key, klen + 1);
    if (slot->url_cap < (size_t)q + 1)
        slot->url = xrealloc(slot->url, slot->url_cap = (size_t)q + 1);
    memcpy(slot->url, out, (size_t)q + 1);
    slot->url_len = (size_t)q;
    pthread_mutex_unlock(&c->pre_mu);
    creds_release(old);
    return q;
}

long s3_presign(s3_client *c, const char *method, const char *key, long expires_s, time_t at,
                char *out, size_t outlen, cut_err *err)
{
    return presign(c, method, key, expires_s, at, out, outlen, true, err);
}

long s3_presign_nowait(s3_client *c, const char *method, const char *key, long expires_s, time_t at,
                       char *out, size_t outlen, cut_err *err)
{
    return presign(c, method, key, expires_s, at, out, outlen, false, err);
}
