/*
 * xfer: the transfer engine. Every byte that moves to or from S3 or the legacy store goes
 * through it: mirror copies (spool file -> S3), backfill (legacy store -> S3), verify (HEAD;
 * deep: GET from S3 and from the legacy store, SHA-256 compared by the caller), shadow
 * fetches and repairs, and the blocking calls of s3.h, which are thin wrappers over it.
 *
 * One engine is one thread driving a libcurl multi handle: many requests run at once on
 * that thread, and a retry waits as a timer of the engine, never as a sleep of a caller.
 * Retries follow s3.h's rules (connection errors, 5xx, 408, 429, SlowDown and
 * RequestTimeout; exponential backoff with full jitter within s3.max_attempts and
 * s3.retry_max_total_ms; other 4xx never).
 *
 * Submitting (from any thread) returns at once. The completion callback runs ON THE ENGINE
 * THREAD: it must not block, and must not call the blocking functions of s3.h or legacy.h
 * (on their own engine they refuse with CUT_EINVAL; on another they would block this one).
 * Data callbacks run on the engine thread too.
 *
 * Concurrency: at most max_active transfers are in flight; the others wait their turn in
 * submission order. A transfer waiting out a backoff keeps its place (S3 asked for less
 * load), while the thread serves every other transfer.
 *
 * Memory: a copy from the legacy store whose GET announces a length under
 * s3.multipart_threshold (ETag an MD5, i.e. not SSE-KMS) passes its bytes through a buffer of
 * 256 KiB into one streamed PUT; any other buffers at most one part (s3.part_size) at a time.
 * An engine holds at most max_active such buffers, or what xfer_engine_set_buffer_budget()
 * allows.
 *
 * Known limits: temporary credentials (STS, container endpoint) are refreshed by the
 * first request that finds them near expiry, on the engine thread, which blocks for that
 * fetch (once per credentials lifetime). With SSE-KMS, S3's ETag is not an MD5, so a file
 * without known hashes is hashed before it is sent (read twice, on the engine thread).
 *
 * Bytes are hashed (MD5 and SHA-256, incrementally) as they pass, so a copy reads its
 * source once. A copy whose hashes are not known up front still ends verified: the engine
 * compares S3's ETag (the MD5 of a single PUT or of a part) with the MD5 it computed, or
 * sends Content-MD5 computed over a part it buffered, and hashes given by the caller are
 * compared with the bytes read; any difference fails the transfer (CUT_ECONFLICT) and a
 * multipart upload is then never completed.
 */
#ifndef CUTOVER_XFER_H
#define CUTOVER_XFER_H

#include "core/core.h"
#include "storage/legacy.h"
#include "storage/s3.h"

#include <stdint.h>

typedef struct xfer_engine xfer_engine;

struct xfer_engine_opts {
    int max_active; /* transfers in flight at once; 0: 64. Documents/s and bytes/s limits:
                     * xfer_engine_set_legacy_limits() */
    bool no_jitter; /* tests: a backoff waits its whole ceiling instead of a random part */
};

/* Returns a new engine with its thread started. s3 (may be NULL for an engine that only
 * fetches from the legacy store) is borrowed and must outlive the engine; its limits
 * (attempts, backoff, timeouts, part size, multipart threshold) apply. opts may be NULL.
 * Free with xfer_engine_free(), which waits for nothing: transfers still queued or in
 * flight complete with CUT_EIO ("the transfer engine stopped"). */
xfer_engine *xfer_engine_new(s3_client *s3, const struct xfer_engine_opts *opts,
                             cut_err *err) CUT_MUST_USE;
void xfer_engine_free(xfer_engine *e);

/* The engine's thread runs as background work from now on: at a lower priority, so that it
 * yields a CPU the request path wants (thread_setup()). For a sidecar's engine, whose copies
 * share the host with the application. */
void xfer_engine_background(xfer_engine *e);

/* True on the engine's own thread (the blocking wrappers refuse to wait there). */
bool xfer_on_engine_thread(const xfer_engine *e);

struct xfer_stats {
    uint64_t submitted, completed, failed;
    uint64_t requests; /* HTTP requests sent, retries included */
    uint64_t retries;
    int active, active_peak; /* transfers in flight now, and the most at once */
    /* the legacy store */
    uint64_t throttled;    /* answers 429 or 503 */
    uint64_t hold_ms;      /* time no new request was started because of them */
    uint64_t legacy_bytes; /* body bytes read from it */
    int legacy_cap;        /* transfers reading it at once allowed now (max_active: no cut) */
    int legacy_active;     /* transfers reading it now */
    /* legacy -> S3 copies */
    uint64_t streamed; /* copies sent as one PUT streamed from the GET (no part buffer) */
    uint64_t buf_peak; /* the most buffer bytes (parts, stream buffers) reserved at once */
};
void xfer_engine_stats(xfer_engine *e, struct xfer_stats *out);

/* Limits on the transfers that read the legacy store (a copy or a fetch whose source is
 * XFER_SRC_LEGACY): at most docs_per_s of them start a second, and their GETs together
 * read at most bytes_per_s (each GET is paused while the bucket is in debt, and the paused
 * ones resume in turn, so a large document does not starve the small ones). Both are token
 * buckets holding at most one second's worth, empty at the start. 0: no limit. Any thread;
 * takes effect at once. The legacy store's own signals act on the same transfers: a 429 or
 * 503 holds every new legacy request for its Retry-After (capped at 60 s; without one a
 * shared backoff from 500 ms, doubling), halves how many may read the store at once, and the
 * ceiling then grows back by one a second. */
void xfer_engine_set_legacy_limits(xfer_engine *e, double docs_per_s, double bytes_per_s);

/* A ceiling on the memory of the part and stream buffers of legacy -> S3 copies, all
 * transfers together (0: none, then max_active parts). Any thread; takes effect at once. */
void xfer_engine_set_buffer_budget(xfer_engine *e, uint64_t bytes);

/* ---- transfers ------------------------------------------------------------------------- */

enum xfer_src_kind {
    XFER_SRC_BUFFER, /* bytes in memory: borrowed until the completion callback */
    XFER_SRC_FILE,   /* a local file (the spool), read with pread; path copied */
    XFER_SRC_LEGACY, /* GET of the legacy store's raw URL for key (streamed) */
    XFER_SRC_S3,     /* GET of an S3 object (streamed) */
    XFER_SRC_URL,    /* GET of a whole URL that carries its own authorisation (a signed
                      * delivery URL, an S3 presigned URL): streamed, no configured header,
                      * no retry; the outcome is in o->legacy. The URL is never logged and
                      * never put in a message. */
};

struct xfer_src {
    enum xfer_src_kind kind;
    const void *data;     /* BUFFER */
    size_t len;           /* BUFFER */
    const char *path;     /* FILE */
    const char *key;      /* LEGACY, S3: the document's key (copied) */
    legacy_store *legacy; /* LEGACY: borrowed, must outlive the transfer */
    const char *url;      /* URL: http:// or https:// (copied) */
    int timeout_s;        /* URL: the whole transfer; 0: 30 */
    uint64_t max_bytes;   /* URL: size ceiling of the body; 0: 5 GiB */
    /* Hashes the caller already has (the spool computes them while receiving), copied.
     * NULL: unknown. When given, the bytes read are checked against them. */
    const unsigned char *md5;    /* 16 bytes */
    const unsigned char *sha256; /* 32 bytes */
};

/* Receives a transfer's bytes in pieces, on the engine thread; returns 0 to go on,
 * non-zero to stop the transfer (it then fails with CUT_EIO). */
typedef int (*xfer_data_fn)(void *arg, const void *data, size_t n);

enum xfer_sink_kind {
    XFER_SINK_S3,       /* PutObject (multipart at or above s3.multipart_threshold) */
    XFER_SINK_CALLBACK, /* the caller's function; NULL fn: the bytes are only hashed */
};

struct xfer_sink {
    enum xfer_sink_kind kind;
    const char *key;                 /* S3: the object's key (copied) */
    const char *content_type;        /* S3: NULL for none (copied) */
    const char *content_disposition; /* S3: NULL for none (copied) */
    xfer_data_fn fn;                 /* CALLBACK */
    void *arg;                       /* CALLBACK */
};

enum xfer_op { XFER_COPY, XFER_HEAD };

/* What is known when a transfer ends, successful or not. */
struct xfer_outcome {
    enum xfer_op op;
    struct s3_result s3;         /* the last S3 request (PUT, Complete, GET or HEAD) */
    struct legacy_result legacy; /* the legacy GET, when the source was the legacy store */
    uint64_t bytes;              /* bytes that passed from the source */
    bool hashed;                 /* md5 and sha256 are those of all the bytes */
    unsigned char md5[16];
    unsigned char sha256[32];
    int parts; /* multipart: parts uploaded; 0 for a single request */
};

/* Runs on the engine thread when a transfer ends. err->code is CUT_OK on success, else
 * the reason: CUT_ES3 / CUT_ENOTFOUND (S3 answered), CUT_EHTTP (no answer, or the legacy
 * store failed: see o->legacy.fail), CUT_ECONFLICT (the bytes differ from the hashes or
 * ETag, or the source changed length), CUT_ELIMIT (a ceiling), CUT_EIO (a local file, a
 * data callback that stopped, or the engine stopped). o and err are valid during the call. */
typedef void (*xfer_done_fn)(void *arg, const struct xfer_outcome *o, const cut_err *err);

/* Copies src to sink, hashing the bytes as they pass. Combinations: BUFFER, FILE, LEGACY
 * -> S3; LEGACY, S3, URL -> CALLBACK (a fetch: shadow reads, deep verify, the doctor). Returns
 * 0 when submitted (done will be called exactly once, on the engine thread), or -1 with
 * err set (CUT_EINVAL: a combination that cannot work, no S3 client) and done never
 * called. */
int xfer_copy(xfer_engine *e, const struct xfer_src *src, const struct xfer_sink *sink,
              xfer_done_fn done, void *arg, cut_err *err) CUT_MUST_USE;

/* HeadObject (checksum mode enabled) of key: o->s3 has the ETag, length and checksum.
 * Same submission rules as xfer_copy(). */
int xfer_head(xfer_engine *e, const char *key, xfer_done_fn done, void *arg,
              cut_err *err) CUT_MUST_USE;

/* ---- internal to storage/ (s3.c and legacy.c's blocking wrappers) --------------------- */

/* One S3 request (s3.h's struct s3_req, borrowed during the call), run on the engine with
 * its retries while the calling thread waits. */
int xfer_s3_call(xfer_engine *e, const struct s3_req *rq, struct s3_result *res,
                 cut_err *err) CUT_MUST_USE;

/* Submits and waits: xfer_copy() from a thread that is not the engine's. */
int xfer_copy_wait(xfer_engine *e, const struct xfer_src *src, const struct xfer_sink *sink,
                   struct xfer_outcome *out, cut_err *err) CUT_MUST_USE;

#endif
