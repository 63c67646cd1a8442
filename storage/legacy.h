/*
 * legacy: the legacy store's fetcher. A document's bytes are read with a streaming GET of
 * `legacy.raw_url` (a template with {key}; the key is percent-encoded as one path segment)
 * carrying the configured headers, whose values may be secrets and never reach a log or a
 * message. Every GET runs on a transfer engine (xfer.h), with a timeout and a size ceiling,
 * and its outcome says which way it failed: 404, another HTTP status, a timeout, no answer,
 * over the ceiling, or a body shorter than announced.
 */
#ifndef CUTOVER_LEGACY_H
#define CUTOVER_LEGACY_H

#include "core/config.h"
#include "core/core.h"

#include <stdint.h>

typedef struct legacy_store legacy_store;
struct xfer_engine;

enum legacy_fail {
    LEGACY_OK = 0,
    LEGACY_NOT_FOUND,   /* HTTP 404 (or 410): the store has no such document */
    LEGACY_HTTP_STATUS, /* another non-2xx answer; status says which (5xx, 403...) */
    LEGACY_TIMEOUT,     /* no complete answer within the timeout */
    LEGACY_UNREACHABLE, /* no answer at all (refused, DNS, reset before a status) */
    LEGACY_TOO_LARGE,   /* the body is over the ceiling (announced or counted) */
    LEGACY_SHORT,       /* the body ended before its Content-Length */
};

struct legacy_result {
    enum legacy_fail fail;
    long status;            /* HTTP status; 0 when none came */
    int64_t content_length; /* announced, -1 when not */
    uint64_t bytes;         /* body bytes received */
    int attempts;
};

struct legacy_opts {
    int timeout_s;      /* per GET, the whole transfer (also while it waits for S3 to take a
                         * part of a copy); 0: legacy.timeout_s, else 30 */
    uint64_t max_bytes; /* size ceiling of a document; 0: 5 GiB */
    int max_attempts;   /* 5xx, timeouts and no answer are retried; 0: 3 */
};

/* Returns a new store for cfg (borrowed for the call; copied) or NULL with err set
 * (CUT_EINVAL: no raw_url, no {key} in it). opts may be NULL. Free with legacy_free(). */
legacy_store *legacy_new(const struct cfg_legacy *cfg, const struct legacy_opts *opts,
                         cut_err *err) CUT_MUST_USE;
void legacy_free(legacy_store *s);

/* The URL of key: returns a new string (free()), or NULL with err set (CUT_EINVAL: empty
 * key, CUT_ELIMIT: too long). Contains no secrets (headers carry those). */
char *legacy_url(const legacy_store *s, const char *key, cut_err *err) CUT_MUST_USE;

/* A short name of a failure for messages: "HTTP 404", "timeout"... (static string). */
const char *legacy_fail_name(enum legacy_fail f);

/* Blocking fetch through engine e (from a thread that is not e's): the body goes to sink
 * (may be NULL: discarded) on e's thread while the caller waits. Returns 0 on a 2xx
 * answer, or -1 with err set (CUT_ENOTFOUND for 404, CUT_ELIMIT over the ceiling,
 * CUT_EHTTP otherwise) and res filled in every case. */
int legacy_fetch(legacy_store *s, struct xfer_engine *e, const char *key,
                 int (*sink)(void *arg, const void *data, size_t n), void *arg,
                 struct legacy_result *res, cut_err *err) CUT_MUST_USE;

/* ---- for xfer.c ------------------------------------------------------------------------ */

/* The configured header lines (a curl_slist *, owned by the store, valid until
 * legacy_free()), the timeout, ceiling and attempts. */
void *legacy_header_list(const legacy_store *s);
int legacy_timeout_s(const legacy_store *s);
uint64_t legacy_max_bytes(const legacy_store *s);
int legacy_max_attempts(const legacy_store *s);

#endif
