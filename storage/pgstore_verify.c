/*
 * pgstore_verify: the state store's calls for verification and repair (see pgstore.h's
 * section "verification").
 *
 * A verification reads documents a page at a time by storage key (keyset paging), checks
 * them against S3 without holding anything, then records what it found. Between the read and
 * the record the document may have moved on (recorded again by the app, repaired, found by
 * another verify): every record therefore locks the row and compares its generation and its
 * updated_at with what was read, and writes nothing when either changed. So a verify result
 * never lands on bytes it did not check.
 *
 * Checks that found nothing wrong are recorded a page at a time in one statement (the page
 * as a JSON recordset), which keeps a verification of millions of documents to one round trip
 * per page for the common case; the rare `copied` ones move to `verified` one by one, each
 * with its history row.
 */
#include "storage/pgstore_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool page_size_ok(const char *where, size_t max, cut_err *err)
{
    if (max >= 1 && max <= PGSTORE_VERIFY_PAGE_MAX)
        return true;
    err_set(err, CUT_EINVAL, where, "a page of %zu documents (1..%d)", max,
            PGSTORE_VERIFY_PAGE_MAX);
    return false;
}

int pgstore_verify_page(pgstore *st, const char *after, const char *since, size_t max,
                        struct pgstore_doc **docs, size_t *n, cut_err *err)
{
    static const char sql[] = "SELECT " DOC_COLS " FROM cutover.documents\n"
                              "WHERE state IN ('copied', 'verified', 'active')\n"
                              "  AND ($1::text IS NULL OR storage_key > $1)\n"
                              "  AND ($2::timestamptz IS NULL OR verified_at >= $2::timestamptz)\n"
                              "ORDER BY storage_key LIMIT $3::int";
    char lim[16];
    const char *p[3] = {after, since, lim};
    PGresult *r;

    *docs = NULL;
    *n = 0;
    if (!page_size_ok("verify page", max, err))
        return -1;
    snprintf(lim, sizeof(lim), "%zu", max);
    r = pgs_run(st, "verify page", sql, 3, p, err);
    if (r == NULL)
        return -1;
    if (PQntuples(r) > 0) {
        *docs = xcalloc((size_t)PQntuples(r), sizeof(**docs));
        for (int i = 0; i < PQntuples(r); i++)
            pgs_doc_from_row(r, i, &(*docs)[i]);
        *n = (size_t)PQntuples(r);
    }
    PQclear(r);
    return 0;
}

/* Inside a transaction: locks the row when it is still as read (generation, updated_at).
 * Returns its state, or -1 with err set (CUT_ECONFLICT: changed or gone). */
static int lock_as_read(pgstore *st, const char *where, const char *key, int64_t generation,
                        const char *updated_at, cut_err *err)
{
    char gen[24];
    const char *p[3] = {key, gen, updated_at};
    PGresult *r;
    int s = -1;

    snprintf(gen, sizeof(gen), "%lld", (long long)generation);
    r = pgs_run(st, where,
                "SELECT state FROM cutover.documents WHERE storage_key = $1 AND generation = "
                "$2::bigint AND to_json(updated_at)#>>'{}' = $3 FOR UPDATE",
                3, p, err);
    if (r == NULL)
        return -1;
    if (PQntuples(r) != 1)
        err_set(err, CUT_ECONFLICT, where,
                "the document changed while it was checked (recorded again, repaired or "
                "checked by another run): this result is stale");
    else
        s = doc_state_parse(PQgetvalue(r, 0, 0));
    PQclear(r);
    return s;
}

int pgstore_verify_checked(pgstore *st, const struct pgstore_checked *c, size_t n,
                           const char *detail, size_t *recorded, size_t *promoted, cut_err *err)
{
    /* the rows still as read, in verified or active: one statement for the page */
    static const char batch[] =
        "UPDATE cutover.documents d SET checked_at = now(),\n"
        "  s3_etag = coalesce(u.etag, d.s3_etag),\n"
        "  s3_version_id = coalesce(u.vid, d.s3_version_id),\n"
        "  legacy_sha256 = coalesce(u.lsha, d.legacy_sha256)\n"
        "FROM jsonb_to_recordset($1::jsonb) AS u(k text, g bigint, at text, etag text, vid text,\n"
        "  lsha text)\n"
        "WHERE d.storage_key = u.k AND d.generation = u.g AND d.state IN ('verified', 'active')\n"
        "  AND to_json(d.updated_at)#>>'{}' = u.at";
    json_t *rows = json_array();
    char *text = NULL;
    size_t done = 0, up = 0;
    PGresult *r = NULL;
    int rc = -1;

    if (n > PGSTORE_VERIFY_PAGE_MAX) {
        err_set(err, CUT_EINVAL, "verify checked", "%zu documents in one call", n);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        json_array_append_new(rows, json_pack("{s:s,s:I,s:s,s:s?,s:s?,s:s?}", "k", c[i].storage_key,
                                              "g", (json_int_t)c[i].generation, "at",
                                              c[i].updated_at ? c[i].updated_at : "", "etag",
                                              c[i].s3_etag, "vid", c[i].s3_version_id, "lsha",
                                              c[i].legacy_sha256));
    text = json_dumps(rows, JSON_COMPACT);
    if (text == NULL) {
        err_set(err, CUT_ELIMIT, "verify checked", "the page does not fit in memory");
        goto out;
    }
    if (!pgs_begin(st, "verify checked", err))
        goto out;
    {
        const char *p[1] = {text};
        r = pgs_run(st, "verify checked", batch, 1, p, err);
        if (r == NULL)
            goto out;
        done = (size_t)strtoull(PQcmdTuples(r), NULL, 10);
        PQclear(r);
        r = NULL;
    }
    /* those read `copied` (rare: a copier stopped before verifying): verified now, each with
     * its history row */
    for (size_t i = 0; i < n; i++) {
        cut_err lerr = CUT_ERR_INIT;
        char gen[24];
        if (c[i].state != DOC_COPIED)
            continue;
        int s = lock_as_read(st, "verify checked", c[i].storage_key, c[i].generation,
                             c[i].updated_at, &lerr);
        if (s < 0) {
            if (lerr.code != CUT_ECONFLICT) {
                *err = lerr;
                goto out;
            }
            continue;
        }
        if (s != DOC_COPIED)
            continue;
        snprintf(gen, sizeof(gen), "%lld", (long long)c[i].generation);
        if (!pgs_write_transition(st, c[i].storage_key, DOC_COPIED, DOC_VERIFIED, gen, detail, err))
            goto out;
        {
            const char *p[4] = {c[i].storage_key, c[i].s3_etag, c[i].s3_version_id,
                                c[i].legacy_sha256};
            if (!pgs_run_ok(st, "verify checked",
                            "UPDATE cutover.documents SET checked_at = now(), s3_etag = "
                            "coalesce($2, s3_etag), s3_version_id = coalesce($3, s3_version_id), "
                            "legacy_sha256 = coalesce($4, legacy_sha256) WHERE storage_key = $1",
                            4, p, err))
                goto out;
        }
        up++;
    }
    if (!pgs_commit(st, "verify checked", err))
        goto out;
    if (recorded)
        *recorded = done + up;
    if (promoted)
        *promoted = up;
    rc = 0;
out:
    PQclear(r);
    pgs_rollback(st);
    free(text);
    json_decref(rows);
    return rc;
}

int pgstore_verify_mismatch(pgstore *st, const char *storage_key, int64_t generation,
                            const char *updated_at, const char *mismatch_json, const char *detail,
                            cut_err *err)
{
    char gen[24];
    int s, rc = -1;

    if (!pgs_begin(st, "verify mismatch", err))
        goto out;
    s = lock_as_read(st, "verify mismatch", storage_key, generation, updated_at, err);
    if (s < 0)
        goto out;
    if (s != DOC_COPIED && s != DOC_VERIFIED && s != DOC_ACTIVE) {
        pgs_refuse_illegal(err, (enum doc_state)s, DOC_MISMATCH);
        goto out;
    }
    snprintf(gen, sizeof(gen), "%lld", (long long)generation);
    if (!pgs_write_transition(st, storage_key, (enum doc_state)s, DOC_MISMATCH, gen, detail, err))
        goto out;
    {
        const char *p[3] = {storage_key, mismatch_json, detail};
        if (!pgs_run_ok(st, "verify mismatch",
                        "UPDATE cutover.documents SET mismatch = $2::jsonb, last_error = $3,\n"
                        "  checked_at = now(), next_attempt_at = 'infinity' WHERE storage_key = $1",
                        3, p, err))
            goto out;
    }
    if (!pgs_commit(st, "verify mismatch", err))
        goto out;
    rc = 0;
out:
    pgs_rollback(st);
    return rc;
}

int pgstore_verify_release(pgstore *st, int64_t *mismatches, int64_t *failed, cut_err *err)
{
    /* mismatch: due again, read from the raw original; where the raw original itself changed,
     * its new bytes are taken as they are (the legacy store is the source of truth) */
    static const char again[] =
        "WITH m AS (UPDATE cutover.documents SET next_attempt_at = now(), updated_at = now(),\n"
        "    attempts = 0, spool_path = NULL, lease_owner = NULL, lease_token = NULL,\n"
        "    lease_expires = NULL,\n"
        "    md5 = CASE WHEN mismatch->>'side' IN ('legacy', 'both') THEN NULL ELSE md5 END,\n"
        "    sha256 = CASE WHEN mismatch->>'side' IN ('legacy', 'both') THEN NULL ELSE sha256 "
        "END,\n"
        "    size = CASE WHEN mismatch->>'side' IN ('legacy', 'both') THEN NULL ELSE size END\n"
        "  WHERE state = 'mismatch' RETURNING storage_key, generation, mismatch->>'side' AS side)\n"
        "INSERT INTO cutover.transitions (storage_key, from_state, to_state, detail, generation)\n"
        "SELECT storage_key, 'mismatch', 'mismatch', CASE WHEN side IN ('legacy', 'both') THEN\n"
        "  'repair: copying the raw original again (it changed in the legacy store: its '\n"
        "  'new bytes are taken)' ELSE 'repair: copying the raw original again' END, generation "
        "FROM m";
    /* failed -> pending is a legal transition (pgstore.c's table); attempts start again */
    static const char retry[] =
        "WITH f AS (UPDATE cutover.documents SET state = 'pending', attempts = 0,\n"
        "    next_attempt_at = now(), updated_at = now(), spool_path = NULL\n"
        "  WHERE state = 'failed' AND attempts > 0 RETURNING storage_key, generation)\n"
        "INSERT INTO cutover.transitions (storage_key, from_state, to_state, detail, generation)\n"
        "SELECT storage_key, 'failed', 'pending', 'repair: retried', generation FROM f";
    PGresult *r = NULL;
    int64_t nm, nf;
    int rc = -1;

    if (!doc_transition_legal(DOC_FAILED, DOC_PENDING)) {
        err_set(err, CUT_EINVAL, "verify release", "failed -> pending is not a legal transition");
        return -1;
    }
    if (!pgs_begin(st, "verify release", err))
        goto out;
    r = pgs_run(st, "verify release", again, 0, NULL, err);
    if (r == NULL)
        goto out;
    nm = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    r = pgs_run(st, "verify release", retry, 0, NULL, err);
    if (r == NULL)
        goto out;
    nf = strtoll(PQcmdTuples(r), NULL, 10);
    if (!pgs_commit(st, "verify release", err))
        goto out;
    if (mismatches)
        *mismatches = nm;
    if (failed)
        *failed = nf;
    rc = 0;
out:
    PQclear(r);
    pgs_rollback(st);
    return rc;
}

int pgstore_verify_now(pgstore *st, char out[64], cut_err *err)
{
    PGresult *r = pgs_run(st, "verify now", "SELECT to_json(now())#>>'{}'", 0, NULL, err);
    if (r == NULL)
        return -1;
    snprintf(out, 64, "%s", PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    return 0;
}

int pgstore_verify_busy(pgstore *st, bool *busy, cut_err *err)
{
    PGresult *r = pgs_run(st, "verify busy",
                          "SELECT EXISTS (SELECT 1 FROM cutover.documents WHERE state IN "
                          "('pending', 'mismatch') AND next_attempt_at < 'infinity')",
                          0, NULL, err);
    if (r == NULL)
        return -1;
    *busy = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return 0;
}

int pgstore_verify_mismatches(pgstore *st, size_t max, struct pgstore_mismatch_row **out, size_t *n,
                              cut_err *err)
{
    char lim[24];
    const char *p[1] = {lim};
    PGresult *r;

    *out = NULL;
    *n = 0;
    snprintf(lim, sizeof(lim), "%zu", max);
    r = pgs_run(st, "verify mismatches",
                "SELECT storage_key, s3_key, mismatch::text, last_error FROM cutover.documents "
                "WHERE state = 'mismatch' ORDER BY storage_key LIMIT $1::bigint",
                1, p, err);
    if (r == NULL)
        return -1;
    if (PQntuples(r) > 0) {
        *out = xcalloc((size_t)PQntuples(r), sizeof(**out));
        for (int i = 0; i < PQntuples(r); i++) {
            (*out)[i].storage_key = pgs_dup(r, i, 0);
            (*out)[i].s3_key = pgs_dup(r, i, 1);
            (*out)[i].mismatch = pgs_dup(r, i, 2);
            (*out)[i].last_error = pgs_dup(r, i, 3);
        }
        *n = (size_t)PQntuples(r);
    }
    PQclear(r);
    return 0;
}

void pgstore_verify_mm_free(struct pgstore_mismatch_row *rows, size_t n)
{
    for (size_t i = 0; rows && i < n; i++) {
        free(rows[i].storage_key);
        free(rows[i].s3_key);
        free(rows[i].mismatch);
        free(rows[i].last_error);
    }
    free(rows);
}

int pgstore_manifest_page(pgstore *st, const char *after, size_t max,
                          struct pgstore_manifest_row **out, size_t *n, cut_err *err)
{
    static const char sql[] =
        "SELECT storage_key, s3_key, size, sha256, state,\n"
        "  to_char(verified_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),\n"
        "  s3_etag, s3_version_id\n"
        "FROM cutover.documents WHERE state <> 'deleted' AND ($1::text IS NULL OR storage_key > "
        "$1)\n"
        "ORDER BY storage_key LIMIT $2::int";
    char lim[16];
    const char *p[2] = {after, lim};
    PGresult *r;

    *out = NULL;
    *n = 0;
    if (!page_size_ok("manifest page", max, err))
        return -1;
    snprintf(lim, sizeof(lim), "%zu", max);
    r = pgs_run(st, "manifest page", sql, 2, p, err);
    if (r == NULL)
        return -1;
    if (PQntuples(r) > 0) {
        *out = xcalloc((size_t)PQntuples(r), sizeof(**out));
        for (int i = 0; i < PQntuples(r); i++) {
            struct pgstore_manifest_row *m = &(*out)[i];
            int s = doc_state_parse(PQgetvalue(r, i, 4));
            m->storage_key = pgs_dup(r, i, 0);
            m->s3_key = pgs_dup(r, i, 1);
            m->size = PQgetisnull(r, i, 2) ? -1 : strtoll(PQgetvalue(r, i, 2), NULL, 10);
            m->sha256 = pgs_dup(r, i, 3);
            m->state = s < 0 ? DOC_PENDING : (enum doc_state)s;
            m->verified_at = pgs_dup(r, i, 5);
            m->s3_etag = pgs_dup(r, i, 6);
            m->s3_version_id = pgs_dup(r, i, 7);
        }
        *n = (size_t)PQntuples(r);
    }
    PQclear(r);
    return 0;
}

void pgstore_manifest_rows_free(struct pgstore_manifest_row *rows, size_t n)
{
    for (size_t i = 0; rows && i < n; i++) {
        free(rows[i].storage_key);
        free(rows[i].s3_key);
        free(rows[i].sha256);
        free(rows[i].verified_at);
        free(rows[i].s3_etag);
        free(rows[i].s3_version_id);
    }
    free(rows);
}

void pgstore_verify_page_free(struct pgstore_doc *docs, size_t n)
{
    for (size_t i = 0; docs && i < n; i++)
        pgstore_doc_clear(&docs[i]);
    free(docs);
}
