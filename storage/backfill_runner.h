/*
 * backfill_runner: a backfill that runs on a thread of its own inside a long-lived process
 * (the sidecar), started, paused and resumed from outside (`POST /admin/backfill`), with its
 * progress readable at any moment as JSON (for `GET /admin/status`).
 *
 * A run is what `cutover backfill` does (cmd/cmd_backfill.c): the configured source is read a
 * batch at a time and its rows not yet known are recorded `pending` (origin backfill) at most
 * backfill.rate a second; a mirror of the runner's own, on a transfer engine of its own
 * limited to backfill.rate documents/s and backfill.rate_bytes bytes/s from the legacy store,
 * copies and verifies them; once the source is read and the queue holds no backfill document
 * to copy, documents a killed copier left `copied` are checked against S3, and the run is
 * `done`. The queue is the only coordination, so a run in the sidecar shares the work with
 * `cutover backfill` jobs and other sidecars, and a new start after a restart only adds and
 * copies what is missing.
 *
 * Pausing stops the reading of the source and the runner's mirror (its copies in flight end
 * and are recorded first, on the runner's thread); the documents already queued stay queued.
 * A sidecar whose dual-write mirror runs claims queued documents of any origin, so that
 * mirror may still copy some of them while the backfill is paused (unthrottled by the
 * backfill's limits): the queue has no per-origin claim.
 *
 * States: idle (never started) → running ⇄ paused; running → done (nothing left) or failed
 * (the source or the database failed; its reason in the progress). start from idle, done or
 * failed begins a new pass over the source.
 */
#ifndef CUTOVER_BACKFILL_RUNNER_H
#define CUTOVER_BACKFILL_RUNNER_H

#include "core/config.h"
#include "core/core.h"
#include "storage/backfill.h"
#include "storage/legacy.h"
#include "storage/s3.h"

#include <jansson.h>

typedef struct backfill_runner backfill_runner;

struct backfill_runner_opts {
    const struct config *cfg; /* borrowed: outlives the runner (source, rates, workers) */
    backfill_key_fn key_of;   /* a row's S3 key (the caller's template expansion) */
    void *key_arg;            /* borrowed, for key_of */
    s3_client *s3;            /* borrowed: outlives the runner */
    legacy_store *legacy;     /* borrowed: outlives the runner */
    const char *owner;        /* lease owner for humans (copied); NULL: backfill:<pid> */
};

/* Returns a new runner, idle, its thread started (it waits for a start), or NULL with err
 * set (CUT_EINVAL: no backfill source, no database, no legacy store). Free with
 * backfill_runner_free(), which stops a run (copies in flight end and are recorded) and
 * waits for the thread. */
backfill_runner *backfill_runner_new(const struct backfill_runner_opts *o,
                                     cut_err *err) CUT_MUST_USE;
void backfill_runner_free(backfill_runner *r); /* NULL is fine */

enum backfill_state { BF_IDLE = 0, BF_RUNNING, BF_PAUSED, BF_DONE, BF_FAILED };
/* "idle", "running", "paused", "done", "failed" (static strings). */
const char *backfill_state_name(enum backfill_state s);

/* action "start" (from idle, done or failed; running or paused: nothing changes), "pause"
 * (from running) or "resume" (from paused). Any thread; returns at once (the runner's
 * thread carries it out). Returns 0 with *now the state the runner goes to, or -1 with err
 * set: CUT_EINVAL for an unknown action, CUT_ECONFLICT when the state does not allow it
 * (*now the current state). */
int backfill_runner_control(backfill_runner *r, const char *action, enum backfill_state *now,
                            cut_err *err) CUT_MUST_USE;

/* The progress as a new JSON object (json_decref()), read from what the runner's thread
 * last counted (at most a second old) without a database call, so any thread may call it
 * at any time:
 *   {"state": S, "total": N, "done": N, "verified": N, "failed": N, "pending": N,
 *    "enqueued": N, "source_done": B, "bytes": N, "docs_per_s": X, "bytes_per_s": X,
 *    "eta_s": X|null, "elapsed_s": X, "rate": X, "rate_bytes": X, "legacy_throttled": N,
 *    "legacy_hold_ms": N, "error": S|null}
 * total .. pending count every backfill document in the database (all runs, all
 * processes); bytes, docs_per_s, bytes_per_s and elapsed_s are this runner's current pass
 * (paused time included); eta_s is null until the source is read. */
json_t *backfill_runner_progress(backfill_runner *r) CUT_MUST_USE;

#endif
