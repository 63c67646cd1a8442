/*
 * PostgreSQL connection and schema migrations. Migrations run in one transaction that
 * first takes a transaction-scoped advisory lock: two replicas starting together serialise
 * there, and the second finds the work done. The version table lives in the schema itself,
 * so dropping the schema resets everything.
 */
#include "storage/pgstore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An arbitrary constant that names "cutover schema migration" among advisory locks. */
#define MIGRATION_LOCK_KEY "7235410591"

struct pgstore {
    PGconn *conn;
};

void pgstore_redact_url(const char *url, char *out, size_t n)
{
    const char *scheme = strstr(url, "://"), *at, *colon;

    if (scheme == NULL || (at = strchr(scheme + 3, '@')) == NULL) {
        snprintf(out, n, "%s", url);
        return;
    }
    colon = memchr(scheme + 3, ':', (size_t)(at - scheme - 3));
    if (colon == NULL) {
        snprintf(out, n, "%s", url);
        return;
    }
    snprintf(out, n, "%.*s:***%s", (int)(colon - url), url, at);
}

/* The first line of libpq's message, without a trailing newline. */
static void pq_message(PGconn *c, char *out, size_t n)
{
    const char *m = c ? PQerrorMessage(c) : "out of memory";
    size_t len = strcspn(m, "\n");
    snprintf(out, n, "%.*s", (int)len, m);
}

pgstore *pgstore_connect(const char *url, cut_err *err)
{
    pgstore *st = NULL;
    PGconn *c;
    char red[512], msg[400];

    if (url == NULL || *url == '\0') {
        err_set(err, CUT_EINVAL, "database_url",
                "no database URL: set database_url in the configuration or DATABASE_URL");
        return NULL;
    }
    c = PQconnectdb(url);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        pgstore_redact_url(url, red, sizeof(red));
        pq_message(c, msg, sizeof(msg));
        err_set(err, CUT_EDB, "database_url", "cannot connect to %s: %s", red, msg);
        PQfinish(c);
        return NULL;
    }
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    st = xcalloc(1, sizeof(*st));
    st->conn = c;
    return st;
}

void pgstore_free(pgstore *st)
{
    if (st == NULL)
        return;
    PQfinish(st->conn);
    free(st);
}

PGconn *pgstore_conn(pgstore *st)
{
    return st->conn;
}

int pgstore_latest_version(void)
{
    return pg_migrations[pg_nmigrations - 1].version;
}

/* Runs one statement (or several, without parameters); 0 or -1 with err set. */
static int exec_ok(PGconn *c, const char *sql, const char *where, cut_err *err)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType s = PQresultStatus(r);
    int rc = 0;

    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        char msg[400];
        pq_message(c, msg, sizeof(msg));
        err_set(err, CUT_EDB, where, "%s", msg);
        rc = -1;
    }
    PQclear(r);
    return rc;
}

int pgstore_schema_version(pgstore *st, cut_err *err)
{
    PGresult *r = PQexec(st->conn, "SELECT to_regclass('cutover.schema_version') IS NOT NULL");
    int v = -1;

    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        goto fail;
    if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
        v = 0; /* never migrated */
        goto out;
    }
    PQclear(r);
    r = PQexec(st->conn, "SELECT coalesce(max(version), 0) FROM cutover.schema_version");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        goto fail;
    v = atoi(PQgetvalue(r, 0, 0));
    goto out;
fail : {
    char msg[400];
    pq_message(st->conn, msg, sizeof(msg));
    err_set(err, CUT_EDB, "schema", "reading the schema version: %s", msg);
}
out:
    PQclear(r);
    return v;
}

int pgstore_migrate(pgstore *st, int *from, int *to, cut_err *err)
{
    PGconn *c = st->conn;
    int cur, rc = -1;
    bool in_tx = false;

    if (exec_ok(c, "BEGIN", "migrate", err) != 0)
        goto out;
    in_tx = true;
    if (exec_ok(c, "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK_KEY ")", "migrate", err) != 0)
        goto out;
    if (exec_ok(c,
                "CREATE SCHEMA IF NOT EXISTS cutover;"
                "CREATE TABLE IF NOT EXISTS cutover.schema_version ("
                "  version integer PRIMARY KEY, name text NOT NULL,"
                "  applied_at timestamptz NOT NULL DEFAULT now())",
                "migrate", err) != 0)
        goto out;
    cur = pgstore_schema_version(st, err);
    if (cur < 0)
        goto out;
    if (from)
        *from = cur;
    if (cur > pgstore_latest_version()) {
        err_set(err, CUT_EDB, "migrate",
                "the database's schema is version %d, newer than this build knows (%d): "
                "upgrade cutover",
                cur, pgstore_latest_version());
        goto out;
    }
    for (size_t i = 0; i < pg_nmigrations; i++) {
        const struct pg_migration *m = &pg_migrations[i];
        char where[48];
        const char *params[2];
        char vtext[16];
        PGresult *r;

        if (m->version <= cur)
            continue;
        snprintf(where, sizeof(where), "migration %d", m->version);
        if (exec_ok(c, m->sql, where, err) != 0)
            goto out;
        snprintf(vtext, sizeof(vtext), "%d", m->version);
        params[0] = vtext;
        params[1] = m->name;
        r = PQexecParams(c, "INSERT INTO cutover.schema_version (version, name) VALUES ($1, $2)", 2,
                         NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            char msg[400];
            pq_message(c, msg, sizeof(msg));
            err_set(err, CUT_EDB, where, "recording the version: %s", msg);
            PQclear(r);
            goto out;
        }
        PQclear(r);
        cur = m->version;
    }
    if (exec_ok(c, "COMMIT", "migrate", err) != 0)
        goto out;
    in_tx = false;
    if (to)
        *to = cur;
    rc = 0;
out:
    if (in_tx)
        PQclear(PQexec(c, "ROLLBACK"));
    return rc;
}
