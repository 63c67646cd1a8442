/*
 * shadow: shadow reads' compares. For one signed-URL read picked by the flag shadow_read, the
 * legacy delivery URL the client got from the app and an S3 presigned URL for the same
 * document are both fetched in the background (through a transfer engine of its own, streamed
 * and hashed, never whole in memory) and what each delivered (status, size, SHA-256) is held
 * against the original's checksum recorded at copy time (cutover.documents sha256, size).
 *
 * Classes of a difference (README "Shadow reads"), decided in this order:
 *   s3_error            the S3 fetch failed (no answer, non-2xx, timeout, over the ceiling)
 *   both                S3 and the legacy delivery both differ from the original
 *   s3                  S3 differs from the original (the legacy delivery matches it, or failed)
 *   legacy_error        S3 matches the original, the legacy fetch failed
 *   legacy_transformed  S3 matches the original, only the legacy delivery differs (the legacy
 *                       store transforms what it delivers, as Cloudinary's format optimisation
 *                       did)
 * The first three are S3's faults: each is one error in the rollback window (kind "shadow").
 * A compare whose S3 side matches the original is one success there, whatever the legacy side
 * did. Every difference is written to cutover.shadow_mismatches (never a URL).
 *
 * Bounds, so that shadow traffic can never overload either store: at most `concurrency`
 * compares at once (a compare holds its slot from admission until both fetches ended), and a
 * token bucket of `bytes_per_s` (one second of burst) charged the recorded size at admission
 * (each store then serves at most that many bytes a second of shadow traffic on average). A
 * read over either bound is skipped and counted, never queued; so are documents not yet
 * copied (a state other than verified or active), unknown ones, and reads without a usable
 * URL.
 *
 * shadow_submit() never blocks and never does I/O: it takes a slot (an atomic) and hands the
 * work to the compare's worker thread (its database lookup and presigning), which hands the
 * fetches to the engine; the client's answer never waits for any of it.
 */
#ifndef CUTOVER_SHADOW_H
#define CUTOVER_SHADOW_H

#include "core/core.h"
#include "storage/s3.h"

typedef struct shadow shadow;

enum shadow_class {
    SHADOW_S3 = 0,
    SHADOW_LEGACY_TRANSFORMED,
    SHADOW_BOTH,
    SHADOW_S3_ERROR,
    SHADOW_LEGACY_ERROR,
};
#define SHADOW_NCLASSES 5

enum shadow_skip {
    SHADOW_SKIP_BUSY = 0,   /* `concurrency` compares were running */
    SHADOW_SKIP_RATE,       /* the token bucket was empty */
    SHADOW_SKIP_NOT_COPIED, /* the document is not verified or active (or has no checksum) */
    SHADOW_SKIP_UNKNOWN,    /* no such document */
    SHADOW_SKIP_NO_URL,     /* the answer held no http(s) URL */
    SHADOW_SKIP_ERROR,      /* the database lookup, presigning or a queue refused */
};
#define SHADOW_NSKIPS 6

/* "s3", "legacy_transformed"...; "busy", "rate", "not_copied"... (static strings). */
const char *shadow_class_name(enum shadow_class c);
const char *shadow_skip_name(enum shadow_skip s);
/* Whether a class is S3's fault (counted as an error in the rollback window). */
bool shadow_class_is_s3_fault(enum shadow_class c);

struct shadow_opts {
    const char *database_url; /* lookups and records (copied); required */
    const char *replica;      /* this replica's name in the rows (copied); NULL: "cutover" */
    int concurrency;          /* compares at once; 0: 4 */
    uint64_t bytes_per_s;     /* per store; 0: 8 MiB */
    int timeout_s;            /* per fetch; 0: 30 */
    /* Each compare's S3 outcome (ok false for an S3 fault), kind "shadow"; may be NULL. Called
     * on the engine's thread: it must not block (flags_rollback_outcome fits). */
    void (*outcome)(void *arg, bool ok, const char *kind);
    void *outcome_arg;
};

/* Starts the compares' worker thread and transfer engine. s3 (presigning) is borrowed and must
 * outlive the value. Returns a new value (shadow_free()) or NULL with err set. */
shadow *shadow_start(const struct shadow_opts *o, s3_client *s3, cut_err *err) CUT_MUST_USE;
/* Stops: compares in flight end uncounted. Call once nothing calls shadow_submit() any more
 * (after proxy_free()). NULL is fine. */
void shadow_free(shadow *sh);

/* Asks for one compare of key (the storage key) whose legacy delivery URL is url (both
 * copied; the URL is a credential: it is never logged or stored). Any thread; never blocks.
 * Returns true when the compare was taken (it may still be skipped later: not copied, rate),
 * false when it was skipped at once (counted). */
bool shadow_submit(shadow *sh, const char *key, const char *url);

struct shadow_stats {
    uint64_t requested; /* shadow_submit() calls */
    uint64_t compares;  /* compares whose two fetches ended */
    uint64_t matches;   /* ... with no difference */
    uint64_t mismatches[SHADOW_NCLASSES];
    uint64_t skipped[SHADOW_NSKIPS];
    uint64_t recorded, record_failed; /* rows written to shadow_mismatches, or not */
    int in_flight, peak;              /* compares holding a slot now, and the most at once */
    uint64_t legacy_us_sum, legacy_us_max, legacy_fetches; /* legacy fetch latencies */
    uint64_t s3_us_sum, s3_us_max, s3_fetches;             /* S3 fetch latencies */
    int concurrency;
    uint64_t bytes_per_s;
};
void shadow_stats_get(shadow *sh, struct shadow_stats *out);

#endif
