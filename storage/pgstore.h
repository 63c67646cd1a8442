/*
 * pgstore: cutover's state in PostgreSQL (schema `cutover`), offered as typed calls: record a
 * document, move it through its state machine, claim work from the queue under a lease,
 * complete or fail a claim fenced by the lease token, write a flag with its audit row, count
 * documents per state, fetch one document. The connection is inside: nothing above storage/
 * sees libpq.
 *
 * A pgstore is one connection used by one thread at a time; a thread that needs the database
 * opens its own (the workers of storage/worker.h each hold one). A lost connection makes the
 * call that saw it fail with CUT_EDB; the next call reconnects. No call retries by itself:
 * the caller knows whether its work may run twice.
 */
#ifndef CUTOVER_PGSTORE_H
#define CUTOVER_PGSTORE_H

#include "core/core.h"

#include <jansson.h>

typedef struct pgstore pgstore;

/* Connects to url now. Returns a new store (pgstore_free()) or NULL with err set; the message
 * never contains the URL's password. */
pgstore *pgstore_connect(const char *url, cut_err *err) CUT_MUST_USE;
/* Returns a new store that connects on its first call (and again after a lost connection).
 * url is copied. Never fails. */
pgstore *pgstore_open(const char *url);
void pgstore_free(pgstore *st); /* NULL is fine */
/* A few idle stores kept for threads that take one per call (the admin port's handlers).
 * Returns a new pool over url (copied) keeping at most max_idle (up to 16) idle stores
 * (pgstore_pool_free(), after every taken store is given back). */
typedef struct pgstore_pool pgstore_pool;
pgstore_pool *pgstore_pool_new(const char *url, size_t max_idle);
/* An idle store, or a new one that connects on its first call; any thread. */
pgstore *pgstore_pool_take(pgstore_pool *p);
/* Gives st back (kept while fewer than max_idle are idle, else freed). NULL is fine. */
void pgstore_pool_give(pgstore_pool *p, pgstore *st);
void pgstore_pool_free(pgstore_pool *p);
/* The server process serving this store's connection, or 0 when not connected (for
 * diagnostics and tests that cut the connection). */
int pgstore_backend_pid(pgstore *st);
/* After a call that failed with CUT_EDB: true when a live server refused the statement for
 * its data (a value it cannot take, a constraint, a limit: trying again cannot help); false
 * when the database was away, the connection was lost (the statement may or may not have
 * been applied) or the failure may pass. */
bool pgstore_last_refused(const pgstore *st);

/* Brings schema `cutover` to the latest version, each migration in the same transaction as
 * its version row, under an advisory lock (key PGSTORE_MIGRATION_LOCK) so that replicas
 * starting at once apply each migration exactly once. *from and *to (may be NULL) receive
 * the versions before and after. Returns 0 or -1 with err set. */
int pgstore_migrate(pgstore *st, int *from, int *to, cut_err *err) CUT_MUST_USE;
/* The bigint naming "cutover schema migration" among advisory locks. */
#define PGSTORE_MIGRATION_LOCK 7235410591
/* The latest version this build knows. */
int pgstore_latest_version(void);
/* The schema's current version (0 when absent), or -1 with err set. */
int pgstore_schema_version(pgstore *st, cut_err *err) CUT_MUST_USE;

/* Writes url (a URL or a keyword/value connection string) into out for messages: every
 * password (user:pass@, ?password=, &password=, password=..., password='...') is replaced
 * by ***; a string libpq cannot parse is not shown at all. */
void pgstore_redact_url(const char *url, char *out, size_t n);

/* ---- documents and their state machine -------------------------------------------------- */

/* DESIGN.md: pending → copied → verified → active, plus mismatch, failed, deleted. */
enum doc_state {
    DOC_PENDING = 0,
    DOC_COPIED,
    DOC_VERIFIED,
    DOC_ACTIVE,
    DOC_MISMATCH,
    DOC_FAILED,
    DOC_DELETED,
};
#define DOC_NSTATES 7

/* The state's name as stored ("pending"...), or NULL for a value out of range. */
const char *doc_state_name(enum doc_state s);
/* The state named s, or -1. */
int doc_state_parse(const char *s);
/* Whether from → to is a legal transition (the one table of them is in pgstore.c). */
bool doc_transition_legal(enum doc_state from, enum doc_state to);

/* A document as the application recorded it. Strings are borrowed for the call; NULL or -1
 * means unknown. */
struct pgstore_doc_in {
    const char *storage_key; /* required */
    const char *s3_key;      /* required */
    const char *origin;      /* "upload" (NULL) or "backfill" */
    const char *vars;        /* JSON object text, NULL = {} */
    const char *spool_path;
    int64_t size;
    const char *md5, *sha256; /* hex */
    const char *content_type; /* what the S3 object is served with */
    const char *filename;     /* the original name, for Content-Disposition */
    /* NULL: recorded `pending`. Else the document cannot be mirrored (its S3 key cannot be
     * built...): recorded straight as `failed` with this reason, never claimed. */
    const char *failed_reason;
    /* The sidecar's sequence of the app's answer to this upload (upload_seq_next()), which
     * orders records of one key; 0: unknown (a backfill, an old journal record). */
    int64_t answered_seq;
};

/* Records a document in state pending (or failed, see failed_reason). A storage_key already present
 * is re-recorded: its generation goes up by one, its state returns to pending (with a row in
 * transitions), its lease and checksums are cleared, so work on the older generation can no longer
 * complete. *generation (may be NULL) receives the new generation (1 for a new document). A record
 * with the same spool_path as the current generation's is that same upload recorded again (an
 * upsert whose answer was lost, then journaled and replayed): nothing changes and *generation
 * receives 0 (its spool file is still the document's). Order: when both the record's and the row's
 * answered_seq are known and the record's is not greater, the record is older than what the row
 * holds (an upload answered before the one recorded, or before the delete recorded): nothing
 * changes and *generation receives -1 (superseded: its spool file serves no one). Either sequence
 * unknown: the record is applied (order of arrival). Returns 0 or -1 with err set. */
int pgstore_upsert(pgstore *st, const struct pgstore_doc_in *d, int64_t *generation,
                   cut_err *err) CUT_MUST_USE;

/* Moves a document to `to`, with its row in transitions, in one transaction. generation 0
 * means the current one; another value must be the current one. Refuses with CUT_ECONFLICT
 * (and a reason) an illegal transition or a stale generation, with CUT_ENOTFOUND an unknown
 * key; nothing is written then. detail (may be NULL) is kept in the transitions row. */
int pgstore_transition(pgstore *st, const char *storage_key, int64_t generation, enum doc_state to,
                       const char *detail, cut_err *err) CUT_MUST_USE;

/* What pgstore_delete_answered() did. */
enum pgstore_delete_result {
    PGSTORE_DEL_DELETED,    /* the document became `deleted` */
    PGSTORE_DEL_ALREADY,    /* it was deleted already (its sequence kept as the newer one) */
    PGSTORE_DEL_UNKNOWN,    /* no such document: with a sequence, a `deleted` row is left (no S3
                             * object to remove, never claimed) so that an upload answered
                             * before the delete, recorded after it, cannot bring it back */
    PGSTORE_DEL_SUPERSEDED, /* an upload answered after the delete is recorded: left alone */
};
struct pgstore_delete_out {
    enum pgstore_delete_result result;
    enum doc_state was; /* the state before, for DELETED */
    char s3_key[1024];  /* the document's S3 key for DELETED ("" when longer) */
};
/* The app answered 2xx to a delete of storage_key, with the sidecar's sequence answered_seq
 * (0: unknown). The document becomes `deleted` (its S3 object's removal due, see
 * pgstore_claim()) unless the row holds a record answered later (both sequences known, the row's
 * greater). In one transaction, the row locked. *out is filled. Returns 0 or -1 with err set. */
int pgstore_delete_answered(pgstore *st, const char *storage_key, int64_t answered_seq,
                            const char *detail, struct pgstore_delete_out *out,
                            cut_err *err) CUT_MUST_USE;

/* One document's row. Strings are owned by the struct: pgstore_doc_clear(). Times are
 * ISO 8601 text or NULL. */
struct pgstore_doc {
    char *storage_key, *s3_key, *origin, *vars, *spool_path;
    enum doc_state state;
    int64_t generation;
    int64_t size; /* -1 unknown */
    char *md5, *sha256, *s3_etag, *s3_sha256, *legacy_sha256;
    int attempts;
    char *last_error;
    char *next_attempt_at, *created_at, *updated_at, *copied_at, *verified_at, *activated_at,
        *mismatch_at, *failed_at, *deleted_at;
    char *content_type, *filename; /* NULL: unknown */
};
void pgstore_doc_clear(struct pgstore_doc *d);

/* Fetches one document into *out (cleared first). CUT_ENOTFOUND when absent. */
int pgstore_doc_get(pgstore *st, const char *storage_key, struct pgstore_doc *out,
                    cut_err *err) CUT_MUST_USE;

/* The spool files that documents still need (recorded with a spool path, not yet copied:
 * pending or mismatch), among those whose path starts with prefix. Returns 0 with *paths a
 * new array of new strings (*n of them; free each, then the array), or -1 with err set. */
int pgstore_spool_in_use(pgstore *st, const char *prefix, char ***paths, size_t *n,
                         cut_err *err) CUT_MUST_USE;

/* Documents per state: counts[state] for every state. */
int pgstore_count_states(pgstore *st, int64_t counts[DOC_NSTATES], cut_err *err) CUT_MUST_USE;

/* ---- the work queue ------------------------------------------------------------------------ */

#define PGSTORE_CLAIM_MAX 1000

/* Leases renewed by one pgstore_renew_many() call at most. */
#define PGSTORE_RENEW_MAX 1000

/* What a claim returns: the documents (owned, pgstore_claim_clear()) and the lease token
 * that fences their completion. */
struct pgstore_claim {
    char token[33];
    struct pgstore_doc *docs;
    size_t n;
};
void pgstore_claim_clear(struct pgstore_claim *c);

/* Claims up to max (1..PGSTORE_CLAIM_MAX) documents that need work, next attempt due and no
 * live lease: pending or mismatch (a copy to make), or deleted while their S3 object is not
 * recorded as removed (a removal to make: the transition to `deleted` makes it due, and
 * pgstore_removed() takes it off the queue). FOR UPDATE SKIP LOCKED, so that concurrent
 * claimers never get the same document; leased to owner (a name for humans) for lease_ms
 * under a new token. out->n may be 0. With origin ("upload", "backfill"; NULL: any), copies
 * only of documents of that origin, or that a read moved to the head of the queue; removals
 * of any. So a sidecar's dual-write mirror leaves the backfill's copies to the backfill, whose
 * throttles and pause then hold, and still copies a backfill document a user is reading. */
int pgstore_claim(pgstore *st, const char *owner, size_t max, int lease_ms, const char *origin,
                  struct pgstore_claim *out, cut_err *err) CUT_MUST_USE;

/* Extends the lease on one document while it is still the token's. */
int pgstore_renew(pgstore *st, const char *storage_key, const char *token, int lease_ms,
                  cut_err *err) CUT_MUST_USE;

/* pgstore_renew() for n (<= PGSTORE_RENEW_MAX) leases at once, in one statement: the lease on
 * keys[i] is extended while it is still tokens[i]'s and unexpired; kept[i] receives whether it
 * was (false: lost, its work can no longer be recorded). Arrays borrowed. */
int pgstore_renew_many(pgstore *st, const char *const *keys, const char *const *tokens, size_t n,
                       int lease_ms, bool *kept, cut_err *err) CUT_MUST_USE;

/* What the work found, recorded on completion. NULL / -1: unchanged. */
struct pgstore_outcome {
    int64_t size;
    const char *md5, *sha256, *s3_etag, *s3_sha256, *legacy_sha256;
    const char *detail; /* kept in the transitions row */
    /* With `to` copied: the copy is verified as well, in the same transaction (no crash can
     * leave it `copied` with nothing to pick it up again); the detail of that second step. */
    const char *verified;
};

/* Completes a claimed document: moves it to `to` (a legal transition from its state), records
 * out (may be NULL), releases the lease and resets attempts, in one transaction, only while
 * the lease is still the token's and unexpired. Otherwise CUT_ECONFLICT ("lease lost") and
 * nothing is written: a worker whose lease expired and was taken over cannot overwrite the
 * new owner's result. */
int pgstore_complete(pgstore *st, const char *storage_key, const char *token, enum doc_state to,
                     const struct pgstore_outcome *out, cut_err *err) CUT_MUST_USE;

/* One claimed document's completion, for pgstore_complete_many(). Borrowed. */
struct pgstore_completion {
    const char *storage_key, *token;
    const struct pgstore_outcome *out; /* may be NULL */
};

#define PGSTORE_COMPLETE_MAX 64

/* pgstore_complete() for n (<= PGSTORE_COMPLETE_MAX) documents, all to `to`, in one statement
 * (one round trip, one commit): each is fenced, checked and written as pgstore_complete() does
 * it alone, and one refused changes nothing for the others. each[i] (cleared by the call)
 * receives document i's refusal: CUT_ECONFLICT (lease lost, or an illegal transition),
 * CUT_ENOTFOUND (no such document). Returns -1 with err set, and nothing written, when the
 * statement itself fails (the database away). */
int pgstore_complete_many(pgstore *st, const struct pgstore_completion *c, size_t n,
                          enum doc_state to, cut_err *each, cut_err *err) CUT_MUST_USE;

/* Fails a claimed document (fenced like pgstore_complete): attempts + 1, last_error = reason,
 * lease released, next attempt after backoff_ms * 2^(attempts-1) (at most an hour); once
 * attempts reach max_attempts the document becomes `failed` (with its transitions row).
 * *state (may be NULL) receives the state after the call. */
int pgstore_fail(pgstore *st, const char *storage_key, const char *token, const char *reason,
                 int max_attempts, int backoff_ms, enum doc_state *state,
                 cut_err *err) CUT_MUST_USE;
/* pgstore_fail() with a chosen ceiling: the next attempt comes after
 * min(backoff_ms * 2^(attempts-1), max_backoff_ms) (max_backoff_ms <= 0: an hour). */
int pgstore_fail_backoff(pgstore *st, const char *storage_key, const char *token,
                         const char *reason, int max_attempts, int backoff_ms, int max_backoff_ms,
                         enum doc_state *state, cut_err *err) CUT_MUST_USE;

/* Records that the S3 object of a claimed `deleted` document was removed (fenced like
 * pgstore_complete): the document leaves the queue (next_attempt_at becomes 'infinity'), the
 * lease is released, and a history row (deleted -> deleted, detail or "the S3 object was
 * removed") says so. CUT_ECONFLICT when the lease is lost or the document is no longer
 * deleted (the app recorded it again). */
int pgstore_removed(pgstore *st, const char *storage_key, const char *token, const char *detail,
                    cut_err *err) CUT_MUST_USE;

/* S3 may hold other bytes than the document says (an older copy landed late, a removal ran
 * after a newer copy): puts the document back to work at once, whoever holds its lease (the
 * lease is voided, so a copy or removal in flight can no longer record its outcome). Deleted
 * (any generation): its removal is due again. Else generation must be the current one (0:
 * whichever is current; CUT_ECONFLICT when stale): pending and mismatch are due again,
 * copied, verified and active go to `mismatch`. Failed is left alone. With a history row
 * (detail). *state (may be NULL) receives the state after the call. */
int pgstore_requeue(pgstore *st, const char *storage_key, int64_t generation, const char *detail,
                    enum doc_state *state, cut_err *err) CUT_MUST_USE;

/* ---- flags and audit ----------------------------------------------------------------------- */

/* Ceilings on what the flags table may hold before a read refuses it. */
#define PGSTORE_FLAGS_MAX 256
#define PGSTORE_FLAG_VALUE_MAX 65536

/* Every flag in cutover.flags as one object name: value. Returns 0 with *out a new object
 * (json_decref()), or -1 with err set. Values are not validated here: flags/ does that. */
int pgstore_flags_get(pgstore *st, json_t **out, cut_err *err) CUT_MUST_USE;

/* Sets flag name to value (JSON text) and writes its audit row (actor, old, new, reason) in
 * one transaction: both or neither. */
int pgstore_flag_set(pgstore *st, const char *name, const char *value, const char *actor,
                     const char *reason, cut_err *err) CUT_MUST_USE;

/* Writes each member of values (name: value) that the table does not hold yet, each with an
 * audit row (action "flag_init"), in one transaction; existing values are left alone.
 * *written (may be NULL) receives how many were written. */
int pgstore_flags_init(pgstore *st, const json_t *values, const char *actor, int *written,
                       cut_err *err) CUT_MUST_USE;

/* ---- backfill: documents recorded in bulk --------------------------------------------------- */

/* Rows of one pgstore_insert_missing() call at most (5 parameters each). */
#define PGSTORE_INSERT_MAX 1000

/* Records the documents of docs[0..n) (n <= PGSTORE_INSERT_MAX) that are not known yet, in one
 * multi-row INSERT ... ON CONFLICT DO NOTHING with their history rows: a storage key already
 * present (recorded by dual-write, by an earlier run, deleted...) is left exactly as it is.
 * Only storage_key, s3_key, origin, vars and failed_reason are read; each new row is `pending`,
 * or `failed` with failed_reason. A key repeated inside docs counts once. *inserted and
 * *inserted_failed (each may be NULL) receive how many rows were new, and how many of those
 * were recorded `failed`. Returns 0 or -1 with err set (nothing written). */
int pgstore_insert_missing(pgstore *st, const struct pgstore_doc_in *docs, size_t n,
                           size_t *inserted, size_t *inserted_failed, cut_err *err) CUT_MUST_USE;

/* Documents of one origin ("upload", "backfill") per state, and the bytes of those verified or
 * active (sizes as recorded by their copy). settling: documents `copied` in the last 10 seconds,
 * which their copier is most likely about to mark verified (an older `copied` one is stuck
 * and waits for verification). */
struct pgstore_origin_counts {
    int64_t counts[DOC_NSTATES];
    int64_t total;
    int64_t done_bytes;
    int64_t settling;
};
int pgstore_count_origin(pgstore *st, const char *origin, struct pgstore_origin_counts *out,
                         cut_err *err) CUT_MUST_USE;

/* Whether any document of origin is still to be copied (pending, mismatch; not one a verify
 * holds for a repair: next attempt 'infinity') or settling (see above): a cheap look through the
 * queue's and the state's indexes, for polling. */
int pgstore_origin_busy(pgstore *st, const char *origin, bool *busy, cut_err *err) CUT_MUST_USE;

/* A document that did not end verified, and why. */
struct pgstore_problem {
    char *storage_key;
    enum doc_state state;
    char *reason; /* last_error, or NULL */
};
/* Up to max documents of origin in state failed, mismatch or copied, by storage key. *out is
 * a new array (pgstore_problems_free()) of *n entries. */
int pgstore_list_problems(pgstore *st, const char *origin, size_t max, struct pgstore_problem **out,
                          size_t *n, cut_err *err) CUT_MUST_USE;
void pgstore_problems_free(struct pgstore_problem *p, size_t n);

/* ---- admin: status, audit, flag changes, notifications (pgstore_admin.c) ----------------- */

/* Ceiling on one JSON answer of these calls, and on audit rows read at once. */
#define PGSTORE_ADMIN_JSON_MAX (4 * 1024 * 1024)
#define PGSTORE_AUDIT_MAX 1000

/* Documents per state, and the figures derived from them, defined here once:
 * queue_depth: documents waiting for work (pending, mismatch, deleted with their S3 removal
 * still to make); verified: `verified` or `active`; total: every document not `deleted`. */
struct pgstore_status {
    int64_t counts[DOC_NSTATES];
    int64_t queue_depth;
    int64_t verified;
    int64_t total;
};
int pgstore_status_counts(pgstore *st, struct pgstore_status *out, cut_err *err) CUT_MUST_USE;
/* Only verified and total of pgstore_status_counts(). */
int pgstore_consistency(pgstore *st, int64_t *verified, int64_t *total, cut_err *err) CUT_MUST_USE;

/* The latest cutover.backfill_runs row with the progress of documents of origin backfill:
 * {"id", "state", "started_at", "updated_at", "finished_at", "total", "enqueued",
 * "last_error", "documents", "done", "failed", "waiting", "rate_per_s"}; json null when there
 * is no run. Returns 0 with *out a new value (json_decref()), or -1 with err set. */
int pgstore_backfill_progress(pgstore *st, json_t **out, cut_err *err) CUT_MUST_USE;

/* The latest limit (1..PGSTORE_AUDIT_MAX) audit rows, newest first, of actor only when actor
 * is not NULL: an array of {"id", "at", "actor", "action", "flag", "old", "new", "reason"}.
 * Returns 0 with *out a new array (json_decref()), or -1 with err set. */
int pgstore_audit_list(pgstore *st, const char *actor, int limit, json_t **out,
                       cut_err *err) CUT_MUST_USE;

/* One audit row; old and new_value are JSON text or NULL. Strings borrowed for the call. */
struct pgstore_audit_row {
    const char *actor, *action, *flag, *old, *new_value, *reason;
};
int pgstore_audit_add(pgstore *st, const struct pgstore_audit_row *a, cut_err *err) CUT_MUST_USE;

/* One document's row as a JSON object (every column but the lease token: state, keys, sizes,
 * checksums, times, last error). CUT_ENOTFOUND for an unknown key. *out: new (json_decref()). */
int pgstore_document_json(pgstore *st, const char *storage_key, json_t **out,
                          cut_err *err) CUT_MUST_USE;

/* Every flag's value as the table holds it: an object name: JSON text (a string), for a
 * later pgstore_flags_write() to compare against exactly. *out: new (json_decref()). */
int pgstore_flags_text(pgstore *st, json_t **out, cut_err *err) CUT_MUST_USE;

/* One flag to write: its new value, and the value the caller read (both JSON text; old NULL:
 * the flag was absent). Strings borrowed. */
struct pgstore_flag_change {
    const char *name, *old, *value;
};
/* Writes the n changes with an audit row each (actor, action, old, new, reason) in one
 * transaction, only while every flag still holds its `old` value (compared as jsonb, the rows
 * locked): otherwise CUT_ECONFLICT and nothing is written, so that two writers that read the
 * same values cannot both write (the caller reads again and decides again). */
int pgstore_flags_write(pgstore *st, const struct pgstore_flag_change *ch, size_t n,
                        const char *actor, const char *action, const char *reason,
                        cut_err *err) CUT_MUST_USE;

/* LISTEN on channel (connecting first when needed). A store that listens is used for nothing
 * else: pgstore_wait_notify() reads its connection. */
int pgstore_listen(pgstore *st, const char *channel, cut_err *err) CUT_MUST_USE;
/* Waits up to timeout_ms for notifications (or for wake_fd, -1 for none, to be readable; it
 * is not read here). *count receives how many arrived (0 on a timeout or a wake). -1 with err
 * set when the connection is lost (it is closed: pgstore_listen() again reconnects). */
int pgstore_wait_notify(pgstore *st, int wake_fd, int timeout_ms, int *count,
                        cut_err *err) CUT_MUST_USE;
/* ---- read cutover (pgstore_rewrite.c) -------------------------------------------------------- */
/* A document's state and S3 key (copied into s3_key, NUL-terminated, at most s3_len bytes
 * with the NUL). CUT_ENOTFOUND when absent. One indexed SELECT. */
int pgstore_doc_state(pgstore *st, const char *storage_key, enum doc_state *state, char *s3_key,
                      size_t s3_len, cut_err *err) CUT_MUST_USE;
/* Migrate on read: a document still to be copied (pending, or mismatch; either may wait out a
 * backoff after failed attempts) becomes the first in the copy queue (next_attempt_at
 * '-infinity'). Others are left alone. *bumped (may be NULL): whether it was moved. */
int pgstore_read_bump(pgstore *st, const char *storage_key, bool *bumped,
                      cut_err *err) CUT_MUST_USE;
/* Records now() as replica's last read answered with the legacy URL (cutover.legacy_reads). */
int pgstore_legacy_read_mark(pgstore *st, const char *replica, cut_err *err) CUT_MUST_USE;
/* The last read answered with the legacy URL by any replica, as ISO 8601 text: *at a new
 * string (free()), or NULL when none was ever recorded. For the runbook's "retire the legacy
 * store 30 days after the last legacy read". */
int pgstore_legacy_read_last(pgstore *st, char **at, cut_err *err) CUT_MUST_USE;

/* ---- shadow reads (pgstore_shadow.c) ------------------------------------------------------- */

/* Rows kept in cutover.shadow_mismatches: older ones are removed as new ones come. */
#define PGSTORE_SHADOW_KEEP 100000
#define PGSTORE_SHADOW_LIST_MAX 1000

/* One difference a shadow read found. Strings borrowed for the call; NULL or -1: unknown
 * (a status of 0: no answer). Never a URL: the row says what was delivered, not where from. */
struct pgstore_shadow_row {
    const char *storage_key;
    const char *class_name; /* s3, legacy_transformed, both, s3_error, legacy_error */
    const char *expected_sha256;
    int64_t expected_size;
    int legacy_status;
    int64_t legacy_size;
    const char *legacy_sha256;
    double legacy_ms;
    const char *legacy_error; /* a failure's short name ("timeout", "HTTP 503"), or NULL */
    int s3_status;
    int64_t s3_size;
    const char *s3_sha256;
    double s3_ms;
    const char *s3_error;
    const char *replica;
};
/* Inserts r, and removes the rows older than the latest PGSTORE_SHADOW_KEEP. One statement. */
int pgstore_shadow_record(pgstore *st, const struct pgstore_shadow_row *r,
                          cut_err *err) CUT_MUST_USE;
/* The latest limit (1..PGSTORE_SHADOW_LIST_MAX) rows, newest first: an array of {"id", "at",
 * "storage_key", "class", "expected_sha256", "expected_size", "legacy_status", "legacy_size",
 * "legacy_sha256", "legacy_ms", "legacy_error", "s3_status", "s3_size", "s3_sha256", "s3_ms",
 * "s3_error", "replica"}. *out: a new array (json_decref()). */
int pgstore_shadow_list(pgstore *st, int limit, json_t **out, cut_err *err) CUT_MUST_USE;
/* Rows per class: *out a new object {class: n} (json_decref()). */
int pgstore_shadow_counts(pgstore *st, json_t **out, cut_err *err) CUT_MUST_USE;

/* ---- metrics: the figures /metrics exports (pgstore_metrics.c) ----------------------------- */

/* Documents per state into counts[state], and the queue's depth, as pgstore_status_counts()
 * defines them, in a transaction under statement_timeout = timeout_ms. Returns 0 or -1 with
 * err set. */
int pgstore_metrics_counts(pgstore *st, int64_t counts[DOC_NSTATES], int64_t *queue_depth,
                           int timeout_ms, cut_err *err) CUT_MUST_USE;

/* ---- verification (pgstore_verify.c) ----------------------------------------------------------
 */

/* Documents of one verification page at most. */
#define PGSTORE_VERIFY_PAGE_MAX 1000

/* Up to max (1..PGSTORE_VERIFY_PAGE_MAX) documents in state copied, verified or active whose
 * storage key sorts after `after` (NULL: from the first), in key order (keyset paging: each
 * page costs the same however far the run is). since (ISO 8601, may be NULL): only those
 * verified at or after it. *docs is a new array of *n documents (pgstore_verify_page_free();
 * NULL when *n is 0). Returns 0 or -1 with err set. */
int pgstore_verify_page(pgstore *st, const char *after, const char *since, size_t max,
                        struct pgstore_doc **docs, size_t *n, cut_err *err) CUT_MUST_USE;
void pgstore_verify_page_free(struct pgstore_doc *docs, size_t n); /* NULL is fine */

/* A document a check found consistent with S3, as the check saw it. Strings borrowed. */
struct pgstore_checked {
    const char *storage_key;
    int64_t generation;
    const char *updated_at;    /* the row's updated_at as read (pgstore_doc.updated_at) */
    enum doc_state state;      /* as read */
    const char *s3_etag;       /* as S3 answered now, NULL: unchanged */
    const char *s3_version_id; /* NULL: none */
    const char *legacy_sha256; /* deep: the raw original's, NULL: unchanged */
};

/* Records checks that found S3 consistent: checked_at = now() (and the ETag, version id and
 * legacy SHA-256 given) for each document still as it was read (same generation, row not
 * changed since: updated_at, state); one read in state copied moves to verified (its transitions
 * row says by a verify, detail). Rows changed meanwhile are left alone (a re-upload, a repair,
 * another verify: what this check saw is stale). n <= PGSTORE_VERIFY_PAGE_MAX. *recorded and
 * *promoted (each may be NULL) receive how many were recorded and how many of those moved
 * copied -> verified. Returns 0 or -1 with err set (nothing written). */
int pgstore_verify_checked(pgstore *st, const struct pgstore_checked *c, size_t n,
                           const char *detail, size_t *recorded, size_t *promoted,
                           cut_err *err) CUT_MUST_USE;

/* Records a mismatch: the document (still as it was read: generation and updated_at, and in
 * state copied, verified or active) moves to `mismatch` with its transitions row (detail),
 * last_error = detail, mismatch = mismatch_json (a JSON object: which side differs, the
 * recorded and the found sizes and checksums), and is held off the queue (next attempt
 * 'infinity') until a repair releases it: no mirror copies it again before an operator asks.
 * CUT_ECONFLICT (nothing written) when the row changed since it was read. */
int pgstore_verify_mismatch(pgstore *st, const char *storage_key, int64_t generation,
                            const char *updated_at, const char *mismatch_json, const char *detail,
                            cut_err *err) CUT_MUST_USE;

/* For a repair: every `mismatch` document is due again at once, its spool path dropped (the
 * copy reads legacy.raw_url), and where the mismatch found the raw original itself changed
 * (side legacy or both) its recorded size and checksums are cleared so that the copy takes the
 * raw original as it is now; every `failed` document that was attempted (attempts > 0: not
 * one recorded failed because it cannot be mirrored at all) goes back to `pending` (a legal
 * transition, with its row). With history rows. *mismatches and *failed (may be NULL) receive
 * the counts. Returns 0 or -1 with err set (nothing written). */
int pgstore_verify_release(pgstore *st, int64_t *mismatches, int64_t *failed,
                           cut_err *err) CUT_MUST_USE;

/* The database's clock now, as ISO 8601 text into out (a `since` for pgstore_verify_page()
 * that no skew between this host and the database can shift). */
int pgstore_verify_now(pgstore *st, char out[64], cut_err *err) CUT_MUST_USE;

/* Whether any document is queued for a copy that can still come (pending or mismatch, next
 * attempt not 'infinity'). */
int pgstore_verify_busy(pgstore *st, bool *busy, cut_err *err) CUT_MUST_USE;

/* One document in state mismatch, for the report. Owned strings: pgstore_verify_mm_free(). */
struct pgstore_mismatch_row {
    char *storage_key, *s3_key;
    char *mismatch;   /* the JSON object recorded, or NULL */
    char *last_error; /* or NULL */
};
/* Up to max documents in state mismatch, by storage key. *out is a new array of *n. */
int pgstore_verify_mismatches(pgstore *st, size_t max, struct pgstore_mismatch_row **out, size_t *n,
                              cut_err *err) CUT_MUST_USE;
void pgstore_verify_mm_free(struct pgstore_mismatch_row *rows, size_t n);

/* One line of a verification manifest. Owned strings: pgstore_manifest_rows_free(). */
struct pgstore_manifest_row {
    char *storage_key, *s3_key;
    int64_t size; /* -1 unknown */
    char *sha256; /* hex, or NULL */
    enum doc_state state;
    char *verified_at; /* ISO 8601 (UTC), or NULL */
    char *s3_etag, *s3_version_id;
};
/* Up to max (1..PGSTORE_VERIFY_PAGE_MAX) documents not deleted, after `after` (NULL: from the
 * first) in key order. *out is a new array of *n rows. */
int pgstore_manifest_page(pgstore *st, const char *after, size_t max,
                          struct pgstore_manifest_row **out, size_t *n, cut_err *err) CUT_MUST_USE;
void pgstore_manifest_rows_free(struct pgstore_manifest_row *rows, size_t n);

/* ---- schema -------------------------------------------------------------------------------- */

/* The numbered migrations (migrations.c). */
struct pg_migration {
    int version;
    const char *name;
    const char *sql;
};
extern const struct pg_migration pg_migrations[];
extern const size_t pg_nmigrations;

#endif
