/*
 * verify: checks that S3 holds what the state store says was copied, repairs what it does
 * not, and writes the evidence.
 *
 * A pass goes through every document in state copied, verified or active, by storage key a
 * page at a time, with a bounded number of checks in flight on the transfer engine (never a
 * thread per document):
 *   - quick: a HEAD of the object (checksum mode): the size, then S3's SHA-256 checksum when
 *     it reports one, else its ETag when that is an MD5 (a single PUT, not SSE-KMS), against
 *     what the copy recorded;
 *   - deep: the raw original streamed from legacy.raw_url and the object streamed from S3,
 *     both hashed as they pass (never whole in memory), each SHA-256 compared with the
 *     recorded one, so the report says which side differs.
 * Consistent documents are recorded as checked (a `copied` one becomes `verified`); a
 * difference makes the document `mismatch` with the recorded and the found checksums, held
 * off the queue until a repair. Every record is fenced by the generation and the row as read
 * (storage/pgstore.h, section verification): a document recorded again or repaired while it
 * was checked keeps its newer state.
 *
 * A repair releases the mismatch documents (copied again from the raw original) and retries
 * the failed ones, on the one copy path of the mirror (storage/mirror.h), and waits for the
 * queue to drain.
 */
#ifndef CUTOVER_VERIFY_H
#define CUTOVER_VERIFY_H

#include "core/core.h"
#include "storage/legacy.h"
#include "storage/pgstore.h"
#include "storage/xfer.h"

/* Waits up to ms (0: only looks) and says whether the run should stop (a signal came). */
typedef bool (*verify_wait_fn)(void *arg, int ms);

/* What a pass found so far. */
struct verify_counts {
    int64_t checked;     /* documents whose check ended (any outcome) */
    int64_t consistent;  /* S3 agrees with the record */
    int64_t promoted;    /* of those: copied -> verified */
    int64_t mismatched;  /* recorded as mismatch by this pass */
    int64_t s3_side;     /* of those: S3 differs (or has no object) */
    int64_t legacy_side; /* of those: the raw original differs (deep) */
    int64_t stale;       /* the document changed while it was checked: left as it is */
    int64_t unchecked;   /* S3 or the legacy store could not answer: left as it is */
    uint64_t bytes;      /* deep: bytes read from both sides */
    bool interrupted;
};

/* One finding, for the caller's report (called on the caller's thread). what: "mismatch" or
 * "unchecked"; detail: the reason with the recorded and the found checksums. */
typedef void (*verify_event_fn)(void *arg, const char *storage_key, const char *what,
                                const char *detail);

struct verify_opts {
    bool deep;
    int concurrency;   /* documents checked at once; 0: 32 */
    bool etag_not_md5; /* S3's ETag is no MD5 of the bytes (SSE-KMS) */
    const char *since; /* only documents verified at or after this time (ISO 8601); NULL: all */
    verify_wait_fn wait;
    verify_event_fn event;                                      /* may be NULL */
    void (*progress)(void *arg, const struct verify_counts *c); /* may be NULL; often */
    void *arg;                                                  /* for the three */
};

/* Runs one pass (see above) with the calls of st (used by this thread only) and the
 * transfers on e (legacy is required for deep; both borrowed). *out receives the counts,
 * also when the pass stops early (a signal: out->interrupted). Returns 0, or -1 with err set
 * when the state store fails (what was recorded stays). */
int verify_pass(pgstore *st, xfer_engine *e, legacy_store *legacy, const struct verify_opts *o,
                struct verify_counts *out, cut_err *err) CUT_MUST_USE;

struct verify_repaired;

struct verify_repair_opts {
    const char *database_url; /* the mirror's own connection */
    const char *owner;        /* lease owner for humans */
    int concurrency;          /* copies at once; 0: 16 */
    int lease_ms, max_attempts;
    verify_wait_fn wait;
    void (*progress)(void *arg, const struct verify_repaired *r); /* may be NULL; often */
    void *arg;                                                    /* for both */
};

struct verify_repaired {
    int64_t released; /* mismatch documents copied again */
    int64_t retried;  /* failed documents retried */
    uint64_t copied;  /* copies this repair made and verified */
    bool interrupted;
};

/* Releases every mismatch document and retries every failed one (pgstore_verify_release),
 * then copies them with a mirror of its own (s3, e, legacy borrowed) until no document is left
 * queued, or a stop. Returns 0 or -1 with err set. */
int verify_repair(pgstore *st, const struct verify_repair_opts *o, s3_client *s3, xfer_engine *e,
                  legacy_store *legacy, struct verify_repaired *out, cut_err *err) CUT_MUST_USE;

/* What a manifest holds. */
struct verify_manifest_sum {
    int64_t documents;
    int64_t counts[DOC_NSTATES];
    char sha256[65]; /* over every byte of the document lines, newlines included */
};

/* Writes the manifest of every document not deleted to path: one JSON object per line,
 * in storage key order,
 *   {"storage_key", "s3_key", "size", "sha256", "state", "verified_at", "s3_etag"
 *    [, "s3_version_id"]}
 * (null where unknown), then one summary line
 *   {"summary": {"documents", "states": {...}, "consistency"}, "sha256": HEX,
 *    "sha256_of": "..."}
 * whose sha256 is the SHA-256 of every byte before the summary line (the document lines with
 * their "\n"): `head -n -1 FILE | sha256sum` gives it. Written to a temporary file beside
 * path, flushed to disk, then renamed over path: a reader never sees half a manifest.
 * Returns 0 or -1 with err set (CUT_EIO: the file). */
int verify_manifest_write(pgstore *st, const char *path, struct verify_manifest_sum *out,
                          cut_err *err) CUT_MUST_USE;

/* Whether a HEAD's answer h agrees with the record d (pure, no I/O): the size, then S3's
 * SHA-256 checksum when it reports a whole-object one (base64) and d has a SHA-256 (hex), else
 * the ETag when it is an MD5 (32 hex digits, and etag_not_md5 false: not SSE-KMS) and d has an
 * MD5, else the ETag recorded at the copy; with nothing to compare but the size, true. False
 * with why (a sentence naming the recorded and the found value) filled; found_sha256 receives
 * S3's SHA-256 as hex when it reported one ("" otherwise). */
bool verify_head_agrees(const struct pgstore_doc *d, const struct s3_result *h, bool etag_not_md5,
                        char *why, size_t whylen, char found_sha256[65]);

/* The consistency ratio of counts (pgstore_count_states()): verified or active over every
 * document not deleted; 1 when there is none. */
double verify_consistency(const int64_t counts[DOC_NSTATES]);

#endif
