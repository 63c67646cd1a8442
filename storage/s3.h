/*
 * s3: the S3 client of cutover, on the S3 REST API with libcurl and OpenSSL (no SDK).
 *
 * One s3_client serves many threads. The calls below block the calling thread; they are thin
 * wrappers over the client's transfer engine (xfer.h: one thread, started at the first
 * call, runs every request and its retries), so never call them on an engine's thread (they
 * refuse with CUT_EINVAL there). s3_presign() and s3_object_url() are pure functions.
 * Every call returns 0 on a 2xx answer, or -1 with err
 * set (CUT_ES3 when S3 answered with an error, CUT_ENOTFOUND for 404, CUT_EHTTP when no
 * answer came, CUT_EIO for local files) and, in every case, fills the s3_result with what
 * is known: HTTP status, S3's error code and message, ETag, request id.
 * Calls retry connection errors, 5xx, SlowDown, RequestTimeout, 408 and 429 with
 * exponential backoff and full jitter, within s3.max_attempts and s3.retry_max_total_ms;
 * other 4xx answers are never retried.
 */
#ifndef CUTOVER_S3_H
#define CUTOVER_S3_H

#include "core/config.h"
#include "core/core.h"
#include "storage/creds.h"
#include "storage/sigv4.h"

#include <stdint.h>
#include <time.h>

typedef struct s3_client s3_client;

struct s3_result {
    long status;              /* HTTP status of the last attempt; 0 when none came */
    char code[64];            /* S3 error code ("SlowDown", "NoSuchKey"...) or "" */
    char message[256];        /* S3 error message or "" */
    char etag[80];            /* ETag without quotes, or "" */
    char request_id[80];      /* x-amz-request-id, or "" */
    char checksum_sha256[64]; /* x-amz-checksum-sha256 (HEAD with checksum mode), or "" */
    char date[64];            /* the Date header of the answer, or "" */
    char version_id[128];     /* x-amz-version-id (a versioned bucket), or "" */
    int64_t content_length;   /* Content-Length of the answer, -1 when absent */
    int attempts;             /* requests sent, retries included */
};

/* Options of a PutObject. Hashes the caller already has are used as they are (the spool
 * computes them while receiving); missing ones are computed. */
struct s3_put_opts {
    const char *content_type;    /* NULL: none sent */
    const unsigned char *md5;    /* 16 bytes or NULL */
    const unsigned char *sha256; /* 32 bytes or NULL */
};

/* Receives a GET's body in pieces; returns 0 to go on, non-zero to stop the transfer. */
typedef int (*s3_sink)(void *arg, const void *data, size_t n);

/* Returns a new client for cfg (borrowed for the call; what is needed is copied) using the
 * credentials of creds (borrowed: must outlive the client). Free with s3_client_free().
 * NULL with err set (CUT_EINVAL) when the configuration cannot work (no bucket, no region,
 * a malformed endpoint). */
s3_client *s3_client_new(const struct cfg_s3 *cfg, creds_provider *creds,
                         cut_err *err) CUT_MUST_USE;
void s3_client_free(s3_client *c);

/* PutObject of a buffer (borrowed during the call), with Content-MD5,
 * x-amz-checksum-sha256 and the signed SHA-256 payload hash. */
int s3_put_buffer(s3_client *c, const char *key, const void *data, size_t len,
                  const struct s3_put_opts *opts, struct s3_result *res, cut_err *err) CUT_MUST_USE;

/* PutObject of a file, read once and hashed as it is sent; at or above
 * s3.multipart_threshold a multipart upload (parts of s3.part_size), aborted when it fails.
 * Hashes in opts are sent (Content-MD5, checksum) and checked against the bytes read;
 * without them the body is sent as UNSIGNED-PAYLOAD and S3's ETag is compared with the MD5
 * computed on the way (CUT_ECONFLICT on a difference). */
int s3_put_file(s3_client *c, const char *key, const char *path, const struct s3_put_opts *opts,
                struct s3_result *res, cut_err *err) CUT_MUST_USE;

/* HeadObject with x-amz-checksum-mode: ENABLED. 404 gives CUT_ENOTFOUND. */
int s3_head(s3_client *c, const char *key, struct s3_result *res, cut_err *err) CUT_MUST_USE;

/* GetObject, the body streamed to sink. A transfer that breaks after bytes reached the sink
 * is not retried (the sink cannot take them back): the call fails with CUT_EHTTP. */
int s3_get(s3_client *c, const char *key, s3_sink sink, void *arg, struct s3_result *res,
           cut_err *err) CUT_MUST_USE;

/* DeleteObject. Deleting a missing key succeeds, as in S3. */
int s3_delete(s3_client *c, const char *key, struct s3_result *res, cut_err *err) CUT_MUST_USE;

/* HeadBucket: is the bucket there and are we allowed in? */
int s3_head_bucket(s3_client *c, struct s3_result *res, cut_err *err) CUT_MUST_USE;

/* A presigned URL for method "GET" or "PUT" on key, valid expires_s seconds (1..604800)
 * from at (0: now). Writes the URL, NUL-terminated, into out. Returns its length or -1 with
 * err set. Fast: no allocation on the common path. The URL is a credential: never log it. */
long s3_presign(s3_client *c, const char *method, const char *key, long expires_s, time_t at,
                char *out, size_t outlen, cut_err *err) CUT_MUST_USE;

/* A Content-Disposition value (RFC 6266) that makes a browser open the object inline under
 * filename: `inline; filename="..."` with an ASCII fallback (non-ASCII bytes, quotes,
 * backslashes and control characters replaced by '_'), plus `filename*=UTF-8''...`
 * (RFC 8187 percent-encoding) when the name is not plain ASCII. Returns a new string
 * (free()), or NULL when filename is NULL, empty, over 1024 bytes or not valid UTF-8. */
char *s3_content_disposition(const char *filename);

/* The object's URL without a query (for messages), into out; returns its length or -1. */
long s3_object_url(s3_client *c, const char *key, char *out, size_t outlen);

/* Multipart, for callers that need the pieces (tests; s3_put_file uses them). */
int s3_multipart_create(s3_client *c, const char *key, const struct s3_put_opts *opts,
                        char *upload_id, size_t idlen, struct s3_result *res,
                        cut_err *err) CUT_MUST_USE;
int s3_multipart_abort(s3_client *c, const char *key, const char *upload_id, struct s3_result *res,
                       cut_err *err) CUT_MUST_USE;

/* ---- internal to storage/ (the transfer engine, xfer.c) --------------------------------- */

struct curl_slist;
struct xfer_engine;

/* One S3 request. Everything is borrowed until the request ends. */
struct s3_req {
    const char *method;
    const char *key; /* NULL: the bucket itself */
    const struct sigv4_kv *query;
    size_t nquery;
    const struct sigv4_kv *headers; /* extra headers, all signed */
    size_t nheaders;
    const char *payload_hash; /* hex or SIGV4_UNSIGNED_PAYLOAD; NULL: the empty body */
    /* body: a buffer, or a range of a file */
    const char *body;
    size_t body_len;
    int fd; /* -1: no file */
    uint64_t file_off;
    uint64_t file_len;
    /* 2xx answer body: to a sink, or kept (capped by keep->max) */
    s3_sink sink;
    void *sink_arg;
    struct buf *keep;
};

/* A request with no body, no query and no headers. */
struct s3_req s3_req_init(const char *method, const char *key);

/* The limits of a client, from its configuration (defaults applied). */
struct s3_limits {
    uint64_t multipart_threshold;
    uint64_t part_size;
    int max_attempts;
    int retry_base_ms;
    int retry_max_total_ms;
    int timeout_s;
    bool etag_is_md5; /* false with SSE-KMS, where S3's ETag is not the body's MD5 */
};
const struct s3_limits *s3_client_limits(const s3_client *c);

/* Builds the request's URL into url and its canonical URI into uri. */
int s3_req_target(s3_client *c, const struct s3_req *rq, char *uri, size_t urilen, struct buf *url,
                  cut_err *err) CUT_MUST_USE;

/* Signs rq with the credentials current now and returns the header lines (Host,
 * x-amz-*, Authorization, the extra headers) in *out (curl_slist_free_all() it).
 * The list holds a signature: never log it. */
int s3_req_sign(s3_client *c, const struct s3_req *rq, const char *uri, struct curl_slist **out,
                cut_err *err) CUT_MUST_USE;

/* The retry rules: an answer (status and S3 code) or a libcurl code worth another try. */
bool s3_retryable_answer(long status, const char *code);
bool s3_retryable_curl(int curl_code);
/* A code name for an error answer without a body ("NotFound" for 404...), or "". */
const char *s3_status_code_name(long status);

/* Headers of a PutObject / UploadPart body: Content-MD5 (when md5 is given), the checksum
 * (when sha256 is given, object requests only), content type and disposition and SSE (objects
 * only). */
struct s3_put_hdrs {
    struct sigv4_kv hv[10];
    size_t n;
    char md5_b64[32];
    char sha_b64[48];
    char sha_hex[65]; /* the payload hash: hex, or UNSIGNED-PAYLOAD when sha256 is NULL */
};
void s3_put_hdrs_fill(const s3_client *c, struct s3_put_hdrs *p, const unsigned char *md5,
                      const unsigned char *sha256, const char *content_type,
                      const char *content_disposition, bool object);

/* The SSE headers of the configuration, appended to hv; returns the new count. */
size_t s3_sse_headers(const s3_client *c, struct sigv4_kv *hv, size_t n);

/* The client's own engine, started at the first call; valid until s3_client_free(). */
struct xfer_engine *s3_client_engine(s3_client *c, cut_err *err);

#endif
