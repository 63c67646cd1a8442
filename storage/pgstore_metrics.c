/*
 * pgstore_metrics: the state store's figures for /metrics, read in one statement: documents
 * per state and the queue's depth. The statement runs in a transaction of its own with a
 * statement timeout, so that a database that answers slowly costs the caller at most that
 * long; the caller (the metrics collector's thread) never runs it on a path that serves
 * requests.
 */
#include "storage/pgstore_int.h"

#include <stdio.h>
#include <stdlib.h>

int pgstore_metrics_counts(pgstore *st, int64_t counts[DOC_NSTATES], int64_t *queue_depth,
                           int timeout_ms, cut_err *err)
{
    PGresult *r = NULL;
    char sql[96];
    int rc = -1;

    for (int i = 0; i < DOC_NSTATES; i++)
        counts[i] = 0;
    *queue_depth = 0;
    if (!pgs_begin(st, "metrics", err))
        goto out;
    snprintf(sql, sizeof(sql), "SET LOCAL statement_timeout = %d", timeout_ms > 0 ? timeout_ms : 1);
    if (!pgs_run_ok(st, "metrics", sql, 0, NULL, err))
        goto out;
    /* the queue: what pgstore_claim() takes, due now or later (a deleted document whose object
     * was removed waits until 'infinity': off the queue) */
    r = pgs_run(st, "metrics",
                "SELECT state, count(*), count(*) FILTER (WHERE state IN ('pending', 'mismatch') "
                "OR (state = 'deleted' AND next_attempt_at < 'infinity')) "
                "FROM cutover.documents GROUP BY state",
                0, NULL, err);
    if (!r)
        goto out;
    for (int i = 0; i < PQntuples(r); i++) {
        int s = doc_state_parse(PQgetvalue(r, i, 0));
        if (s >= 0)
            counts[s] = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        *queue_depth += strtoll(PQgetvalue(r, i, 2), NULL, 10);
    }
    if (!pgs_commit(st, "metrics", err))
        goto out;
    rc = 0;
out:
    if (r)
        PQclear(r);
    if (rc != 0)
        pgs_rollback(st);
    return rc;
}
