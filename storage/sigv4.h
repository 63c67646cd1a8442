/*
 * sigv4: AWS Signature Version 4, in request headers (Authorization) and in query strings
 * (presigned URLs), with the S3 rules for the canonical URI of an object key.
 *
 * The signer does not build requests: the caller hands it the method, the canonical URI,
 * the query parameters (decoded), the headers to sign and the payload hash, and gets back
 * the Authorization value or the signed query string. The derived signing key is cached
 * per (secret, day, region, service) inside a sigv4_signer, which is safe to share between
 * threads.
 */
#ifndef CUTOVER_SIGV4_H
#define CUTOVER_SIGV4_H

#include "core/core.h"

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
/* Ceilings: more headers or query parameters than this are refused with CUT_ELIMIT. */
#define SIGV4_MAX_HEADERS 48
#define SIGV4_MAX_PARAMS 48

struct sigv4_creds {
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token; /* NULL: none */
};

/* A name/value pair. Query parameters are given decoded (the signer encodes them); header
 * values as they are sent (the signer trims and collapses spaces for the canonical form). */
struct sigv4_kv {
    const char *name;
    const char *value;
};

struct sigv4_request {
    const char *method;
    const char *canonical_uri; /* already encoded, e.g. from sigv4_encode_path() */
    const struct sigv4_kv *query;
    size_t nquery;
    const struct sigv4_kv *headers; /* must include host; header signing: x-amz-date too */
    size_t nheaders;
    const char *payload_hash; /* lower-case hex SHA-256 or SIGV4_UNSIGNED_PAYLOAD */
};

/* The intermediate values, for tests and for debugging signature mismatches. Optional:
 * pass NULL to the signing functions when not needed. Free with sigv4_trace_free(). */
struct sigv4_trace {
    struct buf canonical_request;
    struct buf string_to_sign;
    char signed_headers[512];
    char signature[65];
};
void sigv4_trace_init(struct sigv4_trace *t);
void sigv4_trace_free(struct sigv4_trace *t);

typedef struct sigv4_signer sigv4_signer;

/* Returns a new signer for region and service (copied); free with sigv4_signer_free(). */
sigv4_signer *sigv4_signer_new(const char *region, const char *service);
void sigv4_signer_free(sigv4_signer *s);

/* Header signing. amz_date is "YYYYMMDDTHHMMSSZ" and must equal the request's x-amz-date.
 * Writes the Authorization header value (without "Authorization: ") into out, NUL-terminated.
 * Returns 0, or -1 with err set (CUT_ELIMIT when out or a ceiling is too small). */
int sigv4_sign_header(sigv4_signer *s, const struct sigv4_creds *c, const struct sigv4_request *r,
                      const char *amz_date, char *out, size_t outlen, struct sigv4_trace *trace,
                      cut_err *err) CUT_MUST_USE;

/* Query signing (presigning). r->query holds the caller's own parameters (e.g.
 * response-content-disposition); the X-Amz-* parameters are added here, the session token
 * among them when c has one. Writes the complete query string (no leading '?'): the sorted
 * canonical query followed by &X-Amz-Signature=..., NUL-terminated, into out.
 * Returns the length written, or -1 with err set. Does not allocate in the common case. */
long sigv4_presign_query(sigv4_signer *s, const struct sigv4_creds *c,
                         const struct sigv4_request *r, const char *amz_date, long expires_s,
                         char *out, size_t outlen, struct sigv4_trace *trace,
                         cut_err *err) CUT_MUST_USE;

/* Percent-encodes per SigV4: every byte but A-Z a-z 0-9 - _ . ~ becomes %XX (upper-case
 * hex); '/' is kept when keep_slash. Writes into out (NUL-terminated). Returns the length,
 * or -1 when out is too small (3 * n + 1 always suffices). */
long sigv4_encode(const char *s, size_t n, bool keep_slash, char *out, size_t outlen);

/* The canonical URI of an S3 object: prefix (e.g. "/bucket" or "") + "/" + key encoded with
 * '/' kept. No normalisation: "a//b", "/a", "../x" and "%" are signed as they are.
 * Returns the length or -1 when out is too small. */
long sigv4_encode_path(const char *prefix, const char *key, char *out, size_t outlen);

/* Decodes %XX (no '+' rule) into out, NUL-terminated; returns the length or -1 when out is
 * too small or an escape is malformed. */
long sigv4_decode(const char *s, size_t n, char *out, size_t outlen);

/* Generic-service path rules (not S3): removes "." and ".." segments and collapses "//",
 * keeping a trailing slash. Writes into out; returns the length or -1. */
long sigv4_normalize_path(const char *path, char *out, size_t outlen);

/* Formats t (UTC) as "YYYYMMDDTHHMMSSZ" into out[17]. */
void sigv4_amz_date(time_t t, char out[17]);
/* Parses "YYYYMMDDTHHMMSSZ"; returns false when malformed. */
bool sigv4_parse_amz_date(const char *s, time_t *t) CUT_MUST_USE;

/* Lower-case hex of a SHA-256 of data into out[65]. */
void sigv4_sha256_hex(const void *data, size_t n, char out[65]);

#endif
