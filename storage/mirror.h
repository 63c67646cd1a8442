/*
 * mirror: the workers that copy recorded documents to S3 and verify them. A mirror claims
 * documents from the queue in cutover.documents (pending or mismatch, next attempt due, no
 * live lease), hands each copy to the transfer engine, checks S3's answer to a HEAD, and
 * records the outcome fenced by its lease: pending → copied → verified, or a failed attempt
 * with its reason and the next attempt's time (`failed` after workers.max_attempts).
 *
 * The source of a copy is the spool file the upload was teed into, checked against the
 * hashes recorded with the document; when the file is gone or its bytes differ, the raw
 * original is streamed from the legacy store instead. Any number of mirrors (sidecars,
 * backfill jobs) share one queue.
 *
 * A claim's lease (lease_ms) is renewed every lease_ms / 3 while its copy or removal is in
 * flight, however long it takes; a renewal that finds the lease gone (expired while the
 * database was away, voided by a requeue) gives the work's outcome up.
 *
 * Deletes are work of the same queue: a `deleted` document whose S3 object is not recorded as
 * removed is claimed, its object deleted and the removal recorded, retried like a copy. A copy
 * that lands after its document was deleted or recorded again never stays: see mirror.c.
 */
#ifndef CUTOVER_MIRROR_H
#define CUTOVER_MIRROR_H

#include "core/core.h"
#include "storage/legacy.h"
#include "storage/xfer.h"

typedef struct mirror mirror;

struct mirror_opts {
    const char *database_url; /* copied */
    const char *owner;        /* lease owner for humans (host:pid); copied; NULL: pid */
    int max_inflight;         /* copies at once; default 16 */
    int lease_ms;             /* default 300000 */
    int max_attempts;         /* default 10 */
    int backoff_ms;           /* first retry delay, doubling; default 1000 */
    int max_backoff_ms;       /* longest retry delay; default 10000. A low ceiling is what
                               * makes documents verified soon after an S3 outage ends: with
                               * doubling alone, a 30 s outage would push the next attempt
                               * 30 s or more past the end (an hour, uncapped) */
    int poll_ms;              /* how often the queue is looked at when idle; default 1000 */
    bool keep_spool;          /* leave spool files after verification (tests) */
    bool background;          /* in a sidecar: the mirror's threads yield a CPU the request
                               * path wants (thread_setup()) */
    const char *origin;       /* copies of this origin only (see pgstore_claim()); NULL: any;
                               * borrowed, a string literal in practice */
    /* Each copy's S3 outcome (ok, or S3 failed or did not answer; kind "s3_put"), for the
     * automatic rollback's window. Called on the mirror's thread; may be NULL. */
    void (*outcome)(void *arg, bool ok, const char *kind);
    void *outcome_arg;
};

/* Starts the mirror's thread. s3 and e (required: the engine copies, s3 removes the objects
 * of deleted documents) and legacy (may be NULL: no fallback) are borrowed and must
 * outlive the mirror. Returns a new mirror (mirror_free()) or NULL with err set. */
mirror *mirror_start(const struct mirror_opts *o, s3_client *s3, xfer_engine *e,
                     legacy_store *legacy, cut_err *err) CUT_MUST_USE;

/* A document was recorded: look at the queue now rather than at the next poll. Any thread;
 * never blocks beyond a short mutex. */
void mirror_kick(mirror *m);

/* Stops claiming, waits for the copies in flight to end and records them, stops the thread
 * and frees. NULL is fine. */
void mirror_free(mirror *m);

struct mirror_stats {
    uint64_t claimed;     /* documents claimed */
    uint64_t verified;    /* copied and verified */
    uint64_t from_legacy; /* copies that read the legacy store (no usable spool file) */
    uint64_t retried;     /* attempts that failed and were rescheduled */
    uint64_t failed;      /* documents that reached `failed` */
    uint64_t lost_leases; /* outcomes refused because the lease was no longer ours */
    uint64_t removed;     /* S3 objects of deleted documents removed and recorded */
    uint64_t requeued;    /* documents put back to work because S3 may hold other bytes */
    uint64_t renewals;    /* rounds of lease renewal for the copies in flight */
    int inflight;
};
void mirror_stats_get(mirror *m, struct mirror_stats *out);

#endif
