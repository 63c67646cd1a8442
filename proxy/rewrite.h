/*
 * rewrite: read cutover, the feature behind signed-URL routes.
 *
 * The request always goes to the app, which keeps deciding who may read what. When the app
 * answers 2xx (a JSON answer holding the URL at the route's pointer) or a redirect (3xx, or
 * 2xx, with the URL in Location), and the flag read_from_s3 selects the read (flags/rollout.h:
 * sticky per the route's `sticky` value, or the document key), and the document is `verified`
 * or `active`, the URL is replaced by an S3 presigned URL for the document's S3 key; the body's
 * length follows. A `verified` document then becomes `active` (in the background). Anything
 * else (not selected, a document not verified or unknown, states that cannot be confirmed
 * because the database or its notifications are away, flags not read from the database yet,
 * an answer that does not parse, over limits.max_json_answer, a presign error, no valid S3
 * credentials at hand) sends the app's answer byte for byte; a non-2xx/3xx answer is never
 * touched. Presigning never waits for credentials (s3_presign_nowait()): temporary ones are
 * fetched ahead of expiry by the provider's refresher thread.
 *
 * States come from the notified cache (storage/doccache.h): a hit costs no database round
 * trip; a miss parks the exchange while a worker looks the document up (lookup_wait_ms at
 * most: past it the app's answer goes unchanged).
 *
 * Migrate on read: a read (selected or not) of a document still to be copied (pending, or
 * mismatch) moves it to the front of the copy queue, once per cached entry, in the background.
 * Every 2xx/3xx answer sent with the app's own URL records the time of the last legacy read
 * (at most once a second per replica; pgstore_legacy_read_last() reads it).
 */
#ifndef CUTOVER_REWRITE_H
#define CUTOVER_REWRITE_H

#include "core/config.h"
#include "flags/flags.h"
#include "proxy/proxy.h"
#include "storage/doccache.h"
#include "storage/mirror.h"
#include "storage/s3.h"
#include "storage/worker.h"

typedef struct rewrite rewrite;

/* What the feature works with, all borrowed: each must outlive the feature. */
struct rewrite_deps {
    flags_store *flags;      /* required: read_from_s3 */
    doccache *cache;         /* required */
    worker_pool *workers;    /* required: threads with a state store (worker_store()) */
    s3_client *s3;           /* required: presigning */
    mirror *mirror;          /* may be NULL: kicked when a read moves a document forward */
    const char *replica;     /* this replica's name in cutover.legacy_reads (copied) */
    unsigned lookup_wait_ms; /* the longest an answer waits for a state lookup; default 1000 */
};

/* Returns a new feature (rewrite_free()) or NULL with err set. */
rewrite *rewrite_new(const struct config *cfg, const struct rewrite_deps *d,
                     cut_err *err) CUT_MUST_USE;
/* Registers its handler for signed-URL routes. Before proxy_start(). */
bool rewrite_register(rewrite *rw, proxy *px, cut_err *err) CUT_MUST_USE;
/* After proxy_free() and after the workers stopped: frees. NULL is fine. */
void rewrite_free(rewrite *rw);

struct rewrite_stats {
    uint64_t rewritten;      /* answered with an S3 presigned URL */
    uint64_t not_selected;   /* the flag left the read on the legacy store */
    uint64_t not_ready;      /* selected, but the document is not verified or active */
    uint64_t unknown;        /* selected, no such document */
    uint64_t unconfirmed;    /* selected, the state could not be confirmed */
    uint64_t unusable;       /* selected, the answer or the key could not be used */
    uint64_t app_refused;    /* non-2xx/3xx answers, passed untouched */
    uint64_t activated;      /* verified → active asked for */
    uint64_t bumped;         /* documents moved to the front of the copy queue */
    uint64_t no_credentials; /* selected and ready, but no valid S3 credentials at hand */
};
void rewrite_stats_get(rewrite *rw, struct rewrite_stats *out);

#endif
