/*
 * pgstore_int: what the state store's own files share, and nothing outside storage/pgstore*.c
 * includes. The store is split by subject (pgstore.c: connection, schema, documents, queue,
 * flags; pgstore_<subject>.c for later subjects), each file adding its typed calls to
 * pgstore.h on top of these helpers. The rules of pgstore.c hold in every file: parameterised
 * statements only, several statements in one transaction that locks the document's row
 * first, nothing retried here.
 */
#ifndef CUTOVER_PGSTORE_INT_H
#define CUTOVER_PGSTORE_INT_H

#include "storage/pgstore.h"

#include <libpq-fe.h>

struct pgstore {
    PGconn *conn;
    char *url;
    bool refused; /* the last failed statement was refused by a live server (pgs_run) */
};

/* The columns of a document row, times as ISO 8601 text (to_json's form), in the order
 * pgs_doc_from_row() reads them. */
#define DOC_COLS                                                                                   \
    "storage_key, s3_key, origin, vars::text, spool_path, state, generation, size, md5, "          \
    "sha256, s3_etag, s3_sha256, legacy_sha256, attempts, last_error, "                            \
    "to_json(next_attempt_at)#>>'{}', "                                                            \
    "to_json(created_at)#>>'{}', "                                                                 \
    "to_json(updated_at)#>>'{}', "                                                                 \
    "to_json(copied_at)#>>'{}', "                                                                  \
    "to_json(verified_at)#>>'{}', "                                                                \
    "to_json(activated_at)#>>'{}', "                                                               \
    "to_json(mismatch_at)#>>'{}', "                                                                \
    "to_json(failed_at)#>>'{}', "                                                                  \
    "to_json(deleted_at)#>>'{}', content_type, filename"

/* Connects when not connected (or the connection went bad). False with err set. */
bool pgs_ensure(pgstore *st, cut_err *err);
/* After a failure: a bad connection is dropped so that the next call reconnects. */
void pgs_after_failure(pgstore *st);
/* Runs one parameterised statement; returns its result (PQclear()) when its status is
 * COMMAND_OK or TUPLES_OK, or NULL with err set (CUT_EDB, where: the message, with no secret). */
PGresult *pgs_run(pgstore *st, const char *where, const char *sql, int n, const char *const *params,
                  cut_err *err);
/* pgs_run() for a statement whose rows do not matter. */
bool pgs_run_ok(pgstore *st, const char *where, const char *sql, int n, const char *const *params,
                cut_err *err);
bool pgs_begin(pgstore *st, const char *where, cut_err *err);
bool pgs_commit(pgstore *st, const char *where, cut_err *err);
/* Rolls back an open transaction, if any (after any failure inside one). */
void pgs_rollback(pgstore *st);
/* The value at (row, col) as a new string (free()), or NULL for SQL NULL. */
char *pgs_dup(const PGresult *r, int row, int col);
/* Parses column 0 of row 0 of r (JSON text, at most PGSTORE_ADMIN_JSON_MAX bytes) into *out (a
 * new value); r is cleared. No row or SQL NULL: json null when null_ok, else CUT_EDB. */
int pgs_json_cell(PGresult *r, bool null_ok, const char *where, json_t **out, cut_err *err);
/* Fills d (owned strings: pgstore_doc_clear()) from a row selected with DOC_COLS. */
void pgs_doc_from_row(const PGresult *r, int row, struct pgstore_doc *d);

/* Inside a transaction: moves the document's row from → to (its times, attempts, queue) and
 * writes its transitions row (gen: the generation as text, detail may be NULL). */
bool pgs_write_transition(pgstore *st, const char *key, enum doc_state from, enum doc_state to,
                          const char *gen, const char *detail, cut_err *err);
/* Sets err to CUT_ECONFLICT "illegal transition from -> to". */
void pgs_refuse_illegal(cut_err *err, enum doc_state from, enum doc_state to);
/* Inside a transaction: the document's row locked; column 0 its state, 1 its generation.
 * NULL with err set (CUT_ENOTFOUND for an unknown key). */
PGresult *pgs_lock_doc(pgstore *st, const char *where, const char *key, cut_err *err);
/* False with err set (CUT_ECONFLICT) when want (0: any) is not the current generation. */
bool pgs_generation_current(const char *where, int64_t want, int64_t have, cut_err *err);
/* Inside a transaction: the document's row locked when its lease is still token's; columns
 * 0 state, 1 generation, 2 attempts. NULL with err set (CUT_ENOTFOUND, or CUT_ECONFLICT for a
 * lost lease). */
PGresult *pgs_lock_fenced(pgstore *st, const char *where, const char *key, const char *token,
                          cut_err *err);

#endif
