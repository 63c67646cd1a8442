/*
 * upload: dual-write, the feature behind upload and delete routes.
 *
 * Upload routes: while the request body streams to the app, the document's bytes (the whole
 * body, or the multipart file part) are teed into a spool file and hashed off the loop, with
 * backpressure. When the app answers 2xx, the storage key and the template variables are
 * pulled from the request and the answer, the S3 key is built, and the document is recorded
 * in cutover.documents as `pending` (or, PostgreSQL being away, in the spool directory's
 * journal) before the client gets the app's answer, exactly as the app sent it. The mirror
 * (storage/mirror.h) copies it from there. A non-2xx answer: the spool file is removed and
 * nothing is recorded. With the flag `dual_write` off, uploads pass untouched.
 *
 * Delete routes: when the app answers 2xx, the document becomes `deleted` and its S3 object
 * is removed, before the client gets the answer.
 */
#ifndef CUTOVER_UPLOAD_H
#define CUTOVER_UPLOAD_H

#include "core/config.h"
#include "flags/flags.h"
#include "proxy/proxy.h"
#include "storage/journal.h"
#include "storage/mirror.h"
#include "storage/s3.h"
#include "storage/spool.h"
#include "storage/worker.h"

typedef struct upload upload;

/* What the feature works with, all borrowed: each must outlive the feature. */
struct upload_deps {
    spool *spool;            /* required */
    worker_pool *recorder;   /* required: threads with a state store (worker_store()) */
    flags_store *flags;      /* required: dual_write */
    journal *journal;        /* may be NULL: records are then lost while PostgreSQL is away */
    mirror *mirror;          /* may be NULL: kicked after each record */
    s3_client *s3;           /* may be NULL: deletes then leave the S3 object */
    unsigned record_wait_ms; /* the longest the client's answer waits for the record;
                              * default 5000 */
};

/* Returns a new feature (upload_free()) or NULL with err set. */
upload *upload_new(const struct config *cfg, const struct upload_deps *d,
                   cut_err *err) CUT_MUST_USE;
/* Registers its handlers for upload and delete routes. Before proxy_start(). */
bool upload_register(upload *u, proxy *px, cut_err *err) CUT_MUST_USE;
/* Replays the journal into the database (at start, and whenever PostgreSQL is back): the
 * journal is moved aside, each record upserted in order, and the aside file removed once
 * every record is in. While the journal holds records not yet replayed (from this run or an
 * earlier one), new records are appended behind them rather than written to the database,
 * so that a replay never puts an older upload of a key over a newer one; call this often
 * (cmd_proxy: every 500 ms). Blocking: from a worker or the command's thread. Returns the
 * records replayed, or -1 with err set (the records stay for the next replay). */
long upload_replay_journal(upload *u, pgstore *db, cut_err *err);
/* The order of the app's answers: taken on the loop when a 2xx answer to an upload or a delete
 * is seen, carried in its record (and journal record), so that of two records of one key the
 * one answered later wins whichever reaches the database first (pgstore_upsert()). Strictly
 * increasing within the process; the wall clock in microseconds (max(now, last + 1)), so that
 * replicas order roughly by time: across hosts, the order is that of their clocks. Any
 * thread, lock-free. */
uint64_t upload_seq_next(void);
/* After proxy_free(): frees. NULL is fine. */
void upload_free(upload *u);

struct upload_stats {
    uint64_t skipped;        /* uploads passed untouched: dual_write off */
    uint64_t refused_by_app; /* non-2xx answers: nothing recorded */
    uint64_t recorded;       /* documents recorded in PostgreSQL */
    uint64_t journaled;      /* recorded in the journal (PostgreSQL away) */
    uint64_t replayed;       /* journal records replayed into PostgreSQL */
    uint64_t unusable;       /* 2xx answers the key cannot be taken from: not recorded */
    uint64_t unmirrorable;   /* recorded as failed: the S3 key cannot be built */
    uint64_t spool_failed;   /* spool unusable (disk full...): recorded for a legacy copy */
    uint64_t lost;           /* neither PostgreSQL nor the journal took the record */
    uint64_t deleted;        /* documents deleted through a delete route */
    uint64_t superseded;     /* records not applied: the app answered a newer upload or
                              * delete of the key, recorded first */
};
void upload_stats_get(upload *u, struct upload_stats *out);

#endif
