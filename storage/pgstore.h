/*
 * pgstore: cutover's state in PostgreSQL (schema `cutover`): connection, schema migrations,
 * and (in later modules) the documents, the work queue, flags and audit.
 */
#ifndef CUTOVER_PGSTORE_H
#define CUTOVER_PGSTORE_H

#include "core/core.h"

#include <libpq-fe.h>

typedef struct pgstore pgstore;

/* Connects to url. Returns a new store (pgstore_free()) or NULL with err set; the message
 * never contains the URL's password. */
pgstore *pgstore_connect(const char *url, cut_err *err) CUT_MUST_USE;
void pgstore_free(pgstore *st);
/* The connection, borrowed: valid until pgstore_free(). One thread at a time. */
PGconn *pgstore_conn(pgstore *st);

/* Brings schema `cutover` to the latest version, each migration in the same transaction as
 * its version row, under an advisory lock so that replicas starting at once apply each
 * migration exactly once. *from and *to (may be NULL) receive the versions before and after.
 * Returns 0 or -1 with err set. */
int pgstore_migrate(pgstore *st, int *from, int *to, cut_err *err) CUT_MUST_USE;
/* The latest version this build knows. */
int pgstore_latest_version(void);
/* The schema's current version (0 when absent), or -1 with err set. */
int pgstore_schema_version(pgstore *st, cut_err *err) CUT_MUST_USE;

/* Writes url into out with any password replaced by "***" (for messages). */
void pgstore_redact_url(const char *url, char *out, size_t n);

/* The numbered migrations (migrations.c). */
struct pg_migration {
    int version;
    const char *name;
    const char *sql;
};
extern const struct pg_migration pg_migrations[];
extern const size_t pg_nmigrations;

#endif
