/*
 * The state store's calls for read cutover (pgstore.h, "read cutover"): a document's state and
 * S3 key for the rewrite's cache misses, the move of a read document to the front of the copy
 * queue, and the time of the last read answered with the legacy URL. Each is one statement:
 * they are called from worker threads for reads in flight, so they must stay cheap.
 */
#include "storage/pgstore_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pgstore_doc_state(pgstore *st, const char *storage_key, enum doc_state *state, char *s3_key,
                      size_t s3_len, cut_err *err)
{
    static const char sql[] = "SELECT state, s3_key FROM cutover.documents WHERE storage_key = $1";
    const char *p[1] = {storage_key};
    PGresult *r = pgs_run(st, "doc_state", sql, 1, p, err);
    int rc = -1, s;

    if (!r)
        goto out;
    if (PQntuples(r) != 1) {
        err_set(err, CUT_ENOTFOUND, "doc_state", "no such document");
        goto out;
    }
    s = doc_state_parse(PQgetvalue(r, 0, 0));
    if (s < 0 || (size_t)PQgetlength(r, 0, 1) >= s3_len) {
        err_set(err, CUT_EDB, "doc_state", "unexpected state or an S3 key over %zu bytes", s3_len);
        goto out;
    }
    *state = (enum doc_state)s;
    memcpy(s3_key, PQgetvalue(r, 0, 1), (size_t)PQgetlength(r, 0, 1) + 1);
    rc = 0;
out:
    PQclear(r);
    return rc;
}

int pgstore_read_bump(pgstore *st, const char *storage_key, bool *bumped, cut_err *err)
{
    /* '-infinity' sorts before every due document in pgstore_claim()'s ORDER BY; a copy that
     * fails afterwards sets its own next attempt again */
    static const char sql[] = "UPDATE cutover.documents SET next_attempt_at = '-infinity'\n"
                              "  WHERE storage_key = $1 AND state IN ('pending', 'mismatch')\n"
                              "    AND next_attempt_at > '-infinity'";
    const char *p[1] = {storage_key};
    PGresult *r = pgs_run(st, "read_bump", sql, 1, p, err);

    if (!r)
        return -1;
    if (bumped)
        *bumped = strcmp(PQcmdTuples(r), "0") != 0;
    PQclear(r);
    return 0;
}

int pgstore_legacy_read_mark(pgstore *st, const char *replica, cut_err *err)
{
    static const char sql[] =
        "INSERT INTO cutover.legacy_reads (replica, last_at) VALUES ($1, now())\n"
        "  ON CONFLICT (replica) DO UPDATE SET last_at = GREATEST(legacy_reads.last_at, now())";
    const char *p[1] = {replica};
    return pgs_run_ok(st, "legacy_read", sql, 1, p, err) ? 0 : -1;
}

int pgstore_legacy_read_last(pgstore *st, char **at, cut_err *err)
{
    static const char sql[] = "SELECT to_json(max(last_at))#>>'{}' FROM cutover.legacy_reads";
    PGresult *r = pgs_run(st, "legacy_read", sql, 0, NULL, err);

    *at = NULL;
    if (!r)
        return -1;
    if (PQntuples(r) == 1)
        *at = pgs_dup(r, 0, 0);
    PQclear(r);
    return 0;
}
