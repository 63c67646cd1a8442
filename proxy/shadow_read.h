/*
 * shadow_read: the data port's side of shadow reads, and GET /admin/shadow.
 *
 * A handler on signed-URL routes, registered BEFORE the rewrite so that it sees the app's own
 * answer (the URL the client would have used). For the flag shadow_read's share of reads,
 * chosen at random per read (see shadow_read.c for why not sticky), it takes the document key
 * and the legacy URL from the app's 2xx answer (the route's JSON Pointer, or Location) and
 * hands both to storage/shadow.h, which fetches and compares in the background. It never
 * changes the answer and never makes it wait: a read not picked costs one flag read and one
 * random number; a picked JSON answer is held only as the rewrite holds it (until it is whole,
 * within limits.max_json_answer), and a redirect is not held at all. Whether read_from_s3
 * selects the read does not matter.
 *
 * GET /admin/shadow?limit=N (1..1000, default 20) answers {"shadow_read": the flag, "stats":
 * this replica's counters, "mismatches_by_class": rows per class in the database,
 * "mismatches": the latest N rows, newest first}.
 */
#ifndef CUTOVER_SHADOW_READ_H
#define CUTOVER_SHADOW_READ_H

#include "core/config.h"
#include "flags/flags.h"
#include "proxy/proxy.h"
#include "storage/shadow.h"

typedef struct shadow_read shadow_read;

/* What the feature works with, borrowed: each must outlive it. */
struct shadow_read_deps {
    flags_store *flags;       /* required: shadow_read */
    shadow *shadow;           /* required: the compares */
    const char *database_url; /* GET /admin/shadow's rows (copied) */
};

/* Returns a new feature (shadow_read_free()) or NULL with err set. */
shadow_read *shadow_read_new(const struct config *cfg, const struct shadow_read_deps *d,
                             cut_err *err) CUT_MUST_USE;
/* Registers its handler for signed-URL routes and GET /admin/shadow. Before proxy_start(),
 * and before the rewrite's registration. */
bool shadow_read_register(shadow_read *sr, proxy *px, cut_err *err) CUT_MUST_USE;
/* After proxy_free(). NULL is fine. */
void shadow_read_free(shadow_read *sr);

/* Reads the flag picked (and handed to the compares, or found without a usable answer). */
uint64_t shadow_read_picked(shadow_read *sr);

/* The stats as JSON: {"requested", "compares", "matches", "mismatches": {class: n},
 * "skipped": {reason: n}, "recorded", "record_failed", "in_flight", "peak", "concurrency",
 * "bytes_per_s", "legacy_ms_mean", "legacy_ms_max", "s3_ms_mean", "s3_ms_max", "picked"}.
 * Returns a new object (json_decref()). */
json_t *shadow_read_stats_json(shadow_read *sr);

#endif
