/*
 * backfill: the historical documents, read from the configured source and put in the queue.
 *
 * A source yields rows: a storage key and the template variables that go with it. Two kinds:
 * an SQL query against the application's database (`backfill.source.sql`), read page by page
 * ordered by key and resumed after the last key seen (keyset paging: each page costs the same
 * however far the backfill is, where OFFSET would re-read every row before it), or a JSONL
 * file (`backfill.source.jsonl`) with one object per line. A row that cannot be used (a line
 * that is not JSON, a key missing) comes back as a row with an error and its line number, so
 * the caller reports it and goes on.
 *
 * Enqueueing builds each row's S3 key (with the upload route's template, expanded by the
 * caller, since templates belong to proxy/) and records the rows
 * not yet known as `pending` documents of origin `backfill`, in batches (pgstore.h's
 * pgstore_insert_missing): documents already recorded by dual-write or by an earlier run are
 * left alone, so a run after a crash or beside another run only adds what is missing. The
 * mirror (mirror.h) then copies them from the legacy store like any other queued document.
 */
#ifndef CUTOVER_BACKFILL_H
#define CUTOVER_BACKFILL_H

#include "core/config.h"
#include "core/core.h"
#include "storage/pgstore.h"
#include "storage/s3.h"

#include <jansson.h>

/* Ceilings on what a source may hand over: a JSONL line, a storage key, a page. */
#define BACKFILL_MAX_LINE 65536
#define BACKFILL_MAX_KEY 4096
#define BACKFILL_MAX_PAGE PGSTORE_INSERT_MAX
/* The part buffers of a backfill's copies, all together (xfer_engine_set_buffer_budget()):
 * small documents reserve their own size, large ones a part (s3.part_size) each. */
#define BACKFILL_BUFFER_BUDGET (48ull << 20)

typedef struct backfill_source backfill_source;

/* One row of the source. */
struct backfill_row {
    char *key;    /* the storage key; NULL when the row is unusable */
    json_t *vars; /* object of the row's other fields as strings (null fields left out) */
    long line;    /* JSONL: its line number (from 1); SQL: the row's number in the run */
    char *error;  /* why the row is unusable, or NULL */
};
/* Frees the rows' contents (not the array) and zeroes them. */
void backfill_rows_clear(struct backfill_row *rows, size_t n);

/* Opens cfg's source (borrowed for the call). state_db_url is the state database, used when
 * an SQL source has no database_url of its own. page (1..BACKFILL_MAX_PAGE) is the number of
 * rows of an SQL page. Returns a new source (backfill_source_free()) or NULL with err set:
 * CUT_EINVAL for no source or a file that cannot be opened, CUT_EDB when the database cannot
 * be reached. */
backfill_source *backfill_source_open(const struct cfg_backfill *cfg, const char *state_db_url,
                                      size_t page, cut_err *err) CUT_MUST_USE;
void backfill_source_free(backfill_source *s); /* NULL is fine */

/* A name of the source for messages: the JSONL file's path, or "sql". Valid until free. */
const char *backfill_source_name(const backfill_source *s);

/* Reads up to max (1..BACKFILL_MAX_PAGE) rows into rows[0..*n) (overwritten: clear the rows of
 * the previous call first; the caller clears these with backfill_rows_clear()). *n == 0 means the
 * source is exhausted. Returns 0, or -1 with err set when the source itself fails (a query error, a
 * read error): rows are then empty. */
int backfill_source_next(backfill_source *s, struct backfill_row *rows, size_t max, size_t *n,
                         cut_err *err) CUT_MUST_USE;

/* The S3 key template of a backfilled document: the first upload route's s3_key, or "{key}"
 * when there is no upload route. Borrowed from cfg. */
const char *backfill_key_template(const struct config *cfg);

/* The value of template variable name[0..nlen) for row: the storage key for {key}, else the
 * row's field of that name; NULL when it has none. Borrowed from row. The shape of
 * proxy/extract.h's extract_var_fn, with row as its argument. */
const char *backfill_row_var(void *row, const char *name, size_t nlen, size_t *len);

/* What one backfill_enqueue() did. */
struct backfill_enqueued {
    size_t inserted;    /* new documents (pending, or failed when their key cannot be built) */
    size_t known;       /* already recorded: left alone */
    size_t unbuildable; /* of those inserted: recorded `failed` (the S3 key cannot be built) */
};

/* Builds a row's S3 key (the caller's template expansion: storage/ knows no templates).
 * Returns a new string (free()) or NULL with err set to the reason. */
typedef char *(*backfill_key_fn)(void *arg, const struct backfill_row *row, cut_err *err);

/* Builds the S3 key of every usable row of rows[0..n) (n <= BACKFILL_MAX_PAGE) with key_of and
 * records the ones not known yet as documents of origin `backfill`: `pending`, or `failed`
 * with the reason when the key cannot be built. Rows with an error are skipped. Adds to *out.
 * Returns 0 or -1 with err set (nothing of this batch recorded). */
int backfill_enqueue(pgstore *st, backfill_key_fn key_of, void *arg,
                     const struct backfill_row *rows, size_t n, struct backfill_enqueued *out,
                     cut_err *err) CUT_MUST_USE;

/* Documents left `copied` by a copier that stopped between recording the copy and marking it
 * verified (killed, or its database went away at that moment): the mirror never claims them
 * again. For each such document of origin (up to PGSTORE_CLAIM_MAX), S3 is asked (HEAD) whether
 * it holds what the copy recorded: the same size and ETag, and the same SHA-256 checksum when
 * S3 reports one. Agreed: `verified`. Otherwise: `mismatch`, which the queue copies again.
 * Call it when no copier can still be at work on them (after the queue has drained).
 * *verified and *mismatched receive the counts. Returns 0 or -1 with err set. */
int backfill_settle_copied(pgstore *st, s3_client *s3, const char *origin, size_t *verified,
                           size_t *mismatched, cut_err *err) CUT_MUST_USE;

/* ---- the documents/s throttle ---------------------------------------------------------- */

/* A token bucket that lets debt build up: rate tokens a second, at most one second's worth
 * saved (burst), empty at the start, and a caller that takes more than there are leaves the
 * bucket negative, to wait until it has refilled. Over any span T from the start, at most
 * rate * T + one batch pass. The backfill takes one token per document it *inserted* after
 * each batch and waits before the next, so documents already known cost nothing and a batch
 * never needs to be cut to the bucket's size. rate <= 0: no limit. */
struct backfill_bucket {
    double rate, tokens, burst;
    uint64_t last_us;
};
void backfill_bucket_init(struct backfill_bucket *b, double rate, uint64_t now);
/* Takes n tokens at time now (microseconds, monotonic). */
void backfill_bucket_take(struct backfill_bucket *b, double n, uint64_t now);
/* How long to wait from now before the bucket is no longer in debt (0: go on). */
uint64_t backfill_bucket_wait_us(struct backfill_bucket *b, uint64_t now);

/* ---- one page from the source into the queue ------------------------------------------ */

/* Called with each row of a page that has an error (its line and reason), before the rest is
 * recorded; source is backfill_source_name(). */
typedef void (*backfill_bad_fn)(void *arg, const char *source, const struct backfill_row *row);

/* What the backfill command and the sidecar's runner do for every page: reads up to max rows
 * of src into rows (the caller's array of max, cleared again before returning), hands each
 * bad row to bad (NULL: none), records the others with backfill_enqueue(st, key_of, key_arg,
 * ..., enq) and takes one token of bucket per document inserted. *n receives the rows read
 * (0: the source is exhausted), *inserted the documents this page added. Returns 0, or -1
 * with err set when the source or the database failed (nothing of the page recorded). */
int backfill_enqueue_page(backfill_source *src, pgstore *st, struct backfill_row *rows, size_t max,
                          backfill_key_fn key_of, void *key_arg, backfill_bad_fn bad, void *bad_arg,
                          struct backfill_bucket *bucket, struct backfill_enqueued *enq, size_t *n,
                          size_t *inserted, cut_err *err) CUT_MUST_USE;

#endif
