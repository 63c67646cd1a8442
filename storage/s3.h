/*
 * s3: the S3 client of cutover, on the S3 REST API with libcurl and OpenSSL (no SDK).
 *
 * One s3_client serves many threads. Every call returns 0 on a 2xx answer, or -1 with err
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

/* PutObject of a file, streamed; at or above s3.multipart_threshold a multipart upload
 * (parts of s3.part_size, each with Content-MD5 and its SHA-256), aborted when it fails. */
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

/* The object's URL without a query (for messages), into out; returns its length or -1. */
long s3_object_url(s3_client *c, const char *key, char *out, size_t outlen);

/* Multipart, for callers that need the pieces (tests; s3_put_file uses them). */
int s3_multipart_create(s3_client *c, const char *key, const struct s3_put_opts *opts,
                        char *upload_id, size_t idlen, struct s3_result *res,
                        cut_err *err) CUT_MUST_USE;
int s3_multipart_abort(s3_client *c, const char *key, const char *upload_id, struct s3_result *res,
                       cut_err *err) CUT_MUST_USE;

#endif
