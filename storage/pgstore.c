/*
 * The state store: one libpq connection behind typed calls. Every statement is parameterised
 * (PQexecParams; values never enter the SQL text). A call that needs more than one statement
 * runs them in one transaction that locks the document's row first (SELECT ... FOR UPDATE),
 * decides in C (the legal transitions, the lease fence), then writes: the state change and
 * its history row, or a flag and its audit row, land together or not at all.
 *
 * The connection is opened on first use. When a statement fails and libpq reports the
 * connection bad (server restarted, backend terminated, network gone), the connection is
 * dropped and the call returns CUT_EDB; the next call opens a new one. Nothing is retried
 * here, because only the caller knows whether its work may run twice.
 *
 * Migrations run in one transaction that first takes a transaction-scoped advisory lock: two
 * replicas starting together serialise there, and the second finds the work done. The version
 * table lives in the schema itself, so dropping the schema resets everything.
 */
#include "storage/pgstore_int.h"

#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the state machine: the one table of legal transitions ---------------------------------- */

static const char *const state_names[DOC_NSTATES] = {
    "pending", "copied", "verified", "active", "mismatch", "failed", "deleted",
};

#define S(x) (1u << (x))
/* legal[from] is the set of states `from` may move to. A document re-recorded by the app
 * (pgstore_upsert) starts again at pending as a new generation; that is not a transition of
 * the old generation and is not in this table. */
static const unsigned legal[DOC_NSTATES] = {
    /* pending: copied to S3, gave up, or the app deleted it */
    [DOC_PENDING] = S(DOC_COPIED) | S(DOC_FAILED) | S(DOC_DELETED),
    /* copied: checksums compared (equal or not), gave up, deleted */
    [DOC_COPIED] = S(DOC_VERIFIED) | S(DOC_MISMATCH) | S(DOC_FAILED) | S(DOC_DELETED),
    /* verified: reads may move to S3; a deeper verify may still find a difference */
    [DOC_VERIFIED] = S(DOC_ACTIVE) | S(DOC_MISMATCH) | S(DOC_DELETED),
    /* active: served from S3; a verify may still find a difference */
    [DOC_ACTIVE] = S(DOC_MISMATCH) | S(DOC_DELETED),
    /* mismatch: repaired (copied again from the raw original), gave up, deleted */
    [DOC_MISMATCH] = S(DOC_COPIED) | S(DOC_FAILED) | S(DOC_DELETED),
    /* failed: retried on demand, or deleted */
    [DOC_FAILED] = S(DOC_PENDING) | S(DOC_DELETED),
    /* deleted: final for this generation */
    [DOC_DELETED] = 0,
};
#undef S

const char *doc_state_name(enum doc_state s)
{
    return (unsigned)s < DOC_NSTATES ? state_names[s] : NULL;
}

int doc_state_parse(const char *s)
{
    for (int i = 0; s && i < DOC_NSTATES; i++)
        if (strcmp(state_names[i], s) == 0)
            return i;
    return -1;
}

bool doc_transition_legal(enum doc_state from, enum doc_state to)
{
    if ((unsigned)from >= DOC_NSTATES || (unsigned)to >= DOC_NSTATES)
        return false;
    return (legal[from] >> to) & 1u;
}

/* ---- redaction ---------------------------------------------------------------------------- */

static bool is_secret_option(const char *kw)
{
    return strcmp(kw, "password") == 0 || strcmp(kw, "sslpassword") == 0;
}

/* Appends s to out[*len..n) quoted as libpq reads it when it needs quoting. */
static void put_value(char *out, size_t n, size_t *len, const char *v)
{
    bool quote = *v == '\0' || strpbrk(v, " \t\n'\\") != NULL;

    if (quote && *len + 1 < n)
        out[(*len)++] = '\'';
    for (; *v && *len + 2 < n; v++) {
        if (quote && (*v == '\'' || *v == '\\'))
            out[(*len)++] = '\\';
        out[(*len)++] = *v;
    }
    if (quote && *len + 1 < n)
        out[(*len)++] = '\'';
    out[*len < n ? *len : n - 1] = '\0';
}

/* Rebuilt from what libpq parses, in keyword form, so that no form of writing a password
 * (URL user:pass@, ?password=, &password=, password=x, password='a b') can slip through a
 * textual search for it. */
void pgstore_redact_url(const char *url, char *out, size_t n)
{
    PQconninfoOption *opts, *o;
    size_t len = 0;

    if (n == 0)
        return;
    out[0] = '\0';
    opts = url ? PQconninfoParse(url, NULL) : NULL;
    if (opts == NULL) {
        snprintf(out, n, "(a connection string libpq cannot parse)");
        return;
    }
    for (o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        if (len > 0 && len + 1 < n)
            out[len++] = ' ';
        len += (size_t)snprintf(out + len, n - len, "%s=", o->keyword);
        if (len >= n) {
            len = n - 1;
            break;
        }
        put_value(out, n, &len, is_secret_option(o->keyword) ? "***" : o->val);
    }
    out[len < n ? len : n - 1] = '\0';
    PQconninfoFree(opts);
}

/* Replaces every occurrence of secret in s (NUL-terminated, in place) by ***. */
static void scrub(char *s, const char *secret)
{
    size_t k = secret ? strlen(secret) : 0;
    char *p = s;

    if (k == 0)
        return;
    while ((p = strstr(p, secret)) != NULL) {
        size_t rest = strlen(p + k), put = k < 3 ? k : 3;
        memcpy(p, "***", put);
        memmove(p + put, p + k, rest + 1);
        p += put; /* past the replacement: a secret like "*" cannot match it again */
    }
}

/* Text between double quotes replaced by "...": libpq's parse errors quote pieces of the
 * connection string, which may be pieces of the password. */
static void elide_quoted(char *s, size_t n)
{
    char *copy = xstrdup(s);
    size_t len = 0;
    bool in = false;

    for (const char *r = copy; *r && len + 5 < n; r++) {
        if (*r == '"') {
            if (!in) {
                memcpy(s + len, "\"...", 4);
                len += 4;
            } else {
                s[len++] = '"';
            }
            in = !in;
        } else if (!in) {
            s[len++] = *r;
        }
    }
    s[len] = '\0';
    free(copy);
}

/* ---- connection ----------------------------------------------------------------------------- */

/* The first line of libpq's message, without a trailing newline. */
static void pq_message(PGconn *c, char *out, size_t n)
{
    const char *m = c ? PQerrorMessage(c) : "out of memory";
    size_t len = strcspn(m, "\n");
    snprintf(out, n, "%.*s", (int)len, m);
}

static PGconn *do_connect(const char *url, cut_err *err)
{
    static const char *const kw[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *vals[] = {"10", "cutover", url, NULL};
    PQconninfoOption *opts, *o;
    char *perr = NULL, *password = NULL;
    char red[512], msg[400];
    PGconn *c = NULL;

    if (url == NULL || *url == '\0') {
        err_set(err, CUT_EINVAL, "database_url",
                "no database URL: set database_url in the configuration or DATABASE_URL");
        return NULL;
    }
    opts = PQconninfoParse(url, &perr);
    if (opts == NULL) {
        snprintf(msg, sizeof(msg), "%s", perr ? perr : "out of memory");
        msg[strcspn(msg, "\n")] = '\0';
        elide_quoted(msg, sizeof(msg));
        err_set(err, CUT_EINVAL, "database_url", "cannot parse the database URL: %s", msg);
        PQfreemem(perr);
        return NULL;
    }
    for (o = opts; o->keyword != NULL; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val != NULL)
            password = xstrdup(o->val);
    PQconninfoFree(opts);

    c = PQconnectdbParams(kw, vals, 1);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        pgstore_redact_url(url, red, sizeof(red));
        pq_message(c, msg, sizeof(msg));
        scrub(red, password);
        scrub(msg, password);
        err_set(err, CUT_EDB, "database_url", "cannot connect to %s: %s", red, msg);
        PQfinish(c);
        c = NULL;
        goto out;
    }
    PQclear(PQexec(c, "SET client_min_messages = warning"));
out:
    free(password);
    return c;
}

pgstore *pgstore_open(const char *url)
{
    pgstore *st = xcalloc(1, sizeof(*st));
    st->url = xstrdup(url ? url : "");
    return st;
}

pgstore *pgstore_connect(const char *url, cut_err *err)
{
    PGconn *c = do_connect(url, err);
    pgstore *st;

    if (c == NULL)
        return NULL;
    st = pgstore_open(url);
    st->conn = c;
    return st;
}

void pgstore_free(pgstore *st)
{
    if (st == NULL)
        return;
    PQfinish(st->conn);
    free(st->url);
    free(st);
}

int pgstore_backend_pid(pgstore *st)
{
    return st->conn ? PQbackendPID(st->conn) : 0;
}

bool pgs_ensure(pgstore *st, cut_err *err)
{
    if (st->conn != NULL && PQstatus(st->conn) == CONNECTION_OK)
        return true;
    PQfinish(st->conn);
    st->conn = do_connect(st->url, err);
    return st->conn != NULL;
}

/* After a failure: a bad connection is dropped so that the next call reconnects. */
void pgs_after_failure(pgstore *st)
{
    if (st->conn != NULL && PQstatus(st->conn) == CONNECTION_BAD) {
        PQfinish(st->conn);
        st->conn = NULL;
    }
}

/* A statement's error that a later try cannot change: the server answered, on a live
 * connection, that the data itself is wrong (class 22: a value it cannot take; 23: a
 * constraint; 54: a limit such as an index row too large). Everything else (the connection
 * lost or refused, a server shutting down or starting: 08, 57; resources: 53, 58; a rollback
 * such as a deadlock: 40; an error libpq made up itself, with no SQLSTATE) may pass. */
static bool refusal_sqlstate(const char *sqlstate)
{
    return sqlstate && strlen(sqlstate) == 5 &&
           (strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0 ||
            strncmp(sqlstate, "54", 2) == 0);
}

/* Runs one parameterised statement; returns its result (PQclear()) when its status is
 * COMMAND_OK or TUPLES_OK, or NULL with err set. */
PGresult *pgs_run(pgstore *st, const char *where, const char *sql, int n, const char *const *params,
                  cut_err *err)
{
    PGresult *r;
    ExecStatusType s;
    char msg[400];

    st->refused = false;
    if (!pgs_ensure(st, err))
        return NULL;
    r = PQexecParams(st->conn, sql, n, NULL, params, NULL, NULL, 0);
    s = PQresultStatus(r);
    if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK)
        return r;
    pq_message(st->conn, msg, sizeof(msg));
    err_set(err, CUT_EDB, where, "%s", msg);
    st->refused = PQstatus(st->conn) == CONNECTION_OK &&
                  refusal_sqlstate(r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL);
    PQclear(r);
    pgs_after_failure(st);
    return NULL;
}

bool pgstore_last_refused(const pgstore *st)
{
    return st->refused;
}

bool pgs_run_ok(pgstore *st, const char *where, const char *sql, int n, const char *const *params,
                cut_err *err)
{
    PGresult *r = pgs_run(st, where, sql, n, params, err);
    PQclear(r);
    return r != NULL;
}

bool pgs_begin(pgstore *st, const char *where, cut_err *err)
{
    return pgs_run_ok(st, where, "BEGIN", 0, NULL, err);
}

bool pgs_commit(pgstore *st, const char *where, cut_err *err)
{
    return pgs_run_ok(st, where, "COMMIT", 0, NULL, err);
}

void pgs_rollback(pgstore *st)
{
    if (st->conn != NULL && PQtransactionStatus(st->conn) != PQTRANS_IDLE) {
        PQclear(PQexec(st->conn, "ROLLBACK"));
        pgs_after_failure(st);
    }
}

char *pgs_dup(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : xstrdup(PQgetvalue(r, row, col));
}

int pgs_json_cell(PGresult *r, bool null_ok, const char *where, json_t **out, cut_err *err)
{
    json_error_t je;
    int rc = -1;

    *out = NULL;
    if (PQntuples(r) != 1 || PQgetisnull(r, 0, 0)) {
        if (null_ok) {
            *out = json_null();
            rc = 0;
        } else {
            err_set(err, CUT_EDB, where, "no answer from the database");
        }
        goto out;
    }
    if (PQgetlength(r, 0, 0) > PGSTORE_ADMIN_JSON_MAX) {
        err_set(err, CUT_ELIMIT, where, "the answer is longer than %d bytes",
                PGSTORE_ADMIN_JSON_MAX);
        goto out;
    }
    *out = json_loads(PQgetvalue(r, 0, 0), JSON_DECODE_ANY, &je);
    if (*out == NULL) {
        err_set(err, CUT_EDB, where, "unreadable JSON from the database: %s", je.text);
        goto out;
    }
    rc = 0;
out:
    PQclear(r);
    return rc;
}

/* ---- a small pool of idle connections ------------------------------------------------------- */

#define POOL_MAX_IDLE 16

struct pgstore_pool {
    char *url;
    size_t max_idle;
    pthread_mutex_t mu;
    pgstore *idle[POOL_MAX_IDLE];
    size_t nidle;
};

pgstore_pool *pgstore_pool_new(const char *url, size_t max_idle)
{
    pgstore_pool *p = xcalloc(1, sizeof(*p));
    p->url = xstrdup(url);
    p->max_idle = max_idle < POOL_MAX_IDLE ? max_idle : POOL_MAX_IDLE;
    pthread_mutex_init(&p->mu, NULL);
    return p;
}

pgstore *pgstore_pool_take(pgstore_pool *p)
{
    pgstore *st = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->nidle > 0)
        st = p->idle[--p->nidle];
    pthread_mutex_unlock(&p->mu);
    return st ? st : pgstore_open(p->url);
}

void pgstore_pool_give(pgstore_pool *p, pgstore *st)
{
    pthread_mutex_lock(&p->mu);
    if (st && p->nidle < p->max_idle) {
        p->idle[p->nidle++] = st;
        st = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    pgstore_free(st);
}

void pgstore_pool_free(pgstore_pool *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->nidle; i++)
        pgstore_free(p->idle[i]);
    pthread_mutex_destroy(&p->mu);
    free(p->url);
    free(p);
}

/* ---- schema --------------------------------------------------------------------------------- */

int pgstore_latest_version(void)
{
    return pg_migrations[pg_nmigrations - 1].version;
}

int pgstore_schema_version(pgstore *st, cut_err *err)
{
    PGresult *r;
    int v = -1;

    r = pgs_run(st, "schema", "SELECT to_regclass('cutover.schema_version') IS NOT NULL", 0, NULL,
                err);
    if (r == NULL || PQntuples(r) != 1)
        goto out;
    if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
        v = 0; /* never migrated */
        goto out;
    }
    PQclear(r);
    r = pgs_run(st, "schema", "SELECT coalesce(max(version), 0) FROM cutover.schema_version", 0,
                NULL, err);
    if (r == NULL || PQntuples(r) != 1)
        goto out;
    v = atoi(PQgetvalue(r, 0, 0));
out:
    PQclear(r);
    return v;
}

#define STR_(x) #x
#define STR(x) STR_(x)

int pgstore_migrate(pgstore *st, int *from, int *to, cut_err *err)
{
    int cur, rc = -1;

    if (!pgs_begin(st, "migrate", err))
        goto out;
    if (!pgs_run_ok(st, "migrate", "SELECT pg_advisory_xact_lock(" STR(PGSTORE_MIGRATION_LOCK) ")",
                    0, NULL, err))
        goto out;
    {
        /* several statements in one string: only the simple protocol takes that */
        PGresult *r = PQexec(st->conn, "CREATE SCHEMA IF NOT EXISTS cutover;"
                                       "CREATE TABLE IF NOT EXISTS cutover.schema_version ("
                                       "  version integer PRIMARY KEY, name text NOT NULL,"
                                       "  applied_at timestamptz NOT NULL DEFAULT now())");
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok) {
            char msg[400];
            pq_message(st->conn, msg, sizeof(msg));
            err_set(err, CUT_EDB, "migrate", "%s", msg);
            goto out;
        }
    }
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
        char where[48], vtext[16];
        const char *params[2];
        PGresult *r;
        bool ok;

        if (m->version <= cur)
            continue;
        snprintf(where, sizeof(where), "migration %d", m->version);
        r = PQexec(st->conn, m->sql);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok) {
            char msg[400];
            pq_message(st->conn, msg, sizeof(msg));
            err_set(err, CUT_EDB, where, "%s", msg);
            goto out;
        }
        snprintf(vtext, sizeof(vtext), "%d", m->version);
        params[0] = vtext;
        params[1] = m->name;
        if (!pgs_run_ok(st, where,
                        "INSERT INTO cutover.schema_version (version, name) VALUES ($1, $2)", 2,
                        params, err))
            goto out;
        cur = m->version;
    }
    if (!pgs_commit(st, "migrate", err))
        goto out;
    if (to)
        *to = cur;
    rc = 0;
out:
    pgs_rollback(st);
    if (rc != 0)
        pgs_after_failure(st);
    return rc;
}

/* ---- documents ------------------------------------------------------------------------------ */

/* The columns of a document row, times as ISO 8601 text (to_json's form). */
void pgs_doc_from_row(const PGresult *r, int row, struct pgstore_doc *d)
{
    int st;

    memset(d, 0, sizeof(*d));
    d->storage_key = pgs_dup(r, row, 0);
    d->s3_key = pgs_dup(r, row, 1);
    d->origin = pgs_dup(r, row, 2);
    d->vars = pgs_dup(r, row, 3);
    d->spool_path = pgs_dup(r, row, 4);
    st = doc_state_parse(PQgetvalue(r, row, 5));
    d->state = st < 0 ? DOC_PENDING : (enum doc_state)st;
    d->generation = strtoll(PQgetvalue(r, row, 6), NULL, 10);
    d->size = PQgetisnull(r, row, 7) ? -1 : strtoll(PQgetvalue(r, row, 7), NULL, 10);
    d->md5 = pgs_dup(r, row, 8);
    d->sha256 = pgs_dup(r, row, 9);
    d->s3_etag = pgs_dup(r, row, 10);
    d->s3_sha256 = pgs_dup(r, row, 11);
    d->legacy_sha256 = pgs_dup(r, row, 12);
    d->attempts = atoi(PQgetvalue(r, row, 13));
    d->last_error = pgs_dup(r, row, 14);
    d->next_attempt_at = pgs_dup(r, row, 15);
    d->created_at = pgs_dup(r, row, 16);
    d->updated_at = pgs_dup(r, row, 17);
    d->copied_at = pgs_dup(r, row, 18);
    d->verified_at = pgs_dup(r, row, 19);
    d->activated_at = pgs_dup(r, row, 20);
    d->mismatch_at = pgs_dup(r, row, 21);
    d->failed_at = pgs_dup(r, row, 22);
    d->deleted_at = pgs_dup(r, row, 23);
    d->content_type = pgs_dup(r, row, 24);
    d->filename = pgs_dup(r, row, 25);
}

void pgstore_doc_clear(struct pgstore_doc *d)
{
    if (d == NULL)
        return;
    {
        char *strs[] = {d->storage_key,  d->s3_key,        d->origin,     d->vars,
                        d->spool_path,   d->md5,           d->sha256,     d->s3_etag,
                        d->s3_sha256,    d->legacy_sha256, d->last_error, d->next_attempt_at,
                        d->created_at,   d->updated_at,    d->copied_at,  d->verified_at,
                        d->activated_at, d->mismatch_at,   d->failed_at,  d->deleted_at,
                        d->content_type, d->filename};
        for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
            free(strs[i]);
    }
    memset(d, 0, sizeof(*d));
}

int pgstore_upsert(pgstore *st, const struct pgstore_doc_in *d, int64_t *generation, cut_err *err)
{
    /* cur sees the row as it was before this statement: its state goes into the history, and
     * it tells a record not applied for being the same one (same spool path) from one not
     * applied for being older (a concurrent record of the key in between can only have made
     * ours older: its spool file is then needed by no one either). The new
     * generation is made only for a different record that is not older than the row's: both
     * sequences known and the incoming one not greater means an upload answered earlier, whose
     * record merely arrived later (or a delete answered later is already recorded). */
    static const char sql[] =
        "WITH cur AS (SELECT state, spool_path FROM cutover.documents WHERE storage_key = $1),\n"
        "up AS (INSERT INTO cutover.documents AS d (storage_key, s3_key, origin, vars, "
        "spool_path, size, md5, sha256, content_type, filename, state, last_error, failed_at, "
        "answered_seq)\n"
        "  VALUES ($1, $2, coalesce($3, 'upload'), coalesce($4::jsonb, '{}'), $5, $6::bigint, "
        "$7, $8, $9, $10, CASE WHEN $11::text IS NULL THEN 'pending' ELSE 'failed' END, $11,\n"
        "    CASE WHEN $11::text IS NULL THEN NULL ELSE now() END, $12::bigint)\n"
        "  ON CONFLICT (storage_key) DO UPDATE SET generation = d.generation + 1,\n"
        "    state = EXCLUDED.state, s3_key = EXCLUDED.s3_key, origin = EXCLUDED.origin,\n"
        "    vars = EXCLUDED.vars, spool_path = EXCLUDED.spool_path, size = EXCLUDED.size,\n"
        "    md5 = EXCLUDED.md5, sha256 = EXCLUDED.sha256, content_type = EXCLUDED.content_type,\n"
        "    filename = EXCLUDED.filename, s3_etag = NULL, s3_sha256 = NULL,\n"
        "    legacy_sha256 = NULL, attempts = 0, last_error = EXCLUDED.last_error,\n"
        "    lease_owner = NULL, lease_token = NULL, lease_expires = NULL,\n"
        "    next_attempt_at = now(), updated_at = now(), copied_at = NULL, verified_at = NULL,\n"
        "    activated_at = NULL, mismatch_at = NULL, failed_at = EXCLUDED.failed_at,\n"
        "    deleted_at = NULL, answered_seq = EXCLUDED.answered_seq\n"
        "  WHERE (EXCLUDED.spool_path IS NULL OR d.spool_path IS DISTINCT FROM "
        "EXCLUDED.spool_path)\n"
        "    AND (EXCLUDED.answered_seq IS NULL OR d.answered_seq IS NULL\n"
        "         OR EXCLUDED.answered_seq > d.answered_seq)\n"
        "  RETURNING generation, state),\n"
        "tr AS (INSERT INTO cutover.transitions (storage_key, from_state, to_state, detail, "
        "generation)\n"
        "  SELECT $1, (SELECT state FROM cur), state, coalesce($11, 'recorded'), generation "
        "FROM up\n"
        "  RETURNING generation)\n"
        "SELECT (SELECT generation FROM tr),\n"
        "  $5::text IS NOT NULL AND EXISTS (SELECT 1 FROM cur WHERE spool_path = $5)";
    char size[24], seq[24];
    const char *p[12];
    PGresult *r;

    if (d->storage_key == NULL || d->s3_key == NULL) {
        err_set(err, CUT_EINVAL, "upsert", "a document needs a storage key and an S3 key");
        return -1;
    }
    snprintf(size, sizeof(size), "%lld", (long long)d->size);
    snprintf(seq, sizeof(seq), "%lld", (long long)d->answered_seq);
    p[0] = d->storage_key;
    p[1] = d->s3_key;
    p[2] = d->origin;
    p[3] = d->vars;
    p[4] = d->spool_path;
    p[5] = d->size >= 0 ? size : NULL;
    p[6] = d->md5;
    p[7] = d->sha256;
    p[8] = d->content_type;
    p[9] = d->filename;
    p[10] = d->failed_reason;
    p[11] = d->answered_seq > 0 ? seq : NULL;
    r = pgs_run(st, "upsert", sql, 12, p, err);
    if (r == NULL)
        return -1;
    if (generation) {
        if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
            *generation = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        else if (PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 1), "t") == 0)
            *generation = 0;
        else
            *generation = -1;
    }
    PQclear(r);
    return 0;
}

int pgstore_delete_answered(pgstore *st, const char *storage_key, int64_t answered_seq,
                            const char *detail, struct pgstore_delete_out *out, cut_err *err)
{
    /* a row for a key never recorded: `deleted`, no S3 object to remove (next attempt never) */
    static const char tomb[] =
        "WITH ins AS (INSERT INTO cutover.documents (storage_key, s3_key, state, deleted_at, "
        "next_attempt_at, answered_seq)\n"
        "  VALUES ($1, '', 'deleted', now(), 'infinity', $2::bigint)\n"
        "  ON CONFLICT (storage_key) DO NOTHING RETURNING generation)\n"
        "INSERT INTO cutover.transitions (storage_key, from_state, to_state, detail, generation)\n"
        "SELECT $1, NULL, 'deleted', $3, generation FROM ins RETURNING generation";
    static const char lock[] = "SELECT state, generation, answered_seq, s3_key FROM "
                               "cutover.documents WHERE storage_key = $1 FOR UPDATE";
    static const char mark[] =
        "UPDATE cutover.documents SET answered_seq = $2::bigint WHERE storage_key = $1";
    char seq[24];
    const char *p[3] = {storage_key, NULL, detail ? detail : "deleted by the app"};
    PGresult *r = NULL;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    snprintf(seq, sizeof(seq), "%lld", (long long)answered_seq);
    p[1] = answered_seq > 0 ? seq : NULL;
    /* twice at most: an upload recorded between the look and the tombstone is looked at again */
    for (int round = 0; round < 2; round++) {
        int cur;
        if (!pgs_begin(st, "delete", err))
            goto out;
        r = pgs_run(st, "delete", lock, 1, p, err);
        if (r == NULL)
            goto out;
        if (PQntuples(r) == 0) {
            PQclear(r);
            r = NULL;
            out->result = PGSTORE_DEL_UNKNOWN;
            if (answered_seq <= 0)
                break;
            r = pgs_run(st, "delete", tomb, 3, p, err);
            if (r == NULL)
                goto out;
            if (PQntuples(r) == 1 || round == 1)
                break; /* (a second race lost: the upload recorded meanwhile stands) */
            PQclear(r);
            r = NULL;
            pgs_rollback(st);
            continue;
        }
        cur = doc_state_parse(PQgetvalue(r, 0, 0));
        if (answered_seq > 0 && !PQgetisnull(r, 0, 2) &&
            strtoll(PQgetvalue(r, 0, 2), NULL, 10) >= answered_seq) {
            out->result = PGSTORE_DEL_SUPERSEDED;
            break;
        }
        if (cur == DOC_DELETED) {
            /* the later delete's sequence is kept; an unknown one changes nothing */
            if (answered_seq > 0 && !pgs_run_ok(st, "delete", mark, 2, p, err))
                goto out;
            out->result = PGSTORE_DEL_ALREADY;
            break;
        }
        if (!pgs_run_ok(st, "delete", mark, 2, p, err))
            goto out;
        if (cur < 0 || !doc_transition_legal((enum doc_state)cur, DOC_DELETED)) {
            pgs_refuse_illegal(err, (enum doc_state)cur, DOC_DELETED);
            goto out;
        }
        if (!pgs_write_transition(st, storage_key, (enum doc_state)cur, DOC_DELETED,
                                  PQgetvalue(r, 0, 1), p[2], err))
            goto out;
        out->result = PGSTORE_DEL_DELETED;
        out->was = (enum doc_state)cur;
        if (strlen(PQgetvalue(r, 0, 3)) < sizeof(out->s3_key))
            snprintf(out->s3_key, sizeof(out->s3_key), "%s", PQgetvalue(r, 0, 3));
        break;
    }
    if (!pgs_commit(st, "delete", err))
        goto out;
    rc = 0;
out:
    PQclear(r);
    pgs_rollback(st);
    return rc;
}

/* The columns a move to state S sets (S a SQL expression; COPIED a SQL condition: the document
 * was copied by this change), for an UPDATE of cutover.documents AS d. One list for every
 * statement that moves a document, so that no move forgets a time. */
#define PGS_STATE_COLUMNS(S, COPIED)                                                               \
    "state = " S ", updated_at = now(),\n"                                                         \
    "  copied_at = CASE WHEN " COPIED " THEN now() ELSE d.copied_at END,\n"                        \
    "  verified_at = CASE WHEN " S " = 'verified' THEN now() ELSE d.verified_at END,\n"            \
    "  activated_at = CASE WHEN " S " = 'active' THEN now() ELSE d.activated_at END,\n"            \
    "  mismatch_at = CASE WHEN " S " = 'mismatch' THEN now() ELSE d.mismatch_at END,\n"            \
    "  failed_at = CASE WHEN " S " = 'failed' THEN now() ELSE d.failed_at END,\n"                  \
    "  deleted_at = CASE WHEN " S " = 'deleted' THEN now() ELSE d.deleted_at END,\n"               \
    "  next_attempt_at = CASE WHEN " S " IN ('pending', 'mismatch', 'deleted') THEN now()\n"       \
    "                    ELSE d.next_attempt_at END\n"
/* ... to the state in $2 (pgs_write_transition()), and to each row's ok.fin, $2 being the
 * state asked for (pgstore_complete_many()) */
#define PGS_STATE_TO_P2 PGS_STATE_COLUMNS("$2", "$2 = 'copied'")
#define PGS_STATE_TO_FIN PGS_STATE_COLUMNS("ok.fin", "$2::text = 'copied'")

/* Inside a transaction, the row locked: the state change with its time, and its history. */
bool pgs_write_transition(pgstore *st, const char *key, enum doc_state from, enum doc_state to,
                          const char *gen, const char *detail, cut_err *err)
{
    /* the state change and its history row in one statement: one round trip, not two */
    static const char sql[] =
        "WITH u AS (UPDATE cutover.documents AS d SET " PGS_STATE_TO_P2 ",\n"
        "  attempts = CASE WHEN $2 IN ('pending', 'deleted') THEN 0 ELSE d.attempts END,\n"
        "  last_error = CASE WHEN $2 = 'deleted' THEN NULL ELSE d.last_error END\n"
        "WHERE storage_key = $1 RETURNING storage_key)\n"
        "INSERT INTO cutover.transitions (storage_key, from_state, to_state, detail, generation)\n"
        "SELECT storage_key, $3, $2, $4, $5 FROM u";
    const char *p[5] = {key, doc_state_name(to), doc_state_name(from), detail, gen};

    return pgs_run_ok(st, "transition", sql, 5, p, err);
}

void pgs_refuse_illegal(cut_err *err, enum doc_state from, enum doc_state to)
{
    const char *f = doc_state_name(from), *t = doc_state_name(to);

    err_set(err, CUT_ECONFLICT, "transition", "illegal transition %s -> %s", f ? f : "unknown",
            t ? t : "unknown");
}

/* Inside a transaction: the document's row locked; column 0 its state, 1 its generation.
 * NULL with err set (CUT_ENOTFOUND for an unknown key). */
PGresult *pgs_lock_doc(pgstore *st, const char *where, const char *key, cut_err *err)
{
    const char *p[1] = {key};
    PGresult *r = pgs_run(st, where,
                          "SELECT state, generation FROM cutover.documents WHERE storage_key = $1 "
                          "FOR UPDATE",
                          1, p, err);
    if (r != NULL && PQntuples(r) != 1) {
        err_set(err, CUT_ENOTFOUND, where, "no document with this storage key");
        PQclear(r);
        r = NULL;
    }
    return r;
}

/* False with err set (CUT_ECONFLICT) when want (0: any) is not the current generation. */
bool pgs_generation_current(const char *where, int64_t want, int64_t have, cut_err *err)
{
    if (want == 0 || want == have)
        return true;
    err_set(err, CUT_ECONFLICT, where,
            "generation %lld is stale: the document was re-recorded (generation %lld)",
            (long long)want, (long long)have);
    return false;
}

int pgstore_transition(pgstore *st, const char *storage_key, int64_t generation, enum doc_state to,
                       const char *detail, cut_err *err)
{
    PGresult *r = NULL;
    int cur, rc = -1;
    int64_t gen;

    if (doc_state_name(to) == NULL) {
        err_set(err, CUT_EINVAL, "transition", "unknown state %d", (int)to);
        return -1;
    }
    if (!pgs_begin(st, "transition", err))
        goto out;
    r = pgs_lock_doc(st, "transition", storage_key, err);
    if (r == NULL)
        goto out;
    cur = doc_state_parse(PQgetvalue(r, 0, 0));
    gen = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    if (!pgs_generation_current("transition", generation, gen, err))
        goto out;
    if (cur < 0 || !doc_transition_legal((enum doc_state)cur, to)) {
        pgs_refuse_illegal(err, (enum doc_state)cur, to);
        goto out;
    }
    if (!pgs_write_transition(st, storage_key, (enum doc_state)cur, to, PQgetvalue(r, 0, 1), detail,
                              err))
        goto out;
    if (!pgs_commit(st, "transition", err))
        goto out;
    rc = 0;
out:
    PQclear(r);
    pgs_rollback(st);
    return rc;
}

int pgstore_doc_get(pgstore *st, const char *storage_key, struct pgstore_doc *out, cut_err *err)
{
    const char *p[1] = {storage_key};
    PGresult *r;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    r = pgs_run(st, "document", "SELECT " DOC_COLS " FROM cutover.documents WHERE storage_key = $1",
                1, p, err);
    if (r == NULL)
        return -1;
    if (PQntuples(r) != 1) {
        err_set(err, CUT_ENOTFOUND, "document", "no document with this storage key");
        goto out;
    }
    pgs_doc_from_row(r, 0, out);
    rc = 0;
out:
    PQclear(r);
    return rc;
}

int pgstore_spool_in_use(pgstore *st, const char *prefix, char ***paths, size_t *n, cut_err *err)
{
    static const char sql[] =
        "SELECT spool_path FROM cutover.documents WHERE spool_path IS NOT NULL\n"
        "  AND state IN ('pending', 'mismatch')\n"
        "  AND left(spool_path, length($1)) = $1";
    const char *p[1] = {prefix};
    PGresult *r = pgs_run(st, "spool_in_use", sql, 1, p, err);

    *paths = NULL;
    *n = 0;
    if (r == NULL)
        return -1;
    *n = (size_t)PQntuples(r);
    *paths = xcalloc(*n ? *n : 1, sizeof(char *));
    for (size_t i = 0; i < *n; i++)
        (*paths)[i] = xstrdup(PQgetvalue(r, (int)i, 0));
    PQclear(r);
    return 0;
}

int pgstore_count_states(pgstore *st, int64_t counts[DOC_NSTATES], cut_err *err)
{
    PGresult *r;

    for (int i = 0; i < DOC_NSTATES; i++)
        counts[i] = 0;
    r = pgs_run(st, "count", "SELECT state, count(*) FROM cutover.documents GROUP BY state", 0,
                NULL, err);
    if (r == NULL)
        return -1;
    for (int i = 0; i < PQntuples(r); i++) {
        int s = doc_state_parse(PQgetvalue(r, i, 0));
        if (s >= 0)
            counts[s] = strtoll(PQgetvalue(r, i, 1), NULL, 10);
    }
    PQclear(r);
    return 0;
}

/* ---- the queue ------------------------------------------------------------------------------ */

void pgstore_claim_clear(struct pgstore_claim *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++)
        pgstore_doc_clear(&c->docs[i]);
    free(c->docs);
    memset(c, 0, sizeof(*c));
}

static bool new_token(char out[33], cut_err *err)
{
    unsigned char b[16];

    if (RAND_bytes(b, sizeof(b)) != 1) {
        err_set(err, CUT_EIO, "claim", "no random bytes for a lease token");
        return false;
    }
    for (size_t i = 0; i < sizeof(b); i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
    return true;
}

int pgstore_claim(pgstore *st, const char *owner, size_t max, int lease_ms, const char *origin,
                  struct pgstore_claim *out, cut_err *err)
{
    /* Each branch walks an index of migration 8 in next_attempt_at order, skipping what is
     * leased or locked, and stops at the limit, so a claim does not grow with the queue. With
     * an origin: its own copies; the removals of any origin; the documents of another origin a
     * read moved to the head of the queue ('-infinity'). Without: everything due. The rows a
     * branch locked beyond the final limit are free again when the statement ends. */
#define CLAIMABLE                                                                                  \
    "next_attempt_at <= now()\n"                                                                   \
    "    AND (lease_expires IS NULL OR lease_expires <= clock_timestamp())\n"
    static const char sql[] =
        "WITH own AS (SELECT storage_key AS k, next_attempt_at AS t FROM cutover.documents\n"
        "  WHERE $5::text IS NOT NULL AND origin = $5 AND state IN ('pending', 'mismatch')\n"
        "    AND " CLAIMABLE "  ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED),\n"
        "removals AS (SELECT storage_key AS k, next_attempt_at AS t FROM cutover.documents\n"
        "  WHERE $5::text IS NOT NULL AND state = 'deleted'\n"
        "    AND " CLAIMABLE "  ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED),\n"
        "promoted AS (SELECT storage_key AS k, next_attempt_at AS t FROM cutover.documents\n"
        "  WHERE $5::text IS NOT NULL AND origin <> $5 AND state IN ('pending', 'mismatch')\n"
        "    AND next_attempt_at = '-infinity' AND " CLAIMABLE
        "  LIMIT $3 FOR UPDATE SKIP LOCKED),\n"
        "due AS (SELECT storage_key AS k, next_attempt_at AS t FROM cutover.documents\n"
        "  WHERE $5::text IS NULL AND state IN ('pending', 'mismatch', 'deleted')\n"
        "    AND " CLAIMABLE "  ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED),\n"
        "picked AS (SELECT k FROM (SELECT * FROM own UNION ALL SELECT * FROM removals\n"
        "  UNION ALL SELECT * FROM promoted UNION ALL SELECT * FROM due) x ORDER BY t LIMIT $3)\n"
        "UPDATE cutover.documents SET lease_owner = $1, lease_token = $2,\n"
        "  lease_expires = clock_timestamp() + $4::bigint * interval '1 millisecond'\n"
        "FROM picked WHERE storage_key = picked.k\n"
        "RETURNING " DOC_COLS;
#undef CLAIMABLE
    char lim[24], ms[24];
    const char *p[5];
    PGresult *r;

    memset(out, 0, sizeof(*out));
    if (max < 1 || max > PGSTORE_CLAIM_MAX || lease_ms < 1) {
        err_set(err, CUT_EINVAL, "claim", "claim 1..%d documents for a lease of 1 ms or more",
                PGSTORE_CLAIM_MAX);
        return -1;
    }
    if (!new_token(out->token, err))
        return -1;
    snprintf(lim, sizeof(lim), "%zu", max);
    snprintf(ms, sizeof(ms), "%d", lease_ms);
    p[0] = owner ? owner : "worker";
    p[1] = out->token;
    p[2] = lim;
    p[3] = ms;
    p[4] = origin;
    r = pgs_run(st, "claim", sql, 5, p, err);
    if (r == NULL)
        return -1;
    out->n = (size_t)PQntuples(r);
    out->docs = out->n ? xcalloc(out->n, sizeof(*out->docs)) : NULL;
    for (size_t i = 0; i < out->n; i++)
        pgs_doc_from_row(r, (int)i, &out->docs[i]);
    PQclear(r);
    return 0;
}

int pgstore_renew(pgstore *st, const char *storage_key, const char *token, int lease_ms,
                  cut_err *err)
{
    char ms[24];
    const char *p[3] = {storage_key, token, ms};
    PGresult *r;
    int rc = -1;

    snprintf(ms, sizeof(ms), "%d", lease_ms);
    r = pgs_run(st, "renew",
                "UPDATE cutover.documents SET lease_expires = clock_timestamp() + $3::bigint * "
                "interval '1 millisecond' WHERE storage_key = $1 AND lease_token = $2 AND "
                "lease_expires > clock_timestamp()",
                3, p, err);
    if (r == NULL)
        return -1;
    if (strcmp(PQcmdTuples(r), "1") != 0)
        err_set(err, CUT_ECONFLICT, "renew", "lease lost: it expired or another worker holds it");
    else
        rc = 0;
    PQclear(r);
    return rc;
}

int pgstore_renew_many(pgstore *st, const char *const *keys, const char *const *tokens, size_t n,
                       int lease_ms, bool *kept, cut_err *err)
{
    /* the pairs travel as one JSON array: no quoting of array literals by hand */
    static const char sql[] =
        "UPDATE cutover.documents AS d SET lease_expires = clock_timestamp() + $2::bigint * "
        "interval '1 millisecond'\n"
        "FROM jsonb_to_recordset($1::jsonb) AS k(key text, token text)\n"
        "WHERE d.storage_key = k.key AND d.lease_token = k.token\n"
        "  AND d.storage_key = ANY (ARRAY(SELECT key FROM jsonb_to_recordset($1::jsonb)\n"
        "                                 AS a(key text)))\n"
        "  AND d.lease_expires > clock_timestamp()\n"
        "RETURNING d.storage_key, d.lease_token";
    json_t *arr = NULL;
    char *text = NULL, ms[24];
    const char *p[2];
    PGresult *r = NULL;
    int rc = -1;

    if (n > PGSTORE_RENEW_MAX) {
        err_set(err, CUT_ELIMIT, "renew", "%zu leases at once (at most %d)", n, PGSTORE_RENEW_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        kept[i] = false;
    if (n == 0)
        return 0;
    arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:s, s:s}", "key", keys[i], "token", tokens[i]));
    text = json_dumps(arr, JSON_COMPACT);
    if (!text) {
        err_set(err, CUT_EINVAL, "renew", "a storage key is not valid UTF-8");
        goto out;
    }
    snprintf(ms, sizeof(ms), "%d", lease_ms);
    p[0] = text;
    p[1] = ms;
    r = pgs_run(st, "renew", sql, 2, p, err);
    if (r == NULL)
        goto out;
    for (int row = 0; row < PQntuples(r); row++)
        for (size_t i = 0; i < n; i++)
            if (!kept[i] && strcmp(PQgetvalue(r, row, 0), keys[i]) == 0 &&
                strcmp(PQgetvalue(r, row, 1), tokens[i]) == 0)
                kept[i] = true;
    rc = 0;
out:
    PQclear(r);
    free(text);
    json_decref(arr);
    return rc;
}

/* Inside a transaction: locks the row and checks the fence. Returns the row (state,
 * generation, attempts) or NULL with err set. */
PGresult *pgs_lock_fenced(pgstore *st, const char *where, const char *key, const char *token,
                          cut_err *err)
{
    const char *p[2] = {key, token};
    PGresult *r;

    r = pgs_run(st, where,
                "SELECT state, generation, attempts, lease_token IS NOT DISTINCT FROM $2 AND "
                "lease_expires > clock_timestamp() FROM cutover.documents WHERE storage_key = $1 "
                "FOR UPDATE",
                2, p, err);
    if (r == NULL)
        return NULL;
    if (PQntuples(r) != 1) {
        err_set(err, CUT_ENOTFOUND, where, "no document with this storage key");
        goto fail;
    }
    if (token == NULL || strcmp(PQgetvalue(r, 0, 3), "t") != 0) {
        err_set(err, CUT_ECONFLICT, where,
                "lease lost: it expired or another worker holds it; the result is not recorded");
        goto fail;
    }
    return r;
fail:
    PQclear(r);
    return NULL;
}

int pgstore_complete(pgstore *st, const char *storage_key, const char *token, enum doc_state to,
                     const struct pgstore_outcome *o, cut_err *err)
{
    struct pgstore_completion c = {.storage_key = storage_key, .token = token, .out = o};
    cut_err each = CUT_ERR_INIT;

    if (pgstore_complete_many(st, &c, 1, to, &each, err) != 0)
        return -1;
    if (err_isset(&each)) {
        *err = each;
        return -1;
    }
    return 0;
}

/* The completions travel as one JSON array (no array literals quoted by hand). */
static char *completions_json(const struct pgstore_completion *c, size_t n, cut_err *err)
{
    json_t *arr = json_array();
    char *text;

    for (size_t i = 0; i < n; i++) {
        const struct pgstore_outcome *o = c[i].out;
        json_t *e = json_pack("{s:I, s:s, s:s?}", "ord", (json_int_t)i, "key", c[i].storage_key,
                              "token", c[i].token);
        if (e && o) {
            if (o->size >= 0)
                json_object_set_new(e, "size", json_integer(o->size));
            json_object_set_new(e, "md5", o->md5 ? json_string(o->md5) : json_null());
            json_object_set_new(e, "sha256", o->sha256 ? json_string(o->sha256) : json_null());
            json_object_set_new(e, "etag", o->s3_etag ? json_string(o->s3_etag) : json_null());
            json_object_set_new(e, "s3sha", o->s3_sha256 ? json_string(o->s3_sha256) : json_null());
            json_object_set_new(e, "lsha",
                                o->legacy_sha256 ? json_string(o->legacy_sha256) : json_null());
            json_object_set_new(e, "detail", o->detail ? json_string(o->detail) : json_null());
            json_object_set_new(e, "verified",
                                o->verified ? json_string(o->verified) : json_null());
        }
        if (!e || json_array_append_new(arr, e) != 0) {
            /* json_string() refuses text that is not UTF-8, which PostgreSQL would refuse too */
            err_set(err, CUT_EINVAL, "complete", "a storage key or an outcome is not valid UTF-8");
            json_decref(arr);
            return NULL;
        }
    }
    text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    if (!text)
        err_set(err, CUT_EINVAL, "complete", "a storage key or an outcome is not valid UTF-8");
    return text;
}

int pgstore_complete_many(pgstore *st, const struct pgstore_completion *c, size_t n,
                          enum doc_state to, cut_err *each, cut_err *err)
{
    /* Fence, legality, outcome, state and history of every document in one statement, so one
     * commit: lk locks the rows (in key order) and reads state and lease as they are once
     * locked (the keys as an array, so that the primary key's index finds them: joined with
     * the JSON's rows, of which the planner guesses 100, a scan of the whole table looked
     * cheaper); ok keeps those whose lease is the token's and whose move is legal; u writes them;
     * the history rows follow in the documents' order, a verified copy's two steps in theirs.
     * The last SELECT tells every document's verdict, which the caller reads again below. */
    static const char sql[] =
        "WITH inp AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS i(ord int, key text,\n"
        "  token text, size bigint, md5 text, sha256 text, etag text, s3sha text, lsha text,\n"
        "  detail text, verified text)),\n"
        "lk AS (SELECT d.storage_key, d.state, d.generation, d.lease_token, d.lease_expires\n"
        "  FROM cutover.documents d WHERE d.storage_key = ANY (ARRAY(SELECT key FROM inp))\n"
        "  ORDER BY d.storage_key FOR UPDATE),\n"
        "cur AS (SELECT i.ord, d.storage_key, d.state AS was, d.generation,\n"
        "  coalesce(d.lease_token = i.token AND d.lease_expires > clock_timestamp(), false)\n"
        "  AS held FROM inp i JOIN lk d ON d.storage_key = i.key),\n"
        "ok AS (SELECT c.ord, c.storage_key, c.was, c.generation, i.size, i.md5, i.sha256,\n"
        "  i.etag, i.s3sha, i.lsha, i.detail, i.verified,\n"
        "  CASE WHEN i.verified IS NOT NULL AND $2::text = 'copied' THEN 'verified'\n"
        "       ELSE $2::text END AS fin\n"
        "  FROM cur c JOIN inp i ON i.ord = c.ord WHERE c.held AND c.was = ANY($3::text[])),\n"
        "u AS (UPDATE cutover.documents AS d SET size = coalesce(ok.size, d.size),\n"
        "  md5 = coalesce(ok.md5, d.md5), sha256 = coalesce(ok.sha256, d.sha256),\n"
        "  s3_etag = coalesce(ok.etag, d.s3_etag), s3_sha256 = coalesce(ok.s3sha, d.s3_sha256),\n"
        "  legacy_sha256 = coalesce(ok.lsha, d.legacy_sha256), lease_owner = NULL,\n"
        "  lease_token = NULL, lease_expires = NULL, attempts = 0, last_error = NULL,\n"
        "  " PGS_STATE_TO_FIN "\n"
        "  FROM ok WHERE d.storage_key = ok.storage_key\n"
        "    AND d.storage_key = ANY (ARRAY(SELECT storage_key FROM ok))\n"
        "  RETURNING ok.ord, ok.storage_key, ok.was, ok.generation, ok.detail, ok.verified, "
        "ok.fin),\n"
        "t AS (INSERT INTO cutover.transitions (storage_key, from_state, to_state, detail,\n"
        "  generation)\n"
        "  SELECT storage_key, f, tt, det, generation FROM (\n"
        "    SELECT storage_key, was AS f, $2::text AS tt, detail AS det, generation, ord,\n"
        "      0 AS step FROM u\n"
        "    UNION ALL SELECT storage_key, 'copied', 'verified', verified, generation, ord, 1\n"
        "      FROM u WHERE fin = 'verified' AND $2::text = 'copied') x\n"
        "  ORDER BY ord, step)\n"
        "SELECT i.ord, c.was, c.held FROM inp i LEFT JOIN cur c ON c.ord = i.ord ORDER BY i.ord";
    char *json = NULL, legal[160];
    const char *p[3];
    PGresult *r = NULL;
    size_t used = 0;
    int rc = -1;

    if (doc_state_name(to) == NULL) {
        err_set(err, CUT_EINVAL, "complete", "unknown state %d", (int)to);
        return -1;
    }
    if (n > PGSTORE_COMPLETE_MAX) {
        err_set(err, CUT_ELIMIT, "complete", "%zu documents at once (at most %d)", n,
                PGSTORE_COMPLETE_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        err_clear(&each[i]);
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < i; k++)
            if (strcmp(c[i].storage_key, c[k].storage_key) == 0) {
                err_set(err, CUT_EINVAL, "complete", "one document twice in one completion");
                return -1;
            }
    if (n == 0)
        return 0;
    /* the states `to` may be reached from, as a text[] literal (state names need no quoting) */
    used = (size_t)snprintf(legal, sizeof(legal), "{");
    for (int s = 0; doc_state_name((enum doc_state)s) != NULL; s++)
        if (doc_transition_legal((enum doc_state)s, to))
            used += (size_t)snprintf(legal + used, sizeof(legal) - used, "%s%s",
                                     used > 1 ? "," : "", doc_state_name((enum doc_state)s));
    snprintf(legal + used, sizeof(legal) - used, "}");
    json = completions_json(c, n, err);
    if (json == NULL)
        return -1;
    p[0] = json;
    p[1] = doc_state_name(to);
    p[2] = legal;
    r = pgs_run(st, "complete", sql, 3, p, err);
    if (r == NULL)
        goto out;
    if ((size_t)PQntuples(r) != n) {
        err_set(err, CUT_EIO, "complete", "%d verdicts for %zu documents", PQntuples(r), n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        int was;
        if (PQgetisnull(r, (int)i, 1)) {
            err_set(&each[i], CUT_ENOTFOUND, "complete", "no document with this storage key");
            continue;
        }
        if (c[i].token == NULL || strcmp(PQgetvalue(r, (int)i, 2), "t") != 0) {
            err_set(&each[i], CUT_ECONFLICT, "complete",
                    "lease lost: it expired or another worker holds it; the result is not "
                    "recorded");
            continue;
        }
        was = doc_state_parse(PQgetvalue(r, (int)i, 1));
        if (was < 0 || !doc_transition_legal((enum doc_state)was, to))
            pgs_refuse_illegal(&each[i], (enum doc_state)was, to);
    }
    rc = 0;
out:
    PQclear(r);
    free(json);
    return rc;
}

int pgstore_fail(pgstore *st, const char *storage_key, const char *token, const char *reason,
                 int max_attempts, int backoff_ms, enum doc_state *state, cut_err *err)
{
    return pgstore_fail_backoff(st, storage_key, token, reason, max_attempts, backoff_ms, 0, state,
                                err);
}

int pgstore_fail_backoff(pgstore *st, const char *storage_key, const char *token,
                         const char *reason, int max_attempts, int backoff_ms, int max_backoff_ms,
                         enum doc_state *state, cut_err *err)
{
    static const char upd[] =
        "UPDATE cutover.documents SET attempts = $2::int, last_error = $3,\n"
        "  lease_owner = NULL, lease_token = NULL, lease_expires = NULL,\n"
        "  next_attempt_at = clock_timestamp() + $4::bigint * interval '1 millisecond',\n"
        "  updated_at = now()\n"
        "WHERE storage_key = $1";
    PGresult *r = NULL;
    char natt[16], delay[24];
    const char *p[4];
    int cur, attempts, rc = -1;
    long long d, cap = max_backoff_ms > 0 ? max_backoff_ms : 3600000;

    if (!pgs_begin(st, "fail", err))
        goto out;
    r = pgs_lock_fenced(st, "fail", storage_key, token, err);
    if (r == NULL)
        goto out;
    cur = doc_state_parse(PQgetvalue(r, 0, 0));
    attempts = atoi(PQgetvalue(r, 0, 2)) + 1;
    d = backoff_ms > 0 ? backoff_ms : 0;
    for (int i = 1; i < attempts && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    snprintf(natt, sizeof(natt), "%d", attempts);
    snprintf(delay, sizeof(delay), "%lld", d);
    p[0] = storage_key;
    p[1] = natt;
    p[2] = reason ? reason : "unknown error";
    p[3] = delay;
    if (!pgs_run_ok(st, "fail", upd, 4, p, err))
        goto out;
    if (attempts >= max_attempts && cur >= 0 &&
        doc_transition_legal((enum doc_state)cur, DOC_FAILED)) {
        if (!pgs_write_transition(st, storage_key, (enum doc_state)cur, DOC_FAILED,
                                  PQgetvalue(r, 0, 1), p[2], err))
            goto out;
        cur = DOC_FAILED;
    }
    if (!pgs_commit(st, "fail", err))
        goto out;
    if (state)
        *state = (enum doc_state)cur;
    rc = 0;
out:
    PQclear(r);
    pgs_rollback(st);
    return rc;
}

/* Inside a transaction, the row locked: a history row that records work without a state
 * change (from = to). */
static bool write_note(pgstore *st, const char *key, const char *state, const char *gen,
                       const char *detail, cut_err *err)
{
    const char *p[5] = {key, state, state, detail, gen};
    return pgs_run_ok(st, "note",
                      "INSERT INTO cutover.transitions (storage_key, from_state, to_state, detail, "
                      "generation) VALUES ($1, $2, $3, $4, $5)",
                      5, p, err);
}

int pgstore_removed(pgstore *st, const char *storage_key, const char *token, const char *detail,
                    cut_err *err)
{
    const char *p[1] = {storage_key};
    PGresult *r = NULL;
    int rc = -1;

    if (!pgs_begin(st, "removed", err))
        goto out;
    r = pgs_lock_fenced(st, "removed", storage_key, token, err);
    if (r == NULL)
        goto out;
    if (doc_state_parse(PQgetvalue(r, 0, 0)) != DOC_DELETED) {
        err_set(err, CUT_ECONFLICT, "removed",
                "the document is %s again: its object is not recorded as removed",
                PQgetvalue(r, 0, 0));
        goto out;
    }
    if (!pgs_run_ok(
            st, "removed",
            "UPDATE cutover.documents SET next_attempt_at = 'infinity', lease_owner = NULL,\n"
            "  lease_token = NULL, lease_expires = NULL, attempts = 0, last_error = NULL,\n"
            "  updated_at = now() WHERE storage_key = $1",
            1, p, err))
        goto out;
    if (!write_note(st, storage_key, "deleted", PQgetvalue(r, 0, 1),
                    detail ? detail : "the S3 object was removed", err))
        goto out;
    if (!pgs_commit(st, "removed", err))
        goto out;
    rc = 0;
out:
    PQclear(r);
    pgs_rollback(st);
    return rc;
}

int pgstore_requeue(pgstore *st, const char *storage_key, int64_t generation, const char *detail,
                    enum doc_state *state, cut_err *err)
{
    static const char again[] =
        "UPDATE cutover.documents SET lease_owner = NULL, lease_token = NULL,\n"
        "  lease_expires = NULL, next_attempt_at = now(), updated_at = now()\n"
        "WHERE storage_key = $1";
    const char *p[1] = {storage_key};
    PGresult *r = NULL;
    int cur, rc = -1;
    int64_t gen;

    if (!pgs_begin(st, "requeue", err))
        goto out;
    r = pgs_lock_doc(st, "requeue", storage_key, err);
    if (r == NULL)
        goto out;
    cur = doc_state_parse(PQgetvalue(r, 0, 0));
    gen = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    if (detail == NULL)
        detail = "work again";
    switch (cur) {
    case DOC_DELETED:
        /* whatever the generation: the object must go */
        if (!pgs_run_ok(st, "requeue", again, 1, p, err) ||
            !write_note(st, storage_key, "deleted", PQgetvalue(r, 0, 1), detail, err))
            goto out;
        break;
    case DOC_PENDING:
    case DOC_MISMATCH:
    case DOC_COPIED:
    case DOC_VERIFIED:
    case DOC_ACTIVE:
        if (!pgs_generation_current("requeue", generation, gen, err) ||
            !pgs_run_ok(st, "requeue", again, 1, p, err))
            goto out;
        if (cur == DOC_PENDING || cur == DOC_MISMATCH) {
            if (!write_note(st, storage_key, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), detail, err))
                goto out;
        } else {
            if (!pgs_write_transition(st, storage_key, (enum doc_state)cur, DOC_MISMATCH,
                                      PQgetvalue(r, 0, 1), detail, err))
                goto out;
            cur = DOC_MISMATCH;
        }
        break;
    default:
        break; /* failed: retried on demand only */
    }
    if (!pgs_commit(st, "requeue", err))
        goto out;
    if (state)
        *state = (enum doc_state)cur;
    rc = 0;
out:
    PQclear(r);
    pgs_rollback(st);
    return rc;
}

/* ---- flags and audit ------------------------------------------------------------------------ */

/* Every flag as one object name: value; each value parsed (as_text false) or as its JSON
 * text in a string (as_text true). */
static int flags_read(pgstore *st, bool as_text, json_t **out, cut_err *err)
{
    static const char sql[] = "SELECT name, value::text FROM cutover.flags ORDER BY name LIMIT "
                              "$1::int";
    char lim[16];
    const char *p[1] = {lim};
    PGresult *r;
    json_t *o = NULL;
    int rc = -1;

    *out = NULL;
    snprintf(lim, sizeof(lim), "%d", PGSTORE_FLAGS_MAX + 1);
    r = pgs_run(st, "flags", sql, 1, p, err);
    if (r == NULL)
        return -1;
    if (PQntuples(r) > PGSTORE_FLAGS_MAX) {
        err_set(err, CUT_ELIMIT, "flags", "more than %d rows in cutover.flags", PGSTORE_FLAGS_MAX);
        goto out;
    }
    o = json_object();
    for (int i = 0; i < PQntuples(r); i++) {
        const char *name = PQgetvalue(r, i, 0);
        json_error_t je;
        json_t *v;

        if (PQgetlength(r, i, 1) > PGSTORE_FLAG_VALUE_MAX) {
            err_set(err, CUT_ELIMIT, "flags", "flags.%.64s: value longer than %d bytes", name,
                    PGSTORE_FLAG_VALUE_MAX);
            goto out;
        }
        v = as_text ? json_string(PQgetvalue(r, i, 1))
                    : json_loads(PQgetvalue(r, i, 1), JSON_DECODE_ANY, &je);
        if (v == NULL) {
            err_set(err, CUT_EDB, "flags", "flags.%.64s: %s", name,
                    as_text ? "not UTF-8" : je.text);
            goto out;
        }
        json_object_set_new(o, name, v);
    }
    *out = o;
    o = NULL;
    rc = 0;
out:
    json_decref(o);
    PQclear(r);
    return rc;
}

int pgstore_flags_get(pgstore *st, json_t **out, cut_err *err)
{
    return flags_read(st, false, out, err);
}

int pgstore_flags_text(pgstore *st, json_t **out, cut_err *err)
{
    return flags_read(st, true, out, err);
}

int pgstore_flag_set(pgstore *st, const char *name, const char *value, const char *actor,
                     const char *reason, cut_err *err)
{
    const char *p[5] = {name};
    PGresult *r = NULL;
    int rc = -1;

    if (!pgs_begin(st, "flag", err))
        goto out;
    r = pgs_run(st, "flag", "SELECT value::text FROM cutover.flags WHERE name = $1 FOR UPDATE", 1,
                p, err);
    if (r == NULL)
        goto out;
    p[1] = value;
    p[2] = actor ? actor : "unknown";
    if (!pgs_run_ok(st, "flag",
                    "INSERT INTO cutover.flags (name, value, updated_at, updated_by) "
                    "VALUES ($1, $2::jsonb, now(), $3) ON CONFLICT (name) DO UPDATE SET "
                    "value = EXCLUDED.value, updated_at = now(), updated_by = EXCLUDED.updated_by",
                    3, p, err))
        goto out;
    p[0] = p[2];
    p[1] = name;
    p[2] = PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : NULL;
    p[3] = value;
    p[4] = reason;
    if (!pgs_run_ok(st, "flag",
                    "INSERT INTO cutover.audit (actor, action, flag, old, new, reason) "
                    "VALUES ($1, 'flag_set', $2, $3::jsonb, $4::jsonb, $5)",
                    5, p, err))
        goto out;
    if (!pgs_commit(st, "flag", err))
        goto out;
    rc = 0;
out:
    PQclear(r);
    pgs_rollback(st);
    return rc;
}

int pgstore_flags_init(pgstore *st, const json_t *values, const char *actor, int *written,
                       cut_err *err)
{
    const char *name;
    json_t *v;
    int n = 0, rc = -1;

    if (!pgs_begin(st, "flags init", err))
        goto out;
    json_object_foreach((json_t *)values, name, v)
    {
        char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        const char *p[3] = {name, text, actor ? actor : "config"};
        PGresult *r = pgs_run(st, "flags init",
                              "INSERT INTO cutover.flags (name, value, updated_by) VALUES ($1, "
                              "$2::jsonb, $3) ON CONFLICT (name) DO NOTHING RETURNING name",
                              3, p, err);
        bool ok = r != NULL;
        bool inserted = ok && PQntuples(r) == 1;

        PQclear(r);
        if (inserted) {
            const char *a[3] = {p[2], name, text};
            ok = pgs_run_ok(st, "flags init",
                            "INSERT INTO cutover.audit (actor, action, flag, new, reason) VALUES "
                            "($1, 'flag_init', $2, $3::jsonb, 'initial value from the "
                            "configuration')",
                            3, a, err);
            n++;
        }
        free(text);
        if (!ok)
            goto out;
    }
    if (!pgs_commit(st, "flags init", err))
        goto out;
    if (written)
        *written = n;
    rc = 0;
out:
    pgs_rollback(st);
    return rc;
}

/* ---- backfill: documents recorded in bulk --------------------------------------------------- */

/* One statement, so a batch lands whole or not at all: the VALUES list (five parameters a row),
 * one row per key (DISTINCT ON), inserted in key order so that two backfills inserting the same
 * keys at once wait on each other instead of deadlocking, and a history row for each new one. */
int pgstore_insert_missing(pgstore *st, const struct pgstore_doc_in *docs, size_t n,
                           size_t *inserted, size_t *inserted_failed, cut_err *err)
{
    struct buf sql;
    const char **p = NULL;
    PGresult *r = NULL;
    int rc = -1;

    if (inserted)
        *inserted = 0;
    if (inserted_failed)
        *inserted_failed = 0;
    if (n == 0)
        return 0;
    if (n > PGSTORE_INSERT_MAX) {
        err_set(err, CUT_EINVAL, "insert missing", "%zu rows in one batch (at most %d)", n,
                PGSTORE_INSERT_MAX);
        return -1;
    }
    buf_init(&sql, 0);
    p = xcalloc(n * 5, sizeof(*p));
    bool ok = buf_puts(&sql, "WITH v(storage_key, s3_key, origin, vars, reason) AS (VALUES ");
    for (size_t i = 0; i < n && ok; i++) {
        const struct pgstore_doc_in *d = &docs[i];
        if (d->storage_key == NULL || d->s3_key == NULL) {
            err_set(err, CUT_EINVAL, "insert missing",
                    "a document needs a storage key and an S3 key");
            goto out;
        }
        p[5 * i] = d->storage_key;
        p[5 * i + 1] = d->s3_key;
        p[5 * i + 2] = d->origin;
        p[5 * i + 3] = d->vars;
        p[5 * i + 4] = d->failed_reason;
        ok = buf_printf(&sql, "%s($%zu::text, $%zu::text, $%zu::text, $%zu::jsonb, $%zu::text)",
                        i ? ", " : "", 5 * i + 1, 5 * i + 2, 5 * i + 3, 5 * i + 4, 5 * i + 5);
    }
    ok = ok &&
         buf_puts(
             &sql,
             "),\n"
             "u AS (SELECT DISTINCT ON (storage_key) * FROM v ORDER BY storage_key),\n"
             "ins AS (INSERT INTO cutover.documents (storage_key, s3_key, origin, vars, state,\n"
             "    last_error, failed_at)\n"
             "  SELECT storage_key, s3_key, coalesce(origin, 'upload'), coalesce(vars, '{}'),\n"
             "    CASE WHEN reason IS NULL THEN 'pending' ELSE 'failed' END, reason,\n"
             "    CASE WHEN reason IS NULL THEN NULL ELSE now() END\n"
             "  FROM u ORDER BY storage_key\n"
             "  ON CONFLICT (storage_key) DO NOTHING\n"
             "  RETURNING storage_key, state, last_error, generation, origin)\n"
             "INSERT INTO cutover.transitions (storage_key, from_state, to_state, detail, "
             "generation)\n"
             "SELECT storage_key, NULL, state, coalesce(last_error, 'recorded by ' || "
             "origin), generation FROM ins\n"
             "RETURNING to_state");
    if (!ok) {
        err_set(err, CUT_ELIMIT, "insert missing", "the statement does not fit in memory");
        goto out;
    }
    r = pgs_run(st, "insert missing", sql.data, (int)(n * 5), p, err);
    if (r == NULL)
        goto out;
    if (inserted)
        *inserted = (size_t)PQntuples(r);
    for (int i = 0; inserted_failed && i < PQntuples(r); i++)
        if (strcmp(PQgetvalue(r, i, 0), "failed") == 0)
            (*inserted_failed)++;
    rc = 0;
out:
    PQclear(r);
    free(p);
    buf_free(&sql);
    return rc;
}

int pgstore_count_origin(pgstore *st, const char *origin, struct pgstore_origin_counts *out,
                         cut_err *err)
{
    const char *p[1] = {origin};
    PGresult *r;

    memset(out, 0, sizeof(*out));
    r = pgs_run(st, "count origin",
                "SELECT state, count(*), coalesce(sum(size) FILTER (WHERE state IN ('verified', "
                "'active')), 0), count(*) FILTER (WHERE state = 'copied' AND updated_at > now() - "
                "interval '10 seconds') FROM cutover.documents WHERE origin = $1 GROUP BY state",
                1, p, err);
    if (r == NULL)
        return -1;
    for (int i = 0; i < PQntuples(r); i++) {
        int s = doc_state_parse(PQgetvalue(r, i, 0));
        int64_t c = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        if (s >= 0)
            out->counts[s] = c;
        out->total += c;
        out->done_bytes += strtoll(PQgetvalue(r, i, 2), NULL, 10);
        out->settling += strtoll(PQgetvalue(r, i, 3), NULL, 10);
    }
    PQclear(r);
    return 0;
}

int pgstore_origin_busy(pgstore *st, const char *origin, bool *busy, cut_err *err)
{
    const char *p[1] = {origin};
    PGresult *r =
        pgs_run(st, "origin busy",
                "SELECT EXISTS (SELECT 1 FROM cutover.documents WHERE state IN ('pending', "
                "'mismatch') AND origin = $1 AND next_attempt_at < 'infinity') OR EXISTS (SELECT 1 "
                "FROM cutover.documents "
                "WHERE state = 'copied' AND origin = $1 AND updated_at > now() - "
                "interval '10 seconds')",
                1, p, err);
    if (r == NULL)
        return -1;
    *busy = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return 0;
}

int pgstore_list_problems(pgstore *st, const char *origin, size_t max, struct pgstore_problem **out,
                          size_t *n, cut_err *err)
{
    char lim[24];
    const char *p[2] = {origin, lim};
    PGresult *r;

    *out = NULL;
    *n = 0;
    snprintf(lim, sizeof(lim), "%zu", max);
    r = pgs_run(
        st, "list problems",
        "SELECT storage_key, state, last_error FROM cutover.documents WHERE origin = $1 "
        "AND state IN ('failed', 'mismatch', 'copied') ORDER BY storage_key LIMIT $2::bigint",
        2, p, err);
    if (r == NULL)
        return -1;
    if (PQntuples(r) > 0) {
        *out = xcalloc((size_t)PQntuples(r), sizeof(**out));
        for (int i = 0; i < PQntuples(r); i++) {
            (*out)[i].storage_key = pgs_dup(r, i, 0);
            (*out)[i].state = (enum doc_state)doc_state_parse(PQgetvalue(r, i, 1));
            (*out)[i].reason = pgs_dup(r, i, 2);
        }
        *n = (size_t)PQntuples(r);
    }
    PQclear(r);
    return 0;
}

void pgstore_problems_free(struct pgstore_problem *p, size_t n)
{
    for (size_t i = 0; p && i < n; i++) {
        free(p[i].storage_key);
        free(p[i].reason);
    }
    free(p);
}
